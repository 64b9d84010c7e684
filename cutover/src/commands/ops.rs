//! `cutover status|service logs|scheduler|audit`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{Output, SchedulerCommand, ServiceCommand};
use crate::client::{Client, urlencode};
use crate::output::{self, short};

pub async fn status(client: &Client, env: &str, out: Output) -> anyhow::Result<ExitCode> {
    let st: Value = client
        .get(&format!("/api/v1/environments/{}/status", urlencode(env)))
        .await?;
    output::emit(out, &st, |s| {
        println!(
            "{} · desired {} · deployed {} · serving {} · warm {}",
            s["env"].as_str().unwrap_or(""),
            short(s["desired_version"].as_str()),
            short(s["last_deployed_version"].as_str()),
            short(s["serving_version"].as_str()),
            short(s["warm_version"].as_str()),
        );
        if let Some(at) = s["expired_at_ms"].as_i64() {
            println!(
                "expired at {} (ttl); a release activates it again",
                output::time(at)
            );
        } else if let Some(at) = s["expires_at_ms"].as_i64() {
            println!(
                "{} environment; expires at {}",
                s["kind"].as_str().unwrap_or(""),
                output::time(at)
            );
        }
        if let Some(p) = s["protection"].as_str() {
            println!("children confined: {p}");
        }
        if s["maintenance"].as_bool() == Some(true) {
            println!(
                "maintenance mode: public services answer 503 (`cutover maintenance off {}` ends it)",
                s["env"].as_str().unwrap_or("")
            );
        }
        let mut rows = Vec::new();
        for svc in s["services"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let name = svc["name"].as_str().unwrap_or("");
            let url = svc["url"].as_str().unwrap_or("(not public)");
            let instances = svc["instances"].as_array().map(Vec::as_slice).unwrap_or_default();
            if instances.is_empty() {
                rows.push(vec![
                    name.to_owned(),
                    url.to_owned(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for i in instances {
                rows.push(vec![
                    name.to_owned(),
                    url.to_owned(),
                    i["id"].as_str().unwrap_or("").to_owned(),
                    i["role"].as_str().unwrap_or("").to_owned(),
                    short(i["version"].as_str()),
                    i["pid"]
                        .as_u64()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into()),
                    i["port"].to_string(),
                    match i["healthy"].as_bool() {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "?".into(),
                    },
                    format!("{} / {}s", i["restarts"], i["uptime_s"]),
                    owner(&i["owner"]),
                ]);
            }
        }
        output::table(
            &[
                "SERVICE",
                "URL",
                "INSTANCE",
                "ROLE",
                "VERSION",
                "PID",
                "PORT",
                "HEALTHY",
                "RESTARTS/UP",
                "OWNER",
            ],
            &rows,
        );
        let counts: Vec<String> = s["services"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|svc| format!("{} {}", svc["name"].as_str().unwrap_or("?"), svc["replicas"]))
            .collect();
        if !counts.is_empty() {
            println!(
                "replicas in force: {} (cutover scale ENV SERVICE N)",
                counts.join(", ")
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn service(client: &Client, cmd: ServiceCommand, out: Output) -> anyhow::Result<ExitCode> {
    let ServiceCommand::Logs {
        env,
        service,
        lines,
        follow,
    } = cmd;
    let path = format!(
        "/api/v1/environments/{}/services/{}/logs?lines={lines}",
        urlencode(&env),
        urlencode(&service)
    );
    if follow {
        client
            .stream_lines(&format!("{path}&follow=true"), |v| match out {
                Output::Json => println!("{v}"),
                Output::Table => println!(
                    "{} [{}] {}",
                    output::time(v["at_ms"].as_i64().unwrap_or(0)),
                    v["instance"].as_str().unwrap_or(""),
                    v["text"].as_str().unwrap_or("")
                ),
            })
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let logs: Value = client.get(&path).await?;
    output::emit(out, &logs, |l| {
        for inst in l["instances"].as_array().map(Vec::as_slice).unwrap_or_default() {
            println!(
                "==> {} ({}, {}) <==",
                inst["instance"].as_str().unwrap_or(""),
                short(inst["version"].as_str()),
                inst["role"].as_str().unwrap_or("")
            );
            for line in inst["lines"].as_array().map(Vec::as_slice).unwrap_or_default() {
                println!("{}", line.as_str().unwrap_or(""));
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn scheduler(client: &Client, cmd: SchedulerCommand, out: Output) -> anyhow::Result<ExitCode> {
    let base = |env: &str| format!("/api/v1/environments/{}/scheduler", urlencode(env));
    let st: Value = match &cmd {
        SchedulerCommand::Status { env } => client.get(&base(env)).await?,
        SchedulerCommand::Suspend { env } => {
            client.post(&format!("{}/suspend", base(env)), &json!({})).await?
        }
        SchedulerCommand::Resume { env } => client.post(&format!("{}/resume", base(env)), &json!({})).await?,
        SchedulerCommand::Run { env, job } => {
            let run: Value = client
                .post(&format!("{}/jobs/{}/run", base(env), urlencode(job)), &json!({}))
                .await?;
            output::emit(out, &run, |r| {
                println!(
                    "job run {} of {job} started ({}); its log: cutover scheduler logs {env} {job} --run {}",
                    r["id"],
                    r["state"].as_str().unwrap_or(""),
                    r["id"]
                );
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        SchedulerCommand::Logs {
            env,
            job,
            run,
            follow: true,
        } => {
            return follow_job(client, env, job, *run, out).await;
        }
        SchedulerCommand::Logs {
            env,
            job,
            run,
            follow: false,
        } => {
            let runs: Value = client
                .get(&format!("{}/runs?job={}&limit=10", base(env), urlencode(job)))
                .await?;
            let id = run.or_else(|| runs[0]["id"].as_i64());
            let lines: Value = match id {
                Some(id) => client.get(&format!("/api/v1/job-runs/{id}/logs")).await?,
                None => json!([]),
            };
            let all = json!({ "runs": runs, "run": id, "lines": lines });
            output::emit(out, &all, |a| {
                for r in a["runs"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    println!(
                        "run {} · {} · {} · {} · {}{}",
                        r["id"],
                        r["trigger"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        short(r["version"].as_str()),
                        output::time(r["started_at_ms"].as_i64().unwrap_or(0)),
                        r["note"].as_str().map(|n| format!(" · {n}")).unwrap_or_default()
                    );
                }
                if let Some(id) = a["run"].as_i64() {
                    println!("--- log of job run {id} ---");
                    for l in a["lines"].as_array().map(Vec::as_slice).unwrap_or_default() {
                        println!(
                            "{} {}",
                            output::time(l["at_ms"].as_i64().unwrap_or(0)),
                            l["line"].as_str().unwrap_or("")
                        );
                    }
                }
            })?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    output::emit(out, &st, |s| {
        println!(
            "{} · {} · jobs of {}{}",
            s["env"].as_str().unwrap_or(""),
            if s["suspended"].as_bool() == Some(true) {
                format!("SUSPENDED ({})", s["reason"].as_str().unwrap_or(""))
            } else {
                "running".to_owned()
            },
            short(s["version"].as_str()),
            s["pending_version"]
                .as_str()
                .map(|p| format!(" (pending {})", &p[..12.min(p.len())]))
                .unwrap_or_default()
        );
        let rows: Vec<Vec<String>> = s["jobs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|j| {
                vec![
                    j["name"].as_str().unwrap_or("").to_owned(),
                    match j["timezone"].as_str() {
                        Some(tz) if tz != "UTC" => {
                            format!("{} ({tz})", j["schedule"].as_str().unwrap_or(""))
                        }
                        _ => j["schedule"].as_str().unwrap_or("").to_owned(),
                    },
                    if j["running"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_owned(),
                    j["last_run"]["state"].as_str().unwrap_or("-").to_owned(),
                    j["next_at_ms"]
                        .as_i64()
                        .map(output::time)
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        output::table(&["JOB", "SCHEDULE", "RUNNING", "LAST", "NEXT"], &rows);
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a job run's log as it grows, until the run ends.
async fn follow_job(
    client: &Client,
    env: &str,
    job: &str,
    run: Option<i64>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let runs_path = format!(
        "/api/v1/environments/{}/scheduler/runs?job={}&limit=50",
        urlencode(env),
        urlencode(job)
    );
    let runs: Value = client.get(&runs_path).await?;
    let Some(id) = run.or_else(|| runs[0]["id"].as_i64()) else {
        anyhow::bail!("{job} has not run on {env} yet; start it with: cutover scheduler run {env} {job}");
    };
    let mut after = 0i64;
    loop {
        let lines: Value = client
            .get(&format!("/api/v1/job-runs/{id}/logs?after={after}"))
            .await?;
        for l in lines.as_array().map(Vec::as_slice).unwrap_or_default() {
            after = after.max(l["seq"].as_i64().unwrap_or(after));
            match out {
                Output::Json => println!("{l}"),
                Output::Table => {
                    println!(
                        "{} {}",
                        output::time(l["at_ms"].as_i64().unwrap_or(0)),
                        l["line"].as_str().unwrap_or("")
                    )
                }
            }
        }
        let runs: Value = client.get(&runs_path).await?;
        let state = runs
            .as_array()
            .and_then(|r| r.iter().find(|r| r["id"].as_i64() == Some(id)))
            .and_then(|r| r["state"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if !state.is_empty() && state != "running" {
            // One last read: lines written just before the end.
            let lines: Value = client
                .get(&format!("/api/v1/job-runs/{id}/logs?after={after}"))
                .await?;
            for l in lines.as_array().map(Vec::as_slice).unwrap_or_default() {
                println!(
                    "{} {}",
                    output::time(l["at_ms"].as_i64().unwrap_or(0)),
                    l["line"].as_str().unwrap_or("")
                );
            }
            if out == Output::Table {
                println!("job run {id} {state}");
            }
            return Ok(if state == "succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

pub async fn audit(client: &Client, limit: u32, out: Output) -> anyhow::Result<ExitCode> {
    let entries: Value = client.get(&format!("/api/v1/audit?limit={limit}")).await?;
    output::emit(out, &entries, |e| {
        let rows: Vec<Vec<String>> = e
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                vec![
                    a["id"].to_string(),
                    output::time(a["at_ms"].as_i64().unwrap_or(0)),
                    a["actor"].as_str().unwrap_or("").to_owned(),
                    a["action"].as_str().unwrap_or("").to_owned(),
                    a["target"].as_str().unwrap_or("").to_owned(),
                    a["detail"].to_string(),
                ]
            })
            .collect();
        output::table(&["ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"], &rows);
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `pid 1234 since 10:02:03`, `adopted by 1234 at 10:02:03`.
fn owner(o: &Value) -> String {
    let pid = o["pid"].as_u64().unwrap_or_default();
    let since = o["since_ms"]
        .as_i64()
        .map(output::time)
        .unwrap_or_else(|| "?".into());
    if o["adopted"] == true {
        format!("adopted by {pid} at {since}")
    } else {
        format!("{pid} since {since}")
    }
}

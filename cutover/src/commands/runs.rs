//! `cutover release|runs|run|logs|cancel|approve|reject|rollback|promote`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{Command, Output, ReleaseArgs, WaitArgs};
use crate::client::{Client, urlencode};
use crate::output::{self, short};

pub async fn run(client: &Client, cmd: Command, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Release(ReleaseArgs {
            env,
            version,
            destructive,
            yes,
            override_policy,
            follow,
            wait,
        }) => {
            let wait = wait_limit(&wait);
            let body = json!({
                "version": version, "destructive": destructive, "confirm": yes,
                "override_policy": override_policy
            });
            let run: Value = client
                .post(
                    &format!("/api/v1/environments/{}/releases", urlencode(&env)),
                    &body,
                )
                .await?;
            started(client, &run, follow, wait, out).await
        }
        Command::Rollback {
            env,
            to,
            fast,
            force,
            override_policy,
            follow,
            wait,
        } => {
            let wait = wait_limit(&wait);
            let body = json!({ "to": to, "fast": fast, "force": force, "override_policy": override_policy });
            let run: Value = client
                .post(
                    &format!("/api/v1/environments/{}/rollback", urlencode(&env)),
                    &body,
                )
                .await?;
            started(client, &run, follow, wait, out).await
        }
        Command::Promote {
            from,
            to,
            flags,
            override_policy,
            follow,
            wait,
        } => {
            let wait = wait_limit(&wait);
            let body = json!({ "from": from, "to": to, "override_policy": override_policy, "flags": flags });
            let run: Value = client.post("/api/v1/promotions", &body).await?;
            started(client, &run, follow, wait, out).await
        }
        Command::Runs { env, limit } => {
            let mut path = format!("/api/v1/runs?limit={limit}");
            if let Some(e) = env {
                path.push_str(&format!("&env={}", urlencode(&e)));
            }
            let runs: Value = client.get(&path).await?;
            output::emit(out, &runs, runs_table)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { id } => {
            let run: Value = client.get(&format!("/api/v1/runs/{id}")).await?;
            output::emit(out, &run, run_detail)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { id, stage, follow } => logs(client, id, stage.as_deref(), follow, out).await,
        Command::Cancel { id } => {
            let run: Value = client
                .post(&format!("/api/v1/runs/{id}/cancel"), &json!({}))
                .await?;
            output::emit(out, &run, |r| {
                println!(
                    "run {} cancel requested (now {})",
                    r["id"],
                    r["state"].as_str().unwrap_or("")
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { id, comment, version } => {
            decide(client, id, "approve", comment, version, out).await
        }
        Command::Reject { id, comment, version } => decide(client, id, "reject", comment, version, out).await,
        _ => unreachable!("dispatched in commands::run"),
    }
}

async fn decide(
    client: &Client,
    id: i64,
    verb: &str,
    comment: Option<String>,
    version: Option<String>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let view: Value = client
        .post(
            &format!("/api/v1/runs/{id}/{verb}"),
            &json!({ "comment": comment, "version": version }),
        )
        .await?;
    output::emit(out, &view, |v| {
        let done = if verb == "approve" { "approved" } else { "rejected" };
        println!(
            "run {id} {done}: version {} (requested by {}, chosen by {}); it continues on {} (state {})",
            v["target_version"].as_str().unwrap_or("-"),
            v["requested_by"].as_str().unwrap_or(""),
            v["version_chosen_by"].as_str().unwrap_or("-"),
            v["env"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or("")
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

/// After a run was queued: print how to follow it, follow it, or wait for its outcome.
async fn started(
    client: &Client,
    run: &Value,
    follow: bool,
    wait: Option<(std::time::Duration, String)>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let id = run["id"].as_i64().unwrap_or_default();
    if let Some((limit, shown)) = wait {
        return wait_for(client, id, limit, &shown, out).await;
    }
    if !follow {
        output::emit(out, run, |r| {
            println!(
                "run {id} queued on {} ({}{}): version {}",
                r["env"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["reason"].as_str().map(|s| format!(", {s}")).unwrap_or_default(),
                r["target_version"].as_str().unwrap_or("-")
            );
            println!("follow it:  cutover logs {id} --follow");
            println!("see stages: cutover run {id}");
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if out == Output::Table {
        println!(
            "run {id} queued on {}; following its log (Ctrl-C stops following, not the run)",
            run["env"].as_str().unwrap_or("")
        );
    }
    logs(client, id, None, true, out).await
}

async fn logs(
    client: &Client,
    id: i64,
    stage: Option<&str>,
    follow: bool,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/runs/{id}/logs?follow={follow}");
    if let Some(s) = stage {
        path.push_str(&format!("&stage={}", urlencode(s)));
    }
    if !follow {
        let lines: Value = client.get(&path).await?;
        output::emit(out, &lines, |l| {
            for line in l.as_array().map(Vec::as_slice).unwrap_or_default() {
                print_line(line);
            }
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut end_state = String::new();
    client
        .stream_lines(&path, |v| {
            if v["end"].as_bool() == Some(true) {
                end_state = v["state"].as_str().unwrap_or("").to_owned();
                if out == Output::Json {
                    println!("{v}");
                }
                return;
            }
            match out {
                Output::Json => println!("{v}"),
                Output::Table => print_line(&v),
            }
        })
        .await?;
    if out == Output::Table {
        println!("run {id} {end_state}");
    }
    Ok(if end_state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_line(l: &Value) {
    let at = output::time(l["at_ms"].as_i64().unwrap_or(0));
    println!(
        "{at} [{}] {}",
        l["stage"].as_str().unwrap_or(""),
        l["line"].as_str().unwrap_or("")
    );
}

fn runs_table(runs: &Value) {
    let rows: Vec<Vec<String>> = runs
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                r["id"].to_string(),
                r["env"].as_str().unwrap_or("").to_owned(),
                r["kind"].as_str().unwrap_or("").to_owned(),
                r["state"].as_str().unwrap_or("").to_owned(),
                short(r["version"].as_str().or(r["target_version"].as_str())),
                r["requested_by"].as_str().unwrap_or("").to_owned(),
                output::time(r["created_at_ms"].as_i64().unwrap_or(0)),
                r["error"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    output::table(
        &["RUN", "ENV", "KIND", "STATE", "VERSION", "BY", "CREATED", "ERROR"],
        &rows,
    );
}

fn run_detail(r: &Value) {
    println!(
        "run {} · {} · {} · {} · version {} (was {}) · by {}",
        r["id"],
        r["env"].as_str().unwrap_or(""),
        r["kind"].as_str().unwrap_or(""),
        r["state"].as_str().unwrap_or(""),
        short(r["version"].as_str().or(r["target_version"].as_str())),
        short(r["previous_version"].as_str()),
        r["requested_by"].as_str().unwrap_or("")
    );
    if let Some(v) = r["target_version"].as_str() {
        println!(
            "version fixed at request: {v} (chosen by {})",
            r["version_chosen_by"].as_str().unwrap_or("-")
        );
    }
    if let Some(reason) = r["reason"].as_str() {
        println!("reason: {reason}");
    }
    if let Some(e) = r["error"].as_str() {
        println!("error: {e}");
    }
    let rows: Vec<Vec<String>> = r["stages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let start = s["started_at_ms"].as_i64();
            let end = s["ended_at_ms"].as_i64();
            vec![
                output::stage_title(&s["stage"]),
                s["status"].as_str().unwrap_or("").to_owned(),
                start.map(output::time).unwrap_or_else(|| "-".into()),
                match (start, end) {
                    (Some(a), Some(b)) => format!("{:.1}s", (b - a) as f64 / 1000.0),
                    _ => "-".into(),
                },
                s["note"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    output::table(&["STAGE", "STATUS", "STARTED", "TOOK", "NOTE"], &rows);
    for a in r["approvals"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "{} by {} at {}{}",
            a["decision"].as_str().unwrap_or(""),
            a["actor"].as_str().unwrap_or(""),
            output::time(a["at_ms"].as_i64().unwrap_or(0)),
            a["comment"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
    }
}

/// `--wait`'s limit (and how it was typed; clap refused a bad one before anything was requested).
fn wait_limit(wait: &WaitArgs) -> Option<(std::time::Duration, String)> {
    wait.wait.then(|| (wait.timeout.value, wait.timeout.text.clone()))
}

/// Exit codes of `--wait` (documented in `--help` and the README).
const WAIT_FAILED: u8 = 1;
const WAIT_CANCELLED: u8 = 3;
const WAIT_TIMED_OUT: u8 = 4;
const WAIT_APPROVAL: u8 = 5;

/// Polls run `id` until it ends, waits for an approval, or `timeout` passes; prints one line
/// (or the run's JSON) and exits with the outcome's code.
async fn wait_for(
    client: &Client,
    id: i64,
    limit: std::time::Duration,
    timeout: &str,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    loop {
        let run: Value = client.get(&format!("/api/v1/runs/{id}")).await?;
        let state = run["state"].as_str().unwrap_or("").to_owned();
        let code = match state.as_str() {
            "succeeded" => Some(0),
            "failed" | "interrupted" => Some(WAIT_FAILED),
            "cancelled" | "superseded" => Some(WAIT_CANCELLED),
            "awaiting_approval" => Some(WAIT_APPROVAL),
            _ if started.elapsed() >= limit => Some(WAIT_TIMED_OUT),
            _ => None,
        };
        if let Some(code) = code {
            output::emit(out, &run, |r| {
                let took = started.elapsed().as_secs();
                let what = match code {
                    WAIT_TIMED_OUT => format!("still {state} after --timeout {timeout}"),
                    WAIT_APPROVAL => "waits for approval (`cutover approve`)".to_owned(),
                    _ => format!("{state} after {took}s"),
                };
                // One line: the error's first (the full report stays in `cutover logs`).
                let error = r["error"]
                    .as_str()
                    .and_then(|e| e.lines().next())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                println!(
                    "run {id} on {} {what}, version {}{error}",
                    r["env"].as_str().unwrap_or(""),
                    short(r["version"].as_str().or(r["target_version"].as_str()))
                );
            })?;
            return Ok(ExitCode::from(code));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

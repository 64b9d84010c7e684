//! `cutover scale`: replica counts, and the change requests of fixed-size tiers.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{Output, ScaleAction, ScaleArgs};
use crate::client::{Client, urlencode};
use crate::output;

pub async fn run(client: &Client, args: ScaleArgs, out: Output) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(ScaleAction::Requests { env }) => {
            let path = match env {
                Some(e) => format!("/api/v1/scale-requests?env={}", urlencode(&e)),
                None => "/api/v1/scale-requests".to_owned(),
            };
            let list: Value = client.get(&path).await?;
            output::emit(out, &list, |l| {
                let rows: Vec<Vec<String>> = l
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(row)
                    .collect();
                if rows.is_empty() {
                    println!("no scale changes yet");
                } else {
                    output::table(&HEADER, &rows);
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(ScaleAction::Approve { id, comment }) => decide(client, id, "approve", comment, out).await,
        Some(ScaleAction::Reject { id, comment }) => decide(client, id, "reject", comment, out).await,
        None => {
            // clap requires all three when there is no subcommand.
            let (Some(env), Some(service), Some(replicas)) = (args.env, args.service, args.replicas) else {
                anyhow::bail!("usage: cutover scale ENV SERVICE REPLICAS (see cutover scale --help)");
            };
            let answer: Value = client
                .post(
                    &format!(
                        "/api/v1/environments/{}/services/{}/scale",
                        urlencode(&env),
                        urlencode(&service)
                    ),
                    &json!({ "replicas": replicas, "comment": args.comment }),
                )
                .await?;
            output::emit(out, &answer, print_answer)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

const HEADER: [&str; 7] = [
    "ID",
    "ENV",
    "SERVICE",
    "CHANGE",
    "STATE",
    "REQUESTED BY",
    "DECIDED BY",
];

fn row(r: &Value) -> Vec<String> {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    vec![
        r["id"].to_string(),
        s("env"),
        s("service"),
        format!("{} -> {}", r["from"], r["to"]),
        s("state"),
        s("requested_by"),
        s("decided_by"),
    ]
}

fn print_answer(a: &Value) {
    for line in a["log"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!("  {}", line.as_str().unwrap_or_default());
    }
    let r = &a["request"];
    let what = format!(
        "{} in {}: {} -> {} replicas",
        r["service"].as_str().unwrap_or("?"),
        r["env"].as_str().unwrap_or("?"),
        r["from"],
        r["to"]
    );
    match (a["applied"].as_bool(), r["state"].as_str()) {
        (Some(true), _) => println!("scale request {}: {what}, applied", r["id"]),
        (_, Some("pending")) => println!(
            "scale request {}: {what}, waiting for approval by someone else: cutover scale approve {}",
            r["id"], r["id"]
        ),
        (_, state) => println!("scale request {}: {what}, {}", r["id"], state.unwrap_or("?")),
    }
}

async fn decide(
    client: &Client,
    id: i64,
    verb: &str,
    comment: Option<String>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let answer: Value = client
        .post(
            &format!("/api/v1/scale-requests/{id}/{verb}"),
            &json!({ "comment": comment }),
        )
        .await?;
    output::emit(out, &answer, print_answer)?;
    Ok(ExitCode::SUCCESS)
}

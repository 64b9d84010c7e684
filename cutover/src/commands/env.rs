//! `cutover env list|show|create|delete`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{EnvCommand, Output};
use crate::client::{Client, urlencode};
use crate::output::{self, short};

pub async fn run(client: &Client, cmd: EnvCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        EnvCommand::List => {
            let value: Value = client.get("/api/v1/environments").await?;
            output::emit(out, &value, table)?;
        }
        EnvCommand::Show { env } => {
            let value: Value = client
                .get(&format!("/api/v1/environments/{}", urlencode(&env)))
                .await?;
            output::emit(out, &value, table)?;
        }
        EnvCommand::Create {
            template,
            branch,
            deploy,
        } => {
            let body = json!({ "template": template, "branch": branch, "deploy": deploy });
            let value: Value = client.post("/api/v1/environments", &body).await?;
            output::emit(out, &value, |v| {
                let e = &v["environment"];
                let name = e["name"].as_str().unwrap_or("");
                println!(
                    "created {name} ({} from {}, branch {})",
                    e["kind"].as_str().unwrap_or(""),
                    e["template"].as_str().unwrap_or(""),
                    e["branch"].as_str().unwrap_or("")
                );
                if let Some(at) = e["expires_at_ms"].as_i64() {
                    println!("expires {} unless deployed again", output::time(at));
                }
                match v["run"]["id"].as_i64() {
                    Some(id) => {
                        println!("run {id} deploys the branch head; follow it: cutover logs {id} --follow")
                    }
                    None => println!("deploy it: cutover release {name} --version {branch}"),
                }
                println!("delete it: cutover env delete {name}");
            })?;
        }
        EnvCommand::Delete { env, force } => {
            let path = format!(
                "/api/v1/environments/{}{}",
                urlencode(&env),
                if force { "?force=true" } else { "" }
            );
            let value: Value = client.delete(&path).await?;
            output::emit(out, &value, |_| {
                println!("deleted {env}: services stopped, routes removed; runs and parameters are kept");
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(v: &Value) {
    let list = match v.as_array() {
        Some(a) => a.clone(),
        None => vec![v.clone()],
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let expiry = match (e["expires_at_ms"].as_i64(), e["expired_at_ms"].as_i64()) {
                (_, Some(at)) => format!("expired at {}", output::time(at)),
                (Some(at), None) => output::time(at),
                (None, None) => "-".to_owned(),
            };
            let mut branch = e["branch"].as_str().unwrap_or("any").to_owned();
            if e["auto_deploy"].as_bool() == Some(true) {
                branch.push_str(" (auto)");
            }
            vec![
                e["name"].as_str().unwrap_or("").to_owned(),
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["tier"].as_str().unwrap_or("").to_owned(),
                branch,
                short(e["desired_version"].as_str()),
                short(e["last_build_version"].as_str()),
                short(e["last_deployed_version"].as_str()),
                expiry,
            ]
        })
        .collect();
    output::table(
        &[
            "ENVIRONMENT",
            "KIND",
            "TIER",
            "BRANCH",
            "DESIRED",
            "BUILT",
            "DEPLOYED",
            "EXPIRES",
        ],
        &rows,
    );
}

//! `cutover flag`: feature flags per environment, read by running instances from
//! `$CUTOVER_FLAGS_FILE` (no restart).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{FlagCommand, Output};
use crate::client::{Client, urlencode};
use crate::output;

pub async fn run(client: &Client, cmd: FlagCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        FlagCommand::Set { env, name, value } => {
            let flag: Value = client
                .put(
                    &format!(
                        "/api/v1/environments/{}/flags/{}",
                        urlencode(&env),
                        urlencode(&name)
                    ),
                    &json!({ "value": value }),
                )
                .await?;
            output::emit(out, &flag, |f| {
                println!(
                    "flag {} of {env} is {} (version {}); running instances see it now",
                    f["name"].as_str().unwrap_or("?"),
                    f["value"].as_str().unwrap_or("?"),
                    f["version"]
                );
            })?;
        }
        FlagCommand::List { env } => {
            let list: Value = client
                .get(&format!("/api/v1/environments/{}/flags", urlencode(&env)))
                .await?;
            output::emit(out, &list, |l| {
                let rows: Vec<Vec<String>> = l
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|f| {
                        let s = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
                        vec![
                            s("name"),
                            s("value"),
                            f["version"].to_string(),
                            s("updated_by"),
                            f["updated_at_ms"].as_i64().map(output::time).unwrap_or_default(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no flags in {env} yet; `cutover flag set {env} NAME on` adds one");
                } else {
                    output::table(&["NAME", "VALUE", "VERSION", "SET BY", "AT"], &rows);
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `cutover env list|show`.

use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{EnvCommand, Output};
use crate::client::{Client, urlencode};
use crate::output::{self, short};

pub async fn run(client: &Client, cmd: EnvCommand, out: Output) -> anyhow::Result<ExitCode> {
    let value: Value = match &cmd {
        EnvCommand::List => client.get("/api/v1/environments").await?,
        EnvCommand::Show { env } => {
            client
                .get(&format!("/api/v1/environments/{}", urlencode(env)))
                .await?
        }
    };
    output::emit(out, &value, |v| {
        let list = match v.as_array() {
            Some(a) => a.clone(),
            None => vec![v.clone()],
        };
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                vec![
                    e["name"].as_str().unwrap_or("").to_owned(),
                    e["tier"].as_str().unwrap_or("").to_owned(),
                    e["branch"].as_str().unwrap_or("any").to_owned(),
                    short(e["desired_version"].as_str()),
                    short(e["last_build_version"].as_str()),
                    short(e["last_deployed_version"].as_str()),
                ]
            })
            .collect();
        output::table(
            &["ENVIRONMENT", "TIER", "BRANCH", "DESIRED", "BUILT", "DEPLOYED"],
            &rows,
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

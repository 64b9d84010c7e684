//! `cutover config check`: validates a file locally, no server needed. `cutover config schema`:
//! the JSON Schema of cutover.yml, built in cutover-core next to the parser's own key lists.

use std::process::ExitCode;

use cutover_core::config::{self, Config};
use serde_json::json;

use crate::cli::{ConfigCommand, Output};
use crate::output;

pub fn run(cmd: ConfigCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => check(&file, out),
        ConfigCommand::Schema => {
            // JSON whatever --output says: the schema is a document for tools, not a table.
            output::json(&config::json_schema())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(file: &std::path::Path, out: Output) -> anyhow::Result<ExitCode> {
    let loaded = config::load(file);
    // Beyond the file itself: the files it names must load too (webhook CA bundles).
    if let Ok(config) = &loaded
        && let Err(e) = cutover_engine::check_webhook_files(&config.webhooks)
    {
        match out {
            Output::Json => output::json(&json!({ "valid": false, "errors": [e] }))?,
            Output::Table => eprintln!("{}: {e}", file.display()),
        }
        return Ok(ExitCode::FAILURE);
    }
    match loaded {
        Ok(config) => {
            output::emit(out, &json!({ "valid": true, "config": config }), |_| {
                summary(&config)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            match out {
                Output::Json => output::json(&json!({
                    "valid": false,
                    "errors": errors.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                }))?,
                Output::Table => eprintln!("{errors}"),
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn summary(config: &Config) {
    println!("{}: valid", config.file.display());
    println!("app: {}", config.app);
    println!();
    let rows: Vec<Vec<String>> = config
        .services
        .iter()
        .map(|(name, s)| {
            vec![
                name.to_string(),
                s.replicas.to_string(),
                if s.public { "yes" } else { "no" }.to_owned(),
                s.health.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    output::table(&["SERVICE", "REPLICAS", "PUBLIC", "HEALTH"], &rows);
    println!();
    let rows: Vec<Vec<String>> = config
        .environments
        .iter()
        .map(|(name, e)| {
            vec![
                name.to_string(),
                e.tier.to_string(),
                config.accepted_branch(name).unwrap_or("any").to_owned(),
                if e.approval { "required" } else { "-" }.to_owned(),
            ]
        })
        .collect();
    output::table(&["ENVIRONMENT", "TIER", "BRANCH", "APPROVAL"], &rows);
}

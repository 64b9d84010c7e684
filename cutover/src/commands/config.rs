//! `cutover config check`: validates a file locally, no server needed. `cutover config schema`:
//! the JSON Schema of cutover.yml, built in cutover-core next to the parser's own key lists.

use std::process::ExitCode;

use anyhow::Context as _;
use cutover_core::config::{self, Config};
use serde_json::json;

use crate::cli::{ConfigCommand, Output};
use crate::output;

pub fn run(cmd: ConfigCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file, version: None } => check(&file, out),
        ConfigCommand::Check {
            file,
            version: Some(reference),
        } => check_version(&file, &reference, out),
        ConfigCommand::Reload { .. } => unreachable!("`config reload` talks to the server (commands::run)"),
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

/// `config check --version REF`: the server's file, then the application definition the commit
/// carries, combined as a release of it would combine them.
fn check_version(file: &std::path::Path, reference: &str, out: Output) -> anyhow::Result<ExitCode> {
    let server = match config::load(file) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let config::RepoSource::Path { path: repo_dir, .. } = &server.repo else {
        anyhow::bail!(
            "`repo:` of {} is a URL; --version needs a local clone",
            file.display()
        );
    };
    let repo = cutover_git::Repo::open(repo_dir)
        .with_context(|| format!("cannot open the repository {}", repo_dir.display()))?;
    let version = repo
        .resolve(reference)
        .with_context(|| format!("{reference:?} is not a commit of {}", repo_dir.display()))?;
    let path = cutover_engine::definition_path_of(&server);
    let label = std::path::PathBuf::from(format!("{path}@{}", version.short()));
    let server_text = std::fs::read_to_string(file)?;
    let Some(bytes) = repo.read_file(&version, &path)? else {
        output::emit(
            out,
            &json!({ "valid": true, "version": version, "definition": "server", "path": path }),
            |_| {
                println!(
                    "{} has no {path}: a release of it deploys the application part of {}",
                    version.short(),
                    file.display()
                )
            },
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let text = String::from_utf8_lossy(&bytes);
    match config::parse_at_commit(&server, &server_text, &text, &label) {
        Ok(def) => {
            output::emit(
                out,
                &json!({ "valid": true, "version": version, "definition": "commit", "path": path, "application": def }),
                |_| {
                    println!(
                        "{}: valid (application part; the platform part is {})",
                        label.display(),
                        file.display()
                    );
                    services_table(&def.services);
                },
            )?;
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

fn services_table(services: &std::collections::BTreeMap<cutover_core::ServiceName, config::Service>) {
    let rows: Vec<Vec<String>> = services
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
}

fn summary(config: &Config) {
    println!("{}: valid", config.file.display());
    println!("app: {}", config.app);
    println!(
        "application part ({}): read from each release's own commit ({} in the repository), this file's when the commit has none",
        config::APPLICATION_KEYS.join(", "),
        cutover_engine::definition_path_of(config)
    );
    println!(
        "platform part ({}): this file only",
        config::PLATFORM_KEYS.join(", ")
    );
    println!();
    services_table(&config.services);
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

/// `cutover config reload`: the server reads its file again.
pub async fn reload(
    client: &crate::client::Client,
    tear_down: Vec<String>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let report: serde_json::Value = client
        .post("/api/v1/config/reload", &json!({ "tear_down": tear_down }))
        .await?;
    output::emit(out, &report, |r| {
        println!("{}: reloaded", r["file"].as_str().unwrap_or("cutover.yml"));
        for (what, key) in [
            ("added", "added"),
            ("removed", "removed"),
            ("changed", "changed"),
            ("torn down", "torn_down"),
        ] {
            let list: Vec<&str> = r[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if !list.is_empty() {
                println!("environments {what}: {}", list.join(", "));
            }
        }
        for change in r["application_changes"].as_array().into_iter().flatten() {
            println!("application part: {}", change.as_str().unwrap_or(""));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

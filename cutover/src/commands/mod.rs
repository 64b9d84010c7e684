//! One function per subcommand. Each fetches from the server (or reads a
//! local file), then prints a table or the JSON answer.

mod config;
mod dataplane;
mod demo;
mod docs;
mod env;
mod flag;
mod maintenance;
mod ops;
mod param;
mod runs;
mod scale;
mod serve;
mod system;
mod tokens;

use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::output;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(name) = &cli.global.actor {
        anyhow::bail!(
            "--as {name} is gone: who you are is the name of your API token. Use {name}'s token \
             (`cutover --token TOKEN ...`, CUTOVER_TOKEN, or `cutover login`); an admin mints one with \
             `cutover token create {name} --role ROLE`"
        );
    }
    let client = || {
        Client::new(
            &cli.global.server,
            cli.global.token.as_deref(),
            cli.global.ca_file.as_deref(),
        )
    };
    let out = cli.global.output;
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::DataPlane(args) => dataplane::run(args).await,
        Command::Config(crate::cli::ConfigCommand::Reload { tear_down }) => {
            config::reload(&client()?, tear_down, out).await
        }
        Command::Config(cmd) => config::run(cmd, out),
        Command::Env(cmd) => env::run(&client()?, cmd, out).await,
        Command::Param(cmd) => param::run(&client()?, cmd, out).await,
        Command::Status { env } => ops::status(&client()?, &env, out).await,
        Command::Service(cmd) => ops::service(&client()?, cmd, out).await,
        Command::Scheduler(cmd) => ops::scheduler(&client()?, cmd, out).await,
        Command::Audit { limit } => ops::audit(&client()?, limit, out).await,
        Command::Scale(args) => scale::run(&client()?, args, out).await,
        Command::Flag(cmd) => flag::run(&client()?, cmd, out).await,
        Command::Maintenance(cmd) => maintenance::run(&client()?, cmd, out).await,
        Command::Login => {
            tokens::login(
                &cli.global.server,
                cli.global.token.as_deref(),
                cli.global.ca_file.as_deref(),
                out,
            )
            .await
        }
        Command::Whoami => tokens::whoami(&client()?, out).await,
        Command::Stop { all } => system::stop(&client()?, all, out).await,
        Command::Upgrade { data_plane } => system::upgrade(&client()?, data_plane, out).await,
        Command::System => system::show(&client()?, out).await,
        Command::Token(cmd) => tokens::run(&client()?, cmd, out).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
        cmd @ (Command::Release(_)
        | Command::Runs { .. }
        | Command::Run { .. }
        | Command::Logs { .. }
        | Command::Cancel { .. }
        | Command::Approve { .. }
        | Command::Reject { .. }
        | Command::Rollback { .. }
        | Command::Promote { .. }) => runs::run(&client()?, cmd, out).await,
        Command::Fetch => {
            let outcome: Value = client()?
                .post("/api/v1/source/fetch", &serde_json::json!({}))
                .await?;
            output::emit(out, &outcome, |o| {
                println!(
                    "fetched: {} refs, {} updated",
                    o["refs"].as_u64().unwrap_or(0),
                    o["updated"].as_u64().unwrap_or(0)
                );
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Versions(args) => {
            let path = format!(
                "/api/v1/environments/{}/versions?limit={}",
                crate::client::urlencode(&args.env),
                args.limit
            );
            let report: Value = client()?.get(&path).await?;
            output::emit(out, &report, versions_table)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn versions_table(report: &Value) {
    println!(
        "{} · branch {} · desired {} · built {} · deployed {}",
        report["environment"].as_str().unwrap_or("?"),
        report["branch"].as_str().unwrap_or("?"),
        output::short(report["desired_version"].as_str()),
        output::short(report["last_build_version"].as_str()),
        output::short(report["last_deployed_version"].as_str()),
    );
    let rows: Vec<Vec<String>> = report["commits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let mut marks = Vec::new();
            for (flag, label) in [
                ("deployed", "deployed"),
                ("desired", "desired"),
                ("built", "built"),
            ] {
                if c[flag].as_bool() == Some(true) {
                    marks.push(label);
                }
            }
            vec![
                output::short(c["version"].as_str()),
                output::time(c["time_unix"].as_i64().unwrap_or(0) * 1000),
                c["author"].as_str().unwrap_or("").to_owned(),
                marks.join(","),
                c["subject"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    output::table(&["COMMIT", "DATE", "AUTHOR", "MARKS", "SUBJECT"], &rows);
}

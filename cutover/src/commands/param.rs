//! `cutover param get|put|history|list`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{Output, ParamCommand};
use crate::client::{Client, param_path, urlencode};
use crate::output;

pub async fn run(client: &Client, cmd: ParamCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ParamCommand::Get { key } => {
            let p: Value = client.get(&param_path("params", &key)?).await?;
            output::emit(out, &p, |p| println!("{}", p["value"].as_str().unwrap_or("")))?;
        }
        ParamCommand::Put {
            key,
            value,
            expect_version,
        } => {
            let value = if value == "-" { read_stdin_value()? } else { value };
            let body = json!({ "value": value, "expect_version": expect_version });
            let p: Value = client.put(&param_path("params", &key)?, &body).await?;
            output::emit(out, &p, |p| {
                let stored = p["value"].as_str().unwrap_or("");
                // Only a version is "resolved"; any other value may be a secret the server
                // shows as `****`, and is never echoed back (CI logs, shoulder surfing).
                let note = if stored != value && key.ends_with("/desired_version") {
                    format!(" (resolved from {value:?})")
                } else {
                    String::new()
                };
                println!(
                    "{} version {} = {stored}{note}",
                    p["key"].as_str().unwrap_or(""),
                    p["version"]
                );
            })?;
        }
        ParamCommand::History { key } => {
            let h: Value = client.get(&param_path("history", &key)?).await?;
            output::emit(out, &h, |h| table(h, false))?;
        }
        ParamCommand::List { prefix } => {
            let l: Value = client
                .get(&format!("/api/v1/params?prefix={}", urlencode(&prefix)))
                .await?;
            output::emit(out, &l, |l| table(l, true))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(list: &Value, with_key: bool) {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let mut row = Vec::new();
            if with_key {
                row.push(p["key"].as_str().unwrap_or("").to_owned());
            }
            row.extend([
                p["version"].to_string(),
                p["value"].as_str().unwrap_or("").to_owned(),
                p["actor"].as_str().unwrap_or("").to_owned(),
                output::time(p["at_ms"].as_i64().unwrap_or(0)),
            ]);
            row
        })
        .collect();
    let header: &[&str] = if with_key {
        &["KEY", "VERSION", "VALUE", "BY", "AT"]
    } else {
        &["VERSION", "VALUE", "BY", "AT"]
    };
    output::table(header, &rows);
}

/// A value from standard input, without one trailing newline (`echo secret | …` stores `secret`).
fn read_stdin_value() -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("reading the value from standard input (`-`); it must be UTF-8 text")?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

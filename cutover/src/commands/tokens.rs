//! `cutover login`, `cutover whoami` and `cutover token create|list|revoke`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::{Output, TokenCommand};
use crate::client::{Client, urlencode};
use crate::{credentials, output};

pub async fn run(client: &Client, cmd: TokenCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            envs,
            expires,
        } => create(client, &name, &role, &envs, expires.map(|e| e.value), out).await,
        TokenCommand::List => {
            let tokens: Value = client.get("/api/v1/tokens").await?;
            output::emit(out, &tokens, list_table)?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { name } => {
            let token: Value = client
                .post(&format!("/api/v1/tokens/{}/revoke", urlencode(&name)), &json!({}))
                .await?;
            output::emit(out, &token, |_| {
                println!("revoked token {name}; requests with it are refused from now on");
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(
    client: &Client,
    name: &str,
    role: &str,
    envs: &[String],
    expires: Option<std::time::Duration>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let role = cutover_core::Role::parse(role).map_err(anyhow::Error::msg)?;
    let grants = if envs.is_empty() {
        json!({ "default": role })
    } else {
        let map: serde_json::Map<String, Value> = envs.iter().map(|e| (e.clone(), json!(role))).collect();
        json!({ "envs": map })
    };
    let expires_in_secs = expires.map(|d| d.as_secs());
    let issued: Value = client
        .post(
            "/api/v1/tokens",
            &json!({ "name": name, "grants": grants, "expires_in_secs": expires_in_secs }),
        )
        .await?;
    output::emit(out, &issued, |v| {
        let t = &v["token"];
        println!(
            "Created token {} ({}{}).",
            t["name"].as_str().unwrap_or(name),
            describe(&t["grants"]),
            match t["expires_at_ms"].as_i64() {
                Some(ms) => format!(", expires {}", output::time(ms)),
                None => String::new(),
            }
        );
        println!("Its secret, shown only this once (the server keeps a hash):");
        println!();
        println!("  {}", v["secret"].as_str().unwrap_or(""));
        println!();
        println!(
            "Its holder saves it with: cutover login --server {}   (and pastes it)",
            client.base()
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `*=admin, dev=deployer` from the API's grants object.
fn describe(grants: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(d) = grants["default"].as_str() {
        parts.push(format!("*={d}"));
    }
    if let Some(envs) = grants["envs"].as_object() {
        for (env, role) in envs {
            parts.push(format!("{env}={}", role.as_str().unwrap_or("?")));
        }
    }
    if parts.is_empty() {
        "no role".to_owned()
    } else {
        parts.join(", ")
    }
}

fn list_table(tokens: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = tokens
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let state = if t["revoked_at_ms"].as_i64().is_some() {
                format!("revoked by {}", t["revoked_by"].as_str().unwrap_or("?"))
            } else if t["expires_at_ms"].as_i64().is_some_and(|e| e <= now) {
                "expired".to_owned()
            } else {
                "live".to_owned()
            };
            vec![
                t["name"].as_str().unwrap_or("").to_owned(),
                describe(&t["grants"]),
                output::time(t["created_at_ms"].as_i64().unwrap_or(0)),
                t["created_by"].as_str().unwrap_or("").to_owned(),
                t["expires_at_ms"]
                    .as_i64()
                    .map(output::time)
                    .unwrap_or_else(|| "never".into()),
                state,
            ]
        })
        .collect();
    output::table(&["NAME", "ROLES", "CREATED", "BY", "EXPIRES", "STATE"], &rows);
}

pub async fn whoami(client: &Client, out: Output) -> anyhow::Result<ExitCode> {
    let me: Value = client.get("/api/v1/whoami").await?;
    output::emit(out, &me, |m| {
        println!(
            "{} at {} ({}{})",
            m["name"].as_str().unwrap_or("?"),
            client.base(),
            describe(&m["grants"]),
            m["expires_at_ms"]
                .as_i64()
                .map(|ms| format!(", expires {}", output::time(ms)))
                .unwrap_or_default()
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Checks the token with the server, then saves it for that server.
pub async fn login(
    server: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let token = match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.to_owned(),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("Paste the API token for {server} and press Enter:");
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the token from standard input")?;
            let line = line.trim().to_owned();
            if line.is_empty() {
                bail!(
                    "no token given: pass --token TOKEN, or pipe it in (`cutover login --server {server} < file`)"
                );
            }
            line
        }
    };
    let client = Client::new(server, Some(&token), ca_file)?;
    let me: Value = client.get("/api/v1/whoami").await?;
    let path = credentials::store(client.base(), &token)?;
    output::emit(out, &me, |m| {
        println!(
            "Logged in to {} as {} ({}); the token is saved in {}",
            client.base(),
            m["name"].as_str().unwrap_or("?"),
            describe(&m["grants"]),
            path.display()
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

//! `cutover maintenance on|off|status ENV`: the router answers an environment's public services
//! with 503, `Retry-After` and a page. `--page FILE` is read here and sent as the body, so the
//! server never opens a path a client names.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::{MaintenanceCommand, Output};
use crate::client::{Client, urlencode};
use crate::output;

/// The largest page the server takes (`cutover_engine::MAX_PAGE`).
const MAX_PAGE: u64 = 64 * 1024;

pub async fn run(client: &Client, cmd: MaintenanceCommand, out: Output) -> anyhow::Result<ExitCode> {
    let (env, body) = match cmd {
        MaintenanceCommand::Status { env } => {
            let m: Value = client
                .get(&format!("/api/v1/environments/{}/maintenance", urlencode(&env)))
                .await?;
            output::emit(out, &m, |m| print(&env, m))?;
            return Ok(ExitCode::SUCCESS);
        }
        MaintenanceCommand::On { env, page } => {
            let page = match page {
                Some(path) => {
                    let size = std::fs::metadata(&path)
                        .with_context(|| format!("cannot read the page {}", path.display()))?
                        .len();
                    anyhow::ensure!(
                        size <= MAX_PAGE,
                        "the page {} is {size} bytes; at most 64 KiB are accepted (link to larger assets)",
                        path.display()
                    );
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read the page {}", path.display()))?;
                    Some(
                        String::from_utf8(bytes)
                            .with_context(|| format!("the page {} is not UTF-8 text", path.display()))?,
                    )
                }
                None => None,
            };
            (env, json!({ "on": true, "page": page }))
        }
        MaintenanceCommand::Off { env } => (env, json!({ "on": false })),
    };
    let m: Value = client
        .put(
            &format!("/api/v1/environments/{}/maintenance", urlencode(&env)),
            &body,
        )
        .await?;
    output::emit(out, &m, |m| print(&env, m))?;
    Ok(ExitCode::SUCCESS)
}

fn print(env: &str, m: &Value) {
    if m["on"].as_bool() == Some(true) {
        println!(
            "{env} is in maintenance: its public services answer 503 with a {}-byte page (set by {})",
            m["page_bytes"],
            m["updated_by"].as_str().unwrap_or("?")
        );
    } else {
        println!("{env} serves normally (maintenance off)");
    }
}

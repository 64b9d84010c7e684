//! `cutover stop --all`, `cutover upgrade --data-plane`, `cutover system`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::Output;
use crate::client::Client;
use crate::output;

pub async fn stop(client: &Client, all: bool, out: Output) -> anyhow::Result<ExitCode> {
    if !all {
        anyhow::bail!(
            "`cutover stop` needs --all: it stops every instance of every environment (production too), \
             the router and the server. To restart only the server, stop `cutover serve` with Ctrl-C or \
             SIGTERM and start it again: production keeps serving meanwhile"
        );
    }
    let answer: Value = client
        .post("/api/v1/system/stop", &json!({ "all": true }))
        .await?;
    output::emit(out, &answer, |_| {
        println!("stopping every instance, the data plane and the server");
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn upgrade(client: &Client, data_plane: bool, out: Output) -> anyhow::Result<ExitCode> {
    if !data_plane {
        anyhow::bail!(
            "say what to upgrade: `cutover upgrade --data-plane` replaces the router process; the control \
             plane is upgraded by restarting `cutover serve` with the new binary (instances are adopted)"
        );
    }
    eprintln!("upgrading the data plane (the old one drains its requests, up to 30 s)…");
    let answer: Value = client
        .post("/api/v1/system/upgrade", &json!({ "data_plane": true }))
        .await?;
    output::emit(out, &answer, |a| {
        println!(
            "data plane upgraded: pid {} took over from pid {} (cutover {})",
            a["data_plane"]["pid"],
            a["data_plane"]["took_over_from"],
            a["data_plane"]["version"].as_str().unwrap_or("?")
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn show(client: &Client, out: Output) -> anyhow::Result<ExitCode> {
    let answer: Value = client.get("/api/v1/system").await?;
    output::emit(out, &answer, |a| {
        let cp = &a["control_plane"];
        let dp = &a["data_plane"];
        println!(
            "control plane  pid {}  since {}  adopted {} instances at start{}",
            cp["pid"],
            cp["started_at_ms"]
                .as_i64()
                .map(output::time)
                .unwrap_or_else(|| "?".into()),
            cp["adopted_instances"],
            if cp["stops_everything_on_exit"] == true {
                "  (stops everything on exit)"
            } else {
                ""
            }
        );
        println!(
            "data plane     {}  pid {}  {}  restarts {}",
            dp["mode"].as_str().unwrap_or("?"),
            dp["pid"],
            if dp["up"] == true { "up" } else { "DOWN" },
            dp["restarts"]
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

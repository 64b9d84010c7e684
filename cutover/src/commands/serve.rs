//! `cutover serve`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use cutover_server::{App, ServeOptions};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let app = match App::build(ServeOptions {
        config: args.config,
        data_dir: args.data_dir,
        listen: args.listen,
        router_listen: args.router_listen,
        database_url: args.database_url,
        standby: args.standby,
        secret_key_file: args.secret_key_file,
    })
    .await
    {
        Ok(app) => app,
        Err(cutover_server::StartError::Config(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the configuration has errors; fix them and start again (`cutover config check -f FILE`)"
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let addr = app.local_addr().context("reading the listening address")?;
    // Tests and scripts read this line to learn the port when --listen used port 0.
    let router = app.router_addr().context("reading the router address")?;
    println!("cutover: router on http://{router}");
    println!("cutover: listening on http://{addr}");
    std::io::stdout().flush().ok();
    app.run_until_stopped().await.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}

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
        reset_admin_token: args.reset_admin_token,
        rotate_secret_key: args.rotate_secret_key,
        data_plane: match args.data_plane {
            crate::cli::DataPlaneArg::Process => cutover_server::DataPlaneMode::Process,
            crate::cli::DataPlaneArg::Embedded => cutover_server::DataPlaneMode::Embedded,
        },
        stop_on_exit: args.stop_on_exit,
        tls: args.tls_cert.zip(args.tls_key),
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
    if let Some(secret) = app.new_admin_token() {
        save_admin_token(addr, secret, app.admin_token_file());
    }
    println!("cutover: children confined: {}", app.protection());
    println!("cutover: router on http://{router}");
    let scheme = if app.serves_tls() { "https" } else { "http" };
    println!("cutover: listening on {scheme}://{addr}");
    std::io::stdout().flush().ok();
    app.run_until_stopped().await.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}

/// The URL a CLI on this host uses for a server listening on `addr`.
pub fn local_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Saves a freshly minted admin token in the credentials file of the user who
/// started the server, for its own URL, so their CLI works right away. Best
/// effort: the token file in the data directory is the record.
pub fn save_admin_token(addr: std::net::SocketAddr, secret: &str, file: &std::path::Path) {
    let url = local_url(addr);
    match crate::credentials::store(&url, secret) {
        Ok(path) => println!(
            "cutover: admin token written to {} and saved for {url} in {}",
            file.display(),
            path.display()
        ),
        Err(e) => {
            println!("cutover: admin token written to {}", file.display());
            tracing::warn!(error = %format!("{e:#}"), "could not save the admin token for the CLI; run `cutover login` with it");
        }
    }
}

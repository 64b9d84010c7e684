//! `cutover`: `serve` runs the control plane and `data-plane` the router process it drives;
//! every other subcommand is a client of the control plane's HTTP API (so one process owns the
//! database), except those that only read local files or the grammar: `config check|schema`,
//! `completions`, `man`.

mod cli;
mod client;
mod commands;
mod credentials;
mod output;
mod setup;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    setup::quiet_on_closed_stdout();
    let cli = cli::Cli::parse();
    setup::init_tracing(&cli);
    let runtime = match setup::async_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Dropping the runtime would wait for every blocking task without a bound; whatever is
    // still running here has had its own bounded shutdown already.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

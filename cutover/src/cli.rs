//! Command-line grammar. Every command's `--help` says what it does, what it
//! needs and an example.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Self-hosted deployment control plane: pin versions, run pipelines, switch traffic without dropping a request",
    long_about = None,
    after_help = "Start a server with `cutover serve --config cutover.yml`; the other commands talk to it \
                  (at --server, or CUTOVER_URL, default http://127.0.0.1:7070)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// URL of the Cutover server to talk to.
    #[arg(
        long,
        global = true,
        env = "CUTOVER_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,

    /// Output format: human-readable tables, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Who you are, recorded in history and the audit log (default: your OS user).
    #[arg(long = "as", global = true, env = "CUTOVER_ACTOR", value_name = "NAME")]
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (HTTP API) until Ctrl-C or SIGTERM.
    #[command(
        after_help = "Example: cutover serve --config examples/shop/cutover.yml --listen 127.0.0.1:7070"
    )]
    Serve(ServeArgs),

    /// Work with a cutover.yml without a server.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Environments and their versions.
    #[command(subcommand)]
    Env(EnvCommand),

    /// The parameter store: versioned keys with history and compare-and-set.
    #[command(subcommand)]
    Param(ParamCommand),

    /// Recent commits of an environment's branch, marked built / desired / deployed.
    #[command(after_help = "Example: cutover versions staging --limit 10")]
    Versions(VersionsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The application's configuration file.
    #[arg(long, short = 'c', env = "CUTOVER_CONFIG", default_value = "cutover.yml")]
    pub config: PathBuf,

    /// Address to listen on (port 0 picks a free port and prints it).
    #[arg(long, env = "CUTOVER_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Where state lives (the SQLite database, releases, logs).
    #[arg(long, env = "CUTOVER_DATA_DIR", default_value = "./.cutover")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a cutover.yml and print a summary, or every error with file:line:column; exits 1 on error.
    Check {
        /// The file to check.
        #[arg(long, short = 'f', default_value = "cutover.yml")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Every environment with its tier, branch and versions.
    List,
    /// One environment in detail.
    Show {
        /// Environment name, e.g. staging.
        env: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ParamCommand {
    /// Print the newest value of a key.
    #[command(after_help = "Example: cutover param get /shop-prod/desired_version")]
    Get { key: String },

    /// Write a new version of a key. For /<app>-<env>/desired_version the value may be
    /// `latest`, a full or short SHA, a branch or a tag; it is resolved through git and the
    /// full SHA is stored.
    #[command(
        after_help = "Examples:\n  cutover param put /shop-staging/desired_version 3f2a9c1\n  \
                            cutover param put /shop-staging/desired_version main --expect-version 4"
    )]
    Put {
        key: String,
        value: String,
        /// Write only if the newest version is N (0: only if the key does not exist yet).
        #[arg(long, value_name = "N")]
        expect_version: Option<i64>,
    },

    /// Every version of a key, newest first, with who wrote it and when.
    History { key: String },

    /// The newest value of every key under a path prefix.
    #[command(after_help = "Example: cutover param list /shop-prod")]
    List {
        #[arg(default_value = "/")]
        prefix: String,
    },
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// Environment name, e.g. staging.
    pub env: String,
    /// How many commits to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
}

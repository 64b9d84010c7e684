//! The arguments of the two long-running processes: `cutover serve` (the control plane) and
//! `cutover data-plane` (the router process it starts and drives).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

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

    /// PostgreSQL for the state instead of SQLite in the data directory, e.g.
    /// postgres://cutover:secret@127.0.0.1:5432/cutover (releases and logs stay in --data-dir).
    #[arg(long, env = "CUTOVER_DATABASE_URL")]
    pub database_url: Option<String>,

    /// With --database-url: if another server leads that database, wait (without serving) and
    /// take over — API, router, pipelines — when it stops or dies.
    #[arg(long, requires = "database_url")]
    pub standby: bool,

    /// The key file that encrypts `/<app>-<env>/secrets/...` parameters (created on first start;
    /// servers sharing a database must share it). Default: <data-dir>/secret.key.
    #[arg(long, env = "CUTOVER_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Revoke the `admin` token and write a new one to <data-dir>/admin.token, then serve.
    /// For an operator who lost every admin token (access to the data directory is enough).
    #[arg(long)]
    pub reset_admin_token: bool,

    /// Before serving, re-encrypt every secret parameter with a fresh key: the key file's old
    /// key moves to <file>.old. Crash-safe (start with it again to finish an interrupted one).
    /// Stop every other server sharing the database first and give them the new key file.
    #[arg(long)]
    pub rotate_secret_key: bool,

    /// Address of the router in front of public services (default: 127.0.0.1 and
    /// `router.port` from cutover.yml, else 7080; port 0 picks a free one).
    #[arg(long, env = "CUTOVER_ROUTER_LISTEN")]
    pub router_listen: Option<SocketAddr>,

    /// Where the router runs. `process`: `cutover data-plane`, a process of its own (found, or
    /// started, through <data-dir>/dataplane/) that keeps serving while this server restarts,
    /// crashes or is replaced. `embedded`: inside this server, stopping with it.
    #[arg(long, env = "CUTOVER_DATA_PLANE", value_enum, default_value_t = DataPlaneArg::Process)]
    pub data_plane: DataPlaneArg,

    /// On Ctrl-C/SIGTERM also stop every instance and the data plane. Without it they keep
    /// serving and the next `cutover serve` adopts them (`cutover stop --all` stops everything
    /// of a running server).
    #[arg(long, env = "CUTOVER_STOP_ON_EXIT", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub stop_on_exit: bool,

    /// Serve the API and dashboard over HTTPS with this PEM certificate chain (with
    /// --tls-key); a renewed file is picked up within a second, without a restart. CLIs then
    /// use --server https://… (and --ca-file for a private CA).
    #[arg(long, env = "CUTOVER_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CUTOVER_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `cutover serve --data-plane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataPlaneArg {
    Process,
    Embedded,
}

#[derive(Debug, Args)]
pub struct DataPlaneArgs {
    /// Cutover's data directory (the same as `cutover serve`'s).
    #[arg(long, env = "CUTOVER_DATA_DIR", default_value = "./.cutover")]
    pub data_dir: PathBuf,
    /// Take the listening sockets and routes over from the running data plane, which then drains
    /// and exits (an upgrade without dropping a connection).
    #[arg(long)]
    pub take_over: bool,
    /// Also take control requests on this TCP address, e.g. a node's private address (a mirror
    /// router driven by a control plane on another machine); every request must be signed with
    /// the secret of --control-secret-file.
    #[arg(long, value_name = "ADDR", requires = "control_secret_file")]
    pub control_tcp: Option<SocketAddr>,
    /// The file holding that secret (at least 32 bytes, mode 600); the control plane reads the
    /// same secret from CUTOVER_DATA_PLANE_MIRROR_SECRET_FILE.
    #[arg(long, value_name = "FILE", requires = "control_tcp")]
    pub control_secret_file: Option<PathBuf>,
}

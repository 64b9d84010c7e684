//! Cutover's data plane: the small, long-lived process that only routes.
//!
//! `cutover data-plane --data-dir D` ([`run`]) owns the router's listening sockets and routing
//! table (`cutover-router`), persists the table, and is driven by the control plane (`cutover
//! serve`) through a [`Client`] over a unix socket in `<D>/dataplane/`. It outlives control-plane
//! restarts and crashes, so production keeps serving whatever happens to the control plane.
//!
//! Files in `<D>/dataplane/` (the directory is 0700):
//! * `control.sock`: the control socket (0600). One JSON request line per connection, one JSON
//!   answer line (see the `proto` module). Every request carries the secret; the peer's uid
//!   (`SO_PEERCRED`) must be the data plane's own.
//! * `secret`: 32 random bytes in hex (0600), created by the first data plane, reused after. The
//!   instances run as the same user, but Landlock keeps them out of the data directory, so they
//!   can neither read it nor use the socket.
//! * `pid`: the serving process's pid. `routes.json`: the listeners and routing table, written
//!   atomically (tmp + rename) after each change and read at start, so a data plane restarted
//!   after a crash listens and routes at once. `dataplane.log`: output of a spawned data plane.
//! * `start.lock`: held (`flock`) by a data plane while it starts, so two starting at once end
//!   with one serving and the other refusing (`AlreadyRunning`).
//!
//! Upgrading the data plane ([`upgrade`]) drops no connection: the new process asks the old one
//! for a hand-over on the control socket, receives the listening sockets (`SCM_RIGHTS`) and the
//! table, serves them, renames its own control socket over `control.sock`, and only then tells
//! the old one to stop accepting, drain and exit (the `handover` module). Both accept on the same
//! kernel sockets meanwhile, so no connection is refused and the backlog is never closed.
//!
//! Generation ids are `epoch << 32 | router id`, the epoch growing with every data-plane start
//! (persisted in `routes.json`), so an id handed out by a predecessor never names a generation of
//! its successor.
//!
//! Rejected: a data plane that also owns the instances through pipes (it would have to hand pipes
//! over on its own upgrade, and its crash would kill every instance by `SIGPIPE`; instances are
//! detached and adopted instead); an HTTP API on a TCP port for the control channel (a unix
//! socket in a 0700 directory, plus uid and secret checks, is reachable by nobody else and needs
//! no TLS); `SO_REUSEPORT` for upgrades (the kernel spreads new connections over both processes'
//! accept queues, and the connections queued on the old one's socket are reset when it closes).

mod client;
mod edge;
mod files;
mod gates;
mod handover;
mod proto;
mod server;
mod tcp;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{Client, ensure_running, upgrade};
pub use edge::{AccessLogConfig, AcmeConfig, CertConfig, EdgeConfig, HostRoute, TlsConfig};
pub use gates::{FlagsRecord, GateKind, GateRecord};
pub use server::run;
pub use tcp::SharedSecret;

/// How [`run`] starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cutover's data directory; the data plane keeps its files in `<data_dir>/dataplane/`.
    pub data_dir: PathBuf,
    /// Take the listeners and table over from the data plane serving on `control.sock` (an
    /// upgrade), instead of starting from `routes.json`.
    pub take_over: bool,
    /// Also serve the control channel on this TCP address, authenticated with this secret (a
    /// mirror router driven by a control plane on another machine; see the `tcp` module).
    pub control_tcp: Option<TcpControl>,
}

/// The control channel over TCP.
#[derive(Debug, Clone)]
pub struct TcpControl {
    /// Where to listen (a node's private address).
    pub addr: SocketAddr,
    /// What every request is signed with.
    pub secret: SharedSecret,
}

/// Which listener: the main one (routing by `Host`) or a fixed port of one route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerKind {
    /// Routes every request by its `Host` (`<service>.<env>.<app>.localhost`).
    Main,
    /// HTTPS (HTTP/2 or HTTP/1.1 by ALPN), routing by `Host` like `Main`, with the certificates
    /// of the last `configure`.
    Tls,
    /// Routes every request to this route, whatever its `Host`.
    Fixed {
        /// Application label.
        app: String,
        /// Environment label.
        env: String,
        /// Service label.
        service: String,
    },
}

/// One listening socket of the data plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// What it routes.
    pub kind: ListenerKind,
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
}

/// What a data plane says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The serving process.
    pub pid: u32,
    /// When it started serving (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Its `CARGO_PKG_VERSION`.
    pub version: String,
    /// Its listening sockets.
    pub listeners: Vec<ListenerInfo>,
    /// Routes in its table.
    pub routes: usize,
    /// Pid of the data plane it replaced by a hand-over, if any.
    pub took_over_from: Option<u32>,
}

/// One generation (upstream set) of a route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// Data-plane-unique id (see the crate docs).
    pub id: u64,
    /// The version (commit SHA) it routes to.
    pub version: String,
    /// Its upstream addresses.
    pub upstreams: Vec<SocketAddr>,
    /// Requests it is serving right now.
    pub in_flight: usize,
    /// Requests it admitted since it was created.
    pub admitted: u64,
}

/// What went wrong talking to, starting or running a data plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers on the control socket (no data plane, or a dead one).
    #[error("no data plane answers on {}: start one with `cutover data-plane --data-dir DIR` (cutover serve starts it)", socket.display())]
    NotRunning {
        /// The control socket.
        socket: PathBuf,
        /// Why connecting failed.
        #[source]
        source: std::io::Error,
    },
    /// A TCP control channel's secret file is unusable.
    #[error("the control secret file {}: {message}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and how to fix it.
        message: String,
    },
    /// The data plane refused the request (wrong secret, or another user).
    #[error("the data plane refused the request: {message}")]
    Refused {
        /// Its answer.
        message: String,
    },
    /// Reading or writing a file or socket failed.
    #[error("{what} ({}): check the data directory's permissions and free space", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// The file or socket.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An answer or request that does not follow the protocol.
    #[error("data-plane protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The data plane answered with an error.
    #[error("the data plane answered: {0}")]
    Remote(String),
    /// A mutating request reached a data plane that handed over to a newer one (the client
    /// retries once; seeing this means the retry hit it too).
    #[error("the data plane handed over to a newer one; retry the request")]
    HandedOver,
    /// Starting a data-plane process failed.
    #[error("cannot start the data plane {}: {detail}", exe.display())]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// What happened (exit status, log tail), if it ran at all.
        detail: String,
        /// The spawn error, if spawning itself failed.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A data plane already serves this data directory.
    #[error("a data plane (pid {pid}) already serves {}: use it, stop it first, or replace it with `--take-over`", socket.display())]
    AlreadyRunning {
        /// Its pid, as far as known (0 if the pid file is unreadable).
        pid: u32,
        /// Its control socket.
        socket: PathBuf,
    },
    /// Another data plane has been starting for too long (it holds the start lock).
    #[error("another data plane of this data directory is still starting (it holds {}): wait, or stop the hung process", lock.display())]
    Starting {
        /// The lock file.
        lock: PathBuf,
    },
    /// Binding a listening socket failed.
    #[error("cannot listen on {addr}: is another process using the port? choose another address")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// Taking over from the running data plane failed (it keeps serving).
    #[error("hand-over from the running data plane failed: {message}")]
    TakeOver {
        /// What failed.
        message: String,
    },
    /// No answer in time.
    #[error("the data plane did not answer within {seconds} s ({what}); see {}", log.display())]
    Timeout {
        /// What was waited for.
        what: String,
        /// Seconds waited.
        seconds: u64,
        /// The data plane's log.
        log: PathBuf,
    },
}

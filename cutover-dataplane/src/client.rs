//! The control plane's side: [`Client`] requests, starting a data plane when none runs
//! ([`ensure_running`]) and replacing it with a newer one ([`upgrade`]).
//!
//! Each request opens a fresh connection to `control.sock` and reads the secret file again, so a
//! client outlives data-plane restarts and hand-overs without any reconnect logic; a mutation
//! refused by a data plane that is handing over (`handed_over`), or a request whose connection
//! could not be established for another reason than "nothing listens", is retried once after
//! 200 ms, by which time `control.sock` names the successor. A request that was sent but got no
//! answer is never retried (the data plane may have applied it).
//!
//! A client made with [`Client::tcp`] reaches a data plane's TCP control channel instead (a
//! mirror router on another machine): each request is signed and each answer checked (the
//! crate's `tcp` module); a connect that does not complete within 2 s counts as "not running".
//!
//! A spawned data plane is detached: its own process group (a Ctrl-C at the terminal of `cutover
//! serve` does not reach it), stdin from `/dev/null`, stdout and stderr appended to
//! `dataplane.log`; a thread of the caller reaps it if it exits while the caller lives. Rejected:
//! `setsid` through `pre_exec` (needs `unsafe`; a process group is enough for signals from the
//! terminal) and a double fork (same reason).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

use crate::files::{self, Paths, io_err};
use crate::proto::{self, Answer, ErrorKind, Op, Request};
use crate::{Error, GenerationInfo, Hello, ListenerKind};

/// Time allowed for one request (connect, send, answer), drains excepted.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a mutation refused by a data plane that is handing over.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// `Error::Io::what` of a failed connect (retried once: nothing reached the data plane).
const CONNECTING: &str = "connecting to the data plane";
/// Time a spawned data plane has to answer its first hello.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a TCP connect to a data plane's control channel may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Drives the data plane of one data directory (its unix socket), or one reached over TCP.
#[derive(Clone, Debug)]
pub struct Client {
    paths: Paths,
    tcp: Option<(SocketAddr, crate::SharedSecret)>,
}

impl Client {
    /// A client of the data plane of `data_dir` (nothing is opened yet).
    pub fn new(data_dir: &Path) -> Client {
        Client {
            paths: Paths::new(data_dir),
            tcp: None,
        }
    }

    /// A client of the data plane whose control channel listens on TCP at `addr`
    /// (`cutover data-plane --control-tcp`), signing with `secret`. Starting and upgrading
    /// ([`ensure_running`], [`upgrade`]) are for local data planes only.
    pub fn tcp(addr: SocketAddr, secret: crate::SharedSecret) -> Client {
        Client {
            paths: Paths::new(Path::new("/nonexistent-remote-data-plane")),
            tcp: Some((addr, secret)),
        }
    }

    /// Where this client sends its requests (`tcp://addr` or the control socket's path).
    pub fn target(&self) -> String {
        match &self.tcp {
            Some((addr, _)) => format!("tcp://{addr}"),
            None => self.paths.socket().display().to_string(),
        }
    }

    /// The data plane's identity, listeners and route count.
    pub async fn hello(&self) -> Result<Hello, Error> {
        self.request(Op::Hello, IO_TIMEOUT).await
    }

    /// Idempotent: a listener of that kind on that addr (or any addr of that kind when addr's
    /// port is 0) is kept and its address returned; otherwise binds `addr` (SO_REUSEADDR), serves
    /// it, and a previous listener of the same kind stops accepting and drains.
    pub async fn listen(&self, kind: ListenerKind, addr: SocketAddr) -> Result<SocketAddr, Error> {
        self.request(Op::Listen { kind, addr }, IO_TIMEOUT).await
    }

    /// The router's metrics in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String, Error> {
        self.request(Op::Metrics, IO_TIMEOUT).await
    }

    /// Replaces the router's forwarding and access-log settings (kept across restarts).
    pub async fn configure(&self, edge: &crate::EdgeConfig) -> Result<(), Error> {
        self.request(Op::Configure { edge: edge.clone() }, IO_TIMEOUT)
            .await
    }

    /// Stops the listener of that kind (it drains); no listener of that kind is not an error.
    pub async fn close(&self, kind: ListenerKind) -> Result<(), Error> {
        self.request(Op::Close { kind }, IO_TIMEOUT).await
    }

    /// Router::switch: returns the switched-out generation's id (None if the route was new).
    pub async fn switch(
        &self,
        app: &str,
        env: &str,
        service: &str,
        version: &str,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Option<u64>, Error> {
        let op = Op::Switch {
            app: app.to_owned(),
            env: env.to_owned(),
            service: service.to_owned(),
            version: version.to_owned(),
            upstreams,
        };
        self.request(op, IO_TIMEOUT).await
    }

    /// Removes the route; returns its last generation's id (None if there was no route).
    pub async fn remove(&self, app: &str, env: &str, service: &str) -> Result<Option<u64>, Error> {
        let op = Op::Remove {
            app: app.to_owned(),
            env: env.to_owned(),
            service: service.to_owned(),
        };
        self.request(op, IO_TIMEOUT).await
    }

    /// Generation::drain of a switched-out generation (kept by id in the data plane until drained
    /// or 10 minutes old); unknown id → Ok(0). May take up to `timeout` (the client's I/O
    /// timeout allows that).
    pub async fn drain(&self, generation: u64, timeout: Duration) -> Result<usize, Error> {
        let op = Op::Drain {
            generation,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.request(op, timeout.saturating_add(IO_TIMEOUT)).await
    }

    /// The route's current generation.
    pub async fn generation(
        &self,
        app: &str,
        env: &str,
        service: &str,
    ) -> Result<Option<GenerationInfo>, Error> {
        let op = Op::Generation {
            app: app.to_owned(),
            env: env.to_owned(),
            service: service.to_owned(),
        };
        self.request(op, IO_TIMEOUT).await
    }

    /// Every route ((app, env, service), sorted) with its current generation.
    pub async fn routes(&self) -> Result<Vec<((String, String, String), GenerationInfo)>, Error> {
        self.request(Op::Routes, IO_TIMEOUT).await
    }

    /// Sets (`Some`) or clears (`None`) an environment's gate; returns the previous one.
    pub async fn set_gate(
        &self,
        app: &str,
        env: &str,
        gate: Option<crate::GateRecord>,
    ) -> Result<Option<crate::GateRecord>, Error> {
        let op = Op::SetGate {
            app: app.to_owned(),
            env: env.to_owned(),
            gate,
        };
        self.request(op, IO_TIMEOUT).await
    }

    /// Replaces an environment's feature flags (the `Cutover-Flags` header; empty: none).
    pub async fn set_flags(
        &self,
        app: &str,
        env: &str,
        flags: std::collections::BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let op = Op::SetFlags {
            app: app.to_owned(),
            env: env.to_owned(),
            flags,
        };
        self.request::<()>(op, IO_TIMEOUT).await
    }

    /// Every environment's flags the data plane has.
    pub async fn flags(&self) -> Result<Vec<crate::FlagsRecord>, Error> {
        self.request(Op::Flags, IO_TIMEOUT).await
    }

    /// Every gate the data plane has.
    pub async fn gates(&self) -> Result<Vec<crate::GateRecord>, Error> {
        self.request(Op::Gates, IO_TIMEOUT).await
    }

    /// `Router::drain_env`: waits (at most `timeout`) until no route of the environment has a
    /// request in flight; returns how many were still running.
    pub async fn drain_env(&self, app: &str, env: &str, timeout: Duration) -> Result<usize, Error> {
        let op = Op::DrainEnv {
            app: app.to_owned(),
            env: env.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.request(op, timeout.saturating_add(IO_TIMEOUT)).await
    }

    /// Stop accepting, drain (bounded), exit; returns when the process answered.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.request(Op::Shutdown, IO_TIMEOUT).await
    }

    async fn request<T: DeserializeOwned>(&self, op: Op, timeout: Duration) -> Result<T, Error> {
        match self.once(&op, timeout).await {
            // Nothing was done: a data plane handing over refused it, or the connection was not
            // even established (e.g. the old data plane's socket closing under a hand-over).
            Err(Error::HandedOver) => {
                tokio::time::sleep(RETRY_AFTER).await;
                self.once(&op, timeout).await
            }
            Err(Error::Io { ref what, .. }) if what == CONNECTING => {
                tokio::time::sleep(RETRY_AFTER).await;
                self.once(&op, timeout).await
            }
            other => other,
        }
    }

    /// Sends `op` on the unix socket; returns the answer line.
    async fn exchange_unix(&self, op: &Op, timeout: Duration) -> Result<Vec<u8>, Error> {
        let socket = self.paths.socket();
        let secret = files::read_secret(&self.paths).map_err(|source| Error::NotRunning {
            socket: socket.clone(),
            source,
        })?;
        let mut line = serde_json::to_vec(&Request { secret: &secret, op }).map_err(|e| Error::Protocol {
            message: format!("cannot encode the request: {e}"),
        })?;
        line.push(b'\n');
        let exchange = async {
            let mut stream = match UnixStream::connect(&socket).await {
                Ok(s) => s,
                Err(source)
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    return Err(Error::NotRunning {
                        socket: socket.clone(),
                        source,
                    });
                }
                Err(e) => return Err(io_err(CONNECTING, &socket)(e)),
            };
            stream
                .write_all(&line)
                .await
                .map_err(io_err("sending a request to the data plane", &socket))?;
            proto::read_line(&mut stream).await.map_err(|e| Error::Protocol {
                message: format!("reading the data plane's answer: {e}"),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timed_out(op, timeout, self.paths.log()))?
    }

    /// Sends `op` signed to a TCP control channel; returns the answer line once its signature
    /// is checked (an unsigned answer is accepted only as a refusal, which changes nothing).
    async fn exchange_tcp(
        &self,
        addr: SocketAddr,
        secret: &crate::SharedSecret,
        op: &Op,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let target = PathBuf::from(format!("tcp://{addr}"));
        let request = serde_json::to_string(op).map_err(|e| Error::Protocol {
            message: format!("cannot encode the request: {e}"),
        })?;
        let (line, nonce) = crate::tcp::seal(secret, request)
            .map_err(io_err("signing a request", Path::new("/dev/urandom")))?;
        let not_running = |source| Error::NotRunning {
            socket: target.clone(),
            source,
        };
        let mut stream = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(not_running(e)),
            Err(_) => {
                return Err(not_running(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TCP connect within {TCP_CONNECT_TIMEOUT:?}"),
                )));
            }
        };
        let exchange = async {
            stream
                .write_all(&line)
                .await
                .map_err(io_err("sending a request to the data plane", &target))?;
            proto::read_line(&mut stream).await.map_err(|e| Error::Protocol {
                message: format!("reading the data plane's answer: {e}"),
            })
        };
        let log = PathBuf::from(format!("the log of the data plane at {addr}"));
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timed_out(op, timeout, log))??;
        if let Some(inner) = crate::tcp::open_answer(secret, &nonce, &answer) {
            return Ok(inner.into_bytes());
        }
        match serde_json::from_slice::<Answer>(&answer) {
            Ok(Answer::Error {
                kind: ErrorKind::Refused | ErrorKind::BadRequest,
                message,
            }) => Err(Error::Refused { message }),
            _ => Err(Error::Protocol {
                message: format!(
                    "the answer of tcp://{addr} is not signed with the shared secret: is another \
                     program listening there?"
                ),
            }),
        }
    }

    async fn once<T: DeserializeOwned>(&self, op: &Op, timeout: Duration) -> Result<T, Error> {
        let answer = match &self.tcp {
            Some((addr, secret)) => self.exchange_tcp(*addr, secret, op, timeout).await?,
            None => self.exchange_unix(op, timeout).await?,
        };
        let answer: Answer = serde_json::from_slice(&answer).map_err(|e| Error::Protocol {
            message: format!("the data plane's answer is not valid: {e}"),
        })?;
        match answer {
            Answer::Ok { value } => serde_json::from_value(value).map_err(|e| Error::Protocol {
                message: format!("unexpected answer shape (a data plane of another version?): {e}"),
            }),
            Answer::Error { kind, message } => Err(match kind {
                ErrorKind::Refused => Error::Refused { message },
                ErrorKind::HandedOver => Error::HandedOver,
                ErrorKind::BadRequest => Error::Protocol { message },
                ErrorKind::Failed => Error::Remote(message),
            }),
        }
    }
}

fn timed_out(op: &Op, timeout: Duration, log: PathBuf) -> Error {
    Error::Timeout {
        what: format!("{op:?}")
            .split_whitespace()
            .next()
            .unwrap_or("request")
            .to_owned(),
        seconds: timeout.as_secs(),
        log,
    }
}

/// Connects; if nothing answers on the socket, spawns `exe data-plane --data-dir D` detached
/// (own process group, stdin /dev/null, stdout/stderr appended to dataplane.log, not killed when
/// the caller exits) and waits up to 10 s for its Hello. bool = spawned by this call.
pub async fn ensure_running(data_dir: &Path, exe: &Path) -> Result<(Client, Hello, bool), Error> {
    let client = Client::new(data_dir);
    match client.hello().await {
        Ok(hello) => return Ok((client, hello, false)),
        Err(Error::NotRunning { .. }) => {}
        Err(e) => return Err(e),
    }
    let mut child = spawn(exe, data_dir, false)?;
    let pid = child.id();
    let hello = wait_for_hello(&client, &mut child, exe, |_| true).await?;
    reap(child);
    let spawned = hello.pid == pid;
    Ok((client, hello, spawned))
}

/// Zero-downtime replacement: spawns `exe data-plane --data-dir D --take-over`; the new process
/// takes the listening sockets and routing table over from the running one (see the `handover`
/// module), which then drains and exits. Returns the new data plane's Hello (different pid,
/// took_over_from = old pid).
pub async fn upgrade(data_dir: &Path, exe: &Path) -> Result<Hello, Error> {
    let client = Client::new(data_dir);
    let old = client.hello().await?;
    let mut child = spawn(exe, data_dir, true)?;
    let pid = child.id();
    let hello = wait_for_hello(&client, &mut child, exe, |h| h.pid == pid).await?;
    reap(child);
    tracing::info!(old = old.pid, new = hello.pid, "data plane upgraded");
    Ok(hello)
}

/// Starts a detached data plane.
// The data plane is Cutover itself (the caller's own executable) with fixed arguments; no user
// value reaches its command line, and cutover-runtime's spawner is for instances.
#[allow(clippy::disallowed_methods)]
fn spawn(exe: &Path, data_dir: &Path, take_over: bool) -> Result<Child, Error> {
    let paths = Paths::new(data_dir);
    files::ensure_dir(&paths)?;
    let log_path = paths.log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(io_err("opening the data-plane log", &log_path))?;
    let err_log = log
        .try_clone()
        .map_err(io_err("opening the data-plane log", &log_path))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("data-plane").arg("--data-dir").arg(data_dir);
    if take_over {
        cmd.arg("--take-over");
    }
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0);
    cmd.spawn().map_err(|source| Error::Spawn {
        exe: exe.to_owned(),
        detail: "the executable could not be started".to_owned(),
        source: Some(source),
    })
}

/// Reaps the data plane if it exits while this process lives (no zombie).
fn reap(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("dataplane-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start a thread to reap the data plane");
    }
}

async fn wait_for_hello(
    client: &Client,
    child: &mut Child,
    exe: &Path,
    ready: impl Fn(&Hello) -> bool,
) -> Result<Hello, Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(hello) = client.once::<Hello>(&Op::Hello, Duration::from_secs(2)).await
            && ready(&hello)
        {
            return Ok(hello);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // It may have lost a race to another data plane that now answers.
            if let Ok(hello) = client.hello().await
                && ready(&hello)
            {
                return Ok(hello);
            }
            return Err(Error::Spawn {
                exe: exe.to_owned(),
                detail: format!(
                    "it exited ({status}) before answering; the end of {}:\n{}",
                    client.paths.log().display(),
                    log_tail(&client.paths.log())
                ),
                source: None,
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout {
                what: "a new data plane's first hello; it was stopped".to_owned(),
                seconds: START_TIMEOUT.as_secs(),
                log: client.paths.log(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last 2 KiB of the log (for error messages).
fn log_tail(path: &PathBuf) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    text
}

//! The data-plane process: listeners, routing table, control socket, and how it stops.
//!
//! One tokio task per listening socket runs `Router::serve` (or `serve_fixed`); a listener is
//! stopped by dropping the sender of its shutdown signal, after which the router stops accepting
//! and drains that socket's connections. Beside each served socket the state keeps a duplicate
//! of its file descriptor, which is what a hand-over sends to the successor; it is dropped the
//! moment the listener is closed so that a closed port refuses connections instead of queueing
//! them in a backlog nobody accepts from.
//!
//! Mutations (listen, close, switch, remove) run under one async mutex that also covers the
//! write of `routes.json`, so the file always matches the table in the order of the requests.
//! Once a hand-over started, mutations are refused with a `handed_over` error (the successor got
//! a snapshot; a change after it would be lost) and the client retries them on the successor.
//!
//! Generations switched out are kept by id for `drain` until drained or 10 minutes old; ids of an
//! earlier epoch belong to the predecessor of a hand-over, whose in-flight requests only end when
//! it exits, so draining such an id waits for it to be gone.
//!
//! Rejected: stopping listeners by aborting their tasks (that cuts in-flight requests; the
//! router's own graceful shutdown drains them) and persisting only the routes (a data plane
//! restarted after a crash must also listen at once, before any control plane is back).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cutover_router::{Backend, Generation, Listening, RouteKey, Router, RouterConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::files::{self, ListenerRecord, Paths, RouteRecord, Table, io_err};
use crate::proto::{self, Answer, ErrorKind, Op};
use crate::{Error, GenerationInfo, Hello, ListenerInfo, ListenerKind, Options, handover};

mod ops;
mod tcp;
use ops::dispatch;

/// How long a switched-out generation is kept for `drain`.
const RETIRED_TTL: Duration = Duration::from_secs(600);
/// How long a data plane starting after a crash retries binding a persisted address that is
/// still in use (its predecessor may still be closing it).
const REBIND_PATIENCE: Duration = Duration::from_secs(3);

/// A served listening socket.
pub(crate) struct Live {
    pub(crate) addr: SocketAddr,
    /// A duplicate of the served socket, for a hand-over.
    pub(crate) socket: std::net::TcpListener,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) listeners: HashMap<ListenerKind, Live>,
    retired: HashMap<u64, (Generation, Instant)>,
    /// Serve tasks of replaced listeners, still draining.
    draining: Vec<JoinHandle<()>>,
    /// The router's forwarding and access-log settings, as last configured.
    pub(crate) edge: crate::EdgeConfig,
}

pub(crate) struct Shared {
    pub(crate) paths: Paths,
    pub(crate) secret: String,
    uid: u32,
    pub(crate) router: Router,
    pub(crate) epoch: u32,
    started_at_ms: u64,
    took_over_from: Option<u32>,
    pub(crate) state: Mutex<State>,
    pub(crate) stop: watch::Sender<bool>,
    /// Set while a successor holds a snapshot: mutations are refused.
    pub(crate) handing_over: AtomicBool,
    /// Set once the successor serves: the files belong to it.
    pub(crate) handed_over: AtomicBool,
    /// True once the predecessor of a hand-over has exited (true at once without one).
    predecessor_gone: watch::Receiver<bool>,
    /// The hand-over connection to the successor, closed when this process is done.
    pub(crate) successor: std::sync::Mutex<Option<std::os::unix::net::UnixStream>>,
}

impl Shared {
    fn public_id(&self, router_id: u64) -> u64 {
        (u64::from(self.epoch) << 32) | (router_id & 0xffff_ffff)
    }

    fn info(&self, g: &Generation) -> GenerationInfo {
        GenerationInfo {
            id: self.public_id(g.id()),
            version: g.backend().version.clone(),
            upstreams: g.backend().upstreams.clone(),
            in_flight: g.in_flight(),
            admitted: g.admitted(),
        }
    }

    pub(crate) fn route_records(&self) -> Vec<RouteRecord> {
        self.router
            .routes()
            .into_iter()
            .map(|(k, b)| RouteRecord {
                app: k.app().to_owned(),
                env: k.env().to_owned(),
                service: k.service().to_owned(),
                version: b.version,
                upstreams: b.upstreams,
            })
            .collect()
    }

    fn persist(&self, state: &State) {
        let table = Table {
            epoch: self.epoch,
            listeners: state
                .listeners
                .iter()
                .map(|(kind, l)| ListenerRecord {
                    kind: kind.clone(),
                    addr: l.addr,
                })
                .collect(),
            routes: self.route_records(),
            gates: crate::gates::records(&self.router),
            flags: crate::gates::flag_records(&self.router),
            edge: state.edge.clone(),
        };
        if let Err(e) = files::save_table(&self.paths, &table) {
            tracing::warn!(error = %e, "cannot persist the routing table; a restarted data plane would start from an older one");
        }
    }
}

/// Applies persisted settings at start; a failure (an access log that cannot be opened any
/// more) is logged and leaves that part off rather than keeping the data plane from routing.
fn apply_edge(router: &Router, edge: &crate::EdgeConfig) {
    let result = edge.to_settings().and_then(|s| {
        router.set_edge(s.clone()).map_err(|e| {
            let _ = router.set_edge(cutover_router::EdgeSettings {
                access_log: None,
                ..s
            });
            display_chain(&e)
        })
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot apply the persisted router settings; the control plane will push them again");
    }
}

/// An error with its sources, for an answer line.
fn display_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn route_key(app: &str, env: &str, service: &str) -> Result<RouteKey, Answer> {
    RouteKey::new(app, env, service).map_err(|e| Answer::error(ErrorKind::BadRequest, e.to_string()))
}

fn fixed_key(kind: &ListenerKind) -> Result<Option<RouteKey>, Answer> {
    match kind {
        ListenerKind::Main | ListenerKind::Tls => Ok(None),
        ListenerKind::Fixed { app, env, service } => route_key(app, env, service).map(Some),
    }
}

/// Binds `addr` with `SO_REUSEADDR` (a port in `TIME_WAIT` after a predecessor is reusable).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// How many threads serve the main and TLS listeners: `CUTOVER_ROUTER_THREADS`, else one per
/// CPU this process may use (see `cutover_router::Router::serve_threads`).
fn router_threads() -> usize {
    std::env::var("CUTOVER_ROUTER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or_else(cutover_router::default_threads)
}

/// Serves `socket` (keeping a duplicate of it): the main and TLS listeners, where the public
/// traffic arrives, on threads of their own with a current-thread runtime each; a fixed port
/// (one per route, there may be hundreds) on a task of this runtime.
pub(crate) fn start_listener(
    router: &Router,
    kind: &ListenerKind,
    key: Option<RouteKey>,
    socket: std::net::TcpListener,
) -> std::io::Result<Live> {
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    let dup = socket.try_clone()?;
    let (stop, mut stopped) = watch::channel(false);
    let router = router.clone();
    let tls = *kind == ListenerKind::Tls;
    let task = match key {
        Some(key) => {
            let listener = TcpListener::from_std(socket)?;
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_fixed(key, listener, shutdown).await {
                    tracing::warn!(%addr, error = %e, "listener stopped with an error");
                }
            })
        }
        None => {
            let listening = if tls { Listening::Tls } else { Listening::ByHost };
            let threads = router_threads();
            tokio::spawn(async move {
                if let Err(e) = router.serve_threads(listening, socket, threads, stopped).await {
                    tracing::warn!(%addr, error = %e, "listener stopped with an error");
                }
            })
        }
    };
    tracing::info!(?kind, %addr, "listening");
    Ok(Live {
        addr,
        socket: dup,
        stop,
        task,
    })
}

impl Live {
    /// Stops accepting (closing this process's descriptors of the socket); returns the task,
    /// which ends once the socket's connections are drained.
    fn stop(self) -> JoinHandle<()> {
        drop(self.socket);
        let _ = self.stop.send(true);
        self.task
    }
}

/// Refuses to start when a data plane answers on the control socket; removes a stale one.
async fn refuse_if_running(paths: &Paths) -> Result<(), Error> {
    let socket = paths.socket();
    match UnixStream::connect(&socket).await {
        Ok(_) => Err(Error::AlreadyRunning {
            pid: files::read_pid(paths).unwrap_or(0),
            socket,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            tracing::info!(socket = %socket.display(), "removing the control socket of a data plane that is gone");
            match std::fs::remove_file(&socket) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("removing a stale control socket", &socket)(e)),
            }
        }
    }
}

/// Binds the control socket on a temporary path, makes it 0600, and renames it over
/// `control.sock` (atomic for clients: they reach either the old or the new data plane).
pub(crate) fn bind_control(paths: &Paths) -> Result<(UnixListener, u64), Error> {
    let socket = paths.socket();
    let tmp = paths.dir.join(format!(
        ".control.{}.{}.sock",
        std::process::id(),
        now_ms() % 1_000_000
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err("binding the control socket", &tmp))?;
    let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("making the control socket 0600", &tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, &socket).map_err(io_err("moving the control socket in place", &socket))
        });
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let ino = std::fs::metadata(&socket).map(|m| m.ino()).unwrap_or(0);
    Ok((listener, ino))
}

/// Binds a persisted address, retrying for a while if it is still in use.
async fn rebind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match bind_tcp(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The process main of `cutover data-plane`: serves until a Shutdown request, SIGTERM/SIGINT
/// (both: stop accepting, drain in flight up to the router's shutdown_grace, exit), or a
/// completed hand-over to a newer data plane (then drains and exits the same way).
pub async fn run(opts: Options) -> Result<(), Error> {
    let paths = Paths::new(&opts.data_dir);
    files::ensure_dir(&paths)?;
    let secret = files::secret_or_create(&paths)?;
    let router = Router::new(RouterConfig::default());
    let start_lock = files::start_lock(&paths).await?;

    let mut received = None;
    let table = if opts.take_over {
        let r = handover::receive(&paths, &secret).await?;
        let table = Table {
            epoch: r.offer.epoch,
            listeners: r.offer.listeners.clone(),
            routes: r.offer.routes.clone(),
            gates: r.offer.gates.clone(),
            flags: r.offer.flags.clone(),
            // Not part of the hand-over offer: the predecessor's routes.json has it.
            edge: files::load_table(&paths).edge,
        };
        received = Some(r);
        table
    } else {
        refuse_if_running(&paths).await?;
        files::load_table(&paths)
    };
    let epoch = table.epoch.wrapping_add(1).max(1);
    for r in &table.routes {
        match RouteKey::new(&r.app, &r.env, &r.service) {
            Ok(key) => {
                router.switch(&key, Backend::new(r.version.clone(), r.upstreams.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "skipping an invalid route of the persisted table"),
        }
    }
    crate::gates::restore(&router, &table.gates);
    crate::gates::restore_flags(&router, &table.flags);

    // Before the listeners: a TLS listener needs its certificates.
    apply_edge(&router, &table.edge);
    let (gone_tx, predecessor_gone) = watch::channel(received.is_none());
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        paths: paths.clone(),
        secret,
        uid: rustix::process::getuid().as_raw(),
        router: router.clone(),
        epoch,
        started_at_ms: now_ms(),
        took_over_from: received.as_ref().map(|r| r.offer.pid),
        state: Mutex::new(State::default()),
        stop,
        handing_over: AtomicBool::new(false),
        handed_over: AtomicBool::new(false),
        predecessor_gone,
        successor: std::sync::Mutex::new(None),
    });

    {
        let mut state = shared.state.lock().await;
        match &mut received {
            Some(r) => {
                for (rec, fd) in r.offer.listeners.iter().zip(std::mem::take(&mut r.fds)) {
                    let key = fixed_key(&rec.kind).ok().flatten();
                    let live = start_listener(&router, &rec.kind, key, std::net::TcpListener::from(fd))
                        .map_err(|source| Error::Bind {
                            addr: rec.addr,
                            source,
                        })?;
                    state.listeners.insert(rec.kind.clone(), live);
                }
            }
            None => {
                for rec in &table.listeners {
                    let Ok(key) = fixed_key(&rec.kind) else {
                        tracing::warn!(kind = ?rec.kind, "skipping a persisted listener with an invalid route");
                        continue;
                    };
                    let live = match rebind(rec.addr).await {
                        Ok(socket) => start_listener(&router, &rec.kind, key, socket),
                        Err(e) => Err(e),
                    };
                    match live {
                        Ok(live) => {
                            state.listeners.insert(rec.kind.clone(), live);
                        }
                        Err(e) => tracing::warn!(kind = ?rec.kind, addr = %rec.addr, error = %e,
                            "cannot listen on a persisted address; the control plane will ask again"),
                    }
                }
            }
        }
        state.edge = table.edge.clone();
        shared.persist(&state);
    }

    let (control, control_ino) = bind_control(&paths)?;
    // Past the rename this process owns control.sock: a missing pid file is not worth failing
    // for (it is informational; `hello` gives the pid).
    if let Err(e) = files::write_pid(&paths) {
        tracing::warn!(error = %e, "cannot write the pid file");
    }
    if let Some(r) = received.take() {
        // Past this point this process owns control.sock: it keeps serving whatever the old
        // one answers.
        match handover::commit(r.conn).await {
            Ok(conn) => {
                tracing::info!(from = r.offer.pid, "took the listeners and routes over");
                handover::watch_predecessor(conn, gone_tx);
            }
            Err(e) => {
                tracing::error!(from = r.offer.pid, error = %e, "hand-over not confirmed; serving anyway");
                let _ = gone_tx.send(true);
            }
        }
    } else {
        drop(gone_tx);
    }
    drop(start_lock);
    tracing::info!(
        pid = std::process::id(),
        routes = router.routes().len(),
        socket = %paths.socket().display(),
        "data plane serving"
    );

    let tcp_control = opts.control_tcp.map(|c| tcp::spawn(&shared, c));
    let served = serve_control(&shared, control).await;
    if let Some(task) = tcp_control {
        task.abort(); // stops accepting; requests being answered finish on their own tasks
    }
    served?;
    finish(&shared, control_ino).await;
    Ok(())
}

/// Accepts control connections until asked to stop.
async fn serve_control(shared: &Arc<Shared>, control: UnixListener) -> Result<(), Error> {
    let sig = |kind| signal(kind).map_err(io_err("installing a signal handler", Path::new("-")));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut stop = shared.stop.subscribe();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = control.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(handle_conn(Arc::clone(shared), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(control);
    // Let answers in progress (a shutdown's, a drain's) be written, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Stops every listener, waits for their connections (bounded by the router's grace), and
/// removes the files that are still this process's.
async fn finish(shared: &Arc<Shared>, control_ino: u64) {
    let handed_over = shared.handed_over.load(Ordering::SeqCst);
    if !handed_over {
        let socket = shared.paths.socket();
        if std::fs::metadata(&socket).is_ok_and(|m| m.ino() == control_ino) {
            let _ = std::fs::remove_file(&socket);
        }
        if files::read_pid(&shared.paths) == Some(std::process::id()) {
            let _ = std::fs::remove_file(shared.paths.pid());
        }
    }
    let tasks: Vec<JoinHandle<()>> = {
        let mut state = shared.state.lock().await;
        let mut tasks: Vec<_> = state.listeners.drain().map(|(_, l)| l.stop()).collect();
        tasks.append(&mut state.draining);
        tasks
    };
    let grace = shared.router.config().shutdown_grace + Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, futures_join(tasks)).await;
    let successor = shared
        .successor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    drop(successor);
    tracing::info!(handed_over, "data plane stopped");
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn write_answer(stream: &mut UnixStream, answer: &Answer) {
    let _ = stream.write_all(&answer.line()).await;
    let _ = stream.flush().await;
}

async fn handle_conn(shared: Arc<Shared>, mut stream: UnixStream) {
    let peer = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a control connection's peer credentials; closing it");
            return;
        }
    };
    if peer.uid.as_raw() != shared.uid {
        tracing::warn!(
            peer_uid = peer.uid.as_raw(),
            peer_pid = peer.pid.as_raw_nonzero().get(),
            "refused a control connection from another user"
        );
        write_answer(
            &mut stream,
            &Answer::error(
                ErrorKind::Refused,
                "the data plane only takes requests from its own user",
            ),
        )
        .await;
        return;
    }
    let line = match tokio::time::timeout(proto::READ_TIMEOUT, proto::read_line(&mut stream)).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            write_answer(
                &mut stream,
                &Answer::error(ErrorKind::BadRequest, format!("bad request line: {e}")),
            )
            .await;
            return;
        }
        Err(_) => {
            write_answer(
                &mut stream,
                &Answer::error(ErrorKind::BadRequest, "no complete request line within 10 s"),
            )
            .await;
            return;
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&line) {
        Ok(v) => v,
        Err(e) => {
            write_answer(
                &mut stream,
                &Answer::error(ErrorKind::BadRequest, format!("the request is not JSON: {e}")),
            )
            .await;
            return;
        }
    };
    let given = value.get("secret").and_then(|s| s.as_str()).unwrap_or("");
    if !proto::secret_matches(given, &shared.secret) {
        tracing::warn!(
            peer_pid = peer.pid.as_raw_nonzero().get(),
            "refused a control request with a wrong or missing secret"
        );
        write_answer(
            &mut stream,
            &Answer::error(
                ErrorKind::Refused,
                "wrong secret: read it from <data-dir>/dataplane/secret",
            ),
        )
        .await;
        return;
    }
    let op: Op = match serde_json::from_value(value) {
        Ok(op) => op,
        Err(e) => {
            write_answer(
                &mut stream,
                &Answer::error(ErrorKind::BadRequest, format!("unknown or malformed op: {e}")),
            )
            .await;
            return;
        }
    };
    match op {
        Op::HandOver => handover::give(shared, stream).await,
        Op::Shutdown => {
            tracing::info!(peer_pid = peer.pid.as_raw_nonzero().get(), "shutdown requested");
            write_answer(&mut stream, &Answer::ok(())).await;
            let _ = shared.stop.send(true);
        }
        op => {
            let answer = dispatch(&shared, op).await;
            write_answer(&mut stream, &answer).await;
        }
    }
}

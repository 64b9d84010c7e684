//! The data plane as `cutover serve` sees it: started or found at start, watched while
//! serving, replaced on demand, and left running (or stopped on purpose) at exit.
//!
//! - `--data-plane process` (the default): the router runs in `cutover data-plane`, a process
//!   of its own (crate `cutover-dataplane`) found through `<data-dir>/dataplane/control.sock`
//!   or started detached when none answers. A restart, crash or upgrade of `cutover serve`
//!   therefore never closes a listening socket. A watcher asks it every second whether it is
//!   alive; when it is not, a new one is started and every route this control plane serves is
//!   pushed to it again (the instances never depended on it).
//! - `--data-plane embedded`: the router inside this process, as before the split: it stops
//!   with the server. For the benchmark's comparison and for throw-away servers.
//!
//! At exit, SIGTERM/SIGINT *detach* (runs are cancelled, instances and the data plane keep
//! serving for the next server to adopt) unless the server was started with `--stop-on-exit`
//! or was asked to stop everything (`cutover stop --all`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cutover_core::config::Config;
use cutover_dataplane::{Client, ListenerKind};
use cutover_engine::{DataPlane, Engine};
use cutover_router::{RouteKey, Router, RouterConfig};
use tokio::net::TcpListener;

use crate::StartError;

/// Where the router runs (`cutover serve --data-plane`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPlaneMode {
    /// `cutover data-plane`, a process of its own that outlives this server.
    #[default]
    Process,
    /// Inside this server; stops with it.
    Embedded,
}

/// What `serve` holds of its data plane between start and exit.
pub(crate) enum Plane {
    Embedded {
        router: Router,
        main: TcpListener,
        fixed: Vec<(RouteKey, TcpListener)>,
    },
    Remote {
        client: Client,
        /// Started by this server's start (not found running).
        spawned: bool,
        data_dir: PathBuf,
        /// Where the main listener and the fixed ports are, to ask a replacement for the same.
        listeners: Vec<(ListenerKind, SocketAddr)>,
    },
}

/// How often the watcher asks the data plane whether it is alive.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The `cutover` binary to start data planes with: this process's own file, also when it was
/// replaced on disk by a newer build since (Linux then names the running one `… (deleted)`;
/// the path now holds the new binary, which is what an upgrade wants).
pub fn own_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

fn listen_error(addr: SocketAddr, what: String, fix: String, e: impl std::fmt::Display) -> StartError {
    StartError::Listen {
        addr,
        what,
        fix,
        source: std::io::Error::other(e.to_string()),
    }
}

/// The listeners a configuration asks for: the router, then each environment's fixed ports.
fn wanted_listeners(
    config: &Config,
    router_addr: SocketAddr,
) -> Vec<(ListenerKind, SocketAddr, String, String)> {
    let mut out = vec![(
        ListenerKind::Main,
        router_addr,
        "the router".to_owned(),
        "--router-listen or router.port in cutover.yml".to_owned(),
    )];
    for (env, e) in &config.environments {
        for (service, port) in &e.ports {
            out.push((
                ListenerKind::Fixed {
                    app: config.app.to_string(),
                    env: env.to_string(),
                    service: service.to_string(),
                },
                SocketAddr::from(([127, 0, 0, 1], *port)),
                format!("the fixed port of {env}/{service}"),
                format!("environments.{env}.ports.{service} in cutover.yml"),
            ));
        }
    }
    out
}

impl Plane {
    /// Binds (embedded) or finds/starts the data plane and has it listen; returns the plane,
    /// the engine's handle on it and the router's port.
    pub(crate) async fn start(
        mode: DataPlaneMode,
        config: &Config,
        data_dir: &Path,
        router_addr: SocketAddr,
    ) -> Result<(Plane, DataPlane, u16), StartError> {
        let wanted = wanted_listeners(config, router_addr);
        match mode {
            DataPlaneMode::Embedded => {
                let router = Router::new(RouterConfig::default());
                let mut main = None;
                let mut fixed = Vec::new();
                for (kind, addr, what, fix) in wanted {
                    let listener = TcpListener::bind(addr)
                        .await
                        .map_err(|source| StartError::Listen {
                            addr,
                            what,
                            fix,
                            source,
                        })?;
                    match kind {
                        ListenerKind::Main => main = Some(listener),
                        ListenerKind::Fixed { app, env, service } => {
                            let route = RouteKey::new(&app, &env, &service)
                                .map_err(|e| StartError::Runtime(e.to_string()))?;
                            fixed.push((route, listener));
                        }
                    }
                }
                let main = main.expect("the main listener is always wanted");
                let port = main.local_addr().map(|a| a.port()).unwrap_or_default();
                let handle = DataPlane::Embedded(router.clone());
                Ok((Plane::Embedded { router, main, fixed }, handle, port))
            }
            DataPlaneMode::Process => {
                let exe = own_binary().map_err(|e| {
                    StartError::Runtime(format!(
                        "cannot locate the cutover binary to start the data plane: {e}"
                    ))
                })?;
                let (client, hello, spawned) = cutover_dataplane::ensure_running(data_dir, &exe)
                    .await
                    .map_err(|e| StartError::Runtime(format!("cannot reach or start the data plane: {e}")))?;
                if spawned {
                    tracing::info!(pid = hello.pid, "data plane started");
                } else {
                    tracing::info!(
                        pid = hello.pid,
                        routes = hello.routes,
                        "data plane found running; its routes keep serving"
                    );
                }
                let mut listeners = Vec::new();
                let mut port = 0;
                for (kind, addr, what, fix) in wanted {
                    let bound = match client.listen(kind.clone(), addr).await {
                        Ok(bound) => bound,
                        Err(e) => {
                            if spawned {
                                let _ = client.shutdown().await;
                            }
                            return Err(listen_error(addr, what, fix, e));
                        }
                    };
                    if kind == ListenerKind::Main {
                        port = bound.port();
                    }
                    listeners.push((kind, bound));
                }
                let mirrors = mirrors_from_env().await?;
                let handle = DataPlane::Remote(client.clone(), mirrors);
                Ok((
                    Plane::Remote {
                        client,
                        spawned,
                        data_dir: data_dir.to_owned(),
                        listeners,
                    },
                    handle,
                    port,
                ))
            }
        }
    }

    /// The server failed to start after this: a data plane it spawned goes too (one it found
    /// running keeps serving).
    pub(crate) async fn abandon(self) {
        if let Plane::Remote {
            client,
            spawned: true,
            ..
        } = self
            && let Err(e) = client.shutdown().await
        {
            tracing::warn!(error = %e, "could not stop the data plane this start spawned");
        }
    }

    /// Serves the embedded router's listeners, or watches the data plane process, until `stop`
    /// turns true.
    pub(crate) fn run(self, engine: &Engine, stop: tokio::sync::watch::Receiver<bool>) -> Running {
        match self {
            Plane::Embedded { router, main, fixed } => {
                let mut tasks = Vec::new();
                let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                let r = router.clone();
                let s = stopped(stop.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = r.serve(main, s).await {
                        tracing::error!(error = %e, "router stopped with an error");
                    }
                }));
                for (route, listener) in fixed {
                    let r = router.clone();
                    let s = stopped(stop.clone());
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = r.serve_fixed(route, listener, s).await {
                            tracing::error!(error = %e, "a fixed-port router listener stopped");
                        }
                    }));
                }
                Running { tasks, client: None }
            }
            Plane::Remote {
                client,
                data_dir,
                listeners,
                ..
            } => {
                let engine = engine.clone();
                let c = client.clone();
                let task = tokio::spawn(watch(engine, c, data_dir, listeners, stop));
                Running {
                    tasks: vec![task],
                    client: Some(client),
                }
            }
        }
    }
}

/// The data plane while the server runs.
pub(crate) struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: Option<Client>,
}

impl Running {
    /// After the API stopped: waits for the embedded router to drain, or, when `stop_all`,
    /// tells the data plane process to drain and exit; otherwise leaves it serving.
    pub(crate) async fn finish(self, stop_all: bool) {
        for task in self.tasks {
            let _ = task.await;
        }
        match (self.client, stop_all) {
            (Some(client), true) => match client.shutdown().await {
                Ok(()) => tracing::info!("data plane stopped"),
                Err(e) => tracing::error!(error = %e, "could not stop the data plane"),
            },
            (Some(_), false) => tracing::info!("data plane left serving for the next server"),
            (None, _) => {}
        }
    }
}

/// Every [`WATCH_EVERY`]: is the data plane alive? When it is not, start a new one, have it
/// listen where the old one did and push every route again. Reports the outage.
async fn watch(
    engine: Engine,
    client: Client,
    data_dir: PathBuf,
    listeners: Vec<(ListenerKind, SocketAddr)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let health = engine.data_plane_health();
    let mut known_pid = None;
    loop {
        match client.hello().await {
            Ok(hello) => {
                health.up.store(true, Ordering::Relaxed);
                health.pid.store(hello.pid, Ordering::Relaxed);
                if known_pid.is_some_and(|p| p != hello.pid) {
                    tracing::info!(
                        from = known_pid.unwrap_or_default(),
                        to = hello.pid,
                        "data plane replaced (upgrade)"
                    );
                }
                known_pid = Some(hello.pid);
            }
            Err(e) if !*stop.borrow() => {
                health.up.store(false, Ordering::Relaxed);
                let since = Instant::now();
                tracing::error!(
                    pid = known_pid.unwrap_or_default(),
                    error = %e,
                    "the data plane does not answer: public traffic is not being routed; starting a new one"
                );
                match restart(&engine, &data_dir, &listeners).await {
                    Ok((pid, routes)) => {
                        health.restarts.fetch_add(1, Ordering::Relaxed);
                        health.up.store(true, Ordering::Relaxed);
                        health.pid.store(pid, Ordering::Relaxed);
                        known_pid = Some(pid);
                        tracing::warn!(
                            pid,
                            routes,
                            outage_ms = since.elapsed().as_millis() as u64,
                            "data plane restarted and its routes restored"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not restart the data plane; trying again in a second")
                    }
                }
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

async fn restart(
    engine: &Engine,
    data_dir: &Path,
    listeners: &[(ListenerKind, SocketAddr)],
) -> Result<(u32, usize), String> {
    let exe = own_binary().map_err(|e| e.to_string())?;
    let (client, hello, _) = cutover_dataplane::ensure_running(data_dir, &exe)
        .await
        .map_err(|e| e.to_string())?;
    for (kind, addr) in listeners {
        client
            .listen(kind.clone(), *addr)
            .await
            .map_err(|e| format!("the new data plane cannot listen on {addr}: {e}"))?;
    }
    Ok((hello.pid, engine.restore_routes().await))
}

/// Replaces the data plane with a new process of the binary at this server's path, without
/// dropping a connection; returns the new one's pid.
pub(crate) async fn upgrade(data_dir: &Path) -> Result<cutover_dataplane::Hello, String> {
    let exe = own_binary().map_err(|e| e.to_string())?;
    cutover_dataplane::upgrade(data_dir, &exe)
        .await
        .map_err(|e| e.to_string())
}

/// The mirror data planes of `CUTOVER_DATA_PLANE_MIRRORS` (`<data dir>=<listen addr>`, comma
/// separated): each one's control socket is `<data dir>/dataplane/control.sock` (a data plane the
/// operator started there, e.g. in another network namespace or on a shared mount), and it is
/// told to listen for the router's traffic on `<listen addr>`. See
/// [`Mirrors`](cutover_engine::dataplane::Mirrors).
async fn mirrors_from_env() -> Result<cutover_engine::dataplane::Mirrors, StartError> {
    let raw = std::env::var("CUTOVER_DATA_PLANE_MIRRORS").unwrap_or_default();
    let mut clients = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: String| {
            StartError::Runtime(format!(
                "CUTOVER_DATA_PLANE_MIRRORS: {item:?} {why}; write <data dir>=<listen addr>, e.g. \
                 /srv/router2=10.0.0.2:7080"
            ))
        };
        let (dir, addr) = item
            .rsplit_once('=')
            .ok_or_else(|| bad("has no listen address".to_owned()))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| bad(format!("has a listen address that is not ip:port ({e})")))?;
        let client = cutover_dataplane::Client::new(Path::new(dir));
        client.hello().await.map_err(|e| {
            bad(format!(
                "names no running data plane ({e}); start one there first"
            ))
        })?;
        client
            .listen(ListenerKind::Main, addr)
            .await
            .map_err(|e| bad(format!("could not listen on {addr} ({e})")))?;
        tracing::info!(data_dir = dir, %addr, "mirror data plane fed the routing table");
        clients.push(client);
    }
    Ok(cutover_engine::dataplane::Mirrors(std::sync::Arc::new(clients)))
}

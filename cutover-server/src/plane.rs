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
        /// `router.tls`'s listener.
        tls: Option<TcpListener>,
    },
    Remote {
        client: Client,
        /// Started by this server's start (not found running).
        spawned: bool,
        data_dir: PathBuf,
        /// Where the main listener and the fixed ports are, to ask a replacement for the same.
        listeners: Vec<(ListenerKind, SocketAddr)>,
        /// The router settings, pushed again to a replacement (boxed: the largest field).
        edge: Box<cutover_dataplane::EdgeConfig>,
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

/// The router's forwarding and access-log settings from `router.*` of cutover.yml; ACME's
/// account and certificates go to `<data-dir>/acme`.
pub(crate) fn edge_config(config: &Config, data_dir: &Path) -> cutover_dataplane::EdgeConfig {
    use cutover_core::config::AccessLogTarget;
    cutover_dataplane::EdgeConfig {
        trusted_proxies: config.router.trusted_proxies.clone(),
        access_log: config
            .router
            .access_log
            .as_ref()
            .map(|log| cutover_dataplane::AccessLogConfig {
                path: match &log.target {
                    AccessLogTarget::Stdout => None,
                    AccessLogTarget::File(path) => Some(path.clone()),
                },
                max_size: log.max_size,
                keep: log.keep as usize,
            }),
        hosts: config
            .environments
            .iter()
            // An integration template's hosts are `{branch}` patterns: the engine pushes each
            // environment made from it (`Engine::set_edge_base`).
            .filter(|(_, e)| e.tier != cutover_core::config::Tier::Integration)
            .flat_map(|(env, e)| {
                e.hosts.iter().flat_map(move |(service, names)| {
                    names.iter().map(move |host| cutover_dataplane::HostRoute {
                        host: host.clone(),
                        app: config.app.to_string(),
                        env: env.to_string(),
                        service: service.to_string(),
                    })
                })
            })
            .collect(),
        tls: config.router.tls.as_ref().map(|t| cutover_dataplane::TlsConfig {
            certificates: t
                .certificates
                .iter()
                .map(|c| cutover_dataplane::CertConfig {
                    hosts: c.hosts.clone(),
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                })
                .collect(),
            hsts: t.hsts.then(|| "max-age=31536000".to_owned()),
            redirect_hosts: t
                .certificates
                .iter()
                .filter(|c| c.redirect)
                .flat_map(|c| c.hosts.iter().cloned())
                .chain(
                    t.acme
                        .iter()
                        .filter(|a| a.redirect)
                        .flat_map(|a| a.hosts.iter().cloned()),
                )
                .collect(),
            https_port: t.port,
            acme: t.acme.as_ref().map(|a| cutover_dataplane::AcmeConfig {
                directory: a.directory.clone(),
                contact: a.contact.clone(),
                ca_file: a.ca_file.clone(),
                hosts: a.hosts.clone(),
                dir: data_dir.join("acme"),
            }),
        }),
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
    if let Some(tls) = &config.router.tls {
        out.push((
            ListenerKind::Tls,
            SocketAddr::from(([127, 0, 0, 1], tls.port)),
            "the router's HTTPS port".to_owned(),
            "router.tls.port in cutover.yml".to_owned(),
        ));
    }
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
        let edge = edge_config(config, data_dir);
        match mode {
            DataPlaneMode::Embedded => {
                let router = Router::new(RouterConfig::default());
                let settings = edge.to_settings().map_err(StartError::Runtime)?;
                router
                    .set_edge(settings)
                    .map_err(|e| StartError::Runtime(format!("router.access_log in cutover.yml: {e}")))?;
                let mut main = None;
                let mut fixed = Vec::new();
                let mut tls = None;
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
                        ListenerKind::Tls => tls = Some(listener),
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
                Ok((
                    Plane::Embedded {
                        router,
                        main,
                        fixed,
                        tls,
                    },
                    handle,
                    port,
                ))
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
                // Before the listeners: the TLS one needs its certificates.
                if let Err(e) = client.configure(&edge).await {
                    if spawned {
                        let _ = client.shutdown().await;
                    }
                    return Err(StartError::Runtime(format!(
                        "the data plane refused the router settings of cutover.yml (router.*, environments.*.hosts): {e}"
                    )));
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
                let mirrors = mirrors_from_env(&client, &edge).await?;
                let handle = DataPlane::Remote(client.clone(), mirrors);
                Ok((
                    Plane::Remote {
                        client,
                        spawned,
                        data_dir: data_dir.to_owned(),
                        listeners,
                        edge: Box::new(edge),
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
            Plane::Embedded {
                router,
                main,
                fixed,
                tls,
            } => {
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
                if let Some(listener) = tls {
                    let r = router.clone();
                    let s = stopped(stop.clone());
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = r.serve_tls_configured(listener, s).await {
                            tracing::error!(error = %e, "the router's TLS listener stopped with an error");
                        }
                    }));
                }
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
                edge,
                ..
            } => {
                let mut tasks = Vec::new();
                if let DataPlane::Remote(_, mirrors) = engine.data_plane()
                    && !mirrors.is_empty()
                {
                    let watched = watch_mirrors(mirrors.clone(), client.clone(), stop.clone());
                    tasks.push(tokio::spawn(watched));
                }
                let engine = engine.clone();
                let c = client.clone();
                tasks.push(tokio::spawn(watch(engine, c, data_dir, listeners, *edge, stop)));
                Running {
                    tasks,
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
    edge: cutover_dataplane::EdgeConfig,
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
                match restart(&engine, &data_dir, &listeners, &edge).await {
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
    edge: &cutover_dataplane::EdgeConfig,
) -> Result<(u32, usize), String> {
    let exe = own_binary().map_err(|e| e.to_string())?;
    let (client, hello, _) = cutover_dataplane::ensure_running(data_dir, &exe)
        .await
        .map_err(|e| e.to_string())?;
    client
        .configure(edge)
        .await
        .map_err(|e| format!("the new data plane refused the router settings: {e}"))?;
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

/// The mirror data planes of `CUTOVER_DATA_PLANE_MIRRORS` (`<control>=<listen addr>`, comma
/// separated), each told to listen for the router's traffic on `<listen addr>`. `<control>` is
/// either a data directory (its control socket `<dir>/dataplane/control.sock`: a data plane the
/// operator started there, e.g. in another network namespace or on a shared mount) or
/// `tcp://<ip:port>`, a data plane on another machine started with `--control-tcp`, whose
/// requests are signed with the secret in `CUTOVER_DATA_PLANE_MIRROR_SECRET_FILE`. A mirror that
/// does not answer yet is synced when it does (see
/// [`Mirrors`](cutover_engine::dataplane::Mirrors)); `main` is the main data plane they copy.
async fn mirrors_from_env(
    main: &Client,
    edge: &cutover_dataplane::EdgeConfig,
) -> Result<cutover_engine::dataplane::Mirrors, StartError> {
    let raw = std::env::var("CUTOVER_DATA_PLANE_MIRRORS").unwrap_or_default();
    let mut clients = Vec::new();
    let mut secret = None;
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: String| {
            StartError::Runtime(format!(
                "CUTOVER_DATA_PLANE_MIRRORS: {item:?} {why}; write <data dir>=<listen addr> or \
                 tcp://<control ip:port>=<listen addr>, e.g. /srv/router2=10.0.0.2:7080 or \
                 tcp://10.0.0.2:7070=10.0.0.2:7080"
            ))
        };
        let (control, addr) = item
            .rsplit_once('=')
            .ok_or_else(|| bad("has no listen address".to_owned()))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| bad(format!("has a listen address that is not ip:port ({e})")))?;
        let client = match control.strip_prefix("tcp://") {
            Some(control) => {
                let control: SocketAddr = control
                    .parse()
                    .map_err(|e| bad(format!("has a control address that is not ip:port ({e})")))?;
                if secret.is_none() {
                    let file =
                        std::env::var_os("CUTOVER_DATA_PLANE_MIRROR_SECRET_FILE").ok_or_else(|| {
                            bad(
                                "is reached over TCP, which needs CUTOVER_DATA_PLANE_MIRROR_SECRET_FILE \
                             (the file of the mirror's --control-secret-file)"
                                    .to_owned(),
                            )
                        })?;
                    secret = Some(
                        cutover_dataplane::SharedSecret::from_file(Path::new(&file))
                            .map_err(|e| bad(format!("cannot be signed for: {e}")))?,
                    );
                }
                let secret = secret.clone().ok_or_else(|| bad("has no secret".to_owned()))?;
                cutover_dataplane::Client::tcp(control, secret)
            }
            None => cutover_dataplane::Client::new(Path::new(control)),
        };
        clients.push((client, addr));
    }
    let mirrors = cutover_engine::dataplane::Mirrors::new(clients, edge.clone());
    if !mirrors.is_empty() {
        let synced = mirrors.check(main).await;
        tracing::info!(mirrors = raw, synced, "mirror data planes fed the routing table");
    }
    Ok(mirrors)
}

/// Every [`WATCH_EVERY`]: re-syncs the mirrors that were down or restarted.
async fn watch_mirrors(
    mirrors: cutover_engine::dataplane::Mirrors,
    main: Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        mirrors.check(&main).await;
    }
}

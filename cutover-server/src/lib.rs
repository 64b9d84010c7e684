//! `cutover serve`: the control plane's HTTP server.
//!
//! `App::build` loads and validates `cutover.yml`, opens the application's git
//! repository and the state store in the data directory (taking an exclusive
//! lock on it, so one process owns the database), and binds the listener;
//! `run_until_stopped` serves until SIGINT or SIGTERM and then finishes the
//! requests in flight.
//!
//! Architecture invariant: handlers hold no domain logic; they call
//! `cutover-engine`. Errors become HTTP statuses in `error.rs` only.

mod api;
mod auth;
mod dashboard;
mod error;
mod plane;
mod serve;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover_core::config::{self, Config, ConfigErrors, RepoSource};
use cutover_engine::{Engine, EngineParts};
use cutover_git::{GitError, Repo};
use cutover_runtime::{ProcessRuntime, RuntimeConfig};
use cutover_store::{SqliteStore, StoreError};
use tokio::net::TcpListener;

pub use api::openapi;
pub use auth::ACTOR_HEADER;
pub use auth::limit::{FailureLimits, LOCKOUT_VAR, MAX_FAILURES_VAR};
pub use plane::{DataPlaneMode, own_binary};
pub use serve::{ApiTimeouts, HEADER_TIMEOUT_VAR};

/// The file in the data directory that receives the first start's admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Where the router listens unless told otherwise.
pub const DEFAULT_ROUTER_PORT: u16 = 7080;

/// What `cutover serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// The API.
    pub listen: SocketAddr,
    /// The router for the application's public services; None: 127.0.0.1 on
    /// `router.port` from cutover.yml, else 7080.
    pub router_listen: Option<SocketAddr>,
    /// A PostgreSQL URL for the state; None: SQLite in the data directory.
    pub database_url: Option<String>,
    /// With PostgreSQL: when another server leads the database, wait and
    /// take over when it stops or dies, instead of refusing to start.
    pub standby: bool,
    /// The key that encrypts secret parameters; None: `<data dir>/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    /// Revoke the `admin` token and mint a new one into `<data dir>/admin.token`
    /// (for an operator who lost it).
    pub reset_admin_token: bool,
    /// Re-encrypt every secret with a fresh key before serving (see `rotate_secret_key`).
    pub rotate_secret_key: bool,
    /// Where the router runs: its own long-lived process (default) or inside this one.
    pub data_plane: DataPlaneMode,
    /// On SIGTERM/SIGINT stop every instance (and the data plane) instead of leaving them
    /// serving for the next server.
    pub stop_on_exit: bool,
    /// Serve the API and dashboard over HTTPS with this certificate chain and key (PEM files,
    /// reloaded when they change); None: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error(
        "repo {url:?} in {config} cannot be mirrored; fix `repo:` (https://, ssh://, user@host:path or git://)"
    )]
    RemoteRepo {
        url: String,
        config: String,
        #[source]
        source: Box<GitError>,
    },
    #[error("the application repository named by `repo:` in {config} cannot be opened")]
    Repo {
        config: String,
        #[source]
        source: GitError,
    },
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another Cutover server is already using the data directory {path}; stop it first, or start this one with a different --data-dir"
    )]
    Locked { path: String },
    #[error("cannot open the state store")]
    Store(#[source] StoreError),
    #[error("{0}")]
    Webhook(String),
    #[error(
        "another Cutover server already leads {database}; a second one would run every pipeline twice. \
         Stop the other server first, or start this one with --standby to take over when it stops"
    )]
    NotLeader { database: String },
    #[error("cannot set up the API tokens")]
    Tokens(#[source] cutover_engine::EngineError),
    #[error("cannot write the admin token file {path}; check the data directory's permissions")]
    AdminTokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the process runtime: {0}")]
    Runtime(String),
    #[error("bad server setting: {0}")]
    Setting(String),
    #[error("environment {env} needs Docker (`runtime: docker` or `swarm`), but it cannot be reached")]
    Docker {
        env: String,
        #[source]
        source: cutover_docker::DockerError,
    },

    #[error("cannot listen on {addr} ({what}); is another server using that port? choose another with {fix}")]
    Listen {
        addr: SocketAddr,
        /// Which listener: the API, the router, or a service's fixed port.
        what: String,
        /// The flag or key that moves it.
        fix: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct App {
    /// What confines the process runtime's children (see `cutover_runtime::sandbox`).
    protection: String,
    listener: TcpListener,
    /// The router's listeners (embedded) or the data plane process.
    plane: plane::Plane,
    router_addr: SocketAddr,
    system: api::system::SystemControl,
    engine: Engine,
    admin_token_file: PathBuf,
    /// The admin token minted by this start (first start or reset), if any.
    new_admin_token: Option<String>,
    limiter: Arc<auth::limit::FailureLimiter>,
    timeouts: ApiTimeouts,
    /// The API's certificate (`--tls-cert`/`--tls-key`), None: plain HTTP.
    tls: Option<serve::ApiTls>,
    signals: Signals,
    _lock: File,
    /// With PostgreSQL: this server leads the database (see `PostgresStore::lead`).
    _leader: Option<cutover_store::LeaderLock>,
}

impl App {
    pub async fn build(mut opts: ServeOptions) -> Result<App, StartError> {
        // Absolute: paths under it reach processes started elsewhere (CUTOVER_ENV_DIR, whose
        // working directory is their release) and containers (bind mounts need a host path).
        opts.data_dir = std::path::absolute(&opts.data_dir).map_err(|source| StartError::DataDir {
            path: opts.data_dir.display().to_string(),
            source,
        })?;
        let config = config::load(&opts.config).map_err(StartError::Config)?;
        // Kept: each commit's application definition is validated against this file's platform
        // part (see cutover-engine's `definition`).
        let config_text = std::fs::read_to_string(&opts.config).unwrap_or_default();
        let limits = FailureLimits::from_env().map_err(StartError::Setting)?;
        let timeouts = ApiTimeouts::from_env().map_err(StartError::Setting)?;
        // Before anything binds: a certificate that does not load is a start error naming it.
        let tls = match &opts.tls {
            None => None,
            Some((cert, key)) => Some(
                serve::ApiTls::load(cert, key)
                    .map_err(|e| StartError::Setting(format!("--tls-cert/--tls-key: {e}")))?,
            ),
        };
        cutover_engine::check_webhooks(&config.webhooks).map_err(StartError::Webhook)?;
        let repo = open_repo(&config, &opts.data_dir)?;
        let lock = lock_data_dir(&opts.data_dir, opts.standby).await?;
        let (store, leader) = open_store(&opts).await?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: opts.listen,
                what: "the API".into(),
                fix: "--listen".into(),
                source,
            })?;
        let router_addr = opts.router_listen.unwrap_or_else(|| {
            SocketAddr::from(([127, 0, 0, 1], config.router.port.unwrap_or(DEFAULT_ROUTER_PORT)))
        });
        let sandbox = sandbox(&config, &opts.data_dir)?;
        let protection = sandbox.protection().to_string();
        let run_as = sandbox.run_as.is_some();
        let mut runtime_config = RuntimeConfig::new(opts.data_dir.join("runtime"));
        runtime_config.sandbox = sandbox;
        let runtime = ProcessRuntime::new(runtime_config).map_err(|e| StartError::Runtime(e.to_string()))?;
        let (docker, swarm) = connect_docker(&config, &opts.data_dir).await?;
        let key_file = opts
            .secret_key_file
            .clone()
            .unwrap_or_else(|| opts.data_dir.join("secret.key"));
        cutover_engine::check_rotation_state(&key_file, opts.rotate_secret_key)
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        if opts.rotate_secret_key {
            let done = cutover_engine::rotate_secret_key(store.as_ref(), &key_file)
                .await
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            tracing::info!(
                reencrypted = done.reencrypted,
                already = done.already,
                key_file = %key_file.display(),
                "secret key rotated: every secret's newest value is under the new key; the previous key is in \
                 {}.old (older history versions need it; delete it when you no longer do). Servers sharing \
                 this database need the new key file before they start",
                key_file.display()
            );
        }
        let secret_key = cutover_engine::SecretKey::load_or_create(&key_file)
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let lifecycle = cutover_engine::LifecycleSettings::from_env().map_err(StartError::Runtime)?;
        // From here a signal ends the server through its orderly exit (see `Signals`).
        let signals = Signals::listen()?;
        let (plane, data_plane, router_port) =
            plane::Plane::start(opts.data_plane, &config, &opts.data_dir, router_addr).await?;
        let parts = EngineParts {
            data_dir: opts.data_dir.clone(),
            runtime: Arc::new(runtime),
            docker,
            swarm,
            secret_key,
            data_plane,
            lifecycle,
            protection: protection.clone(),
            config_text,
        };
        let engine = Engine::new(config, store, repo, parts);
        let data_dir = opts.data_dir.clone();
        engine.set_edge_base(std::sync::Arc::new(move |config| {
            plane::edge_config(config, &data_dir)
        }));
        let admin_token_file = opts.data_dir.join(ADMIN_TOKEN_FILE);
        let rest = async {
            let new_admin_token = bootstrap_admin(&engine, &admin_token_file, opts.reset_admin_token).await?;
            let limiter = auth::limit::FailureLimiter::load(engine.store().clone(), limits)
                .await
                .map_err(StartError::Store)?;
            secure_data_dir(&opts.data_dir, run_as).map_err(|source| StartError::DataDir {
                path: opts.data_dir.display().to_string(),
                source,
            })?;
            Ok::<_, StartError>((new_admin_token, limiter))
        };
        let (new_admin_token, limiter) = match rest.await {
            Ok(done) => done,
            Err(e) => {
                // A data plane this start spawned is not left behind by an error.
                plane.abandon().await;
                return Err(e);
            }
        };
        engine.set_router_port(router_port);
        if !protection.starts_with("landlock") {
            tracing::warn!(
                protection,
                "hooks and instances can read this server's data directory"
            );
        }
        tracing::info!(protection, "children of the process runtime confined");
        Ok(App {
            protection,
            listener,
            plane,
            router_addr: SocketAddr::new(router_addr.ip(), router_port),
            system: api::system::SystemControl::new(
                opts.data_dir.clone(),
                opts.data_plane,
                opts.stop_on_exit,
            ),
            engine,
            admin_token_file,
            new_admin_token,
            limiter: Arc::new(limiter),
            timeouts,
            tls,
            signals,
            _lock: lock,
            _leader: leader,
        })
    }

    pub fn router_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.router_addr)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the API is served over TLS (`https://`).
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What confines the process runtime's children: `landlock ABI 7`,
    /// `landlock ABI 7, run_as user app`, `none: kernel lacks landlock`.
    pub fn protection(&self) -> &str {
        &self.protection
    }

    /// `<data dir>/admin.token`.
    pub fn admin_token_file(&self) -> &Path {
        &self.admin_token_file
    }

    /// The admin token's secret when this start minted it (first start of a
    /// store, or `--reset-admin-token`); None otherwise.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.new_admin_token.as_deref()
    }

    /// Starts the engine (recovery, workers, scheduler) and the router, then
    /// serves the API until SIGINT/SIGTERM; then lets requests in flight
    /// finish, cancels active runs and stops every instance.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let plane = self.plane.run(&self.engine, stop_rx);
        if let Err(e) = self.engine.start().await {
            tracing::error!(error = %e.chain(), "engine start failed");
            return Err(std::io::Error::other(e.chain()));
        }
        let auth = auth::AuthState {
            engine: self.engine.clone(),
            admin_token_file: self.admin_token_file.clone(),
            limiter: self.limiter.clone(),
        };
        let system = self.system.clone();
        let app = api::routes(auth)
            .layer(axum::Extension(system.clone()))
            .merge(dashboard::routes())
            .layer(tower_http::trace::TraceLayer::new_for_http());
        // Open API connections (a `logs --follow`, a dashboard's stream) get
        // `timeouts.shutdown_grace` to finish after the signal, then they are closed, so they
        // cannot hold the shutdown; the engine's part is bounded by SHUTDOWN_LIMIT.
        let requested = system.clone();
        let mut signals = self.signals;
        if let Some(mut hup) = signals.hup.take() {
            let engine = self.engine.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let actor = cutover_core::Actor::parse(cutover_engine::SYSTEM_ACTOR)
                        .expect("the system actor is a valid name");
                    match engine.reload_config(&actor, &[]).await {
                        Ok(r) => {
                            tracing::info!(added = ?r.added, removed = ?r.removed, changed = ?r.changed, "SIGHUP: configuration reloaded")
                        }
                        Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
                    }
                }
            });
        }
        let result = serve::serve(self.listener, app, self.timeouts, self.tls, async move {
            tokio::select! {
                () = signals.recv() => {}
                () = requested.stop_requested() => {}
            }
            let _ = stop_tx.send(true);
        })
        .await;
        let stop_all = system.stops_everything();
        let left = if stop_all {
            tracing::info!("stopping every instance and the data plane");
            self.engine.shutdown().await
        } else {
            tracing::info!(
                "leaving every instance running for the next server (stop them with `cutover stop --all`, \
                 or start the server with --stop-on-exit)"
            );
            self.engine.detach().await
        };
        if !left.is_empty() {
            tracing::error!(
                "shutdown limit ({} s) reached; not stopped: {}. The next start stops what is left.",
                cutover_engine::SHUTDOWN_LIMIT.as_secs(),
                left.join("; ")
            );
        }
        plane.finish(stop_all).await;
        tracing::info!("server stopped");
        result
    }
}

type Engines = (
    Option<Arc<cutover_docker::DockerRuntime>>,
    Option<Arc<cutover_docker::SwarmRuntime>>,
);

/// Connects to Docker, and to Swarm, when an environment needs them. Each
/// backend gets its own state directory: each removes the leftovers of a
/// previous server in its own.
async fn connect_docker(config: &Config, data_dir: &Path) -> Result<Engines, StartError> {
    use cutover_core::config::RuntimeKind;
    let first = |kind| {
        config
            .environments
            .iter()
            .find(|(_, e)| e.runtime == kind)
            .map(|(n, _)| n.to_string())
    };
    let docker = match first(RuntimeKind::Docker) {
        None => None,
        Some(env) => Some(Arc::new(
            cutover_docker::DockerRuntime::connect(cutover_docker::DockerConfig::new(
                data_dir.join("docker"),
            ))
            .await
            .map_err(|source| StartError::Docker { env, source })?,
        )),
    };
    let swarm = match first(RuntimeKind::Swarm) {
        None => None,
        Some(env) => Some(Arc::new(
            cutover_docker::SwarmRuntime::connect({
                // Services name their image in the registry, so every node can pull it.
                let mut swarm = cutover_docker::DockerConfig::new(data_dir.join("swarm"));
                swarm.registry = config.registry.as_ref().map(|r| r.url.clone());
                swarm
            })
            .await
            .map_err(|source| StartError::Docker { env, source })?,
        )),
    };
    Ok((docker, swarm))
}

/// SQLite in the data directory, or PostgreSQL with this server as the
/// database's only leader.
async fn open_store(
    opts: &ServeOptions,
) -> Result<(Arc<dyn cutover_store::Store>, Option<cutover_store::LeaderLock>), StartError> {
    let Some(url) = &opts.database_url else {
        let store = SqliteStore::open(&opts.data_dir)
            .await
            .map_err(StartError::Store)?;
        return Ok((Arc::new(store), None));
    };
    let store = cutover_store::PostgresStore::connect(url)
        .await
        .map_err(StartError::Store)?;
    let database = store.label().display().to_string();
    let mut announced = false;
    loop {
        if let Some(lock) = store.lead().await.map_err(StartError::Store)? {
            if announced {
                tracing::warn!(database, "this standby now leads the database and takes over");
            }
            return Ok((Arc::new(store), Some(lock)));
        }
        if !opts.standby {
            return Err(StartError::NotLeader { database });
        }
        if !announced {
            // Stdout, like the listening line: scripts see a standby waiting.
            println!("cutover: standby, waiting for the server that leads {database} to stop");
            tracing::info!(database, "standby: another server leads this database");
            announced = true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Mints the admin token on a store's first start (or on request) and writes
/// its secret to `file` (0600); logs the path, never the secret. When the
/// store has tokens but `file` is missing (e.g. a second server on a shared
/// database, or a deleted file), says how to recover.
async fn bootstrap_admin(engine: &Engine, file: &Path, reset: bool) -> Result<Option<String>, StartError> {
    let issued = if reset {
        Some(engine.token_reset_admin().await.map_err(StartError::Tokens)?)
    } else {
        engine.token_bootstrap().await.map_err(StartError::Tokens)?
    };
    let Some(issued) = issued else {
        if !file.exists() {
            tracing::warn!(
                path = %file.display(),
                "the store already has API tokens (made by an earlier start, or by another server on this \
                 database), but there is no admin token file here. Use a token you have (`cutover login`), or \
                 restart this server once with --reset-admin-token to revoke the `admin` token and write a new \
                 one to this path"
            );
        }
        return Ok(None);
    };
    write_secret_file(file, &issued.secret).map_err(|source| StartError::AdminTokenFile {
        path: file.display().to_string(),
        source,
    })?;
    tracing::info!(
        path = %file.display(),
        "created the API token `admin` (admin on every environment); its secret is in this file (mode 0600), \
         shown nowhere else"
    );
    Ok(Some(issued.secret))
}

/// Writes `secret` to `path` with mode 0600, replacing it atomically.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A local `repo:` is opened in place; a remote one through Cutover's own mirror under the
/// data directory (created empty here, fetched by the engine).
fn open_repo(config: &Config, data_dir: &Path) -> Result<Repo, StartError> {
    let cfg = config.file.display().to_string();
    match &config.repo {
        RepoSource::Path { path, .. } => {
            Repo::open(path).map_err(|source| StartError::Repo { config: cfg, source })
        }
        RepoSource::Url { url } => {
            let bad = |source| StartError::RemoteRepo {
                url: url.clone(),
                config: cfg.clone(),
                source: Box::new(source),
            };
            cutover_git::check_remote_url(url).map_err(bad)?;
            let mirror = cutover_engine::source::mirror_path(data_dir, config)
                .unwrap_or_else(|| data_dir.join("source"));
            Repo::open_or_init_mirror(&mirror).map_err(bad)
        }
    }
}

/// Takes the data directory's lock. A `--standby` on the same host and data directory as the
/// server that holds it waits for that server to go, then takes over everything it left running
/// there (its data plane, its instances) instead of leaving them unowned.
async fn lock_data_dir(dir: &Path, standby: bool) -> Result<File, StartError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = dir.display().to_string();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StartError::DataDir {
            path: path.clone(),
            source,
        })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("server.lock"))
        .map_err(|source| StartError::DataDir {
            path: path.clone(),
            source,
        })?;
    let mut announced = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if announced {
                    tracing::warn!(data_dir = %path, "the server that used this data directory is gone; this standby takes over");
                }
                return Ok(file);
            }
            Err(std::fs::TryLockError::WouldBlock) if standby => {
                if !announced {
                    // Stdout, like the listening line: scripts see a standby waiting.
                    println!(
                        "cutover: standby, waiting for the server that uses the data directory {path} to stop"
                    );
                    announced = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(StartError::Locked { path }),
            Err(std::fs::TryLockError::Error(source)) => return Err(StartError::DataDir { path, source }),
        }
    }
}

/// The confinement of the process runtime's children: Landlock around the
/// data directory, and the `run_as` user when one is configured (which needs
/// a server running as root).
fn sandbox(config: &Config, data_dir: &Path) -> Result<cutover_runtime::Sandbox, StartError> {
    let run_as = match &config.run_as {
        None => {
            if cutover_runtime::sandbox::running_as_root() {
                tracing::info!(
                    "the server runs as root and cutover.yml sets no run_as: hooks, builds, jobs and instances \
                     run as root too (confined by Landlock where the kernel has it); create an unprivileged \
                     user and set `run_as: USER`"
                );
            }
            None
        }
        Some(name) => {
            if !cutover_runtime::sandbox::running_as_root() {
                return Err(StartError::Runtime(format!(
                    "run_as: {name} in {} needs the server to run as root (only root can start processes \
                     as another user); remove run_as or start the server as root",
                    config.file.display()
                )));
            }
            Some(cutover_runtime::RunAs::lookup(name).map_err(StartError::Runtime)?)
        }
    };
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    cutover_runtime::Sandbox::protecting(data_dir, run_as).map_err(|source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })
}

/// Makes the data directory private to the server: the directory 0700, every
/// file directly in it (database, key, token, lock) 0600 and every directory
/// 0700. With `run_as`, the directory and `releases/`, `envs/` are 0711 so
/// that user can reach the release and environment directories it is given
/// (it cannot list them, and everything else stays 0700/0600).
fn secure_data_dir(dir: &Path, run_as: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let traverse = if run_as { 0o711 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(traverse))?;
    for sub in ["releases", "envs"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let name = entry.file_name();
        let mode = if meta.is_dir() {
            if name == "releases" || name == "envs" {
                traverse
            } else {
                0o700
            }
        } else {
            0o600
        };
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
        }
    }
    if run_as {
        for entry in std::fs::read_dir(dir.join("releases"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.metadata()?.is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o711))?;
            }
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM, listened for from the start of `App::build`: a signal that arrives while
/// the server is still starting (after it spawned a data plane, say) ends it through the same
/// orderly exit instead of the default disposition, which would kill it on the spot.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// SIGHUP reloads `cutover.yml` (see `Engine::reload_config`).
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Result<Self, StartError> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| StartError::Runtime(format!("cannot listen for SIGINT/SIGTERM: {e}"));
        Ok(Self {
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
            hup: Some(signal(SignalKind::hangup()).map_err(err)?),
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = self.term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}

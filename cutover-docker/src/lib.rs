//! The `docker` runtime: each service replica is a container of the image
//! `<app>-<env>-<service>:<sha>`, driven through the Docker Engine API
//! (bollard, unix socket only) behind the same [`Runtime`](cutover_runtime::Runtime) trait as the
//! process runtime, so the engine and the router treat both alike.
//!
//! - **Images** ([`DockerRuntime::build_image`]): one per service and
//!   version, built from the release directory (the build context: a tar
//!   without what `.dockerignore` excludes, streamed while packed, see
//!   `context.rs`) with the service's Dockerfile; skipped when the tag exists.
//!   Pushed to a `registry:` with an account from cutover.yml or, without
//!   one, from `docker login`'s `config.json` ([`docker_login_account`]).
//!   Nothing is ever pulled: base images must exist locally
//!   (`scripts/docker-setup` builds `cutover-base:latest` without a
//!   registry).
//! - **Instances** ([`Runtime::start`](cutover_runtime::Runtime::start)): a container of the version's image,
//!   labelled `cutover.app`, `cutover.env`, `cutover.service`,
//!   `cutover.version`, `cutover.replica`, `cutover.instance` (the
//!   container's name) plus `cutover.owner` (this server's state directory)
//!   and `cutover.runtime` (this runtime object). It runs `sh -c <run>` as
//!   its entrypoint, or, when `run` is empty (a service without `run:` in
//!   cutover.yml), the image's own ENTRYPOINT/CMD. It listens on `PORT`
//!   inside (8080, see [`DockerConfig::container_port`], or the service's
//!   `port:` through [`CONTAINER_PORT_VAR`]), published on
//!   **127.0.0.1 only**, on a host port Docker picks; `addr` is
//!   `127.0.0.1:<that port>`. Containers are never reached through the
//!   bridge's private addresses. Restart policy `on-failure`: Docker
//!   restarts a crashed container with its own back-off (`restarts` is
//!   Docker's `RestartCount`). A `docker kill`/`docker stop` counts as a
//!   manual stop in Docker and is *not* restarted.
//! - **Ids**: an [`InstanceId`](cutover_runtime::InstanceId) is Docker's short container id (12 hex, as
//!   `docker ps` shows it), so `cutover status` and `docker` name the same
//!   thing. The container's name is `<app>-<env>-<service>-<sha8>-r<n>-<6hex>`,
//!   also given to the instance as `CUTOVER_INSTANCE` (the id does not exist
//!   before the container is created).
//! - **Status** reads every fact from the engine: state, `RestartCount`,
//!   start time, host pid, published port, and the version, which is the
//!   SHA in the tag of the image the container was created from
//!   ([`VersionSource::ImageTag`](cutover_runtime::VersionSource::ImageTag)).
//! - **Tasks** (hooks, jobs): a one-off container, see [`task`] and
//!   [`TASK_IMAGE_VAR`].
//! - **Recovery and adoption** ([`DockerRuntime::recover_adopting`]): a previous server's
//!   containers (this state directory, another runtime object) that run as
//!   labelled are adopted, unclaimed, and left untouched until the engine
//!   claims them ([`Runtime::adopt`](cutover_runtime::Runtime::adopt)) or
//!   stops them; the others, and every one-off task container, are removed.
//! - **Owner**: `status` says who supervises each instance
//!   ([`InstanceOwner`](cutover_runtime::InstanceOwner)): this process since
//!   the container's creation (started here) or since its adoption.
//! - **Detach** ([`Runtime::detach`](cutover_runtime::Runtime::detach)):
//!   the server lets go (new starts and tasks refused, running tasks
//!   cancelled, followers and monitors ended) and every instance container
//!   keeps running for the next server; `shutdown` still stops everything.
//!
//! - **Swarm** ([`swarm`], [`SwarmRuntime`]): the same images as Swarm
//!   services; public services blue-green across one-replica services with
//!   their own host-mode ports, non-public ones through Swarm's native
//!   start-first update with rollback ([`SwarmRuntime::converge`]). It
//!   reuses this runtime for images, one-off task containers, logs and
//!   labels.
//!
//! Rejected: the docker CLI (parsing text, a process per call); host
//! networking (ports clash between the old and the new version during a
//! blue-green switch, and the container's `PORT` would have to vary);
//! reaching containers by their bridge IP (forbidden here, and not
//! reachable from other hosts anyway); a `set_task_image` method (shared
//! mutable state across concurrent pipelines and jobs of one environment).

mod auth;
mod container;
mod context;
mod error;
mod image;
mod logs;
mod recover;
mod runtime;
pub mod swarm;
pub mod task;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use cutover_core::{AppName, EnvName, ServiceName, Version};
use cutover_runtime::VersionSource;
use tokio_util::sync::CancellationToken;

pub use auth::{RegistryAccount, docker_config_file, docker_login_account};
pub use error::DockerError;
pub use image::BuildOutcome;
pub use recover::Recovery;
pub use swarm::{ConvergeAction, ConvergeOutcome, ConvergeSpec, SwarmRuntime};
pub use task::TASK_IMAGE_VAR;

/// The default Docker socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Label keys set on every container of this runtime.
pub mod labels {
    pub const APP: &str = "cutover.app";
    pub const ENV: &str = "cutover.env";
    pub const SERVICE: &str = "cutover.service";
    pub const VERSION: &str = "cutover.version";
    pub const REPLICA: &str = "cutover.replica";
    /// The container's name; marks a service instance.
    pub const INSTANCE: &str = "cutover.instance";
    /// Marks a one-off task container; the value is the task's label.
    pub const TASK: &str = "cutover.task";
    /// The server's state directory: which server the container belongs to.
    pub const OWNER: &str = "cutover.owner";
    /// Random per [`DockerRuntime`](crate::DockerRuntime): tells this
    /// server's containers from a previous server's.
    pub const RUNTIME: &str = "cutover.runtime";
    /// Marks a Swarm service updated natively by
    /// [`SwarmRuntime::converge`](crate::swarm::SwarmRuntime::converge)
    /// (a non-public service); it outlives the server that created it.
    pub const CONVERGED: &str = "cutover.converged";
}

/// An instance's `env_vars` entry that overrides
/// [`DockerConfig::container_port`] for that instance (the service's
/// `port` in `cutover.yml`, once the config has one).
pub const CONTAINER_PORT_VAR: &str = "CUTOVER_CONTAINER_PORT";

/// `<app>-<env>-<service>:<sha>`, the image of one service at one version.
pub fn image_tag(app: &AppName, env: &EnvName, service: &ServiceName, version: &Version) -> String {
    format!("{app}-{env}-{service}:{version}")
}

/// Settings of the docker runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The server's state directory. Created if missing; its absolute path
    /// is the `cutover.owner` label, so one server never touches another's
    /// containers.
    pub state_dir: PathBuf,
    /// Unix socket of the Docker daemon.
    pub socket: PathBuf,
    /// Time between SIGTERM and SIGKILL when stopping (whole seconds for
    /// Docker; rounded up, at least 1 s).
    pub stop_grace: Duration,
    /// Pause between two background probes of an instance with a
    /// `health_path`.
    pub health_interval: Duration,
    /// The port a service listens on inside its container (`PORT`).
    pub container_port: u16,
    /// Run Docker's init (tini) as PID 1, so a service that installs no
    /// signal handler still stops on SIGTERM and zombies are reaped.
    pub init: bool,
    /// The image of tasks whose spec has no [`TASK_IMAGE_VAR`].
    pub default_task_image: Option<String>,
    /// The registry the Build stage pushes to (`host[:port][/prefix]`,
    /// `registry.url` of `cutover.yml`). Swarm services then name their
    /// image `<registry>/<app>-<env>-<service>:<sha>`, so that every node
    /// can pull it; without one, only the node that built the image has it.
    pub registry: Option<String>,
}

impl DockerConfig {
    /// Defaults: the socket of `DOCKER_HOST` (see [`socket_from_env`]) or
    /// the default one, 10 s stop grace, probes every 2 s, container port
    /// 8080, init on, no default task image, no registry.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            socket: socket_from_env(std::env::var("DOCKER_HOST").ok().as_deref()),
            stop_grace: Duration::from_secs(10),
            health_interval: Duration::from_secs(2),
            container_port: 8080,
            init: true,
            default_task_image: None,
            registry: None,
        }
    }

    /// The reference services are created from: `<registry>/<tag>` with a
    /// registry, else the local `tag`.
    pub fn image_reference(&self, tag: &str) -> String {
        match &self.registry {
            Some(registry) => format!("{}/{tag}", registry.trim_end_matches('/')),
            None => tag.to_owned(),
        }
    }
}

/// The daemon socket named by `DOCKER_HOST` (`unix:///path`), as the docker
/// CLI reads it, else [`DEFAULT_SOCKET`]. Only unix sockets are spoken: any
/// other scheme (`tcp://`, `ssh://`) is ignored with a warning, since the
/// engine API would then travel unauthenticated or need credentials Cutover
/// does not handle.
pub fn socket_from_env(docker_host: Option<&str>) -> PathBuf {
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        None => PathBuf::from(DEFAULT_SOCKET),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            _ => {
                tracing::warn!(
                    docker_host = host,
                    "DOCKER_HOST is not unix:///<absolute path>; using {DEFAULT_SOCKET}"
                );
                PathBuf::from(DEFAULT_SOCKET)
            }
        },
    }
}

/// The docker runtime. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    docker: Docker,
    config: DockerConfig,
    /// `cutover.owner`: the canonical state directory.
    owner: String,
    /// `cutover.runtime`.
    runtime_id: String,
    table: Mutex<runtime::Table>,
    closed: AtomicBool,
    tasks_shutdown: CancellationToken,
    active_tasks: AtomicUsize,
}

impl DockerRuntime {
    /// Connects to the daemon at `config.socket`, negotiates the API version
    /// and checks it answers. Starts nothing; call
    /// [`Runtime::recover`](cutover_runtime::Runtime::recover) next.
    pub async fn connect(config: DockerConfig) -> Result<Self, DockerError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| DockerError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let owner = std::fs::canonicalize(&config.state_dir)
            .unwrap_or_else(|_| config.state_dir.clone())
            .display()
            .to_string();
        let socket = config.socket.display().to_string();
        let not_running = |source| DockerError::NotRunning {
            socket: config.socket.clone(),
            source,
        };
        let docker = Docker::connect_with_socket(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(not_running)?
            .negotiate_version()
            .await
            .map_err(not_running)?;
        docker.ping().await.map_err(not_running)?;
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                config,
                owner,
                runtime_id: random_hex(16),
                table: Mutex::new(runtime::Table::default()),
                closed: AtomicBool::new(false),
                tasks_shutdown: CancellationToken::new(),
                active_tasks: AtomicUsize::new(0),
            }),
        })
    }

    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }

    /// The bollard client, for callers that need more of the API.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The `cutover.owner` label value of this runtime's containers.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    fn table(&self) -> MutexGuard<'_, runtime::Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `len` pseudo-random hex digits (names, not secrets).
pub(crate) fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let noise = RandomState::new().hash_one((n, std::process::id(), unix_ms()));
        out.push_str(&format!("{noise:016x}"));
    }
    out.truncate(len);
    out
}

/// Now, as unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    ms_of(std::time::SystemTime::now())
}

pub(crate) fn ms_of(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The version in an image reference `<name>:<40 hex>` (`None` for any
/// other tag, an image id, or a digest reference).
pub fn version_of_image(reference: &str) -> Option<Version> {
    let (name, tag) = reference.rsplit_once(':')?;
    if name.is_empty() || name.contains('@') {
        return None;
    }
    Version::parse(tag).ok()
}

/// The version a container runs, from the image reference Docker reports.
pub(crate) fn observed_version(image: Option<&str>) -> (Option<Version>, VersionSource) {
    match image.and_then(version_of_image) {
        Some(v) => (Some(v), VersionSource::ImageTag),
        None => (None, VersionSource::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_names_a_unix_socket_or_nothing() {
        let socket = |h: Option<&str>| socket_from_env(h).display().to_string();
        assert_eq!(socket(None), DEFAULT_SOCKET);
        assert_eq!(socket(Some("")), DEFAULT_SOCKET);
        assert_eq!(socket(Some("unix:///run/n1.sock")), "/run/n1.sock");
        assert_eq!(socket(Some("tcp://10.0.0.1:2375")), DEFAULT_SOCKET);
        assert_eq!(socket(Some("unix://relative.sock")), DEFAULT_SOCKET);
        let mut config = DockerConfig::new("/tmp/x");
        assert_eq!(config.image_reference("a-b-c:1"), "a-b-c:1");
        config.registry = Some("10.231.0.1:5001/team/".to_owned());
        assert_eq!(config.image_reference("a-b-c:1"), "10.231.0.1:5001/team/a-b-c:1");
        assert_eq!(
            version_of_image(&config.image_reference(&format!("a-b-c:{}", "ab".repeat(20))))
                .map(|v| v.to_string()),
            Some("ab".repeat(20))
        );
    }

    #[test]
    fn versions_come_from_sha_tags_only() {
        let sha = "ab".repeat(20);
        assert_eq!(
            version_of_image(&format!("shop-prod-web:{sha}")).map(|v| v.as_str().to_owned()),
            Some(sha.clone())
        );
        assert!(version_of_image("shop-prod-web:latest").is_none());
        assert!(version_of_image("sha256:0123").is_none());
        assert!(version_of_image(&format!("x@sha256:{sha}")).is_none());
        assert_eq!(observed_version(None).1, VersionSource::Unavailable);
    }

    #[test]
    fn tags_follow_the_seeds_convention() {
        let v = Version::parse(&"cd".repeat(20)).unwrap();
        let tag = image_tag(
            &AppName::parse("shop").unwrap(),
            &EnvName::parse("prod").unwrap(),
            &ServiceName::parse("web").unwrap(),
            &v,
        );
        assert_eq!(tag, format!("shop-prod-web:{v}"));
        assert_eq!(random_hex(6).len(), 6);
        assert_ne!(random_hex(16), random_hex(16));
    }
}

//! The engine: the one place where Cutover's desired state changes.
//!
//! Cutover is a reconciler: the parameter store holds what *should* run
//! (`desired_version`), the runtime reports what *does* run, and a pipeline run
//! is the only sanctioned way to move the second towards the first. This crate
//! owns those rules; `cutover-server` only translates HTTP into calls here.
//!
//! Architecture invariant: the engine never speaks HTTP and never formats for
//! a terminal; it returns typed results and `EngineError`s.

mod adopt;
mod autoscale;
mod broker;
pub mod dataplane;
mod definition;
mod deploy;
mod environments;
mod error;
mod events;
mod flags;
mod glance;
mod hold;
pub mod http;
mod lifecycle;
pub mod limits;
mod maintenance;
pub mod masking;
mod metrics;
mod mirrors;
mod moves;
mod notify;
mod params;
pub mod pipeline;
mod registry;
mod releases;
mod reload;
mod scale;
mod scheduler;
mod secrets;
pub mod source;
pub mod source_hook;
mod status;
mod swarm;
mod tokens;
mod webhooks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cutover_core::config::Config;
use cutover_core::config::RuntimeKind;
use cutover_core::{Actor, EnvName, Version};
use cutover_docker::{DockerRuntime, SwarmRuntime};
use cutover_git::Repo;
use cutover_runtime::Runtime;
use cutover_store::{NewAuditEntry, Store};
pub use dataplane::{DataPlane, OldGeneration, RouteState};
pub use definition::{DefinitionSource, definition_path_of};
pub use reload::ReloadReport;

pub use environments::{EnvironmentSummary, VersionRow, VersionsReport};
pub use error::{EngineError, ErrorKind};
pub use events::{
    Event, EventKind, EventStream, MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_PER_TOKEN, StreamRefused,
};
pub use flags::{Flag, MAX_FLAG_NAME, check_flag_name, flag_bucket};
pub use glance::{Assessment, RunBrief};
pub use lifecycle::{
    CreateRequest, Created, EnvKind, LifeState, LifecycleRecord, LifecycleSettings, LifecycleView,
    derive_name, slug,
};
pub use maintenance::{MAX_PAGE, Maintenance};
pub use params::{ReservedKey, WellKnownKey};
pub use pipeline::{LogEvent, PolicyOverride, ReleaseRequest, RunView, SYSTEM_ACTOR};
pub use scale::{MAX_REPLICAS, ScaleAnswer, ScaleRequest, ScaleState};
pub use scheduler::{JobStatus, SchedulerStatus};
pub use secrets::{Rotation, SecretKey, check_rotation_state, rotate_secret_key};
pub use status::{EnvStatus, InstanceView, ServiceFollow, ServiceStatus};
pub use tokens::{AuthError, IssuedToken, Principal, TokenRequest, hash_secret};
pub use webhooks::{
    check_webhook_files, check_webhooks, signature as webhook_signature,
    timestamped_signature as webhook_timestamped_signature,
};

/// The control plane's shared state: configuration, store, repository,
/// runtime and router. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What the engine needs besides configuration, store and repository.
pub struct EngineParts {
    /// Releases, environment directories and runtime state live here.
    pub data_dir: PathBuf,
    /// The process runtime (the embedded default).
    pub runtime: Arc<dyn Runtime>,
    /// The Docker runtime, connected when an environment uses `runtime: docker`.
    pub docker: Option<Arc<DockerRuntime>>,
    /// The Swarm runtime, connected when an environment uses `runtime: swarm`.
    pub swarm: Option<Arc<SwarmRuntime>>,
    /// Encrypts `/<app>-<env>/secrets/...` parameters at rest.
    pub secret_key: SecretKey,
    pub data_plane: DataPlane,
    /// How often the reaper and the auto-deploy watcher look.
    pub lifecycle: LifecycleSettings,
    /// What confines the process runtime's children (`landlock ABI 7`,
    /// `none: kernel lacks landlock`), for `cutover status`.
    pub protection: String,
    /// The text of the server's `cutover.yml` the configuration was parsed from: its platform
    /// part is combined with each commit's application part (see `definition`).
    pub config_text: String,
}

struct Inner {
    /// `cutover.yml` as loaded: the static environments and the templates.
    /// The server's `cutover.yml` (swapped by `config reload`), its text, and its application
    /// part (see `definition`).
    base: arc_swap::ArcSwap<Config>,
    config_text: arc_swap::ArcSwap<String>,
    base_definition: arc_swap::ArcSwap<cutover_core::config::AppDefinition>,
    definitions: definition::Definitions,
    /// The environment set in use: `base` plus live integration instances.
    topology: arc_swap::ArcSwap<lifecycle::Topology>,
    lifecycle: lifecycle::LifecycleShared,
    lifecycle_settings: LifecycleSettings,
    store: Arc<dyn Store>,
    repo: Repo,
    data_dir: PathBuf,
    runtime: Arc<dyn Runtime>,
    docker: Option<Arc<DockerRuntime>>,
    swarm: Option<Arc<SwarmRuntime>>,
    data_plane: DataPlane,
    data_plane_health: dataplane::DataPlaneHealth,
    /// Makes the router's edge settings from `cutover.yml` (see `lifecycle::hosts`).
    edge_base: Mutex<Option<lifecycle::EdgeBase>>,
    started_at_ms: u64,
    router_port: OnceLock<u16>,
    shared: pipeline::Shared,
    deployments: Mutex<HashMap<EnvName, deploy::EnvServices>>,
    build_locks: Mutex<HashMap<Version, Arc<tokio::sync::Mutex<()>>>>,
    fetch_lock: source::FetchLock,
    deliveries: source_hook::Deliveries,
    scheduler: scheduler::SchedulerShared,
    webhooks: webhooks::Webhooks,
    notifier: notify::Notifier,
    metrics: metrics::Metrics,
    events: Arc<events::Events>,
    secret_key: SecretKey,
    protection: String,
}

/// The most a server shutdown takes: runs get [`RUN_STOP_LIMIT`] to put their environment back,
/// instances and tasks (SIGTERM, SIGKILL after the stop grace, in parallel) the rest.
pub const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(25);
/// How long a shutdown waits for cancelled runs to undo their changes.
pub const RUN_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Engine {
    pub fn new(config: Config, store: Arc<dyn Store>, repo: Repo, parts: EngineParts) -> Self {
        let webhooks = webhooks::Webhooks::new(&config.webhooks);
        let notifier = notify::Notifier::new(
            &config.notifications,
            config.app.as_str(),
            store.clone(),
            parts.secret_key.clone(),
            repo.clone(),
        );
        let events = Arc::new(events::Events::default());
        // Every write goes through the decorator, which raises the dashboard's events.
        let store: Arc<dyn Store> = Arc::new(events::EventStore {
            inner: store,
            events: events.clone(),
            env_prefix: format!("/{}-", config.app),
            records_prefix: format!("/{}/environments/", config.app),
            scale_prefix: format!("/{}/scale-requests/", config.app),
        });
        Self {
            inner: Arc::new(Inner {
                topology: arc_swap::ArcSwap::from_pointee(lifecycle::Topology::build(
                    &config,
                    Default::default(),
                )),
                base_definition: arc_swap::ArcSwap::from_pointee(config.definition()),
                definitions: Default::default(),
                config_text: arc_swap::ArcSwap::from_pointee(parts.config_text),
                base: arc_swap::ArcSwap::from_pointee(config),
                lifecycle: lifecycle::LifecycleShared::default(),
                lifecycle_settings: parts.lifecycle,
                store,
                repo,
                data_dir: parts.data_dir,
                runtime: parts.runtime,
                docker: parts.docker,
                swarm: parts.swarm,
                data_plane: parts.data_plane,
                data_plane_health: Default::default(),
                edge_base: Mutex::new(None),
                started_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                router_port: OnceLock::new(),
                shared: pipeline::Shared::default(),
                deployments: Mutex::new(HashMap::new()),
                build_locks: Mutex::new(HashMap::new()),
                fetch_lock: Default::default(),
                deliveries: Default::default(),
                scheduler: scheduler::SchedulerShared::default(),
                webhooks,
                notifier,
                metrics: metrics::Metrics::default(),
                events,
                secret_key: parts.secret_key,
                protection: parts.protection,
            }),
        }
    }

    /// Recovers from a previous server's death and starts the per-environment
    /// workers (which first bring each environment back to its deployed
    /// version) and the scheduler. Call once, after the router listens.
    pub async fn start(&self) -> Result<(), EngineError> {
        self.refresh_server_log_masker().await;
        for runtime in self.runtimes() {
            let report = runtime
                .recover()
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            for item in &report.instances {
                match &item.action {
                    cutover_runtime::RecoveryAction::Adopted => {
                        tracing::info!(file = %item.file.display(), "instance of a previous server still runs: adopted")
                    }
                    action => {
                        tracing::warn!(file = %item.file.display(), action = ?action, "leftover instance from a previous server")
                    }
                }
            }
            for item in &report.tasks {
                let label = item.state.as_ref().map(|s| s.label.as_str()).unwrap_or("?");
                tracing::warn!(file = %item.file.display(), task = label, action = ?item.action, "leftover hook, build or job of a previous server");
            }
        }
        self.interrupt_leftover_runs().await?;
        self.check_notification_secrets().await;
        // No run is active now: a hold a dead control plane left goes, maintenance stays.
        self.sync_gates().await;
        self.interrupt_leftover_job_runs().await?;
        self.restore_lifecycle().await?;
        self.write_all_flags_files().await;
        self.stop_orphans().await;
        pipeline::Executor::spawn_workers(self);
        self.spawn_scheduler();
        self.spawn_lifecycle_tasks();
        self.spawn_autoscaler();
        self.spawn_route_follower();
        Ok(())
    }

    /// Server shutdown, bounded by [`SHUTDOWN_LIMIT`]: cancels active runs and waits (at most
    /// [`RUN_STOP_LIMIT`]) for them to put their environment back on its serving version, then
    /// stops every instance and task of every runtime in parallel within what is left. Returns
    /// what did not stop in time (empty when everything did), for the server to say; a process
    /// left running is found and stopped by the next start's recovery (its state file stays).
    pub async fn shutdown(&self) -> Vec<String> {
        let started = tokio::time::Instant::now();
        let mut left = self.stop_runs(started).await;
        self.remove_swarm_workers().await;
        let runtimes = self.runtimes();
        let mut before = Vec::new();
        for runtime in &runtimes {
            // Only to name what is left later; a stuck Docker must not hold the shutdown.
            let listed = tokio::time::timeout(std::time::Duration::from_secs(2), runtime.status()).await;
            before.extend(listed.ok().and_then(Result::ok).unwrap_or_default());
        }
        let stops = futures::future::join_all(runtimes.iter().map(|r| r.shutdown()));
        match tokio::time::timeout_at(started + SHUTDOWN_LIMIT, stops).await {
            Ok(results) => {
                for e in results.into_iter().filter_map(Result::err) {
                    tracing::error!(error = %e, "stopping instances failed");
                }
            }
            Err(_) => {
                let mut still = 0;
                for st in &before {
                    // A container has no pid here: Docker stops it on its own; a process is
                    // checked.
                    if st.pid.is_some_and(cutover_runtime::os::is_alive) {
                        still += 1;
                        left.push(format!(
                            "instance {} of {}/{} (pid {})",
                            st.id,
                            st.env,
                            st.service,
                            st.pid.unwrap_or_default()
                        ));
                    }
                }
                if still == 0 {
                    left.push(
                        "stopping the runtimes' instances and tasks (none is left running, some \
                               were still being waited for)"
                            .to_owned(),
                    );
                }
            }
        }
        left
    }

    /// On Swarm the non-public services are Swarm services of their own, not instances: stopping
    /// everything removes them too (a detach leaves them, like every instance).
    async fn remove_swarm_workers(&self) {
        let Some(swarm) = self.swarm() else {
            return;
        };
        let config = self.config();
        for env in config.environments.keys().filter(|e| self.swarm_for(e).is_some()) {
            for (name, _) in self.app(env).services.iter().filter(|(_, s)| !s.public) {
                if let Err(e) = swarm.remove_converged(&config.app, env, name).await {
                    tracing::error!(env = %env, service = %name, error = %e, "could not remove the Swarm service");
                }
            }
        }
    }

    /// Control-plane exit that leaves production serving: cancels active runs (as
    /// [`Engine::shutdown`]: a run ends with its server, and is marked interrupted by the next
    /// one), then detaches every runtime, so instances keep running for the next server to
    /// adopt. Returns what did not finish in time.
    pub async fn detach(&self) -> Vec<String> {
        let started = tokio::time::Instant::now();
        let mut left = self.stop_runs(started).await;
        let runtimes = self.runtimes();
        let detaches = futures::future::join_all(runtimes.iter().map(|r| r.detach()));
        match tokio::time::timeout_at(started + SHUTDOWN_LIMIT, detaches).await {
            Ok(results) => {
                for e in results.into_iter().filter_map(Result::err) {
                    tracing::error!(error = %e, "detaching a runtime failed");
                }
            }
            Err(_) => left.push("waiting for cancelled hooks, builds and jobs to end".to_owned()),
        }
        left
    }

    /// Cancels every active run and waits (at most [`RUN_STOP_LIMIT`]) for them to put their
    /// environment back; returns the runs still undoing.
    async fn stop_runs(&self, started: tokio::time::Instant) -> Vec<String> {
        let active: Vec<_> = {
            let controls = self.shared().controls.lock().unwrap_or_else(|e| e.into_inner());
            controls.values().map(|c| c.cancel.clone()).collect()
        };
        for cancel in &active {
            cancel.cancel();
        }
        let runs_until = started + RUN_STOP_LIMIT;
        let active_runs = || -> Vec<i64> {
            let controls = self.shared().controls.lock().unwrap_or_else(|e| e.into_inner());
            let mut ids: Vec<i64> = controls.keys().copied().collect();
            ids.sort_unstable();
            ids
        };
        while !active_runs().is_empty() && tokio::time::Instant::now() < runs_until {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        active_runs()
            .into_iter()
            .map(|id| format!("run {id} (cancelled, still undoing)"))
            .collect()
    }

    pub fn set_router_port(&self, port: u16) {
        let _ = self.inner.router_port.set(port);
    }

    pub fn router_port(&self) -> Option<u16> {
        self.inner.router_port.get().copied()
    }

    /// What keeps the children of the process runtime from Cutover's state.
    pub fn protection(&self) -> &str {
        &self.inner.protection
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Every runtime in use: the process runtime, and Docker when connected.
    pub fn runtimes(&self) -> Vec<Arc<dyn Runtime>> {
        let mut all = vec![self.inner.runtime.clone()];
        if let Some(d) = &self.inner.docker {
            all.push(d.clone());
        }
        if let Some(s) = &self.inner.swarm {
            all.push(s.clone());
        }
        all
    }

    /// The runtime an environment runs on (`runtime:` in cutover.yml).
    pub fn runtime_for(&self, env: &EnvName) -> Arc<dyn Runtime> {
        let kind = self.config().environments.get(env).map(|e| e.runtime);
        match kind.unwrap_or(RuntimeKind::Process) {
            RuntimeKind::Docker if let Some(docker) = &self.inner.docker => docker.clone(),
            RuntimeKind::Swarm if let Some(swarm) = &self.inner.swarm => swarm.clone(),
            _ => self.inner.runtime.clone(),
        }
    }

    /// The Docker runtime, when an environment of this server uses it.
    pub fn docker(&self) -> Option<&Arc<DockerRuntime>> {
        self.inner.docker.as_ref()
    }

    /// The Swarm runtime, when an environment of this server uses it.
    pub fn swarm(&self) -> Option<&Arc<SwarmRuntime>> {
        self.inner.swarm.as_ref()
    }

    /// What builds images for `env`: Docker's engine for docker and swarm
    /// environments, None for the process runtime.
    pub(crate) fn image_builder(&self, env: &EnvName) -> Option<&DockerRuntime> {
        match self.config().environments[env].runtime {
            RuntimeKind::Docker => self.docker().map(|d| &**d),
            RuntimeKind::Swarm => self.swarm().map(|s| s.containers()),
            RuntimeKind::Process => None,
        }
    }

    pub fn data_plane(&self) -> &DataPlane {
        &self.inner.data_plane
    }

    pub(crate) fn shared(&self) -> &pipeline::Shared {
        &self.inner.shared
    }

    pub(crate) fn deployments(&self) -> &Mutex<HashMap<EnvName, deploy::EnvServices>> {
        &self.inner.deployments
    }

    pub(crate) fn build_locks(&self) -> &Mutex<HashMap<Version, Arc<tokio::sync::Mutex<()>>>> {
        &self.inner.build_locks
    }

    pub(crate) fn secret_key(&self) -> &SecretKey {
        &self.inner.secret_key
    }

    pub(crate) fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    pub(crate) fn webhooks(&self) -> &webhooks::Webhooks {
        &self.inner.webhooks
    }

    pub(crate) fn scheduler_state(&self) -> &scheduler::SchedulerShared {
        &self.inner.scheduler
    }

    /// A snapshot of the environment set in use: `cutover.yml` plus the
    /// live integration environments (see `lifecycle`).
    pub fn config(&self) -> Arc<Config> {
        self.inner.topology.load().config.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn repo(&self) -> &Repo {
        &self.inner.repo
    }

    /// Looks an environment up by the name a user typed; the error lists the
    /// environments that exist.
    pub fn env_name(&self, name: &str) -> Result<EnvName, EngineError> {
        match self.config().environment(name) {
            Some((env, _)) => Ok(env.clone()),
            None => Err(EngineError::UnknownEnvironment {
                name: name.to_owned(),
                app: self.config().app.to_string(),
                known: self
                    .config()
                    .environments
                    .keys()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Runs blocking git work off the async threads.
    pub(crate) async fn with_repo<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&Repo) -> Result<T, EngineError> + Send + 'static,
    {
        let repo = self.inner.repo.clone();
        tokio::task::spawn_blocking(move || f(&repo))
            .await
            .map_err(|e| EngineError::Internal(format!("git task failed: {e}")))?
    }

    pub(crate) async fn audit(&self, actor: &Actor, action: &str, target: &str, detail: serde_json::Value) {
        let entry = NewAuditEntry {
            actor: actor.to_string(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        if let Err(e) = self.inner.store.audit_append(entry).await {
            // The change itself is durable; a lost audit line is logged loudly
            // rather than turning a successful change into a reported failure.
            tracing::error!(error = %e, action, target, "could not append to the audit log");
        }
    }
}

/// Now, as unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

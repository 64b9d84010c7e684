//! [`Runtime`] for [`DockerRuntime`]: the instance table (what only this
//! server knows: health results, exits seen, log followers) beside the
//! engine's facts, which [`Runtime::status`] always reads afresh.
//!
//! Per instance, `start` spawns up to three background tasks, owned by its
//! table entry and aborted when `stop` removes it (or `detach` lets go of
//! every entry): the log follower (see [`crate::logs`]), an exit watcher
//! (Docker's `die` events of the container, so a crash is logged and
//! `last_exit` is known even after Docker has restarted the container and
//! cleared its exit code), and the health monitor when the spec has a
//! `health_path`. A container adopted by `recover` gets the first two at
//! once (they only watch) and the health monitor when `adopt` claims it
//! with a spec that has a `health_path`.
//!
//! `detach` and `shutdown` both refuse new starts and tasks and cancel and
//! await running task containers; `detach` leaves every instance container
//! running (a restart or upgrade of the server), `shutdown` stops and
//! removes them (stop everything, on purpose).
//!
//! Rejected for the exit watcher: `wait?condition=next-exit`. Docker 20.10
//! reads the exit code when it answers, after the fact, and answers 0 when
//! the restart policy has restarted the container in between; the `die`
//! event carries the code the container died with.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use cutover_core::{AppName, EnvName};
use cutover_runtime::health::{self, ProbeResult};
use cutover_runtime::{
    HealthSettings, InstanceId, InstanceSpec, InstanceStatus, LogLine, LogStream, RecoveryReport, Runtime,
    RuntimeError, StopOutcome, TaskLine, TaskOutcome, TaskSpec, UnhealthyReport,
};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::container::{self, describe_exit, labels_of, status_of};
use crate::error::{DockerError, chain, is_not_found};
use crate::recover::{Adoption, check_claim, owner};
use crate::{DockerRuntime, image_tag, labels, logs, random_hex};

const UNHEALTHY_LOG_LINES: usize = 20;
const FOLLOW_BUFFER: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: HashMap<InstanceId, Entry>,
    /// Host ports handed out to starts not in `entries` yet.
    reserved: HashSet<u16>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    container: String,
    port: u16,
    shared: Arc<Shared>,
    logs: broadcast::Sender<LogLine>,
    /// Log follower and exit watcher.
    _tasks: Vec<AbortOnDrop>,
    /// The health monitor (with a `health_path`: from `start`, or from `adopt`).
    health: Option<AbortOnDrop>,
    /// Set when `recover` took the container over from a previous server.
    adoption: Option<Adoption>,
}

/// What the background tasks of an instance learn.
#[derive(Debug, Default)]
struct Shared {
    healthy: Mutex<Option<bool>>,
    last_exit: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A background task that ends with its owner.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn engine_err(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let action = action.into();
    move |source| DockerError::api(action.clone())(source).into_runtime(action)
}

/// A free port on 127.0.0.1 (bind port 0, read, close) that `taken` does
/// not claim (ports handed out but not bound by their container yet).
pub(crate) fn free_port(taken: impl Fn(u16) -> bool) -> Result<u16, RuntimeError> {
    let mut last = None;
    for _ in 0..32 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port());
        match port {
            Ok(port) if !taken(port) => return Ok(port),
            Ok(_) => {}
            Err(err) => last = Some(err),
        }
    }
    let source =
        last.unwrap_or_else(|| std::io::Error::other("every port offered was in use by an instance"));
    Err(RuntimeError::NoFreePort { source })
}

/// Docker's stop timeout: whole seconds, at least 1.
fn grace_secs(grace: Duration) -> i32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

impl DockerRuntime {
    fn reserve_port(&self) -> Result<u16, RuntimeError> {
        let mut table = self.table();
        let port = free_port(|port| {
            table.reserved.contains(&port) || table.entries.values().any(|e| e.port == port)
        })?;
        table.reserved.insert(port);
        Ok(port)
    }

    fn release(&self, port: u16) {
        self.table().reserved.remove(&port);
    }

    fn shared_of(&self, id: &InstanceId) -> Option<Arc<Shared>> {
        self.table().entries.get(id).map(|e| e.shared.clone())
    }

    pub(crate) fn is_in_table(&self, id: &InstanceId) -> bool {
        self.table().entries.contains_key(id)
    }

    /// When `recover` took the instance over (`None`: not adopted).
    fn adopted_since(&self, id: &InstanceId) -> Option<u64> {
        self.table()
            .entries
            .get(id)
            .and_then(|e| e.adoption.as_ref().map(|a| a.since))
    }

    /// The engine's view of one of our instances.
    async fn inspect(&self, id: &InstanceId) -> Result<(InstanceStatus, String), RuntimeError> {
        let c = match self.inner.docker.inspect_container(id.as_str(), None).await {
            Ok(c) => c,
            Err(err) if is_not_found(&err) => return Err(RuntimeError::UnknownInstance { id: id.clone() }),
            Err(err) => return Err(engine_err(format!("inspect container {id}"))(err)),
        };
        let shared = self.shared_of(id);
        let healthy = shared.as_ref().and_then(|s| *lock(&s.healthy));
        let exit = shared.as_ref().and_then(|s| lock(&s.last_exit).clone());
        let mut status = status_of(&self.inner.owner, &c, healthy, exit)
            .filter(|s| &s.id == id)
            .ok_or_else(|| RuntimeError::UnknownInstance { id: id.clone() })?;
        let started_here = labels_of(&c).get(labels::RUNTIME) == Some(&self.inner.runtime_id);
        status.owner = owner(self.adopted_since(id), started_here, status.created_at);
        Ok((status, c.id.unwrap_or_default()))
    }

    pub(crate) async fn remove(&self, container: &str) -> Result<(), bollard::errors::Error> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.inner.docker.remove_container(container, Some(options)).await {
            Err(err) if !is_not_found(&err) => Err(err),
            _ => Ok(()),
        }
    }

    /// SIGTERM, SIGKILL after the grace; returns (graceful, exit text).
    pub(crate) async fn stop_container(
        &self,
        container: &str,
        was_running: bool,
    ) -> Result<(bool, String), RuntimeError> {
        let grace = self.inner.config.stop_grace;
        let options = StopContainerOptionsBuilder::new().t(grace_secs(grace)).build();
        let began = tokio::time::Instant::now();
        match self.inner.docker.stop_container(container, Some(options)).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(err) if is_not_found(&err) => return Ok((true, "the container was already gone".to_owned())),
            Err(err) => return Err(engine_err(format!("stop container {container}"))(err)),
        }
        let took = began.elapsed();
        let c = self
            .inner
            .docker
            .inspect_container(container, None)
            .await
            .map_err(engine_err(format!("inspect container {container}")))?;
        let state = c.state.unwrap_or_default();
        let code = state.exit_code.unwrap_or(-1);
        let killed = was_running && code == 137 && took + Duration::from_millis(200) >= grace;
        Ok((
            !killed,
            describe_exit(code, state.oom_killed, state.error.as_deref()),
        ))
    }

    /// The log follower and the exit watcher of an instance; `logs_after`:
    /// see [`logs::follow`].
    fn spawn_background(
        &self,
        id: &InstanceId,
        container: &str,
        logs_after: Option<SystemTime>,
    ) -> (Arc<Shared>, broadcast::Sender<LogLine>, Vec<AbortOnDrop>) {
        let shared = Arc::new(Shared::default());
        let (logs_tx, _) = broadcast::channel(FOLLOW_BUFFER);
        let docker = self.inner.docker.clone();
        let mut tasks = vec![AbortOnDrop(tokio::spawn(logs::follow(
            docker.clone(),
            container.to_owned(),
            logs_tx.clone(),
            logs_after,
        )))];
        tasks.push(AbortOnDrop(tokio::spawn(watch_exits(
            docker,
            container.to_owned(),
            id.clone(),
            shared.clone(),
            logs_tx.clone(),
        ))));
        (shared, logs_tx, tasks)
    }

    /// Probes `path` every `health_interval`, into `shared.healthy`.
    fn health_monitor(
        &self,
        addr: SocketAddr,
        path: Option<String>,
        shared: &Arc<Shared>,
    ) -> Option<AbortOnDrop> {
        let path = path?;
        let every = self.inner.config.health_interval;
        let shared = shared.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                let result = health::probe(addr, &path, every.min(Duration::from_secs(2))).await;
                *lock(&shared.healthy) = Some(result.is_healthy());
                tokio::time::sleep(every).await;
            }
        })))
    }

    /// Takes a running container of a previous server into the table,
    /// unclaimed: followed (logs from now, exits), never touched. `false`
    /// when it is in the table already.
    pub(crate) fn take_over(&self, id: &InstanceId, container: &str, port: u16) -> bool {
        if self.table().entries.contains_key(id) {
            return false;
        }
        let (shared, logs_tx, tasks) = self.spawn_background(id, container, Some(SystemTime::now()));
        let since = crate::unix_ms();
        let mut table = self.table();
        if table.entries.contains_key(id) {
            return false;
        }
        table.entries.insert(
            id.clone(),
            Entry {
                container: container.to_owned(),
                port,
                shared,
                logs: logs_tx,
                _tasks: tasks,
                health: None,
                adoption: Some(Adoption { since, spec: None }),
            },
        );
        true
    }

    /// Instances taken over by `recover` and not claimed by `adopt` yet.
    pub fn unclaimed(&self) -> Vec<InstanceId> {
        let mut ids: Vec<InstanceId> = self
            .table()
            .entries
            .iter()
            .filter(|(_, e)| e.adoption.as_ref().is_some_and(|a| a.spec.is_none()))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Cancels running one-off tasks and waits for them (bounded: the stop
    /// grace + 10 s), after `closed` was set.
    async fn end_tasks(&self) {
        self.inner.tasks_shutdown.cancel();
        let limit = self.inner.config.stop_grace + Duration::from_secs(10);
        let until = tokio::time::Instant::now() + limit;
        while self.inner.active_tasks.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.inner.active_tasks.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(left, "one-off task containers did not end within {limit:?}");
        }
    }
}

/// Records every exit of the container (see the module documentation).
async fn watch_exits(
    docker: bollard::Docker,
    container: String,
    id: InstanceId,
    shared: Arc<Shared>,
    logs: broadcast::Sender<LogLine>,
) {
    // The container is new: replaying its events from a little before now
    // catches a death between its start and this watcher's.
    let mut since = i64::try_from(crate::unix_ms())
        .unwrap_or(i64::MAX)
        .saturating_sub(5_000)
        * 1_000_000;
    let filters = HashMap::from([
        ("container", vec![container.clone()]),
        ("event", vec!["die".to_owned()]),
    ]);
    loop {
        let from = format!("{}.{:09}", since / 1_000_000_000, since % 1_000_000_000);
        let options = EventsOptionsBuilder::new().since(&from).filters(&filters).build();
        let mut events = docker.events(Some(options));
        while let Some(Ok(event)) = events.next().await {
            let at = event.time_nano.unwrap_or(0);
            if at <= since {
                continue;
            }
            since = at;
            let code = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("exitCode").and_then(|c| c.parse::<i64>().ok()))
                .unwrap_or(-1);
            let exit = describe_exit(code, None, None);
            let next = if code == 0 {
                "not restarted (restart policy on-failure)"
            } else {
                "Docker restarts it (restart policy on-failure)"
            };
            tracing::info!(instance = %id, container = %container, "{exit}; {next}");
            let _ = logs.send(LogLine::new(
                LogStream::Cutover,
                format!("exited: {exit}; {next}"),
            ));
            *lock(&shared.last_exit) = Some(exit);
            *lock(&shared.healthy) = None;
        }
        // The engine hung up (or restarted): follow again from the last
        // event seen, unless the container is gone.
        if let Err(err) = docker.inspect_container(&container, None).await
            && is_not_found(&err)
        {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        if let Some(path) = &spec.health_path
            && !health::valid_path(path)
        {
            return Err(RuntimeError::BadHealthPath { path: path.clone() });
        }
        let service = format!("{}-{}-{}", spec.app, spec.env, spec.service);
        let action = format!("start an instance of {service}");
        let image = image_tag(&spec.app, &spec.env, &spec.service, &spec.version);
        if !self
            .image_exists(&image)
            .await
            .map_err(|e| e.into_runtime(action.clone()))?
        {
            return Err(DockerError::ImageMissing { tag: image }.into_runtime(action));
        }
        let container_port = container::container_port(&spec, self.inner.config.container_port)
            .map_err(|e| e.into_runtime(action.clone()))?;
        let host_port = self.reserve_port()?;
        let name = format!(
            "{service}-{}-r{}-{}",
            &spec.version.as_str()[..8],
            spec.replica,
            random_hex(6)
        );
        let body = container::instance_body(&self.inner, &spec, &image, &name, container_port, host_port);
        let created = self
            .inner
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await;
        let container = match created {
            Ok(answer) => answer.id,
            Err(err) => {
                self.release(host_port);
                return Err(engine_err(format!(
                    "create container {name} from {image} ({action})"
                ))(err));
            }
        };
        if let Err(err) = self.inner.docker.start_container(&container, None).await {
            self.release(host_port);
            let _ = self.remove(&container).await;
            return Err(engine_err(format!(
                "start container {name} ({action}; is 127.0.0.1:{host_port} taken?)"
            ))(err));
        }
        let Some(id) = container::instance_id(&container) else {
            self.release(host_port);
            let _ = self.remove(&container).await;
            return Err(DockerError::NoPublishedPort {
                container,
                port: container_port,
            }
            .into_runtime(action));
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, host_port));
        let (shared, logs_tx, tasks) = self.spawn_background(&id, &container, None);
        let health = self.health_monitor(addr, spec.health_path.clone(), &shared);
        let _ = logs_tx.send(LogLine::new(
            LogStream::Cutover,
            format!("started container {name} ({id}) from {image} on {addr}"),
        ));
        tracing::info!(instance = %id, container = %name, %image, %addr, "started");
        {
            let mut table = self.table();
            table.reserved.remove(&host_port);
            table.entries.insert(
                id.clone(),
                Entry {
                    container,
                    port: host_port,
                    shared,
                    logs: logs_tx,
                    _tasks: tasks,
                    health,
                    adoption: None,
                },
            );
        }
        // A shutdown that ran while we were starting missed this instance.
        if self.inner.closed.load(Ordering::SeqCst) {
            let _ = self.stop(&id).await;
            return Err(RuntimeError::ShutDown);
        }
        Ok(self.inspect(&id).await?.0)
    }

    async fn stop(&self, id: &InstanceId) -> Result<StopOutcome, RuntimeError> {
        let entry = self.table().entries.remove(id);
        // Not started by this runtime object: still ours if the engine says
        // so (a leftover seen in `status` before `recover`).
        let (container, was_running) = match &entry {
            Some(e) => (e.container.clone(), true),
            None => {
                let (status, container) = self.inspect(id).await?;
                (container, status.state == cutover_runtime::InstanceState::Running)
            }
        };
        if let Some(e) = &entry {
            let _ = e.logs.send(LogLine::new(
                LogStream::Cutover,
                "stopping (SIGTERM, SIGKILL after the grace)",
            ));
        }
        let (graceful, exit) = self.stop_container(&container, was_running).await?;
        self.remove(&container)
            .await
            .map_err(engine_err(format!("remove container {id}")))?;
        tracing::info!(instance = %id, graceful, %exit, "stopped and removed");
        drop(entry);
        Ok(StopOutcome {
            id: id.clone(),
            graceful,
            exit,
        })
    }

    async fn status(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        self.list_instances(Vec::new()).await
    }

    async fn status_of(&self, app: &AppName, env: &EnvName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        self.list_instances(vec![
            format!("{}={app}", labels::APP),
            format!("{}={env}", labels::ENV),
        ])
        .await
    }

    async fn instance(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        Ok(self.inspect(id).await?.0)
    }

    async fn probe(
        &self,
        id: &InstanceId,
        path: &str,
        timeout: Duration,
    ) -> Result<ProbeResult, RuntimeError> {
        if !health::valid_path(path) {
            return Err(RuntimeError::BadHealthPath {
                path: path.to_owned(),
            });
        }
        let (status, _) = self.inspect(id).await?;
        let result = health::probe(status.addr, path, timeout).await;
        if let Some(shared) = self.shared_of(id) {
            *lock(&shared.healthy) = Some(result.is_healthy());
        }
        Ok(result)
    }

    async fn wait_healthy(
        &self,
        id: &InstanceId,
        path: &str,
        settings: &HealthSettings,
    ) -> Result<(), RuntimeError> {
        if !health::valid_path(path) {
            return Err(RuntimeError::BadHealthPath {
                path: path.to_owned(),
            });
        }
        let (status, container) = self.inspect(id).await?;
        let addr = status.addr;
        let began = tokio::time::Instant::now();
        let outcome = match health::wait_healthy(addr, path, settings).await {
            Ok(_) => self.wait_engine_healthcheck(&container, settings, began).await,
            Err(not) => Err((not.attempts, not.last.to_string())),
        };
        let shared = self.shared_of(id);
        let (attempts, last) = match outcome {
            Ok(()) => {
                if let Some(shared) = shared {
                    *lock(&shared.healthy) = Some(true);
                }
                return Ok(());
            }
            Err(failure) => failure,
        };
        if let Some(shared) = &shared {
            *lock(&shared.healthy) = Some(false);
        }
        let now = self.inspect(id).await.map(|s| s.0).unwrap_or(status);
        let log_tail = logs::tail(&self.inner.docker, &container, UNHEALTHY_LOG_LINES)
            .await
            .unwrap_or_else(|e| vec![format!("(logs unreadable: {})", chain(&e))]);
        Err(RuntimeError::Unhealthy(Box::new(UnhealthyReport {
            id: id.clone(),
            service: format!("{}-{}-{}", now.app, now.env, now.service),
            url: format!("http://{addr}{path}"),
            addr,
            deadline: settings.deadline,
            attempts,
            last,
            restarts: now.restarts,
            last_exit: now.last_exit,
            log_tail,
        })))
    }

    async fn log_tail(&self, id: &InstanceId, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let (_, container) = self.inspect(id).await?;
        logs::tail(&self.inner.docker, &container, lines)
            .await
            .map_err(engine_err(format!("read the logs of {id}")))
    }

    async fn follow_logs(&self, id: &InstanceId) -> Result<broadcast::Receiver<LogLine>, RuntimeError> {
        self.table()
            .entries
            .get(id)
            .map(|e| e.logs.subscribe())
            .ok_or_else(|| RuntimeError::UnknownInstance { id: id.clone() })
    }

    async fn run_task(
        &self,
        spec: TaskSpec,
        lines: mpsc::UnboundedSender<TaskLine>,
        cancel: CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError> {
        crate::task::run(self, spec, lines, cancel).await
    }

    async fn recover(&self) -> Result<RecoveryReport, RuntimeError> {
        Ok(self.recover_adopting().await?.report)
    }

    async fn adopt(&self, id: &InstanceId, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        crate::recover::claim_preconditions(
            self.inner.closed.load(Ordering::SeqCst),
            id,
            &spec,
            self.adopted_since(id).is_some(),
        )?;
        let action = format!("adopt instance {id}");
        let (status, _) = self.inspect(id).await?;
        check_claim(&status, &spec).map_err(|e| e.into_runtime(action))?;
        {
            let mut table = self.table();
            let Some(entry) = table.entries.get_mut(id) else {
                return Err(RuntimeError::UnknownInstance { id: id.clone() });
            };
            entry.health = self.health_monitor(status.addr, spec.health_path.clone(), &entry.shared);
            let _ = entry.logs.send(LogLine::new(
                LogStream::Cutover,
                format!("adopted by the server with pid {}", std::process::id()),
            ));
            if let Some(adoption) = &mut entry.adoption {
                adoption.spec = Some(Box::new(spec));
            }
        }
        tracing::info!(instance = %id, "adopted");
        Ok(self.inspect(id).await?.0)
    }

    async fn detach(&self) -> Result<(), RuntimeError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Ends every follower, watcher and monitor; the containers run on.
        let entries: Vec<Entry> = self.table().entries.drain().map(|(_, e)| e).collect();
        tracing::info!(instances = entries.len(), "detached: the containers keep running");
        drop(entries);
        self.end_tasks().await;
        Ok(())
    }

    async fn shutdown(&self) -> Result<Vec<StopOutcome>, RuntimeError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.tasks_shutdown.cancel();
        let ids: Vec<InstanceId> = self.table().entries.keys().cloned().collect();
        let results = futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
        self.end_tasks().await;
        let mut outcomes = Vec::with_capacity(results.len());
        let mut failed = None;
        for result in results {
            match result {
                Ok(outcome) => outcomes.push(outcome),
                Err(err) => failed = Some(err),
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(outcomes),
        }
    }
}

impl DockerRuntime {
    /// This server's instances whose containers carry every label of `only`
    /// (besides the owner and instance labels), sorted like `status`.
    async fn list_instances(&self, only: Vec<String>) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut wanted = vec![
            format!("{}={}", labels::OWNER, self.inner.owner),
            labels::INSTANCE.to_owned(),
        ];
        wanted.extend(only);
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(engine_err("list containers"))?;
        let mut out = Vec::with_capacity(listed.len());
        for summary in listed {
            let Some(id) = summary.id.as_deref().and_then(container::instance_id) else {
                continue;
            };
            match self.inspect(&id).await {
                Ok((status, _)) => out.push(status),
                Err(RuntimeError::UnknownInstance { .. }) => {} // removed meanwhile
                Err(err) => return Err(err),
            }
        }
        out.sort_by(|a, b| {
            (&a.app, &a.env, &a.service, a.replica, a.created_at, &a.id).cmp(&(
                &b.app,
                &b.env,
                &b.service,
                b.replica,
                b.created_at,
                &b.id,
            ))
        });
        Ok(out)
    }
}

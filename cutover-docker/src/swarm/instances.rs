//! [`Runtime`] for [`SwarmRuntime`]: public instances as one-replica Swarm
//! services (see the [module documentation](super)).
//!
//! `start` returns once the service's task runs (or ended: a crash is the
//! health check's to report, as with containers); a task Swarm rejects, or
//! none placed within 30 s ("host-mode port already in use"), fails the
//! start and removes the service. Per instance, `start` spawns a log
//! follower on the service's logs and, with a `health_path`, the health
//! monitor; both end when `stop` removes the table entry (or `detach` lets
//! go of every entry, leaving the services running). `recover` adopts a
//! previous server's running services (see [`SwarmRuntime::recover_adopting`]):
//! their logs are followed from then on, and `adopt` adds the health
//! monitor its spec asks for. Hooks and jobs
//! run in one-off containers of the docker runtime beneath (same image
//! selection, [`TASK_IMAGE_VAR`](crate::TASK_IMAGE_VAR)).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::models::{Service, TaskState};
use bollard::query_parameters::ListTasksOptionsBuilder;
use cutover_runtime::health::{self, ProbeResult};
use cutover_runtime::{
    HealthSettings, InstanceId, InstanceOwner, InstanceSpec, InstanceStatus, LogLine, LogStream,
    RecoveredInstance, RecoveryAction, RecoveryReport, Runtime, RuntimeError, StateFile, StopOutcome,
    TaskLine, TaskOutcome, TaskSpec, UnhealthyReport,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::service::{self, describe_task_end, is_ended, task_state};
use super::{Entry, POLL, SwarmRuntime};
use crate::error::{DockerError, chain};
use crate::logs::{self, LogSource};
use crate::recover::{Adoption, Recovery, check_claim, owner};
use crate::runtime::{AbortOnDrop, engine_err, lock};
use crate::{container, image_tag, labels};

const START_LIMIT: Duration = Duration::from_secs(30);
const UNHEALTHY_LOG_LINES: usize = 20;
const FOLLOW_BUFFER: usize = 1024;

impl SwarmRuntime {
    /// The engine's view of one of our instances, and its service's full id.
    async fn inspect(&self, id: &InstanceId) -> Result<(InstanceStatus, String), RuntimeError> {
        let service = self.service_of(id).await?;
        let full = service.id.clone().unwrap_or_default();
        let tasks = self
            .tasks_of(&full)
            .await
            .map_err(engine_err(format!("list the tasks of service {id}")))?;
        let healthy = self.healthy_of(id).and_then(|h| *lock(&h));
        let mut status = service::instance_status(self.owner(), &service, &tasks, healthy)
            .ok_or_else(|| RuntimeError::UnknownInstance { id: id.clone() })?;
        status.owner = self.owner_of(id, &service, status.created_at);
        self.locate(&mut status, service::current_task(&tasks)).await;
        Ok((status, full))
    }

    /// Points `status` at the node its task runs on (address and name), and
    /// keeps the table's address of the instance in step: when Swarm moved
    /// the task to another node (its node died or was drained), the health
    /// monitor probes the new address from now on, and the instance counts
    /// as unhealthy until a probe there passes.
    async fn locate(&self, status: &mut InstanceStatus, task: Option<&bollard::models::Task>) {
        let Some(place) = self.node_place(task.and_then(|t| t.node_id.as_deref())).await else {
            return;
        };
        status.addr = SocketAddr::new(place.ip, status.port);
        status.node = Some(place.name);
        let table = self.table();
        let Some(entry) = table.entries.get(&status.id) else {
            return;
        };
        let mut addr = lock(&entry.addr);
        if *addr != status.addr {
            tracing::info!(instance = %status.id, from = %*addr, to = %status.addr, "the instance moved");
            let _ = entry.logs.send(LogLine::new(
                LogStream::Cutover,
                format!("Swarm moved the task from {} to {}", *addr, status.addr),
            ));
            *addr = status.addr;
            if entry.health.is_some() {
                *lock(&entry.healthy) = Some(false);
                status.healthy = Some(false);
            }
        }
    }

    fn healthy_of(&self, id: &InstanceId) -> Option<Arc<Mutex<Option<bool>>>> {
        self.table().entries.get(id).map(|e| e.healthy.clone())
    }

    /// Waits until the service's task runs or ended (see the module docs).
    async fn wait_for_task(&self, service_id: &str, name: &str) -> Result<(), DockerError> {
        let until = tokio::time::Instant::now() + START_LIMIT;
        loop {
            let tasks = self
                .tasks_of(service_id)
                .await
                .map_err(DockerError::api(format!("list the tasks of service {name}")))?;
            if let Some(rejected) = tasks.iter().find(|t| task_state(t) == Some(TaskState::REJECTED)) {
                let node = match self.node_place(rejected.node_id.as_deref()).await {
                    Some(place) => format!("on node {} ({}): ", place.name, place.ip),
                    None => String::new(),
                };
                return Err(DockerError::TaskRejected {
                    service: name.to_owned(),
                    reason: format!("{node}{}", describe_task_end(rejected)),
                });
            }
            let up = tasks.iter().any(|t| {
                let state = task_state(t);
                state == Some(TaskState::RUNNING) || is_ended(state)
            });
            if up {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                let detail = service::current_task(&tasks)
                    .and_then(|t| t.status.clone())
                    .map(|s| {
                        let state = s.state.map(|s| s.to_string()).unwrap_or_default();
                        let why = s.err.filter(|e| !e.is_empty()).or(s.message).unwrap_or_default();
                        format!("its task is {state}: {why}")
                    })
                    .unwrap_or_else(|| "Swarm created no task".to_owned());
                return Err(DockerError::StartTimeout {
                    service: name.to_owned(),
                    after: humantime::format_duration(START_LIMIT).to_string(),
                    detail,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The log follower of an instance; `logs_after`: see
    /// [`logs::follow`](crate::logs::follow).
    fn spawn_background(
        &self,
        service_id: &str,
        logs_after: Option<SystemTime>,
    ) -> (
        Arc<Mutex<Option<bool>>>,
        broadcast::Sender<LogLine>,
        Vec<AbortOnDrop>,
    ) {
        let healthy = Arc::new(Mutex::new(None));
        let (logs_tx, _) = broadcast::channel(FOLLOW_BUFFER);
        let tasks = vec![AbortOnDrop(tokio::spawn(logs::follow_source(
            self.docker().clone(),
            LogSource::Service(service_id.to_owned()),
            logs_tx.clone(),
            logs_after,
        )))];
        (healthy, logs_tx, tasks)
    }

    /// Probes `path` every `health_interval`, into `healthy`.
    fn health_monitor(
        &self,
        addr: Arc<Mutex<SocketAddr>>,
        path: Option<String>,
        healthy: &Arc<Mutex<Option<bool>>>,
    ) -> Option<AbortOnDrop> {
        let path = path?;
        let every = self.config().health_interval;
        let healthy = healthy.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                let at = *lock(&addr);
                let result = health::probe(at, &path, every.min(Duration::from_secs(2))).await;
                // A probe of an address the instance left says nothing about it.
                if *lock(&addr) == at {
                    *lock(&healthy) = Some(result.is_healthy());
                }
                tokio::time::sleep(every).await;
            }
        })))
    }

    /// When `recover` took the instance over (`None`: not adopted).
    fn adopted_since(&self, id: &InstanceId) -> Option<u64> {
        self.table()
            .entries
            .get(id)
            .and_then(|e| e.adoption.as_ref().map(|a| a.since))
    }

    /// Who supervises the instance of `service` (see [`owner`]).
    fn owner_of(&self, id: &InstanceId, service: &Service, created_at: u64) -> InstanceOwner {
        let started_here = service::service_labels(service)
            .get(labels::RUNTIME)
            .map(String::as_str)
            == Some(self.runtime_id());
        owner(self.adopted_since(id), started_here, created_at)
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

    /// Adopts the public-instance services of a previous server (this
    /// owner, another runtime object) that have a running task (or one
    /// Swarm is starting in place of a crashed one) and name
    /// their app, env, service, version and replica (unclaimed: followed,
    /// never touched); removes the others (converged services are left:
    /// Swarm runs them, and the next converge updates them); then removes
    /// the task containers a previous server left (see
    /// [`DockerRuntime::recover_adopting`](crate::DockerRuntime::recover_adopting)),
    /// and any instance container (a docker runtime's, not this one's).
    pub async fn recover_adopting(&self) -> Result<Recovery, RuntimeError> {
        let mut recovery = Recovery::default();
        for s in self.instance_services(false).await? {
            let labels = service::service_labels(&s);
            let name = labels.get(labels::INSTANCE).cloned().unwrap_or_default();
            let Some(full) = s.id.clone() else { continue };
            let Some(id) = service::short_id(&full) else {
                continue;
            };
            if self.table().entries.contains_key(&id) {
                continue; // adopted by an earlier call
            }
            let state = leftover_state(&s);
            let tasks = self
                .tasks_of(&full)
                .await
                .map_err(engine_err(format!("list the tasks of service {name}")))?;
            let alive = service::current_task(&tasks).is_some_and(alive);
            let named = labels
                .get(labels::REPLICA)
                .is_some_and(|r| r.parse::<u32>().is_ok());
            if let Some(state) = state.clone().filter(|st| alive && named && st.port > 0) {
                // `false`: a concurrent call took it; it is adopted either way.
                let node = service::current_task(&tasks).and_then(|t| t.node_id.clone());
                let ip = self
                    .node_place(node.as_deref())
                    .await
                    .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.ip);
                if self.take_over(&id, &full, SocketAddr::new(ip, state.port)) {
                    tracing::info!(
                        service = %name, instance = %id, port = state.port, version = %state.version,
                        "adopted a running Swarm service of a previous server (unclaimed)"
                    );
                    recovery.adopted.push(state);
                }
                continue;
            }
            let action = match self.remove_service(&s).await {
                Ok(r) if r.was_running => RecoveryAction::Terminated { graceful: r.graceful },
                Ok(_) => RecoveryAction::AlreadyGone,
                Err(err) => RecoveryAction::KillFailed { error: chain(&err) },
            };
            tracing::info!(service = %name, ?action, "removed a leftover Swarm service");
            recovery.report.instances.push(RecoveredInstance {
                file: PathBuf::from(format!("swarm:{name}")),
                state,
                action,
            });
        }
        let containers = self.containers().recover_with(false).await?;
        recovery.report.instances.extend(containers.report.instances);
        recovery.adopted.extend(containers.adopted);
        Ok(recovery)
    }

    /// Puts a previous server's service into the table, unclaimed.
    fn take_over(&self, id: &InstanceId, full: &str, addr: SocketAddr) -> bool {
        if self.table().entries.contains_key(id) {
            return false;
        }
        let (healthy, logs_tx, tasks) = self.spawn_background(full, Some(SystemTime::now()));
        let since = crate::unix_ms();
        let mut table = self.table();
        if table.entries.contains_key(id) {
            return false;
        }
        table.entries.insert(
            id.clone(),
            Entry {
                port: addr.port(),
                addr: Arc::new(Mutex::new(addr)),
                healthy,
                logs: logs_tx,
                _tasks: tasks,
                health: None,
                adoption: Some(Adoption { since, spec: None }),
            },
        );
        true
    }

    /// Public-instance services of this owner; with `mine`, only this
    /// runtime object's, else only other runtime objects'.
    async fn instance_services(&self, mine: bool) -> Result<Vec<Service>, RuntimeError> {
        let services = self
            .list_services(labels::INSTANCE, &[])
            .await
            .map_err(engine_err("list services"))?;
        Ok(services
            .into_iter()
            .filter(|s| {
                let own = service::service_labels(s)
                    .get(labels::RUNTIME)
                    .map(String::as_str)
                    == Some(self.runtime_id());
                own == mine
            })
            .collect())
    }
}

#[async_trait]
impl Runtime for SwarmRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        if let Some(path) = &spec.health_path
            && !health::valid_path(path)
        {
            return Err(RuntimeError::BadHealthPath { path: path.clone() });
        }
        let action = format!("start an instance of {}-{}-{}", spec.app, spec.env, spec.service);
        let image = image_tag(&spec.app, &spec.env, &spec.service, &spec.version);
        let containers = self.containers();
        if !containers
            .image_exists(&image)
            .await
            .map_err(|e| e.into_runtime(action.clone()))?
        {
            return Err(DockerError::ImageMissing { tag: image }.into_runtime(action));
        }
        let container_port = container::container_port(&spec, self.config().container_port)
            .map_err(|e| e.into_runtime(action.clone()))?;
        let host_port = self.reserve_port()?;
        let name = service::instance_name(&spec);
        let image = self.config().image_reference(&image);
        let body =
            service::instance_service(&containers.inner, &spec, &image, &name, container_port, host_port);
        let created = match self.docker().create_service(body, self.registry_auth()).await {
            Ok(created) => created,
            Err(err) => {
                self.release(host_port);
                return Err(engine_err(format!(
                    "create service {name} from {image} ({action})"
                ))(err));
            }
        };
        let full = created.id.unwrap_or_default();
        let Some(id) = service::short_id(&full) else {
            self.release(host_port);
            return Err(DockerError::TaskRejected {
                service: name,
                reason: format!("the engine answered with no usable service id ({full:?})"),
            }
            .into_runtime(action));
        };
        if let Err(err) = self.wait_for_task(&full, &name).await {
            self.release(host_port);
            let _ = self.docker().delete_service(&full).await;
            return Err(err.into_runtime(action));
        }
        let tasks = self.tasks_of(&full).await.unwrap_or_default();
        let node = service::current_task(&tasks).and_then(|t| t.node_id.clone());
        let place = self.node_place(node.as_deref()).await;
        let ip = place.as_ref().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.ip);
        let addr = SocketAddr::new(ip, host_port);
        let addr_cell = Arc::new(Mutex::new(addr));
        let (healthy, logs_tx, tasks) = self.spawn_background(&full, None);
        let health = self.health_monitor(addr_cell.clone(), spec.health_path.clone(), &healthy);
        let on = place.map(|p| format!(" (node {})", p.name)).unwrap_or_default();
        let _ = logs_tx.send(LogLine::new(
            LogStream::Cutover,
            format!("started Swarm service {name} ({id}) from {image} on {addr}{on}"),
        ));
        tracing::info!(instance = %id, service = %name, %image, %addr, "started");
        {
            let mut table = self.table();
            table.reserved.remove(&host_port);
            table.entries.insert(
                id.clone(),
                Entry {
                    port: host_port,
                    addr: addr_cell,
                    healthy,
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
        let service = match self.service_of(id).await {
            Ok(service) => service,
            Err(RuntimeError::UnknownInstance { .. }) if entry.is_some() => {
                return Ok(StopOutcome {
                    id: id.clone(),
                    graceful: true,
                    exit: "the service was already gone".to_owned(),
                });
            }
            Err(err) => return Err(err),
        };
        if let Some(e) = &entry {
            let _ = e.logs.send(LogLine::new(
                LogStream::Cutover,
                "removing the service (SIGTERM, SIGKILL after the grace)",
            ));
        }
        let removed = self
            .remove_service(&service)
            .await
            .map_err(|e| e.into_runtime(format!("stop instance {id}")))?;
        tracing::info!(instance = %id, graceful = removed.graceful, exit = %removed.exit, "service removed");
        drop(entry);
        Ok(StopOutcome {
            id: id.clone(),
            graceful: removed.graceful,
            exit: removed.exit,
        })
    }

    async fn status(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let services = self
            .list_services(labels::INSTANCE, &[])
            .await
            .map_err(engine_err("list services"))?;
        if services.is_empty() {
            return Ok(Vec::new());
        }
        // Nodes come and go (and a swarm of one node grows): read them once per listing.
        if let Err(err) = self.refresh_nodes().await {
            tracing::warn!(error = %chain(&err), "could not list the swarm's nodes");
        }
        let all = self
            .docker()
            .list_tasks(Some(ListTasksOptionsBuilder::new().build()))
            .await
            .map_err(engine_err("list tasks"))?;
        let mut by_service: HashMap<String, Vec<_>> = HashMap::new();
        for task in all {
            if let Some(sid) = task.service_id.clone() {
                by_service.entry(sid).or_default().push(task);
            }
        }
        let mut out = Vec::with_capacity(services.len());
        for s in &services {
            let tasks =
                s.id.as_ref()
                    .and_then(|i| by_service.get(i))
                    .map_or(&[][..], Vec::as_slice);
            let healthy =
                s.id.as_deref()
                    .and_then(service::short_id)
                    .and_then(|id| self.healthy_of(&id))
                    .and_then(|h| *lock(&h));
            if let Some(mut status) = service::instance_status(self.owner(), s, tasks, healthy) {
                status.owner = self.owner_of(&status.id, s, status.created_at);
                self.locate(&mut status, service::current_task(tasks)).await;
                out.push(status);
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
        if let Some(healthy) = self.healthy_of(id) {
            *lock(&healthy) = Some(result.is_healthy());
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
        let (status, full) = self.inspect(id).await?;
        let addr = status.addr;
        let result = health::wait_healthy(addr, path, settings).await;
        let healthy = self.healthy_of(id);
        if let Some(h) = &healthy {
            *lock(h) = Some(result.is_ok());
        }
        let not = match result {
            Ok(_) => return Ok(()),
            Err(not) => not,
        };
        let now = self.inspect(id).await.map(|s| s.0).unwrap_or(status);
        let log_tail = logs::tail_of(self.docker(), &LogSource::Service(full), UNHEALTHY_LOG_LINES)
            .await
            .unwrap_or_else(|e| vec![format!("(logs unreadable: {})", chain(&e))]);
        Err(RuntimeError::Unhealthy(Box::new(UnhealthyReport {
            id: id.clone(),
            service: format!("{}-{}-{}", now.app, now.env, now.service),
            url: format!("http://{addr}{path}"),
            addr,
            deadline: settings.deadline,
            attempts: not.attempts,
            last: not.last.to_string(),
            restarts: now.restarts,
            last_exit: now.last_exit,
            log_tail,
        })))
    }

    async fn log_tail(&self, id: &InstanceId, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let service = self.service_of(id).await?;
        let full = service.id.unwrap_or_default();
        logs::tail_of(self.docker(), &LogSource::Service(full), lines)
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
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        self.containers().run_task(spec, lines, cancel).await
    }

    /// See [`SwarmRuntime::recover_adopting`].
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
            entry.health = self.health_monitor(entry.addr.clone(), spec.health_path.clone(), &entry.healthy);
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

    /// Leaves every public-instance service (and converged service)
    /// running; cancels and awaits running task containers.
    async fn detach(&self) -> Result<(), RuntimeError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let entries: Vec<Entry> = self.table().entries.drain().map(|(_, e)| e).collect();
        tracing::info!(
            instances = entries.len(),
            "detached: the Swarm services keep running"
        );
        drop(entries);
        self.containers().detach().await
    }

    async fn shutdown(&self) -> Result<Vec<StopOutcome>, RuntimeError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Cancels running task containers and waits for them.
        let tasks = self.containers().shutdown().await;
        let mut ids: Vec<InstanceId> = self.table().entries.keys().cloned().collect();
        for s in self.instance_services(true).await? {
            if let Some(id) = s.id.as_deref().and_then(service::short_id)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        let results = futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
        let mut outcomes = Vec::with_capacity(results.len());
        for result in results {
            outcomes.push(result?);
        }
        tasks?;
        Ok(outcomes)
    }
}

/// Whether a service's current task runs, or is being started again by
/// Swarm (desired `running`, not ended: a replacement after a crash).
fn alive(task: &bollard::models::Task) -> bool {
    let state = task_state(task);
    state == Some(TaskState::RUNNING) || (task.desired_state == Some(TaskState::RUNNING) && !is_ended(state))
}

/// A leftover service in the process runtime's [`StateFile`] shape (`pid`
/// 0, `release_dir` empty).
fn leftover_state(s: &Service) -> Option<StateFile> {
    let labels = service::service_labels(s);
    Some(StateFile {
        id: service::short_id(s.id.as_deref()?)?,
        pid: 0,
        pgid: 0,
        port: service::published_port(s).unwrap_or(0),
        app: labels.get(labels::APP)?.parse().ok()?,
        env: labels.get(labels::ENV)?.parse().ok()?,
        service: labels.get(labels::SERVICE)?.parse().ok()?,
        version: labels.get(labels::VERSION)?.parse().ok()?,
        replica: labels
            .get(labels::REPLICA)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        release_dir: PathBuf::new(),
        started_at: container::engine_ms(s.created_at.as_deref()),
        proc_start_time: None,
        server_pid: 0,
    })
}

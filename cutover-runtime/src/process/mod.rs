//! The `process` runtime: each service replica is a local process started
//! from its release directory, supervised by this server.
//!
//! - **Start**: a free port on 127.0.0.1 is picked by binding port 0 and
//!   closing the socket again; the process gets it as `PORT`. The tiny race
//!   (another program takes the port in between) is accepted: the instance
//!   then fails its health check or exits, and the run fails with the old
//!   version still serving. Ports of this runtime's instances (also
//!   those waiting to restart, and those adopted from a previous server)
//!   are never handed out twice.
//! - **Run**: `sh -c <run>` with the release directory as working
//!   directory, in its own process group (`process_group(0)`), stdin from
//!   `/dev/null`, stdout/stderr appended by the process itself to the
//!   instance's log file (no pipe to this server; see [`logs`]).
//! - **Supervise**: an unexpected exit is logged, leftovers of the group
//!   are killed, and the process is restarted on the same port after a
//!   back-off delay (100 ms doubling to 10 s by default, back to 100 ms
//!   after 30 s of uptime); `restarts` counts the restarts. An adopted
//!   instance that is not claimed yet is not restarted (its spec is
//!   unknown): it is reported down until it is claimed (then restarted) or
//!   stopped.
//! - **Health**: when the spec has a `health_path`, a monitor task per
//!   instance probes it every `health_interval` (2 s by default) while a
//!   process is alive, so `InstanceStatus::healthy` stays current without
//!   callers probing. Rejected: a `spawn_health_monitor` method, which
//!   could be forgotten, started twice, or outlive its instance; the
//!   monitor here is created by `start` and aborted by `stop` (it lives in
//!   the instance's table entry), and the docker backend can map the same
//!   field to a container health check.
//! - **Tasks**: one-shot commands (hooks, builds, jobs) run through
//!   [`crate::task`]; `shutdown` cancels the running ones and waits for
//!   their groups to be gone.
//! - **Stop**: SIGTERM to the process group, SIGKILL after the grace period
//!   (default 10 s), until no member of the group is left. A stop also ends
//!   supervision.
//! - **Status**: pid, port, restarts, state from the supervisor; the
//!   *version* is read from the process itself (`/proc/<pid>/cwd`, which
//!   lies in `<data>/releases/<app>/<sha>`, else `CUTOVER_VERSION` in
//!   `/proc/<pid>/environ`). When the process has died (the instance waits
//!   to restart, or it died between the supervisor's look and ours) the
//!   version is reported as `None` with [`VersionSource::Unavailable`]; it is
//!   never filled in from what was asked for (`requested_version` says that).
//! - **Instances outlive their server**: production keeps serving whatever
//!   happens to the control plane. An instance owns nothing in this process
//!   (own process group, output straight into its file, `kill_on_drop(false)`),
//!   so [`Runtime::detach`] (a restart or upgrade of `cutover serve`), dropping
//!   the runtime, or the server's death (SIGKILL, OOM) leaves it running with
//!   its state file; the next server's [`Runtime::recover`] adopts it
//!   (recognised by pid *and* `/proc` start time, watched by polling `/proc`,
//!   since it is not that server's child), unclaimed, and [`Runtime::adopt`]
//!   claims it with its spec, from when on it is supervised like an instance
//!   this server started (restarted as this server's child after an exit).
//!   One-off tasks are not kept: a run ends with its server. Stopping
//!   everything stays explicit: [`Runtime::shutdown`] (`cutover stop --all`,
//!   Ctrl-C of `demo`). Rejected: `PR_SET_PDEATHSIG`, and killing instances
//!   when the runtime is dropped (the earlier "no orphans" rule): an upgrade
//!   of the control plane must not be an outage; the state files, not the
//!   parent link, are what make sure nothing is left unowned: the next server
//!   adopts or stops every instance they name. Rejected too: a separate
//!   process owning the instances through pipes (it would have to hand its
//!   pipes over on its own upgrade, and its crash would kill every instance
//!   by SIGPIPE).

mod supervise;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cutover_core::{AppName, EnvName};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{RuntimeError, UnhealthyReport};
use crate::health::{self, ProbeResult};
use crate::logs::{self, LogLine, LogSink};
use crate::recover::{self, RecoveryReport, StateFile};
use crate::task::{self, TaskLine, TaskOutcome, TaskSpec};
use crate::types::{
    HealthSettings, InstanceId, InstanceSpec, InstanceState, InstanceStatus, RuntimeConfig, StopOutcome,
    VersionSource,
};
use crate::{Runtime, os};
use supervise::{Ended, Halt, Instance, Running, error_chain, monitor_health, spawn_process, supervise};

/// How many log lines an [`UnhealthyReport`] carries.
const UNHEALTHY_LOG_LINES: usize = 20;
/// A new instance that exited this many times in a row while its health check waited fails
/// the check at once.
const CRASH_LOOP_EXITS: u32 = 3;

/// The process runtime. Cheap to clone; clones share the instances.
#[derive(Clone, Debug)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<RuntimeConfig>,
    table: Mutex<Table>,
    closed: AtomicBool,
    /// Cancelled by `shutdown`: ends every running task.
    tasks_shutdown: CancellationToken,
    /// Tasks inside `run_task` right now.
    active_tasks: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<InstanceId, Entry>,
    /// Ports handed out to starts that are not in `entries` yet.
    reserved: HashSet<u16>,
}

#[derive(Debug)]
struct Entry {
    inst: Arc<Instance>,
    /// Dropping it (the runtime was dropped) means [`Halt::Detach`].
    halt: oneshot::Sender<Halt>,
    task: JoinHandle<Ended>,
    /// The health monitor, when the spec has a `health_path`.
    monitor: Option<AbortOnDrop>,
}

/// Aborts a background task when its owner goes.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts one task in `run_task` for as long as it lives.
struct ActiveTask<'a>(&'a AtomicUsize);

impl<'a> ActiveTask<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for ActiveTask<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProcessRuntime {
    /// Creates `<state_dir>/logs`, `instances` and `tasks`. Starts
    /// nothing; call [`Runtime::recover`] next.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        for (what, path) in [
            ("logs", config.logs_dir()),
            ("instances", config.instances_dir()),
            ("tasks", config.tasks_dir()),
        ] {
            std::fs::create_dir_all(&path).map_err(|source| RuntimeError::CreateDir {
                what,
                path,
                source,
            })?;
        }
        match os::raise_open_files_limit() {
            Some((before, after)) if after > before => {
                tracing::info!(
                    "open files limit raised from {before} to {after} (each live instance holds one or two)"
                );
            }
            Some((_, after)) => {
                tracing::info!("open files limit: {after} (each live instance holds one or two)")
            }
            None => tracing::warn!("cannot read or raise the open files limit (RLIMIT_NOFILE)"),
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                table: Mutex::new(Table::default()),
                closed: AtomicBool::new(false),
                tasks_shutdown: CancellationToken::new(),
                active_tasks: AtomicUsize::new(0),
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, id: &InstanceId) -> Result<Arc<Instance>, RuntimeError> {
        self.table()
            .entries
            .get(id)
            .map(|e| e.inst.clone())
            .ok_or_else(|| RuntimeError::UnknownInstance { id: id.clone() })
    }

    /// Picks a free loopback port that none of our instances uses and
    /// reserves it until [`Self::release`].
    fn reserve_port(&self) -> Result<u16, RuntimeError> {
        let mut table = self.table();
        let mut last = None;
        for _ in 0..32 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port());
            match port {
                Ok(port)
                    if !table.reserved.contains(&port)
                        && !table.entries.values().any(|e| e.inst.port == port) =>
                {
                    table.reserved.insert(port);
                    return Ok(port);
                }
                Ok(_) => {}
                Err(err) => last = Some(err),
            }
        }
        let source =
            last.unwrap_or_else(|| std::io::Error::other("every port offered was in use by an instance"));
        Err(RuntimeError::NoFreePort { source })
    }

    /// The status of every instance `keep` selects, sorted by app, env,
    /// service, replica. Instances not selected cost no `/proc` read.
    fn snapshots(&self, keep: impl Fn(&Instance) -> bool) -> Vec<InstanceStatus> {
        let instances: Vec<Arc<Instance>> = self
            .table()
            .entries
            .values()
            .filter(|e| keep(&e.inst))
            .map(|e| e.inst.clone())
            .collect();
        let mut list: Vec<InstanceStatus> = instances.iter().map(|i| snapshot(i)).collect();
        list.sort_by(|a, b| {
            (&a.app, &a.env, &a.service, a.replica, a.created_at, &a.id).cmp(&(
                &b.app,
                &b.env,
                &b.service,
                b.replica,
                b.created_at,
                &b.id,
            ))
        });
        list
    }

    /// Empties the table and tells every supervisor `halt` (all at once, so instances stop
    /// in parallel); their tasks, to await.
    fn halt_all(&self, halt: Halt) -> Vec<(InstanceId, JoinHandle<Ended>)> {
        let entries: Vec<(InstanceId, Entry)> = self.table().entries.drain().collect();
        let mut tasks = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            drop(entry.monitor);
            let _ = entry.halt.send(halt);
            tasks.push((id, entry.task));
        }
        tasks
    }

    /// Waits for cancelled one-off tasks to end: within the stop grace (plus the SIGKILL wait).
    async fn wait_tasks_ended(&self) {
        let limit = self.inner.config.stop_grace + Duration::from_secs(10);
        let until = tokio::time::Instant::now() + limit;
        while self.inner.active_tasks.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes an instance of a previous server that still runs into the table, unclaimed,
    /// watched by a supervisor of its own.
    async fn take_in(&self, state: &StateFile) -> Result<(), RuntimeError> {
        let config = self.inner.config.clone();
        let log_path = config.log_file(&state.app, &state.env, &state.service, &state.id);
        let log = LogSink::open(&log_path).map_err(|source| RuntimeError::Log {
            action: "open",
            path: log_path,
            source,
        })?;
        let inst = Arc::new(Instance::adopted(state, log, config));
        inst.log
            .event(format!(
                "adopted pid {} from the previous server (pid {}) by this one (pid {}); not restarted after an exit until claimed",
                state.pid,
                state.server_pid,
                std::process::id()
            ))
            .await;
        let running = Running::adopted(state.pid, state.proc_start_time);
        let (halt, halt_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(inst.clone(), running, halt_rx));
        let entry = Entry {
            inst,
            halt,
            task,
            monitor: None,
        };
        self.table().entries.insert(state.id.clone(), entry);
        Ok(())
    }

    fn release(&self, port: u16) {
        self.table().reserved.remove(&port);
    }

    async fn log_tail_of(inst: &Instance, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let path = inst.log.path().to_owned();
        let shown = path.clone();
        tokio::task::spawn_blocking(move || logs::tail_file(&path, lines))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| RuntimeError::Log {
                action: "read",
                path: shown,
                source,
            })
    }
}

fn snapshot(inst: &Instance) -> InstanceStatus {
    let live = inst.live().clone();
    let (version, version_source) = match live.pid {
        Some(pid) => os::observed_version(pid),
        None => (None, VersionSource::Unavailable),
    };
    InstanceStatus {
        id: inst.id.clone(),
        app: inst.spec.app.clone(),
        env: inst.spec.env.clone(),
        service: inst.spec.service.clone(),
        replica: inst.spec.replica,
        requested_version: inst.spec.version.clone(),
        version,
        version_source,
        pid: live.pid,
        port: inst.port,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, inst.port)),
        healthy: live.healthy,
        restarts: live.restarts,
        started_at: live.started_at,
        created_at: inst.created_at,
        state: live.state,
        last_exit: live.last_exit,
        owner: inst.owner(),
        node: None,
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        let service = format!("{}-{}-{}", spec.app, spec.env, spec.service);
        // Empty means "the image's own command", which only containers have.
        if spec.run.trim().is_empty() {
            return Err(RuntimeError::NoRunCommand { service });
        }
        if !spec.release_dir.is_dir() {
            return Err(RuntimeError::ReleaseDirMissing {
                service,
                path: spec.release_dir,
            });
        }
        if let Some(path) = &spec.health_path
            && !health::valid_path(path)
        {
            return Err(RuntimeError::BadHealthPath { path: path.clone() });
        }
        let config = self.inner.config.clone();
        let id = loop {
            let id = InstanceId::generate(&spec.version, spec.replica);
            if !self.table().entries.contains_key(&id) && !config.state_file(&id).exists() {
                break id;
            }
        };
        let log_path = config.log_file(&spec.app, &spec.env, &spec.service, &id);
        let log = LogSink::open(&log_path).map_err(|source| RuntimeError::Log {
            action: "open",
            path: log_path,
            source,
        })?;
        let port = self.reserve_port()?;
        let inst = Arc::new(Instance::new(id.clone(), spec, port, log, config));
        let running = match spawn_process(&inst).await {
            Ok(running) => running,
            Err(err) => {
                inst.log
                    .event(format!("start failed: {}", error_chain(&err)))
                    .await;
                self.release(port);
                return Err(err);
            }
        };
        let (halt, halt_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(inst.clone(), running, halt_rx));
        let monitor = inst
            .spec
            .health_path
            .clone()
            .map(|path| AbortOnDrop(tokio::spawn(monitor_health(inst.clone(), path))));
        let status = snapshot(&inst);
        {
            let mut table = self.table();
            table.reserved.remove(&port);
            let entry = Entry {
                inst,
                halt,
                task,
                monitor,
            };
            table.entries.insert(id, entry);
        }
        // A shutdown that ran while we were spawning missed this instance.
        if self.inner.closed.load(Ordering::SeqCst) {
            let _ = self.stop(&status.id).await;
            return Err(RuntimeError::ShutDown);
        }
        Ok(status)
    }

    async fn stop(&self, id: &InstanceId) -> Result<StopOutcome, RuntimeError> {
        let entry = self
            .table()
            .entries
            .remove(id)
            .ok_or_else(|| RuntimeError::UnknownInstance { id: id.clone() })?;
        drop(entry.monitor);
        let _ = entry.halt.send(Halt::Stop);
        match entry.task.await {
            Ok(Ended::Stopped(outcome)) => Ok(outcome),
            // A supervisor only detaches when told to, or when its sender is dropped.
            Ok(Ended::Detached) => Err(RuntimeError::UnknownInstance { id: id.clone() }),
            Err(source) => Err(RuntimeError::Supervisor {
                id: id.clone(),
                source,
            }),
        }
    }

    async fn status(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        Ok(self.snapshots(|_| true))
    }

    async fn status_of(&self, app: &AppName, env: &EnvName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        Ok(self.snapshots(|i| &i.spec.app == app && &i.spec.env == env))
    }

    async fn instance(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        let inst = self.lookup(id)?;
        Ok(snapshot(&inst))
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
        let inst = self.lookup(id)?;
        let result = health::probe(SocketAddr::from((Ipv4Addr::LOCALHOST, inst.port)), path, timeout).await;
        inst.live().healthy = Some(result.is_healthy());
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
        let inst = self.lookup(id)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, inst.port));
        // A process that keeps exiting before it answers will not answer: fail the rollout after
        // a few exits in a row instead of probing until the deadline.
        let restarts_before = inst.live().restarts;
        let hopeless = || {
            let live = inst.live();
            let exits = live.restarts.saturating_sub(restarts_before)
                + u32::from(live.state == InstanceState::Backoff);
            (exits >= CRASH_LOOP_EXITS).then(|| {
                format!(
                    "no answer: the process exited {exits} times in a row (last: {})",
                    live.last_exit.as_deref().unwrap_or("unknown")
                )
            })
        };
        match health::wait_healthy_unless(addr, path, settings, hopeless).await {
            Ok(_) => {
                inst.live().healthy = Some(true);
                Ok(())
            }
            Err(not) => {
                let (restarts, last_exit) = {
                    let mut live = inst.live();
                    live.healthy = Some(false);
                    (live.restarts, live.last_exit.clone())
                };
                let log_tail = Self::log_tail_of(&inst, UNHEALTHY_LOG_LINES)
                    .await
                    .unwrap_or_else(|e| vec![format!("(log unreadable: {})", error_chain(&e))]);
                Err(RuntimeError::Unhealthy(Box::new(UnhealthyReport {
                    id: inst.id.clone(),
                    service: inst.service_label(),
                    url: format!("http://{addr}{path}"),
                    addr,
                    deadline: settings.deadline,
                    attempts: not.attempts,
                    last: not.last.to_string(),
                    restarts,
                    last_exit,
                    log_tail,
                })))
            }
        }
    }

    async fn log_tail(&self, id: &InstanceId, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let inst = self.lookup(id)?;
        Self::log_tail_of(&inst, lines).await
    }

    async fn follow_logs(&self, id: &InstanceId) -> Result<broadcast::Receiver<LogLine>, RuntimeError> {
        Ok(self.lookup(id)?.log.subscribe())
    }

    async fn recover(&self) -> Result<RecoveryReport, RuntimeError> {
        let ours: Vec<InstanceId> = self.table().entries.keys().cloned().collect();
        let config = &self.inner.config;
        let mut report = recover::recover(&config.instances_dir(), config.stop_grace, &ours).await?;
        report.tasks = recover::recover_tasks(&config.tasks_dir(), config.stop_grace).await?;
        let adopted: Vec<StateFile> = report.adopted().cloned().collect();
        for state in adopted {
            self.take_in(&state).await?;
        }
        Ok(report)
    }

    async fn run_task(
        &self,
        spec: TaskSpec,
        lines: mpsc::UnboundedSender<TaskLine>,
        cancel: CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError> {
        // Counted before the check, so a concurrent `shutdown` either sees
        // this task or this task sees `closed`.
        let _active = ActiveTask::enter(&self.inner.active_tasks);
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        task::run(
            spec,
            lines,
            cancel,
            &self.inner.tasks_shutdown,
            &self.inner.config,
        )
        .await
    }

    async fn shutdown(&self) -> Result<Vec<StopOutcome>, RuntimeError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.tasks_shutdown.cancel();
        let tasks = self.halt_all(Halt::Stop);
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut failed = None;
        for (id, task) in tasks {
            match task.await {
                Ok(Ended::Stopped(outcome)) => outcomes.push(outcome),
                Ok(Ended::Detached) => {}
                Err(source) => failed = Some(RuntimeError::Supervisor { id, source }),
            }
        }
        self.wait_tasks_ended().await;
        match failed {
            Some(err) => Err(err),
            None => Ok(outcomes),
        }
    }

    async fn adopt(&self, id: &InstanceId, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        if let Some(path) = &spec.health_path
            && !health::valid_path(path)
        {
            return Err(RuntimeError::BadHealthPath { path: path.clone() });
        }
        let inst = self.lookup(id)?;
        let refuse = |reason: String| {
            Err(RuntimeError::AdoptRefused {
                id: id.clone(),
                service: inst.service_label(),
                reason,
            })
        };
        if inst.adopted_at.is_none() {
            return refuse("this server started it; only instances found by `recover` are adopted".into());
        }
        let found = &inst.spec;
        let mismatch = [
            ("app", found.app.to_string(), spec.app.to_string()),
            ("env", found.env.to_string(), spec.env.to_string()),
            ("service", found.service.to_string(), spec.service.to_string()),
            ("version", found.version.to_string(), spec.version.to_string()),
            ("replica", found.replica.to_string(), spec.replica.to_string()),
        ]
        .into_iter()
        .find(|(_, found, asked)| found != asked);
        if let Some((what, found, asked)) = mismatch {
            return refuse(format!(
                "it runs {what} {found}, the spec asks for {asked} (start the spec as a new instance and stop this one instead)"
            ));
        }
        let health_path = spec.health_path.clone();
        if !inst.claim(spec) {
            return refuse("it was adopted already".into());
        }
        inst.log
            .event(format!(
                "claimed by this server (pid {}): supervised and restarted after an exit from now on",
                std::process::id()
            ))
            .await;
        if let Some(path) = health_path {
            let monitor = AbortOnDrop(tokio::spawn(monitor_health(inst.clone(), path)));
            if let Some(entry) = self.table().entries.get_mut(id) {
                entry.monitor = Some(monitor);
            }
        }
        Ok(snapshot(&inst))
    }

    async fn detach(&self) -> Result<(), RuntimeError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.tasks_shutdown.cancel();
        let tasks = self.halt_all(Halt::Detach);
        let mut failed = None;
        for (id, task) in tasks {
            if let Err(source) = task.await {
                failed = Some(RuntimeError::Supervisor { id, source });
            }
        }
        self.wait_tasks_ended().await;
        failed.map_or(Ok(()), Err)
    }
}

//! One instance's life: spawning its process, the supervisor task that
//! restarts it with back-off after an unexpected exit, stopping it, and
//! leaving it running for the next server (detach).
//!
//! Each instance has exactly one supervisor task, which owns the watch on
//! its process ([`Running`]: the `tokio::process::Child` of a process this
//! server started, or the pid and `/proc` start time of one adopted from a
//! previous server, polled);
//! everything else sees the instance through [`Instance`] (immutable facts
//! plus a small mutex-protected [`Live`] record). [`Halt`] is a oneshot
//! message to that task, so a stop can never race a restart: the task either
//! is waiting for the process (and terminates it, or leaves it running on
//! [`Halt::Detach`]) or is waiting out a back-off delay (and just ends).
//! Dropping the sender (the runtime itself was dropped: the server is going
//! away) counts as [`Halt::Detach`], never as a stop: an instance outlives its
//! server, and the next one adopts it.
//!
//! An adopted instance is *unclaimed* until [`claim`](Instance::claim) gives
//! it the spec a restart needs; if it exits before, it is reported down
//! (back-off, pid `None`) and waits for a claim or a halt instead of being
//! restarted: without the spec (run command, settings) it cannot be.
//!
//! An instance whose spec has a `health_path` also has a health monitor
//! task ([`monitor_health`]), owned by the runtime's table entry and aborted
//! with it.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::RuntimeError;
use crate::health;
use crate::logs::LogSink;
use crate::recover::StateFile;
use crate::types::{InstanceId, InstanceOwner, InstanceSpec, InstanceState, RuntimeConfig, StopOutcome};
use crate::{os, unix_ms};

/// `last_exit` of an adopted instance that exited before this server claimed it.
pub(crate) const UNCLAIMED_EXIT: &str =
    "exited while not supervised by this server (not its child: exit status unknown)";
/// How a claimed adopted process ended: it is not our child, so its status is not ours to read.
const ADOPTED_EXIT: &str = "exited (not a child of this server: exit status unknown)";

/// What changes while an instance lives.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub pid: Option<u32>,
    pub state: InstanceState,
    pub restarts: u32,
    pub started_at: u64,
    pub healthy: Option<bool>,
    pub last_exit: Option<String>,
}

/// One instance, shared between its supervisor and the runtime's queries.
#[derive(Debug)]
pub(crate) struct Instance {
    pub id: InstanceId,
    /// What runs: for an adopted instance, its identity (app, env, service, version,
    /// replica, release dir) as its state file recorded it, with no `run` until claimed.
    pub spec: InstanceSpec,
    pub port: u16,
    pub created_at: u64,
    /// When this server adopted it from a previous one; `None` when it started it.
    pub adopted_at: Option<u64>,
    pub log: LogSink,
    pub config: Arc<RuntimeConfig>,
    live: Mutex<Live>,
    /// The spec a (re)start uses: set at start, or by a claim of an adopted instance.
    claimed: Mutex<Option<Arc<InstanceSpec>>>,
    /// Wakes the supervisor of an adopted instance that exited unclaimed.
    claim_made: Notify,
}

impl Instance {
    pub(crate) fn new(
        id: InstanceId,
        spec: InstanceSpec,
        port: u16,
        log: LogSink,
        config: Arc<RuntimeConfig>,
    ) -> Self {
        let now = unix_ms();
        let live = Live {
            pid: None,
            state: InstanceState::Running,
            restarts: 0,
            started_at: now,
            healthy: None,
            last_exit: None,
        };
        Self {
            id,
            claimed: Mutex::new(Some(Arc::new(spec.clone()))),
            spec,
            port,
            created_at: now,
            adopted_at: None,
            log,
            config,
            live: Mutex::new(live),
            claim_made: Notify::new(),
        }
    }

    /// An instance a previous server left running, as its state file describes it,
    /// unclaimed.
    pub(crate) fn adopted(state: &StateFile, log: LogSink, config: Arc<RuntimeConfig>) -> Self {
        let spec = InstanceSpec {
            app: state.app.clone(),
            env: state.env.clone(),
            service: state.service.clone(),
            version: state.version.clone(),
            release_dir: state.release_dir.clone(),
            run: String::new(),
            env_vars: Vec::new(),
            replica: state.replica,
            health_path: None,
            placement: Default::default(),
        };
        let live = Live {
            pid: Some(state.pid),
            state: InstanceState::Running,
            restarts: 0,
            started_at: state.started_at,
            healthy: None,
            last_exit: None,
        };
        Self {
            id: state.id.clone(),
            spec,
            port: state.port,
            created_at: state.started_at,
            adopted_at: Some(unix_ms()),
            log,
            config,
            live: Mutex::new(live),
            claimed: Mutex::new(None),
            claim_made: Notify::new(),
        }
    }

    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding this lock leaves plain data behind; use it.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spec a restart uses; `None` for an adopted instance not claimed yet.
    pub(crate) fn claimed(&self) -> Option<Arc<InstanceSpec>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Gives an unclaimed instance its spec; `false` (and nothing changes) when it had one.
    pub(crate) fn claim(&self, spec: InstanceSpec) -> bool {
        {
            let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
            if claimed.is_some() {
                return false;
            }
            *claimed = Some(Arc::new(spec));
        }
        self.claim_made.notify_one();
        true
    }

    /// Who looks after it: this server, since its start or its adoption.
    pub(crate) fn owner(&self) -> InstanceOwner {
        match self.adopted_at {
            Some(at) => InstanceOwner::this_process(at, true),
            None => InstanceOwner::this_process(self.created_at, false),
        }
    }

    /// `<app>-<env>-<service>`
    pub(crate) fn service_label(&self) -> String {
        format!("{}-{}-{}", self.spec.app, self.spec.env, self.spec.service)
    }

    fn state_file(&self, spec: &InstanceSpec, pid: u32, started_at: u64) -> StateFile {
        StateFile {
            id: self.id.clone(),
            pid,
            pgid: pid,
            port: self.port,
            app: spec.app.clone(),
            env: spec.env.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
            replica: spec.replica,
            release_dir: spec.release_dir.clone(),
            started_at,
            proc_start_time: os::proc_start_time(pid),
            server_pid: std::process::id(),
        }
    }
}

/// How the supervisor watches the process that runs now.
enum Watch {
    /// Our own child: its exit status is ours to read.
    Child(Child),
    /// A process adopted from a previous server, not our child: `/proc` is polled every
    /// [`ADOPTED_POLL`] for the pid with its recorded start time (`None`: gone already).
    /// Rejected: a pidfd in `tokio::io::unix::AsyncFd`, whose registration is `unsafe` since
    /// tokio 1.54 (and the workspace allows one `unsafe`, the sandbox's); one read of
    /// `/proc/<pid>/stat` per adopted instance per poll is cheap, and once an adopted process
    /// is restarted it is our child and no longer polled.
    Adopted { start_time: Option<u64> },
}

/// How often an adopted (not our child) process is looked for in `/proc`.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// The process an instance runs now.
pub(crate) struct Running {
    watch: Watch,
    pid: u32,
}

impl Running {
    /// The watch on a process of a previous server, recognised by its `/proc` start time.
    pub(crate) fn adopted(pid: u32, start_time: Option<u64>) -> Self {
        Self {
            watch: Watch::Adopted { start_time },
            pid,
        }
    }

    /// Waits for the process to end: how it ended when it is our child, `None` otherwise.
    async fn wait(&mut self) -> Option<String> {
        match &mut self.watch {
            Watch::Child(child) => Some(describe(child.wait().await)),
            Watch::Adopted { start_time } => {
                if let Some(start_time) = *start_time {
                    while os::proc_stat(self.pid)
                        .is_some_and(|s| !s.is_zombie() && s.start_time == start_time)
                    {
                        tokio::time::sleep(ADOPTED_POLL).await;
                    }
                }
                None
            }
        }
    }
}

/// Spawns `sh -c <run>` in the release directory, in its own process group,
/// with `PORT` and the `CUTOVER_*` variables, confined by the runtime's
/// sandbox (its release and environment directory only, of the data
/// directory), its stdout and stderr appended straight to the instance's log
/// file (see [`crate::logs`]), records it in [`Live`] and in its state file.
/// Not killed when this server goes (`kill_on_drop(false)`).
pub(crate) async fn spawn_process(inst: &Instance) -> Result<Running, RuntimeError> {
    let Some(spec) = inst.claimed() else {
        return Err(RuntimeError::Spawn {
            service: inst.service_label(),
            run: String::new(),
            dir: inst.spec.release_dir.clone(),
            source: std::io::Error::other(
                "it was adopted from a previous server and not claimed: its run command is unknown",
            ),
        });
    };
    let spawn_err = |source| RuntimeError::Spawn {
        service: inst.service_label(),
        run: spec.run.clone(),
        dir: spec.release_dir.clone(),
        source,
    };
    let (stdout, stderr) = inst.log.for_child().map_err(spawn_err)?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&spec.run)
        .current_dir(&spec.release_dir)
        .envs(spec.env_vars.iter().map(|(k, v)| (k, v)))
        .env("PORT", inst.port.to_string())
        .env("CUTOVER_APP", spec.app.as_str())
        .env("CUTOVER_ENV", spec.env.as_str())
        .env("CUTOVER_SERVICE", spec.service.as_str())
        .env("CUTOVER_VERSION", spec.version.as_str())
        .env("CUTOVER_INSTANCE", inst.id.as_str())
        .env("CUTOVER_REPLICA", spec.replica.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(false);
    let env_dir = crate::task::env_dir(&spec.env_vars);
    let own: Vec<&std::path::Path> = std::iter::once(spec.release_dir.as_path())
        .chain(env_dir)
        .collect();
    inst.config
        .sandbox
        .apply(&mut cmd, &own, env_dir)
        .map_err(spawn_err)?;
    let child = cmd.spawn().map_err(spawn_err)?;
    // The command holds the child's copies of the log file; close ours now.
    drop(cmd);
    let Some(pid) = child.id() else {
        return Err(spawn_err(std::io::Error::other(
            "the process exited before its pid was read",
        )));
    };
    let started_at = unix_ms();
    {
        let mut live = inst.live();
        live.pid = Some(pid);
        live.state = InstanceState::Running;
        live.started_at = started_at;
        live.healthy = None;
    }
    if let Err(err) = inst
        .state_file(&spec, pid, started_at)
        .write(&inst.config.instances_dir())
    {
        // Not fatal: the instance runs; only a later server would miss it.
        tracing::warn!(instance = %inst.id, error = %err, "could not record the instance for the next server");
    }
    inst.log
        .event(format!(
            "started pid {pid} (version {}, port {}): sh -c {:?}",
            spec.version.short(),
            inst.port,
            spec.run
        ))
        .await;
    Ok(Running {
        watch: Watch::Child(child),
        pid,
    })
}

/// Probes `path` every `health_interval` while the instance has a live
/// process and records the result as its `healthy` flag. A result is
/// dropped if the process changed during the probe (a restart resets
/// `healthy` to `None`; a late answer from the old process must not undo
/// that). Runs until aborted.
pub(crate) async fn monitor_health(inst: Arc<Instance>, path: String) {
    let interval = inst.config.health_interval.max(Duration::from_millis(10));
    let timeout = interval.min(Duration::from_secs(2));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, inst.port));
    loop {
        tokio::time::sleep(interval).await;
        let process = {
            let live = inst.live();
            match (live.state, live.pid) {
                (InstanceState::Running, Some(pid)) => (pid, live.started_at),
                _ => continue,
            }
        };
        let healthy = health::probe(addr, &path, timeout).await.is_healthy();
        let mut live = inst.live();
        if live.state == InstanceState::Running && live.pid.map(|pid| (pid, live.started_at)) == Some(process)
        {
            live.healthy = Some(healthy);
        }
    }
}

/// What the supervisor is told to do with the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Halt {
    /// Terminate the process group and end (the instance is gone).
    Stop,
    /// End supervision and leave the process running for the next server. Also what a
    /// dropped sender means.
    Detach,
}

/// How a supervisor ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Stopped(StopOutcome),
    /// Left running (or down, waiting for a restart that this server will not do).
    Detached,
}

/// Runs until `halt` fires (a dropped sender is [`Halt::Detach`]), restarting
/// the process after unexpected exits; an adopted instance not claimed yet is
/// not restarted (see the module docs).
pub(crate) async fn supervise(
    inst: Arc<Instance>,
    mut running: Running,
    mut halt: oneshot::Receiver<Halt>,
) -> Ended {
    let policy = inst.config.backoff;
    let mut delay = policy.initial;
    loop {
        let up_since = Instant::now();
        let exit = tokio::select! {
            biased;
            order = &mut halt => {
                return match order {
                    Ok(Halt::Stop) => Ended::Stopped(stop_running(&inst, running).await),
                    Ok(Halt::Detach) | Err(_) => detach_running(&inst, &running).await,
                };
            }
            exit = running.wait() => exit,
        };
        let claimed = inst.claimed().is_some();
        let exit = match exit {
            Some(exit) => exit,
            None if claimed => ADOPTED_EXIT.to_owned(),
            None => UNCLAIMED_EXIT.to_owned(),
        };
        inst.log
            .event(format!("pid {} exited unexpectedly ({exit})", running.pid))
            .await;
        let left = os::kill_leftovers(running.pid).await;
        if left > 0 {
            inst.log
                .event(format!("killed {left} leftover process(es) of its group"))
                .await;
        }
        {
            let mut live = inst.live();
            live.pid = None;
            live.state = InstanceState::Backoff;
            live.healthy = None;
            live.last_exit = Some(exit.clone());
        }
        if !claimed {
            inst.log
                .event("not restarted: adopted from a previous server and not claimed by this one")
                .await;
            tokio::select! {
                biased;
                order = &mut halt => return halted_while_down(&inst, order, exit).await,
                () = inst.claim_made.notified() => {}
            }
            delay = policy.initial;
        } else if up_since.elapsed() >= policy.reset_after {
            delay = policy.initial;
        }
        running = loop {
            inst.log
                .event(format!("restarting in {}", humantime::format_duration(delay)))
                .await;
            tokio::select! {
                biased;
                order = &mut halt => return halted_while_down(&inst, order, exit).await,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(policy.max);
            inst.live().restarts += 1;
            match spawn_process(&inst).await {
                Ok(next) => break next,
                Err(err) => {
                    let text = error_chain(&err);
                    inst.log.event(format!("restart failed: {text}")).await;
                    inst.live().last_exit = Some(text);
                }
            }
        };
    }
}

/// A halt while no process runs (back-off, or an unclaimed adopted instance that exited).
async fn halted_while_down(
    inst: &Instance,
    order: Result<Halt, oneshot::error::RecvError>,
    exit: String,
) -> Ended {
    if order == Ok(Halt::Stop) {
        remove_state_file(inst);
        inst.log.event("stopped while waiting to restart").await;
        inst.live().state = InstanceState::Stopping;
        inst.log.close_followers();
        return Ended::Stopped(StopOutcome {
            id: inst.id.clone(),
            graceful: true,
            exit,
        });
    }
    inst.log
        .event("detached while waiting to restart: nothing runs, the next server will find it gone")
        .await;
    inst.log.close_followers();
    Ended::Detached
}

/// Ends supervision, leaving the process (and its state file) for the next server.
async fn detach_running(inst: &Instance, running: &Running) -> Ended {
    inst.log
        .event(format!(
            "left running for the next server (detached): pid {}",
            running.pid
        ))
        .await;
    inst.log.close_followers();
    // Dropping `running` drops the `Child`, which is not killed (`kill_on_drop(false)`).
    Ended::Detached
}

async fn stop_running(inst: &Instance, running: Running) -> StopOutcome {
    inst.live().state = InstanceState::Stopping;
    let grace = inst.config.stop_grace;
    inst.log
        .event(format!(
            "stopping: SIGTERM to process group {}, SIGKILL after {}",
            running.pid,
            humantime::format_duration(grace)
        ))
        .await;
    let pid = running.pid;
    let (graceful, exit) = match running.watch {
        Watch::Child(child) => stop_child(inst, pid, child, grace).await,
        Watch::Adopted { .. } => {
            // Not our child: its status is not ours to read; `terminate_group` waits until
            // no member of the group is left.
            let graceful = match os::terminate_group(pid, grace).await {
                Ok(graceful) => graceful,
                Err((signal, err)) => {
                    let err = RuntimeError::Signal {
                        signal: os::signal_name(signal),
                        pgid: pid,
                        source: err,
                    };
                    inst.log.event(error_chain(&err)).await;
                    false
                }
            };
            let exit = if os::group_gone(pid) {
                "exit status unknown (not a child of this server)".to_owned()
            } else {
                "did not exit after SIGKILL".to_owned()
            };
            (graceful, exit)
        }
    };
    inst.log.event(format!("stopped ({exit})")).await;
    remove_state_file(inst);
    {
        let mut live = inst.live();
        live.pid = None;
        live.last_exit = Some(exit.clone());
    }
    inst.log.close_followers();
    StopOutcome {
        id: inst.id.clone(),
        graceful,
        exit,
    }
}

/// Terminates the group of our own child and reaps it: `(graceful, exit)`.
async fn stop_child(inst: &Instance, pid: u32, mut child: Child, grace: Duration) -> (bool, String) {
    // The leader is reaped while the group is being terminated, so checking that the group
    // is gone stays one cheap syscall instead of a search of /proc for a zombie leader.
    let (terminated, reaped) = tokio::join!(
        os::terminate_group(pid, grace),
        tokio::time::timeout(grace + Duration::from_secs(5), child.wait())
    );
    let graceful = match terminated {
        Ok(graceful) => graceful,
        Err((signal, err)) => {
            let err = RuntimeError::Signal {
                signal: os::signal_name(signal),
                pgid: pid,
                source: err,
            };
            inst.log
                .event(format!("{}; killing the main process", error_chain(&err)))
                .await;
            let _ = child.start_kill();
            false
        }
    };
    let reaped = match reaped {
        Ok(status) => Ok(status),
        Err(_) => tokio::time::timeout(Duration::from_secs(5), child.wait()).await,
    };
    let exit = match reaped {
        Ok(status) => describe(status),
        Err(_) => {
            let _ = child.start_kill();
            "did not exit after SIGKILL".to_owned()
        }
    };
    (graceful, exit)
}

fn remove_state_file(inst: &Instance) {
    if let Err(err) = StateFile::remove(&inst.config.instances_dir(), &inst.id) {
        tracing::warn!(instance = %inst.id, error = %error_chain(&err), "could not remove the state file");
    }
}

/// `exit status 3`, `killed by signal 9 (SIGKILL)`.
pub(crate) fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => {
                let name = match sig {
                    9 => " (SIGKILL)",
                    15 => " (SIGTERM)",
                    2 => " (SIGINT)",
                    6 => " (SIGABRT)",
                    11 => " (SIGSEGV)",
                    _ => "",
                };
                format!("killed by signal {sig}{name}")
            }
            (None, None) => status.to_string(),
        },
        Err(err) => format!("could not be waited for: {err}"),
    }
}

/// An error and its sources, `: `-separated (for log lines).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

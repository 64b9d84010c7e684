//! One instance's life: spawning its process, the supervisor task that
//! restarts it with back-off after an unexpected exit, and stopping it.
//!
//! Each instance has exactly one supervisor task, which owns the
//! `tokio::process::Child`; everything else sees the instance through
//! [`Instance`] (immutable facts plus a small mutex-protected [`Live`]
//! record). `stop` is a oneshot message to that task, so a stop can never
//! race a restart: the task either is waiting for the process (and
//! terminates it) or is waiting out a back-off delay (and just ends).
//! Dropping the sender (the runtime itself was dropped) counts as `stop`.
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
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::RuntimeError;
use crate::health;
use crate::logs::{LogSink, LogStream};
use crate::recover::StateFile;
use crate::types::{InstanceId, InstanceSpec, InstanceState, RuntimeConfig, StopOutcome};
use crate::{os, unix_ms};

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
    pub spec: InstanceSpec,
    pub port: u16,
    pub created_at: u64,
    pub log: LogSink,
    pub config: Arc<RuntimeConfig>,
    live: Mutex<Live>,
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
            spec,
            port,
            created_at: now,
            log,
            config,
            live: Mutex::new(live),
        }
    }

    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding this lock leaves plain data behind; use it.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `<app>-<env>-<service>`
    pub(crate) fn service_label(&self) -> String {
        format!("{}-{}-{}", self.spec.app, self.spec.env, self.spec.service)
    }

    fn state_file(&self, pid: u32, started_at: u64) -> StateFile {
        StateFile {
            id: self.id.clone(),
            pid,
            pgid: pid,
            port: self.port,
            app: self.spec.app.clone(),
            env: self.spec.env.clone(),
            service: self.spec.service.clone(),
            version: self.spec.version.clone(),
            replica: self.spec.replica,
            release_dir: self.spec.release_dir.clone(),
            started_at,
            proc_start_time: os::proc_start_time(pid),
            server_pid: std::process::id(),
        }
    }
}

/// A spawned process with the tasks copying its output into the log.
pub(crate) struct Running {
    child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
}

/// Spawns `sh -c <run>` in the release directory, in its own process group,
/// with `PORT` and the `CUTOVER_*` variables, confined by the runtime's
/// sandbox (its release and environment directory only, of the data
/// directory), records it in [`Live`] and in its state file.
pub(crate) async fn spawn_process(inst: &Instance) -> Result<Running, RuntimeError> {
    let spec = &inst.spec;
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let spawn_err = |source| RuntimeError::Spawn {
        service: inst.service_label(),
        run: spec.run.clone(),
        dir: spec.release_dir.clone(),
        source,
    };
    let env_dir = crate::task::env_dir(&spec.env_vars);
    let own: Vec<&std::path::Path> = std::iter::once(spec.release_dir.as_path())
        .chain(env_dir)
        .collect();
    inst.config
        .sandbox
        .apply(&mut cmd, &own, env_dir)
        .map_err(spawn_err)?;
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let Some(pid) = child.id() else {
        return Err(spawn_err(std::io::Error::other(
            "the process exited before its pid was read",
        )));
    };
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        readers.push(inst.log.pump(out, LogStream::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(inst.log.pump(err, LogStream::Stderr));
    }
    let started_at = unix_ms();
    {
        let mut live = inst.live();
        live.pid = Some(pid);
        live.state = InstanceState::Running;
        live.started_at = started_at;
        live.healthy = None;
    }
    if let Err(err) = inst
        .state_file(pid, started_at)
        .write(&inst.config.instances_dir())
    {
        // Not fatal: the instance runs; only crash recovery would miss it.
        tracing::warn!(instance = %inst.id, error = %err, "could not record the instance for crash recovery");
    }
    inst.log
        .event(format!(
            "started pid {pid} (version {}, port {}): sh -c {:?}",
            spec.version.short(),
            inst.port,
            spec.run
        ))
        .await;
    Ok(Running { child, pid, readers })
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

/// Runs until `stop` fires (or its sender is dropped), restarting the
/// process after unexpected exits.
pub(crate) async fn supervise(
    inst: Arc<Instance>,
    mut running: Running,
    mut stop: oneshot::Receiver<()>,
) -> StopOutcome {
    let policy = inst.config.backoff;
    let mut delay = policy.initial;
    loop {
        let up_since = Instant::now();
        let status = tokio::select! {
            biased;
            _ = &mut stop => return stop_running(&inst, running).await,
            status = running.child.wait() => status,
        };
        let exit = describe(status);
        inst.log
            .event(format!("pid {} exited unexpectedly ({exit})", running.pid))
            .await;
        let left = os::kill_leftovers(running.pid).await;
        if left > 0 {
            inst.log
                .event(format!("killed {left} leftover process(es) of its group"))
                .await;
        }
        drain(running.readers, Duration::from_secs(1)).await;
        {
            let mut live = inst.live();
            live.pid = None;
            live.state = InstanceState::Backoff;
            live.healthy = None;
            live.last_exit = Some(exit.clone());
        }
        if up_since.elapsed() >= policy.reset_after {
            delay = policy.initial;
        }
        running = loop {
            inst.log
                .event(format!("restarting in {}", humantime::format_duration(delay)))
                .await;
            tokio::select! {
                biased;
                _ = &mut stop => {
                    remove_state_file(&inst);
                    inst.log.event("stopped while waiting to restart").await;
                    inst.live().state = InstanceState::Stopping;
                    return StopOutcome { id: inst.id.clone(), graceful: true, exit };
                }
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

async fn stop_running(inst: &Instance, mut running: Running) -> StopOutcome {
    inst.live().state = InstanceState::Stopping;
    let grace = inst.config.stop_grace;
    inst.log
        .event(format!(
            "stopping: SIGTERM to process group {}, SIGKILL after {}",
            running.pid,
            humantime::format_duration(grace)
        ))
        .await;
    // The leader is reaped while the group is being terminated, so checking that the group
    // is gone stays one cheap syscall instead of a search of /proc for a zombie leader.
    let (terminated, reaped) = tokio::join!(
        os::terminate_group(running.pid, grace),
        tokio::time::timeout(grace + Duration::from_secs(5), running.child.wait())
    );
    let graceful = match terminated {
        Ok(graceful) => graceful,
        Err((signal, err)) => {
            let err = RuntimeError::Signal {
                signal: os::signal_name(signal),
                pgid: running.pid,
                source: err,
            };
            inst.log
                .event(format!("{}; killing the main process", error_chain(&err)))
                .await;
            let _ = running.child.start_kill();
            false
        }
    };
    let reaped = match reaped {
        Ok(status) => Ok(status),
        Err(_) => tokio::time::timeout(Duration::from_secs(5), running.child.wait()).await,
    };
    let exit = match reaped {
        Ok(status) => describe(status),
        Err(_) => {
            let _ = running.child.start_kill();
            "did not exit after SIGKILL".to_owned()
        }
    };
    drain(running.readers, Duration::from_secs(1)).await;
    inst.log.event(format!("stopped ({exit})")).await;
    remove_state_file(inst);
    {
        let mut live = inst.live();
        live.pid = None;
        live.last_exit = Some(exit.clone());
    }
    StopOutcome {
        id: inst.id.clone(),
        graceful,
        exit,
    }
}

fn remove_state_file(inst: &Instance) {
    if let Err(err) = StateFile::remove(&inst.config.instances_dir(), &inst.id) {
        tracing::warn!(instance = %inst.id, error = %error_chain(&err), "could not remove the state file");
    }
}

/// Waits for the output copiers to reach EOF (so the last lines are logged),
/// but not forever: a grandchild may still hold the pipe.
async fn drain(readers: Vec<JoinHandle<()>>, limit: Duration) {
    let until = Instant::now() + limit;
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(until, reader).await.is_err() {
            abort.abort();
        }
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

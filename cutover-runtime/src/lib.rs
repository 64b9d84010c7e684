//! Runs service instances (start, supervise, health-check, stop, report)
//! and one-shot tasks (hooks, builds, scheduler jobs).
//!
//! This crate never decides *when* to deploy; the engine calls it. The
//! [`Runtime`] trait is what the engine sees; [`ProcessRuntime`] (local,
//! supervised processes, the embedded default) is its first backend, and
//! the docker and swarm backends will implement the same trait.
//!
//! Why a trait with `async fn`s through `async-trait` (rejected: a concrete
//! enum of backends, and native `async fn` in traits): the engine holds the
//! runtime of each environment as `Arc<dyn Runtime>` chosen at run time
//! from configuration, which needs object safety; native async trait
//! methods are not `dyn`-compatible yet, and an enum would make this crate
//! depend on every backend's client (bollard) even for process-only users.
//! One boxed future per call is nothing next to spawning a process.
//!
//! Code map:
//! - [`types`]: the spec, ids, status and settings crossing the trait.
//! - [`process`]: the process runtime (start, supervision, stop, status,
//!   background health monitor).
//! - [`task`]: one-shot tasks, their output lines and outcome.
//! - [`health`]: the HTTP probe and `wait_healthy`.
//! - [`logs`]: per-instance log files (written by the instance itself, plus
//!   the runtime's timestamped events), tail and follow.
//! - [`recover`]: state files; adoption of what a previous server left running.
//! - [`os`]: `/proc` reading and process-group signals (Linux).
//! - [`sandbox`]: the Landlock ruleset (and `run_as` user) of every child.
//!
//! Architecture invariant: user-typed values (versions, branch names) reach
//! an instance or a task only as environment variables, never inside its
//! command line; the command is the `run` (or hook, `build`, job) string of
//! `cutover.yml`, run by `sh -c`.
//!
//! Architecture invariant: no `unsafe` (workspace lint) but the one
//! `pre_exec` in [`sandbox`] that enforces a child's Landlock ruleset;
//! signals go through `rustix`.

pub mod error;
pub mod health;
pub mod logs;
pub mod os;
pub mod process;
pub mod recover;
pub mod sandbox;
pub mod task;
pub mod types;

use std::time::Duration;

use async_trait::async_trait;
use cutover_core::{AppName, EnvName};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use error::{RuntimeError, UnhealthyReport};
pub use health::ProbeResult;
pub use logs::{LogLine, LogStream};
pub use process::ProcessRuntime;
pub use recover::{RecoveredInstance, RecoveryAction, RecoveryReport, StateFile};
pub use sandbox::{Protection, RunAs, Sandbox};
pub use task::{MAX_TASK_LINE, TaskExit, TaskLine, TaskOutcome, TaskSpec};
pub use types::{
    BackoffPolicy, HealthSettings, InstanceId, InstanceOwner, InstanceSpec, InstanceState, InstanceStatus,
    RuntimeConfig, StopOutcome, VersionSource,
};

/// A place where service instances run. Every method is safe to call
/// concurrently; implementations are shared as `Arc<dyn Runtime>`.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Starts one instance and returns at once (it is not healthy yet: call
    /// [`Runtime::wait_healthy`]). From here on the instance is supervised.
    async fn start(&self, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError>;

    /// Stops an instance (SIGTERM, SIGKILL after the grace period) and ends
    /// its supervision; also an adopted one, claimed or not (its whole process
    /// group is waited for). The instance is gone from [`Runtime::status`]
    /// when this returns.
    async fn stop(&self, id: &InstanceId) -> Result<StopOutcome, RuntimeError>;

    /// Every instance of this runtime, sorted by app, env, service, replica.
    async fn status(&self) -> Result<Vec<InstanceStatus>, RuntimeError>;

    /// The instances of one environment, sorted like [`Runtime::status`]. A
    /// backend answers it without looking at other environments' instances
    /// where it can, so an environment's status costs the same with 10 or
    /// 1,000 other instances running; the default filters `status`.
    async fn status_of(&self, app: &AppName, env: &EnvName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut all = self.status().await?;
        all.retain(|s| &s.app == app && &s.env == env);
        Ok(all)
    }

    /// One instance.
    async fn instance(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError>;

    /// One health probe (`GET path`); the result becomes the instance's
    /// `healthy` flag.
    async fn probe(
        &self,
        id: &InstanceId,
        path: &str,
        timeout: Duration,
    ) -> Result<ProbeResult, RuntimeError>;

    /// Probes until 2xx or the deadline; the error
    /// ([`RuntimeError::Unhealthy`]) carries the last status or error seen
    /// and the instance's last log lines.
    async fn wait_healthy(
        &self,
        id: &InstanceId,
        path: &str,
        settings: &HealthSettings,
    ) -> Result<(), RuntimeError>;

    /// The last `lines` lines of the instance's log, as they are in its file (the process
    /// runtime: the application's lines as it wrote them, the runtime's events timestamped).
    async fn log_tail(&self, id: &InstanceId, lines: usize) -> Result<Vec<String>, RuntimeError>;

    /// New log lines as they are written (a lagging follower loses lines;
    /// the stream ends when the instance is stopped, or when supervision ends
    /// by [`Runtime::detach`]).
    async fn follow_logs(&self, id: &InstanceId) -> Result<broadcast::Receiver<LogLine>, RuntimeError>;

    /// Runs a one-shot command (hook, build, scheduler job) to its end in
    /// its own process group, streaming every stdout/stderr line to
    /// `lines` as it arrives (see [`task`]). Ends with the command's exit,
    /// with [`TaskExit::TimedOut`] after `spec.timeout`, or with
    /// [`TaskExit::Cancelled`] when `cancel` fires or the runtime shuts
    /// down; the last two terminate the group (SIGTERM, SIGKILL after the
    /// stop grace). No process of the group is left when this returns.
    /// Errors: the working directory is missing, `sh` could not be
    /// started, or the runtime was shut down; a failing command is an
    /// `Ok` outcome that is not [`TaskOutcome::success`].
    async fn run_task(
        &self,
        spec: TaskSpec,
        lines: mpsc::UnboundedSender<TaskLine>,
        cancel: CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError>;

    /// Looks at what a previous server process left: one-off tasks are terminated (a run does
    /// not survive its server); instances that still run as recorded are taken into this
    /// runtime *unclaimed* (listed by [`Runtime::status`] with `owner.adopted`, supervised, not
    /// restarted yet if they exit) and everything else is cleaned up. Call once at start-up,
    /// before [`Runtime::start`]; then [`Runtime::adopt`] what is kept and
    /// [`Runtime::stop`] the rest.
    async fn recover(&self) -> Result<RecoveryReport, RuntimeError>;

    /// Claims an instance found by [`Runtime::recover`]: `spec` (which must name the same app,
    /// env, service, version and replica, else [`RuntimeError::AdoptRefused`] and nothing
    /// changes) is what a restart after an exit uses from now on, as for an instance this
    /// runtime started, and its health monitor starts when `spec.health_path` is set. A running
    /// instance is not restarted. One that exited while unclaimed is restarted by the claim
    /// (process runtime: at once, as this server's child, `restarts` counted), so the caller
    /// keeps its id and port. Claiming twice, or an instance this runtime started, is refused.
    async fn adopt(&self, id: &InstanceId, spec: InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        let _ = spec;
        Err(RuntimeError::UnknownInstance { id: id.clone() })
    }

    /// Ends supervision and refuses new starts and tasks, leaving every instance running
    /// (and its state file) for the next server to adopt; no instance is signalled. Running
    /// tasks are cancelled and awaited, as by [`Runtime::shutdown`]: a run ends with its
    /// server. Dropping the runtime without calling this has the same effect on instances.
    async fn detach(&self) -> Result<(), RuntimeError> {
        self.shutdown().await.map(|_| ())
    }

    /// Stops every instance (in parallel), cancels running tasks and waits
    /// for them, and refuses new starts and tasks: stopping everything on purpose
    /// (`cutover stop --all`, the end of `cutover demo`), never a server's restart.
    async fn shutdown(&self) -> Result<Vec<StopOutcome>, RuntimeError>;
}

/// Now, as unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    logs::unix_ms_of(std::time::SystemTime::now())
}

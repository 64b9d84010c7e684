//! The data that crosses the [`Runtime`](crate::Runtime) boundary: what to
//! start ([`InstanceSpec`]), how it is named ([`InstanceId`]), what is
//! reported back ([`InstanceStatus`]) and the knobs ([`RuntimeConfig`],
//! [`HealthSettings`]).
//!
//! These types are backend-neutral on purpose: the docker and swarm backends
//! will fill the same [`InstanceStatus`] (a container id instead of a pid is
//! the only foreseen difference, hence `pid: Option<u32>`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cutover_core::{AppName, EnvName, ServiceName, Version};
use serde::{Deserialize, Serialize};

use crate::sandbox::Sandbox;

/// One replica of one service at one version, as the engine asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub app: AppName,
    pub env: EnvName,
    pub service: ServiceName,
    pub version: Version,
    /// The checked-out release, `<data>/releases/<app>/<sha>`; the process
    /// runs with this as its working directory.
    pub release_dir: PathBuf,
    /// The service's `run` command from `cutover.yml` (trusted operator
    /// input), run through `sh -c`. User-typed values never go in here.
    pub run: String,
    /// Extra environment variables (`CUTOVER_RUN_ID`, parameters, ...). The
    /// runtime's own variables (`PORT`, `CUTOVER_APP`, `CUTOVER_ENV`,
    /// `CUTOVER_SERVICE`, `CUTOVER_VERSION`, `CUTOVER_INSTANCE`,
    /// `CUTOVER_REPLICA`) are set after these and win on a clash, so an
    /// instance can never be told a version other than the one it runs.
    pub env_vars: Vec<(String, String)>,
    /// Replica number, 0-based.
    pub replica: u32,
    /// The service's `health` path from `cutover.yml` (e.g. `/health`).
    /// When set, the runtime probes it every
    /// [`RuntimeConfig::health_interval`] while the instance runs, so
    /// [`InstanceStatus::healthy`] stays current without callers probing;
    /// when `None`, `healthy` changes only through `probe`/`wait_healthy`.
    /// Checked at `start` ([`RuntimeError::BadHealthPath`](crate::RuntimeError::BadHealthPath)).
    pub health_path: Option<String>,
    /// The service's Swarm `placement` (constraints and spread preferences);
    /// only the swarm runtime reads it.
    pub placement: cutover_core::config::Placement,
}

/// Names one started instance. Unique per start (a restart by the supervisor
/// keeps the id; a new `start` of the same spec gets a new one), made of
/// `[a-z0-9-]` only, so it is safe in file names:
/// `<short sha>-r<replica>-<6 hex>`, e.g. `3f9a1c2b-r0-a41b09`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Accepts `[a-z0-9][a-z0-9-]{0,63}`; anything else (slashes, dots) is
    /// refused so an id read from disk can never name a path elsewhere.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && !value.starts_with('-')
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        ok.then(|| Self(value.to_owned()))
    }

    pub(crate) fn generate(version: &Version, replica: u32) -> Self {
        use std::hash::{BuildHasher, RandomState};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let noise = RandomState::new().hash_one((n, std::process::id(), crate::unix_ms()));
        Self(format!(
            "{}-r{replica}-{:06x}",
            &version.as_str()[..8],
            noise & 0xff_ffff
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("{value:?} is not an instance id ([a-z0-9-])"))
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

/// Where an instance is in its life, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// A process is alive (it may not be healthy yet; see `healthy`).
    Running,
    /// The process exited unexpectedly; the supervisor restarts it after a
    /// back-off delay.
    Backoff,
    /// `stop` was called and the process group is being terminated.
    Stopping,
}

/// Where [`InstanceStatus::version`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The process's working directory (`/proc/<pid>/cwd`) lies in a release
    /// directory named after the SHA.
    Cwd,
    /// `CUTOVER_VERSION` in `/proc/<pid>/environ` (cwd did not name a SHA).
    Environ,
    /// No live process (between restarts, or it died) or `/proc` was not
    /// readable: the version is unknown, and is reported as unknown.
    Unavailable,
    /// The tag (`<app>-<env>-<service>:<sha>`) of the image the container
    /// was created from, as the container engine reports it (docker
    /// backend).
    ImageTag,
}

/// One instance as reported by [`Runtime::status`](crate::Runtime::status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: InstanceId,
    pub app: AppName,
    pub env: EnvName,
    pub service: ServiceName,
    pub replica: u32,
    /// The version that was asked for (what the engine believes it started).
    pub requested_version: Version,
    /// The version the running process actually runs, read from the process
    /// itself (see [`VersionSource`]); `None` when there is no live process.
    pub version: Option<Version>,
    pub version_source: VersionSource,
    pub pid: Option<u32>,
    pub port: u16,
    /// `127.0.0.1:<port>`: where the router sends traffic.
    pub addr: SocketAddr,
    /// Result of the last health probe (the background monitor's, when
    /// the spec has a `health_path`, or an explicit `probe`/`wait_healthy`);
    /// `None` until one was made or after a restart.
    pub healthy: Option<bool>,
    /// How often the supervisor restarted the process.
    pub restarts: u32,
    /// When the current process was started (unix ms); for an instance in
    /// back-off, the start of the process that died.
    pub started_at: u64,
    /// When `start` was called for this instance (unix ms).
    pub created_at: u64,
    pub state: InstanceState,
    /// How the previous process ended, e.g. `killed by signal 9`.
    pub last_exit: Option<String>,
    /// Who looks after the instance now, and since when.
    pub owner: InstanceOwner,
    /// The machine it runs on, where the runtime spans several (a Swarm node:
    /// `<hostname>/<node id>`); `None` on the process and docker runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Who supervises an instance: the server process that started it, or the one that adopted it
/// from a previous server (restart, crash, upgrade of `cutover serve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstanceOwner {
    /// The `cutover serve` process supervising it.
    pub pid: u32,
    /// When that process took it over: its start, or its adoption (unix ms).
    pub since: u64,
    /// `true` when it was adopted from an earlier server rather than started by this one.
    pub adopted: bool,
}

impl InstanceOwner {
    /// This server process, from `since`.
    pub fn this_process(since: u64, adopted: bool) -> Self {
        Self {
            pid: std::process::id(),
            since,
            adopted,
        }
    }
}

/// How `stop` ended an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOutcome {
    pub id: InstanceId,
    /// `true` when the whole process group was gone within the grace period
    /// after SIGTERM; `false` when SIGKILL was needed.
    pub graceful: bool,
    /// How the main process ended, e.g. `exit status 0`.
    pub exit: String,
}

/// Health-check timing for [`Runtime::wait_healthy`](crate::Runtime::wait_healthy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Pause between two probes.
    pub interval: Duration,
    /// Limit for one probe (connect + request + status line).
    pub timeout: Duration,
    /// Give up after this long in total.
    pub deadline: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
        }
    }
}

/// Restart delays after an unexpected exit: `initial`, doubling up to `max`;
/// back to `initial` once a process has stayed up for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Settings of the process runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Holds `logs/`, `instances/` and `tasks/` (the crash-recovery state
    /// files).
    pub state_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    pub backoff: BackoffPolicy,
    /// Pause between two background probes of an instance with a
    /// `health_path`; each probe is bounded by this too, at most 2 s.
    pub health_interval: Duration,
    /// The confinement of every process started (see [`crate::sandbox`]);
    /// none by default.
    pub sandbox: Sandbox,
}

impl RuntimeConfig {
    /// Defaults: 10 s stop grace, 100 ms → 10 s back-off reset after 30 s,
    /// background health probes every 2 s.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            stop_grace: Duration::from_secs(10),
            backoff: BackoffPolicy::default(),
            health_interval: Duration::from_secs(2),
            sandbox: Sandbox::default(),
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.state_dir.join("instances")
    }

    /// Where running one-off tasks are recorded (crash recovery).
    pub fn tasks_dir(&self) -> PathBuf {
        self.state_dir.join("tasks")
    }

    /// `<state_dir>/logs/<app>-<env>-<service>-<instance-id>.log`
    pub fn log_file(&self, app: &AppName, env: &EnvName, service: &ServiceName, id: &InstanceId) -> PathBuf {
        self.logs_dir().join(format!("{app}-{env}-{service}-{id}.log"))
    }

    /// `<state_dir>/instances/<id>.json`
    pub fn state_file(&self, id: &InstanceId) -> PathBuf {
        self.instances_dir().join(format!("{id}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_file_safe_and_distinct() {
        let v = Version::parse(&"ab".repeat(20)).unwrap();
        let a = InstanceId::generate(&v, 1);
        let b = InstanceId::generate(&v, 1);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("abababab-r1-"), "{a}");
        assert_eq!(InstanceId::parse(a.as_str()), Some(a));
        for bad in ["", "../x", "a/b", "A", "-x", "a.json"] {
            assert!(InstanceId::parse(bad).is_none(), "{bad}");
        }
    }
}

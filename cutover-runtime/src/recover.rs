//! What a server does at start with what a previous server process left: the per-instance
//! state files, and the one-off tasks' files.
//!
//! Every running instance has `<state_dir>/instances/<id>.json`
//! ([`StateFile`]: pid, process group, port, what it runs, the pid's
//! `/proc` start time), rewritten on each restart and removed by `stop`. When
//! the server ends without stopping its instances (a restart or upgrade of
//! `cutover serve` detaches them; SIGKILL, OOM, power end it outright), the
//! files stay, and [`recover`] reads them on the next start.
//!
//! Decision: instances that still run are **adopted, not cleaned up**. They
//! write their output straight into their log files (not into pipes that die
//! with the server, see [`crate::logs`]) and run in their own process groups,
//! so nothing of them depended on the old server; killing them would make a
//! restart or upgrade of the control plane an outage of production, and lose
//! the warm previous release. (The earlier decision was the reverse, because
//! their stdout/stderr pipes died with the server: no logs, SIGPIPE, a full
//! pipe blocking them. That reason is gone.) An adopted instance is taken into
//! the runtime *unclaimed*: listed, stoppable, watched (`/proc` polled), but not
//! restarted if it exits, since its spec (run command, settings) is not in the
//! state file; the engine claims what it keeps with `Runtime::adopt` and stops
//! the rest. So for each file:
//!
//! - the pid is alive **and** its `/proc` start time is the recorded one:
//!   it is ours, and it is adopted ([`RecoveryAction::Adopted`]); its file
//!   stays;
//! - the pid is gone but live processes remain in its process group (e.g. a
//!   worker the service forked): a pgid cannot be reused while its group has
//!   members, so they are ours, without a main process, and are terminated
//!   (SIGTERM, SIGKILL after the grace period);
//! - the pid is alive with another start time (or none was recorded): the pid
//!   was reused by an unrelated process, which is left alone;
//! - nothing is left: nothing to do.
//!
//! In every case but adoption the file is removed; an unreadable file is
//! removed too and reported. Call `recover` once, before starting instances.
//!
//! One-off tasks (hooks, builds, jobs) are recorded the same way while they
//! run (`<state_dir>/tasks/<pid>.json`, [`TaskStateFile`]) and their groups
//! are **terminated** ([`recover_tasks`]), never adopted: a run ends with its
//! server, and a hook of a dead server must not run on beside the next run's
//! hook.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_core::{AppName, EnvName, ServiceName, Version};
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::os;
use crate::types::InstanceId;

/// The content of `<state_dir>/instances/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub id: InstanceId,
    pub pid: u32,
    pub pgid: u32,
    pub port: u16,
    pub app: AppName,
    pub env: EnvName,
    pub service: ServiceName,
    pub version: Version,
    pub replica: u32,
    pub release_dir: PathBuf,
    /// When this process was started (unix ms).
    pub started_at: u64,
    /// `/proc/<pid>/stat` start time (clock ticks since boot); `None` if it
    /// could not be read, in which case a live pid is never killed.
    pub proc_start_time: Option<u64>,
    /// The server process that wrote the file.
    pub server_pid: u32,
}

impl StateFile {
    /// Writes atomically (temporary file + rename) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), RuntimeError> {
        let path = dir.join(format!("{}.json", self.id));
        let tmp = dir.join(format!(".{}.json.tmp", self.id));
        let err = |action, source| RuntimeError::StateFile {
            action,
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err("serialise", e.into()))?;
        std::fs::write(&tmp, json).map_err(|e| err("write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err("write", e))
    }

    pub fn remove(dir: &Path, id: &InstanceId) -> Result<(), RuntimeError> {
        remove_state_file(&dir.join(format!("{id}.json")))
    }
}

/// What was done about one leftover state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum RecoveryAction {
    /// The instance still runs as recorded (same pid, same `/proc` start time): it was taken
    /// into this runtime, unclaimed (see the module docs); its state file stays.
    Adopted,
    /// The instance was still running; its process group was terminated.
    /// `graceful`: SIGTERM was enough.
    Terminated { graceful: bool },
    /// The main process was gone but members of its group were left; they
    /// were terminated.
    TerminatedOrphans { count: usize, graceful: bool },
    /// Nothing of it was running any more.
    AlreadyGone,
    /// The pid now belongs to another process (start time differs or could
    /// not be compared); it was left alone.
    PidReused,
    /// Terminating failed (e.g. permission denied).
    KillFailed { error: String },
    /// The file could not be read or parsed.
    Unreadable { error: String },
}

/// One leftover and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredInstance {
    pub file: PathBuf,
    /// `None` when the file was unreadable.
    pub state: Option<StateFile>,
    #[serde(flatten)]
    pub action: RecoveryAction,
}

/// The content of `<state_dir>/tasks/<name>.json`: a one-off task (hook,
/// build, job) while it runs. Removed when the task's group is gone; left
/// behind when the server dies, and then read by [`recover_tasks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateFile {
    /// `install hook`, `build api`, `job report`.
    pub label: String,
    pub pid: u32,
    pub pgid: u32,
    /// The working directory (its release directory).
    pub dir: PathBuf,
    /// When it was started (unix ms).
    pub started_at: u64,
    /// As [`StateFile::proc_start_time`].
    pub proc_start_time: Option<u64>,
    /// The server process that wrote the file.
    pub server_pid: u32,
}

impl TaskStateFile {
    /// `<dir>/<pid>.json`: a live task's pid is unique on the machine.
    pub fn path(dir: &Path, pid: u32) -> PathBuf {
        dir.join(format!("{pid}.json"))
    }

    /// Writes atomically (temporary file + rename) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), RuntimeError> {
        let path = Self::path(dir, self.pid);
        let tmp = dir.join(format!(".{}.json.tmp", self.pid));
        let err = |action, source| RuntimeError::StateFile {
            action,
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err("serialise", e.into()))?;
        std::fs::write(&tmp, json).map_err(|e| err("write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err("write", e))
    }

    pub fn remove(dir: &Path, pid: u32) -> Result<(), RuntimeError> {
        remove_state_file(&Self::path(dir, pid))
    }
}

/// One leftover one-off task and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredTask {
    pub file: PathBuf,
    /// `None` when the file was unreadable.
    pub state: Option<TaskStateFile>,
    #[serde(flatten)]
    pub action: RecoveryAction,
}

/// What [`recover`] found, for the server's start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    pub instances: Vec<RecoveredInstance>,
    /// One-off tasks (hooks, builds, jobs) of a previous server.
    #[serde(default)]
    pub tasks: Vec<RecoveredTask>,
}

impl RecoveryReport {
    /// The instances that were adopted (still running, taken into the runtime unclaimed).
    pub fn adopted(&self) -> impl Iterator<Item = &StateFile> {
        self.instances
            .iter()
            .filter(|i| i.action == RecoveryAction::Adopted)
            .filter_map(|i| i.state.as_ref())
    }

    /// How many leftovers had something running that was terminated.
    pub fn terminated(&self) -> usize {
        let killed = |a: &RecoveryAction| {
            matches!(
                a,
                RecoveryAction::Terminated { .. } | RecoveryAction::TerminatedOrphans { .. }
            )
        };
        self.instances.iter().filter(|i| killed(&i.action)).count()
            + self.tasks.iter().filter(|t| killed(&t.action)).count()
    }
}

/// Looks at what a previous server process left; see the module docs. Instances that still
/// run as recorded are reported [`RecoveryAction::Adopted`] and their files kept (the caller
/// takes them in); everything else is cleaned up and its file removed. `skip` names
/// instances of the current process, whose files are left alone.
pub async fn recover(
    dir: &Path,
    grace: Duration,
    skip: &[InstanceId],
) -> Result<RecoveryReport, RuntimeError> {
    let mut report = RecoveryReport::default();
    for file in state_files(dir)? {
        let parsed = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<StateFile>(&b).map_err(|e| e.to_string()));
        let entry = match parsed {
            Err(error) => RecoveredInstance {
                file: file.clone(),
                state: None,
                action: RecoveryAction::Unreadable { error },
            },
            Ok(state) if skip.contains(&state.id) => continue,
            Ok(state) => {
                let action = if still_running(&state) {
                    RecoveryAction::Adopted
                } else {
                    clean_up(&state, grace).await
                };
                RecoveredInstance {
                    file: file.clone(),
                    state: Some(state),
                    action,
                }
            }
        };
        tracing::info!(file = %file.display(), action = ?entry.action, "recovered an instance of a previous server");
        if entry.action != RecoveryAction::Adopted {
            remove_state_file(&file)?;
        }
        report.instances.push(entry);
    }
    Ok(report)
}

/// The recorded process is alive (not a zombie) with the recorded `/proc` start time.
fn still_running(state: &StateFile) -> bool {
    state.proc_start_time.is_some()
        && os::proc_stat(state.pid)
            .is_some_and(|s| !s.is_zombie() && Some(s.start_time) == state.proc_start_time)
}

/// Kills the process groups of one-off tasks (hooks, builds, jobs) a
/// previous server left running, by the same rules as instances (see the
/// module docs), and removes their files. Files of this process are left
/// alone. Call once at start, before any task runs.
pub async fn recover_tasks(dir: &Path, grace: Duration) -> Result<Vec<RecoveredTask>, RuntimeError> {
    let mut found = Vec::new();
    for file in state_files(dir)? {
        let parsed = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<TaskStateFile>(&b).map_err(|e| e.to_string()));
        let entry = match parsed {
            Err(error) => RecoveredTask {
                file: file.clone(),
                state: None,
                action: RecoveryAction::Unreadable { error },
            },
            Ok(state) if state.server_pid == std::process::id() => continue,
            Ok(state) => {
                let action = clean_up_group(state.pid, state.pgid, state.proc_start_time, grace).await;
                RecoveredTask {
                    file: file.clone(),
                    state: Some(state),
                    action,
                }
            }
        };
        tracing::info!(file = %file.display(), action = ?entry.action, "recovered a leftover task");
        remove_state_file(&file)?;
        found.push(entry);
    }
    Ok(found)
}

/// The `*.json` state files in `dir`, sorted; none when `dir` does not exist.
fn state_files(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RuntimeError::StateFile {
                action: "list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Removes a state file (gone already is fine).
fn remove_state_file(file: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::StateFile {
            action: "remove",
            path: file.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

async fn clean_up(state: &StateFile, grace: Duration) -> RecoveryAction {
    clean_up_group(state.pid, state.pgid, state.proc_start_time, grace).await
}

async fn clean_up_group(pid: u32, pgid: u32, start_time: Option<u64>, grace: Duration) -> RecoveryAction {
    let terminate = |count: Option<usize>| async move {
        match os::terminate_group(pgid, grace).await {
            Ok(graceful) => match count {
                None => RecoveryAction::Terminated { graceful },
                Some(count) => RecoveryAction::TerminatedOrphans { count, graceful },
            },
            Err((signal, e)) => RecoveryAction::KillFailed {
                error: format!("{} to process group {pgid}: {e}", os::signal_name(signal)),
            },
        }
    };
    match os::proc_stat(pid) {
        Some(stat) if !stat.is_zombie() => {
            let same = start_time == Some(stat.start_time);
            if same {
                terminate(None).await
            } else {
                RecoveryAction::PidReused
            }
        }
        // Gone, or a zombie: whatever is left in its group is ours.
        _ => {
            let members = os::group_members(pgid);
            if members.is_empty() {
                RecoveryAction::AlreadyGone
            } else {
                terminate(Some(members.len())).await
            }
        }
    }
}

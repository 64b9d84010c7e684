//! One-shot tasks: the pipeline hooks (`pre_deploy`, `install`,
//! `post_deploy`), the per-service `build` commands and the scheduler's
//! jobs. Unlike an instance, a task is not supervised or restarted: it runs
//! once, its output is streamed to the caller, and its [`TaskOutcome`] says
//! how it ended.
//!
//! - **Run**: `sh -c <command>` (the trusted text of `cutover.yml`) in
//!   [`TaskSpec::dir`], in its own process group, stdin from `/dev/null`,
//!   the server's environment plus [`TaskSpec::env_vars`]. User-typed
//!   values (versions, branch names, parameters) travel only in `env_vars`,
//!   never inside `command`, so no value can be interpreted by the shell.
//! - **Output**: each stdout/stderr line is sent as a [`TaskLine`] (taken
//!   when it was read, lossy UTF-8, without its line ending) as soon as it
//!   arrives, in order per stream; the two streams interleave as they
//!   happen to be read. Lines longer than [`MAX_TASK_LINE`] bytes are sent
//!   in pieces (never inside a UTF-8 character), so nothing is lost and
//!   memory stays bounded. The channel is unbounded on purpose: a slow
//!   consumer (a stage log on disk) must never stall a migration because
//!   its pipe is full. The runtime also sends a few [`LogStream::Cutover`]
//!   lines of its own (timed out, cancelled, leftovers killed) so a stage
//!   log says why a task ended. A dropped receiver is not an error; the
//!   output is then read and discarded.
//! - **End**: the task ends when its `sh` exits, when [`TaskSpec::timeout`]
//!   passes, or when `cancel` fires (or the runtime shuts down). On a
//!   timeout or cancel the whole group gets SIGTERM, then SIGKILL after the
//!   runtime's stop grace. When `sh` exits by itself, whatever it left
//!   behind in its group (`sleep 100 &`) is terminated the same way: a task
//!   never leaves processes behind, in any outcome. If the future of
//!   `run_task` is dropped instead, the group gets SIGKILL at once (no
//!   grace: a drop cannot wait); cancel through the token to be gentle.
//!
//! - **Crash**: while a task runs it is recorded in
//!   `<state_dir>/tasks/<pid>.json`; if the *server* is killed outright, the
//!   next start terminates the task's whole group before anything else runs
//!   ([`recover_tasks`](crate::recover::recover_tasks)), so a hook of the
//!   dead server never runs beside the next run's.
//! - **Confinement**: the process is confined by the runtime's
//!   [`Sandbox`](crate::sandbox::Sandbox): it may use [`TaskSpec::dir`] and
//!   the `CUTOVER_ENV_DIR` among its variables, nothing else of the data
//!   directory.

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::logs::LogStream;
use crate::os;
use crate::recover::TaskStateFile;
use crate::types::RuntimeConfig;

/// Lines longer than this (in bytes) are split into pieces of at most this
/// size.
pub const MAX_TASK_LINE: usize = 16 * 1024;

/// How long the output readers may take to reach EOF once the group is
/// gone (a process that escaped the group with `setsid` may hold the pipe).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What to run once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// What this is, for messages: `install hook`, `build yves`,
    /// `job queue-worker`.
    pub label: String,
    /// From `cutover.yml` (trusted operator text), run as `sh -c <command>`.
    pub command: String,
    /// The working directory (the release directory). Must exist.
    pub dir: PathBuf,
    /// `CUTOVER_*` variables and settings, added to the server's
    /// environment. User-typed values travel only here.
    pub env_vars: Vec<(String, String)>,
    /// Then SIGTERM to the group, SIGKILL after the runtime's stop grace.
    pub timeout: Duration,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExit {
    /// `sh` exited with this status.
    Code(i32),
    /// `sh` was killed by this signal (not by us).
    Signal(i32),
    /// It was still running after its timeout and was terminated.
    TimedOut { after: Duration },
    /// The cancel token fired (or the runtime shut down) and it was
    /// terminated.
    Cancelled,
}

/// `exit status 3`, `killed by signal 9`, `timed out after 5m`, `cancelled`.
impl fmt::Display for TaskExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit status {code}"),
            Self::Signal(sig) => write!(f, "killed by signal {sig}"),
            Self::TimedOut { after } => write!(f, "timed out after {}", humantime::format_duration(*after)),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl TaskExit {
    fn of(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(sig)) => Self::Signal(sig),
            // Neither (stopped/continued) cannot come out of wait().
            (None, None) => Self::Code(-1),
        }
    }
}

/// The result of [`Runtime::run_task`](crate::Runtime::run_task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOutcome {
    pub exit: TaskExit,
    /// From the spawn until the process group was gone.
    pub duration: Duration,
}

impl TaskOutcome {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.exit == TaskExit::Code(0)
    }
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLine {
    /// When the line was read.
    pub at: SystemTime,
    /// `Stdout`, `Stderr`, or `Cutover` for the runtime's own notes.
    pub stream: LogStream,
    pub text: String,
}

impl TaskLine {
    fn now(stream: LogStream, text: impl Into<String>) -> Self {
        Self {
            at: SystemTime::now(),
            stream,
            text: text.into(),
        }
    }
}

/// Kills the group with SIGKILL if `run` is dropped before it cleaned up.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = os::signal_group(pgid, Signal::KILL);
        }
    }
}

/// Removes a task's state file when the task is over (its group is gone,
/// or `run` was dropped after killing it).
struct RemoveOnDrop(std::path::PathBuf, u32);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(err) = TaskStateFile::remove(&self.0, self.1) {
            tracing::warn!(error = %err, "could not remove a task's state file");
        }
    }
}

/// The environment's directory (`CUTOVER_ENV_DIR`, the last one wins) among
/// a child's variables, when it is an absolute path.
pub(crate) fn env_dir(vars: &[(String, String)]) -> Option<&std::path::Path> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == "CUTOVER_ENV_DIR")
        .map(|(_, v)| std::path::Path::new(v))
        .filter(|p| p.is_absolute())
}

enum Ended {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Runs one task (see the module documentation). `shutdown` is the
/// runtime's own token, which cancels every task when it shuts down.
pub(crate) async fn run(
    spec: TaskSpec,
    lines: UnboundedSender<TaskLine>,
    cancel: CancellationToken,
    shutdown: &CancellationToken,
    config: &RuntimeConfig,
) -> Result<TaskOutcome, RuntimeError> {
    let grace = config.stop_grace;
    if !spec.dir.is_dir() {
        return Err(RuntimeError::TaskDirMissing {
            label: spec.label,
            path: spec.dir,
        });
    }
    if cancel.is_cancelled() || shutdown.is_cancelled() {
        return Ok(TaskOutcome {
            exit: TaskExit::Cancelled,
            duration: Duration::ZERO,
        });
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.dir)
        .envs(spec.env_vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let spawn_err = |source| RuntimeError::TaskSpawn {
        label: spec.label.clone(),
        command: spec.command.clone(),
        dir: spec.dir.clone(),
        source,
    };
    let env_dir = env_dir(&spec.env_vars);
    let own: Vec<&std::path::Path> = std::iter::once(spec.dir.as_path()).chain(env_dir).collect();
    config.sandbox.apply(&mut cmd, &own, env_dir).map_err(spawn_err)?;
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let Some(pgid) = child.id() else {
        return Err(spawn_err(io::Error::other(
            "the process was reaped before its pid was read",
        )));
    };
    let mut guard = GroupGuard(Some(pgid));
    let tasks_dir = config.tasks_dir();
    let record = TaskStateFile {
        label: spec.label.clone(),
        pid: pgid,
        pgid,
        dir: spec.dir.clone(),
        started_at: crate::unix_ms(),
        proc_start_time: os::proc_start_time(pgid),
        server_pid: std::process::id(),
    };
    if let Err(err) = record.write(&tasks_dir) {
        // Not fatal: the task runs; only crash recovery would miss it.
        tracing::warn!(label = %spec.label, error = %err, "could not record the task for crash recovery");
    }
    let _record = RemoveOnDrop(tasks_dir, pgid);
    tracing::debug!(label = %spec.label, pgid, "task started: sh -c {:?}", spec.command);
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        readers.push(pump(out, LogStream::Stdout, lines.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(pump(err, LogStream::Stderr, lines.clone()));
    }

    let ended = tokio::select! {
        biased;
        status = child.wait() => Ended::Exited(status),
        () = cancel.cancelled() => Ended::Cancelled,
        () = shutdown.cancelled() => Ended::Cancelled,
        () = tokio::time::sleep(spec.timeout) => Ended::TimedOut,
    };
    let note = |text: String| {
        tracing::info!(label = %spec.label, pgid, "{text}");
        let _ = lines.send(TaskLine::now(LogStream::Cutover, text));
    };
    let exit = match ended {
        Ended::Exited(status) => {
            let status = status.map_err(|source| RuntimeError::TaskWait {
                label: spec.label.clone(),
                source,
            })?;
            let left = os::group_members(pgid).len();
            if left > 0 {
                note(format!(
                    "the {} left {left} process(es) in its group; terminating them",
                    spec.label
                ));
                terminate(pgid, grace, &note).await;
            }
            TaskExit::of(status)
        }
        Ended::TimedOut | Ended::Cancelled => {
            let exit = match ended {
                Ended::TimedOut => TaskExit::TimedOut { after: spec.timeout },
                _ => TaskExit::Cancelled,
            };
            note(format!(
                "{}: SIGTERM to the {}'s process group {pgid}, SIGKILL after {}",
                exit,
                spec.label,
                humantime::format_duration(grace)
            ));
            if !terminate(pgid, grace, &note).await {
                let _ = child.start_kill();
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                note(format!("the {} did not exit after SIGKILL", spec.label));
            }
            exit
        }
    };
    guard.0 = None;
    drain(readers).await;
    Ok(TaskOutcome {
        exit,
        duration: started.elapsed(),
    })
}

/// SIGTERM, SIGKILL after `grace`; `false` when the group could not be
/// signalled at all.
async fn terminate(pgid: u32, grace: Duration, note: &impl Fn(String)) -> bool {
    match os::terminate_group(pgid, grace).await {
        Ok(true) => true,
        Ok(false) => {
            note(format!(
                "process group {pgid} ignored SIGTERM for {}; sent SIGKILL",
                humantime::format_duration(grace)
            ));
            true
        }
        Err((signal, err)) => {
            note(format!(
                "could not send {} to process group {pgid}: {err}",
                os::signal_name(signal)
            ));
            false
        }
    }
}

/// Waits for the readers to reach EOF (every line delivered), but not
/// forever.
async fn drain(readers: Vec<JoinHandle<()>>) {
    let until = Instant::now() + DRAIN_LIMIT;
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(until, reader).await.is_err() {
            abort.abort();
        }
    }
}

/// Sends `pipe` line by line until EOF (see the module documentation).
fn pump(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: LogStream,
    lines: UnboundedSender<TaskLine>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        // The previous piece was cut at MAX_TASK_LINE (not at a newline).
        let mut split = false;
        let send = |bytes: &[u8]| {
            let _ = lines.send(TaskLine::now(stream, String::from_utf8_lossy(bytes)));
        };
        loop {
            // `buf` may start with the bytes of a character cut last time.
            let room = (MAX_TASK_LINE - buf.len()) as u64;
            match (&mut reader).take(room).read_until(b'\n', &mut buf).await {
                Ok(0) => {
                    if !buf.is_empty() {
                        send(&buf);
                    }
                    break;
                }
                Ok(_) if buf.last() == Some(&b'\n') => {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    // A line of exactly MAX_TASK_LINE bytes: its newline is
                    // not an extra empty line.
                    if !(split && buf.is_empty()) {
                        send(&buf);
                    }
                    buf.clear();
                    split = false;
                }
                Ok(_) if buf.len() >= MAX_TASK_LINE => {
                    let keep = incomplete_char_tail(&buf);
                    let rest = buf.split_off(buf.len() - keep);
                    send(&buf);
                    buf = rest;
                    split = true;
                }
                // EOF without a final newline: the next read returns 0.
                Ok(_) => {}
                Err(err) => {
                    let _ = lines.send(TaskLine::now(
                        LogStream::Cutover,
                        format!("reading {} failed: {err}", stream.label()),
                    ));
                    break;
                }
            }
        }
    })
}

/// How many bytes at the end of `buf` are the start of a UTF-8 character
/// whose remaining bytes have not been read yet (0 to 3).
fn incomplete_char_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let byte = buf[buf.len() - back];
        if byte & 0xC0 != 0x80 {
            let need = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if need > back { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_characters_at_a_cut_are_kept_back() {
        assert_eq!(incomplete_char_tail(b"abc"), 0);
        assert_eq!(incomplete_char_tail("aé".as_bytes()), 0);
        assert_eq!(incomplete_char_tail(&"aé".as_bytes()[..2]), 1);
        assert_eq!(incomplete_char_tail(&"a€".as_bytes()[..3]), 2);
        assert_eq!(incomplete_char_tail(&"a😀".as_bytes()[..4]), 3);
        assert_eq!(incomplete_char_tail("a😀".as_bytes()), 0);
        assert_eq!(incomplete_char_tail(b"\x80\x80\x80"), 0);
        assert_eq!(incomplete_char_tail(b""), 0);
    }

    #[test]
    fn exits_read_well() {
        assert_eq!(TaskExit::Code(3).to_string(), "exit status 3");
        assert_eq!(
            TaskExit::TimedOut {
                after: Duration::from_secs(90)
            }
            .to_string(),
            "timed out after 1m 30s"
        );
        assert!(
            TaskOutcome {
                exit: TaskExit::Code(0),
                duration: Duration::ZERO
            }
            .success()
        );
        assert!(
            !TaskOutcome {
                exit: TaskExit::Cancelled,
                duration: Duration::ZERO
            }
            .success()
        );
    }
}

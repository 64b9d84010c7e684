//! What the runtime asks the operating system: process facts from `/proc`
//! and signals to process groups (through `rustix`, as the workspace forbids
//! `unsafe`; rejected: `nix`, which would be a second libc wrapper next to
//! the `rustix` already in the dependency tree).
//!
//! Linux only, by intent: the process runtime reports the version from
//! `/proc/<pid>/cwd`, which has no portable equivalent. On other systems the
//! `/proc` readers return `None` and the version is reported as unavailable.
//!
//! Zombies (state `Z`/`X`) count as dead everywhere here: a killed
//! grandchild whose new parent does not reap it (in a container, PID 1 may
//! not) is gone for every purpose that matters to a deployment.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_core::Version;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::time::Instant;

use crate::types::VersionSource;

/// The fields of `/proc/<pid>/stat` that the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    pub pgrp: u32,
    /// Start time in clock ticks since boot: with the pid, it names one
    /// process for the life of the machine (pids are reused, this pair is
    /// not).
    pub start_time: u64,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may itself contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(content: &str) -> Option<ProcStat> {
    let rest = &content[content.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/<pid>/stat` start time, for the state file and for recognising a
/// process again after a server restart.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// A process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| !s.is_zombie())
}

/// Live (non-zombie) members of process group `pgid`, found by scanning
/// `/proc`. Empty when `/proc` cannot be read.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.pgrp == pgid && !s.is_zombie()))
        .collect()
}

/// The version a live process runs: the first ancestor of its working
/// directory named like a SHA (release dirs are
/// `<data>/releases/<app>/<sha>`, and `run` may `cd` below it), else
/// `CUTOVER_VERSION` from its environment, else unavailable.
pub fn observed_version(pid: u32) -> (Option<Version>, VersionSource) {
    if !is_alive(pid) {
        return (None, VersionSource::Unavailable);
    }
    if let Some(v) = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .and_then(|cwd| version_in_path(&cwd))
    {
        return (Some(v), VersionSource::Cwd);
    }
    if let Some(v) = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|env| version_in_environ(&env))
    {
        return (Some(v), VersionSource::Environ);
    }
    (None, VersionSource::Unavailable)
}

pub fn version_in_path(path: &Path) -> Option<Version> {
    path.ancestors()
        .filter_map(Path::file_name)
        .find_map(|name| Version::parse(name.to_str()?).ok())
}

fn version_in_environ(environ: &[u8]) -> Option<Version> {
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"CUTOVER_VERSION="))
        .and_then(|v| Version::parse(std::str::from_utf8(v).ok()?).ok())
}

/// The working directory of a process (for reports).
pub fn proc_cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Sends `signal` to every process in group `pgid`. `Ok(false)` when the
/// group no longer exists.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<bool> {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{pgid} is not a process group id"),
        ));
    };
    if pid.is_init() || pid == rustix::process::getpgrp() {
        // A corrupt state file must never make the server kill itself.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid} (init or the server's own)"),
        ));
    }
    match kill_process_group(pid, signal) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

pub(crate) fn signal_name(signal: Signal) -> &'static str {
    if signal == Signal::KILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    }
}

/// SIGTERM to the group, wait up to `grace` for every live member to go,
/// then SIGKILL what is left and wait a little more. `Ok(true)` when SIGTERM
/// was enough (or the group was already gone).
pub async fn terminate_group(pgid: u32, grace: Duration) -> Result<bool, (Signal, io::Error)> {
    if !signal_group(pgid, Signal::TERM).map_err(|e| (Signal::TERM, e))? {
        return Ok(true);
    }
    if wait_group_gone(pgid, grace).await {
        return Ok(true);
    }
    tracing::warn!(pgid, grace = %humantime::format_duration(grace), "process group ignored SIGTERM; sending SIGKILL");
    signal_group(pgid, Signal::KILL).map_err(|e| (Signal::KILL, e))?;
    wait_group_gone(pgid, Duration::from_secs(2)).await;
    Ok(false)
}

/// SIGKILL to whatever is left of a group whose leader already exited (the
/// supervisor does this before a restart, so leftovers cannot hold the port).
pub async fn kill_leftovers(pgid: u32) -> usize {
    if group_gone(pgid) {
        return 0;
    }
    let left = group_members(pgid).len();
    if left > 0 {
        let _ = signal_group(pgid, Signal::KILL);
        wait_group_gone(pgid, Duration::from_secs(2)).await;
    }
    left
}

/// No live member of group `pgid` is left. Cheap in the common cases, which matters when a
/// thousand instances stop at once: an empty group is one `kill(-pgid, 0)` (ESRCH), a group
/// whose leader still runs is one read of the leader's `/proc/<pid>/stat`. Only a group with
/// members but no live leader (leftover grandchildren, or zombies nobody reaped) is looked for
/// in the whole of `/proc`. Rejected: scanning `/proc` on every poll, which made stopping N
/// instances cost N² reads of `/proc/*/stat` and stalled the server at ~2,000 instances.
pub fn group_gone(pgid: u32) -> bool {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return true;
    };
    if let Err(rustix::io::Errno::SRCH) = rustix::process::test_kill_process_group(pid) {
        return true;
    }
    if is_alive(pgid) {
        return false;
    }
    group_members(pgid).is_empty()
}

/// Polls (10 ms, doubling to 200 ms) until no live member of `pgid` is left or `limit` passed.
pub async fn wait_group_gone(pgid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut every = Duration::from_millis(10);
    loop {
        if group_gone(pgid) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(every.min(until.saturating_duration_since(Instant::now()))).await;
        every = (every * 2).min(Duration::from_millis(200));
    }
}

/// Raises this process's soft limit on open files to its hard limit and returns
/// `(before, after)`. Every live instance holds descriptors in the server (its log file for
/// the runtime's events, its child handle; a followed one its tail's reads; its output goes
/// straight from the process into its file), and one-off tasks hold their pipes, so the
/// common soft default of 1,024 caps a node early; the hard limit is the operator's real
/// bound.
/// `None` when the limit cannot be read or raised (then it stays as it was).
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current?;
    let Some(max) = limit.maximum else {
        // Unlimited hard limit: the kernel still caps at nr_open; ask for a generous figure.
        let want = before.max(1 << 20);
        let raised = Rlimit {
            current: Some(want),
            maximum: None,
        };
        return setrlimit(Resource::Nofile, raised).ok().map(|()| (before, want));
    };
    if before >= max {
        return Some((before, before));
    }
    let raised = Rlimit {
        current: Some(max),
        maximum: Some(max),
    };
    setrlimit(Resource::Nofile, raised).ok().map(|()| (before, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                pgrp: 4242,
                start_time: 987654
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process_is_alive_and_has_a_start_time() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(proc_start_time(me).is_some());
    }

    #[test]
    fn versions_from_paths_and_environ() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let p = PathBuf::from(format!("/data/releases/shop/{sha}/web"));
        assert_eq!(version_in_path(&p).unwrap().as_str(), sha);
        assert!(version_in_path(Path::new("/tmp/x")).is_none());
        let env = format!("A=b\0CUTOVER_VERSION={sha}\0Z=1\0");
        assert_eq!(version_in_environ(env.as_bytes()).unwrap().as_str(), sha);
    }
}

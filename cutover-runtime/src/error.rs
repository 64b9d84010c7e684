//! Errors of the runtime. Each variant carries what was being done and to
//! what (path, instance, command); the underlying cause is the `#[source]`
//! and is not repeated in the message, per the workspace's error convention.
//!
//! [`UnhealthyReport`] is boxed: it is large (it carries the log tail) and it
//! is the one error whose message is meant to be shown to a user verbatim.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::types::InstanceId;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not create the {what} directory {path}")]
    CreateDir {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not find a free port on 127.0.0.1")]
    NoFreePort {
        #[source]
        source: io::Error,
    },

    #[error("release directory {path} of {service} does not exist or is not a directory")]
    ReleaseDirMissing { service: String, path: PathBuf },

    #[error(
        "{service} has no `run` command, and the process runtime has no image command to fall \
         back on; add `run:` to the service in cutover.yml, or use runtime docker or swarm"
    )]
    NoRunCommand { service: String },

    #[error("could not start `sh -c {run:?}` for {service} in {dir}")]
    Spawn {
        service: String,
        run: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("working directory {path} of the {label} does not exist or is not a directory")]
    TaskDirMissing { label: String, path: PathBuf },

    #[error("could not start the {label} (`sh -c {command:?}` in {dir})")]
    TaskSpawn {
        label: String,
        command: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not wait for the {label} to exit")]
    TaskWait {
        label: String,
        #[source]
        source: io::Error,
    },

    #[error("no instance {id} is managed by this runtime")]
    UnknownInstance { id: InstanceId },

    #[error("could not {action} the state file {path}")]
    StateFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not {action} the log file {path}")]
    Log {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not send {signal} to process group {pgid}")]
    Signal {
        signal: &'static str,
        pgid: u32,
        #[source]
        source: io::Error,
    },

    #[error(
        "invalid health-check path {path:?}: it must start with '/' and contain no spaces or control characters"
    )]
    BadHealthPath { path: String },

    #[error("cannot adopt instance {id} of {service}: {reason}")]
    AdoptRefused {
        id: InstanceId,
        service: String,
        reason: String,
    },

    #[error("the supervisor of instance {id} failed")]
    Supervisor {
        id: InstanceId,
        #[source]
        source: tokio::task::JoinError,
    },

    #[error("the runtime has been shut down; no instance or task can be started")]
    ShutDown,

    /// A call to a container engine (the docker backend) failed; the
    /// source says what the engine answered and how to fix it.
    #[error("container engine: could not {action}")]
    Engine {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{0}")]
    Unhealthy(Box<UnhealthyReport>),
}

/// Why an instance did not pass its health check in time, with what is
/// needed to understand it without opening another file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnhealthyReport {
    pub id: InstanceId,
    /// `<app>-<env>-<service>`
    pub service: String,
    pub url: String,
    pub addr: SocketAddr,
    pub deadline: Duration,
    pub attempts: u32,
    /// The last status or error seen, e.g. `HTTP 503` or `connection refused`.
    pub last: String,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// The instance's last log lines, as in its log file (the runtime's events
    /// timestamped, the application's lines as it wrote them).
    pub log_tail: Vec<String>,
}

impl fmt::Display for UnhealthyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instance {} of {} was not healthy within {}: {} probes of GET {}, the last saw {}",
            self.id,
            self.service,
            humantime::format_duration(self.deadline),
            self.attempts,
            self.url,
            self.last
        )?;
        if self.restarts > 0 {
            write!(f, "; it was restarted {} times", self.restarts)?;
        }
        if let Some(exit) = &self.last_exit {
            write!(f, " (last exit: {exit})")?;
        }
        if self.log_tail.is_empty() {
            write!(f, "; its log is empty")
        } else {
            write!(f, "; its last log lines:")?;
            for line in &self.log_tail {
                write!(f, "\n  {line}")?;
            }
            Ok(())
        }
    }
}

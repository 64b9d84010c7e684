//! The stored shape of the scheduler (SPEC section 6): per environment,
//! whether it is suspended and which release's jobs are installed, and the
//! history of job runs with a log each.
//!
//! Rejected: keeping the suspended flag in memory only (a server restart in
//! the middle of a pipeline would resume jobs against half-migrated data).

use serde::{Deserialize, Serialize};

/// An environment's scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerState {
    pub env: String,
    /// No new job starts while suspended.
    pub suspended: bool,
    /// Why it was suspended (e.g. the run that did it).
    pub reason: Option<String>,
    /// The version whose jobs are installed (active).
    pub version: Option<String>,
    /// Jobs installed by a running pipeline, not active until resume.
    pub pending_version: Option<String>,
    /// Stamped by the store on every write; ignored on input.
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// A job run's state; only `Running` is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobRunState {
    Running,
    Succeeded,
    Failed,
    /// Not started (e.g. the previous run of the job was still going).
    Skipped,
    /// The server died while it ran; found so at the next start.
    Interrupted,
    /// Stopped on purpose (suspend timeout, cancel).
    Terminated,
}

impl JobRunState {
    pub const ALL: [JobRunState; 6] = [
        JobRunState::Running,
        JobRunState::Succeeded,
        JobRunState::Failed,
        JobRunState::Skipped,
        JobRunState::Interrupted,
        JobRunState::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobRunState::Running => "running",
            JobRunState::Succeeded => "succeeded",
            JobRunState::Failed => "failed",
            JobRunState::Skipped => "skipped",
            JobRunState::Interrupted => "interrupted",
            JobRunState::Terminated => "terminated",
        }
    }

    pub fn parse(text: &str) -> Option<JobRunState> {
        JobRunState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        self != JobRunState::Running
    }
}

/// One run of a scheduled job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRun {
    /// Increasing in start order; never reused.
    pub id: i64,
    pub env: String,
    pub job: String,
    /// The release it ran from.
    pub version: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub state: JobRunState,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub note: Option<String>,
}

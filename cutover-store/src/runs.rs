//! The stored shape of pipeline runs: the run, its 13 stages, its log lines
//! and its approvals. The states and the legal moves between them are
//! `cutover_core::run`'s; the store keeps their text forms (`as_str`, stage
//! `slug`) and only enforces what a compare-and-set needs.
//!
//! Rejected: one JSON column for the stages (a stage update would rewrite the
//! whole run, and "which runs are in Deploy services" could not be queried).

use cutover_core::{RunKind, RunState, Stage, StageStatus};
use serde::{Deserialize, Serialize};

/// A pipeline run to queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    pub env: String,
    pub kind: RunKind,
    pub requested_by: String,
    /// The SHA fixed at request time. The engine always sets it; `None`
    /// only exists in runs queued by an older version.
    pub target_version: Option<String>,
    /// Who chose that SHA: the writer of the `desired_version` value it was
    /// resolved from (or the requester of a rollback or promotion).
    pub version_chosen_by: Option<String>,
    pub reason: Option<String>,
}

/// A stored pipeline run with all its stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// Increasing in request order; never reused.
    pub id: i64,
    pub env: String,
    pub kind: RunKind,
    pub state: RunState,
    pub requested_by: String,
    pub reason: Option<String>,
    /// The SHA fixed at request time: what the run deploys and what an
    /// approval approves (`None` only in runs queued by an older version).
    pub target_version: Option<String>,
    /// Who chose `target_version` (wrote the `desired_version` it was
    /// resolved from); on a production tier they may not approve the run.
    pub version_chosen_by: Option<String>,
    /// The SHA the run deploys, resolved when it starts.
    pub version: Option<String>,
    /// What was deployed before this run.
    pub previous_version: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    /// The stage most recently set to running.
    pub current_stage: Option<Stage>,
    pub failed_stage: Option<Stage>,
    pub error: Option<String>,
    /// The run that replaced this one while it was queued.
    pub superseded_by: Option<i64>,
    /// Always all 13, in [`Stage::ALL`] order.
    pub stages: Vec<StageRecord>,
}

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageRecord {
    pub stage: Stage,
    pub status: StageStatus,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    /// E.g. why it was skipped.
    pub note: Option<String>,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunLogLine {
    pub run_id: i64,
    /// 1, 2, 3... per run, without gaps, across all its stages.
    pub seq: i64,
    pub stage: Stage,
    pub at_ms: i64,
    pub line: String,
}

/// An approver's answer in the Approval stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<Decision> {
        [Decision::Approve, Decision::Reject]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// A recorded approval or rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalRecord {
    pub run_id: i64,
    pub actor: String,
    pub decision: Decision,
    pub comment: Option<String>,
    pub at_ms: i64,
}

/// Columns written with a run state change. Fields set to `Some` are
/// written; `None` leaves the column as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunUpdate {
    pub version: Option<String>,
    pub previous_version: Option<String>,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub failed_stage: Option<Stage>,
    pub error: Option<String>,
}

/// The states in which a run still needs the executor.
pub(crate) const UNFINISHED: [RunState; 3] =
    [RunState::Queued, RunState::Running, RunState::AwaitingApproval];

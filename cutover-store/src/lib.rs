//! Persistence for Cutover, behind one trait: [`Store`].
//!
//! The store keeps the parameter store (every write a new numbered version,
//! with compare-and-set), the append-only audit log, pipeline runs (state,
//! stages, logs, approvals; see [`runs`]) and the scheduler (its state per
//! environment and the job runs with their logs; see [`scheduler`]) and the
//! API tokens (a hash of each secret, see [`tokens`]). It holds
//! no business rules: which keys are reserved, who may write what, who may
//! approve and what gets audited are decided by the engine; the store only
//! stores, atomically and durably. Run states move by compare-and-set, along
//! the legal moves `cutover_core::RunState` defines.
//!
//! Backends: [`SqliteStore`] (the default, one file in the data directory)
//! and [`PostgresStore`] (for multi-instance deployments sharing one state).
//! The SQL is portable (TEXT and BIGINT columns, times as unix milliseconds,
//! JSON as TEXT, no backend-only functions in the shared queries; each
//! backend serialises its writers its own way), migrations are kept per
//! backend side by side (see [`migrate`]), and the behaviour is pinned by one
//! backend-agnostic conformance suite (`conformance`, behind the
//! `conformance` feature) that both pass.
//!
//! Rejected: an ORM or query macros (`sqlx::query!` needs a live database or
//! offline metadata at build time, and the workspace leaves `macros` off);
//! writing the audit entry inside `param_put`'s transaction (it would make the
//! trait decide what is audited, which is a business rule).
//!
//! Architecture invariant: nothing outside this crate names a SQL table.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod key;
pub mod migrate;
mod postgres;
mod postgres_runs;
mod postgres_scheduler;
mod postgres_tokens;
pub mod runs;
pub mod scheduler;
mod sqlite;
mod sqlite_runs;
mod sqlite_scheduler;
mod sqlite_tokens;
pub mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use cutover_core::{RunState, Stage, StageStatus};
use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use key::{PARAM_KEY_MAX_LEN, ParamKey};
pub use migrate::SCHEMA_VERSION;
pub use postgres::{LeaderLock, PostgresStore};
pub use runs::{ApprovalRecord, Decision, NewRun, RunLogLine, RunRecord, RunUpdate, StageRecord};
pub use scheduler::{JobRun, JobRunState, SchedulerState};
pub use sqlite::SqliteStore;
pub use tokens::{NewToken, TokenRecord};

/// One version of a parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParamVersion {
    pub key: String,
    /// 1 for the first write of a key, then 2, 3... without gaps.
    pub version: i64,
    pub value: String,
    pub actor: String,
    /// When it was written, unix milliseconds.
    pub at_ms: i64,
}

/// An audit entry to append; the store assigns `id` and `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub actor: String,
    /// What was done, e.g. `param.put`.
    pub action: String,
    /// What it was done to, e.g. a parameter key or a run id.
    pub target: String,
    pub detail: serde_json::Value,
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increasing in append order; never reused.
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// Cutover's persistence. Every method is atomic; a method that returns `Ok`
/// after a write has made it durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Newest version of a key, or `None` if it was never written.
    async fn param_get(&self, key: &ParamKey) -> Result<Option<ParamVersion>, StoreError>;

    /// Appends the next version (1, 2, 3...) of `key` with `value`, `actor`
    /// and the current time.
    ///
    /// `expect_version` is a compare-and-set: `Some(n)` succeeds only if the
    /// newest version is `n` (`Some(0)`: the key must not exist yet); otherwise
    /// [`StoreError::VersionMismatch`] names the current version and nothing is
    /// written. `None` always appends. Atomic under concurrent writers.
    /// A NUL character in `value` or `actor` is [`StoreError::InvalidText`].
    async fn param_put(
        &self,
        key: &ParamKey,
        value: &str,
        actor: &str,
        expect_version: Option<i64>,
    ) -> Result<ParamVersion, StoreError>;

    /// All versions of a key, newest first; empty if it was never written.
    async fn param_history(&self, key: &ParamKey) -> Result<Vec<ParamVersion>, StoreError>;

    /// The newest version of every key at or below the path `prefix`, sorted
    /// by key. `/shop-prod` matches `/shop-prod` and `/shop-prod/x` but not
    /// `/shop-production/x`; a trailing `/` is ignored; `""` or `/` lists
    /// every key. A prefix that is not a valid key is
    /// [`StoreError::InvalidKey`].
    async fn param_list(&self, prefix: &str) -> Result<Vec<ParamVersion>, StoreError>;

    /// Appends to the audit log; returns the entry with its id and time.
    /// A NUL character in `actor`, `action` or `target` is [`StoreError::InvalidText`].
    async fn audit_append(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError>;

    /// At most `limit` audit entries, newest first, with an id below
    /// `before_id` if given (pass the last id of a page to get the next one).
    async fn audit_list(&self, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditEntry>, StoreError>;

    // --- Pipeline runs -------------------------------------------------------

    /// In one transaction: every `Queued` run of `new.env` becomes
    /// `Superseded` (`superseded_by` = the new id, `ended_at_ms` = now, its
    /// pending stages `NotRun`), and the new run is inserted as `Queued` with
    /// its 13 stages `Pending`. Returns the new run and the ids it superseded
    /// (ascending). Runs in other states or other environments are untouched.
    /// A NUL character in any text is [`StoreError::InvalidText`].
    async fn run_enqueue(&self, new: NewRun) -> Result<(RunRecord, Vec<i64>), StoreError>;

    /// The run with its 13 stages, or `None`.
    async fn run_get(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;

    /// At most `limit` runs, newest first, of one environment (`env`) or all
    /// (`None`), with an id below `before_id` if given (pass the last id of a
    /// page to get the next one).
    async fn run_list(
        &self,
        env: Option<&str>,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<RunRecord>, StoreError>;

    /// Compare-and-set on the run's state: moves it to `to` and writes the
    /// `Some` fields of `update`, only if its current state is one of `from`
    /// and may become `to` ([`RunState::transition`]). Otherwise
    /// [`StoreError::RunStateConflict`] names the current state and nothing is
    /// written; an unknown id is [`StoreError::RunNotFound`]. Returns the run
    /// as it is afterwards.
    async fn run_transition(
        &self,
        id: i64,
        from: &[RunState],
        to: RunState,
        update: RunUpdate,
    ) -> Result<RunRecord, StoreError>;

    /// Writes the `Some` fields of `update` on a run that has not ended,
    /// without changing its state (e.g. the version resolved by Source). An
    /// ended run is [`StoreError::RunStateConflict`]; unknown: [`StoreError::RunNotFound`].
    async fn run_update(&self, id: i64, update: RunUpdate) -> Result<RunRecord, StoreError>;

    /// Sets a stage's status, and its note if `note` is `Some`. `Running`
    /// stamps the stage's `started_at_ms` (clearing `ended_at_ms`) and makes it
    /// the run's `current_stage`; a done status ([`StageStatus::is_done`])
    /// stamps `ended_at_ms`. Unknown run: [`StoreError::RunNotFound`].
    async fn stage_update(
        &self,
        run_id: i64,
        stage: Stage,
        status: StageStatus,
        note: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Every `Pending` stage of the run becomes `NotRun` (when a run ends
    /// early); their times stay empty, as they never ran.
    async fn stages_mark_not_run(&self, run_id: i64) -> Result<(), StoreError>;

    /// Appends one line to the run's log; returns it with its `seq` (1, 2,
    /// 3... per run, without gaps, also under concurrent appends).
    async fn log_append(&self, run_id: i64, stage: Stage, line: &str) -> Result<RunLogLine, StoreError>;

    /// At most `limit` lines with `seq > after_seq`, of `stage` only if given,
    /// in ascending `seq`. Pass the last `seq` seen to follow a log.
    async fn log_read(
        &self,
        run_id: i64,
        stage: Option<Stage>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunLogLine>, StoreError>;

    /// Every run that is `Queued`, `Running` or `AwaitingApproval`, in any
    /// environment, oldest first: for the executor's start and crash recovery.
    async fn runs_unfinished(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// Whether a run of `env` ended `Succeeded` with `version` (the SHA
    /// Source recorded): what an environment's `requires:` policy asks.
    async fn run_succeeded_with(&self, env: &str, version: &str) -> Result<bool, StoreError>;

    /// Records one approval or rejection with the current time (the engine
    /// decides who may). Unknown run: [`StoreError::RunNotFound`].
    async fn approval_add(
        &self,
        run_id: i64,
        actor: &str,
        decision: Decision,
        comment: Option<&str>,
    ) -> Result<ApprovalRecord, StoreError>;

    /// The run's approvals and rejections, oldest first.
    async fn approvals(&self, run_id: i64) -> Result<Vec<ApprovalRecord>, StoreError>;

    // --- Scheduler -----------------------------------------------------------

    /// The environment's scheduler state, or `None` if never written.
    async fn scheduler_get(&self, env: &str) -> Result<Option<SchedulerState>, StoreError>;

    /// Inserts or replaces the state of `state.env`; the store stamps
    /// `updated_at_ms` with the current time (the given value is ignored).
    async fn scheduler_put(&self, state: &SchedulerState) -> Result<(), StoreError>;

    /// Records a job run starting now, as `Running`.
    async fn job_run_start(
        &self,
        env: &str,
        job: &str,
        version: &str,
        trigger: &str,
    ) -> Result<JobRun, StoreError>;

    /// Ends a `Running` job run with a final `state` and the current time.
    /// Unknown id: [`StoreError::JobRunNotFound`]; already ended, or `state`
    /// `Running`: [`StoreError::JobRunConflict`], nothing written.
    async fn job_run_finish(
        &self,
        id: i64,
        state: JobRunState,
        exit_code: Option<i32>,
        note: Option<&str>,
    ) -> Result<JobRun, StoreError>;

    /// At most `limit` job runs of the environment (of one job if given), newest first.
    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<JobRun>, StoreError>;

    /// Every `Running` job run, in any environment, oldest first.
    async fn job_runs_unfinished(&self) -> Result<Vec<JobRun>, StoreError>;

    /// Appends one line to a job run's log; returns its seq (1, 2, 3... per job run).
    async fn job_log_append(&self, job_run_id: i64, line: &str) -> Result<i64, StoreError>;

    /// At most `limit` `(seq, at_ms, line)` with `seq > after_seq`, ascending.
    async fn job_log_read(
        &self,
        job_run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, i64, String)>, StoreError>;

    /// For the destructive pipeline: deletes the environment's job runs and
    /// their logs (its scheduler state stays); returns how many runs went.
    async fn job_history_reset(&self, env: &str) -> Result<u64, StoreError>;

    /// One job run, or `None`.
    async fn job_run_get(&self, id: i64) -> Result<Option<JobRun>, StoreError>;

    // --- API tokens ------------------------------------------------------------

    /// Inserts a token, stamping `created_at_ms`. A live (not revoked) token
    /// with the same name is [`StoreError::TokenNameTaken`], nothing written.
    async fn token_create(&self, new: NewToken) -> Result<TokenRecord, StoreError>;

    /// Inserts `new` only if the store holds no token at all (live or not),
    /// atomically also against another server on the same database; `None`
    /// if there was one. For the first start's admin token.
    async fn token_bootstrap(&self, new: NewToken) -> Result<Option<TokenRecord>, StoreError>;

    /// The token whose secret hashes to `secret_hash`, revoked or expired
    /// ones included (the caller decides whether it may be used).
    async fn token_find(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token, revoked ones included, oldest first.
    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes the live token named `name` (now, by `by`) and returns it;
    /// none: [`StoreError::TokenNotFound`]. A revoked token stays listed.
    async fn token_revoke(&self, name: &str, by: &str) -> Result<TokenRecord, StoreError>;

    /// Waits for pending work and releases connections; calls after this fail.
    async fn close(&self) {}
}

/// Parses a `param_list` prefix: `None` for "every key".
pub(crate) fn parse_prefix(prefix: &str) -> Result<Option<ParamKey>, StoreError> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    ParamKey::parse(trimmed)
        .map(Some)
        .map_err(|source| StoreError::InvalidKey {
            key: prefix.to_owned(),
            source,
        })
}

/// Refuses text no backend can store identically (NUL: PostgreSQL rejects it).
pub(crate) fn check_text(fields: &[(&'static str, &str)], target: &str) -> Result<(), StoreError> {
    match fields.iter().find(|(_, text)| text.contains('\0')) {
        Some((field, _)) => Err(StoreError::InvalidText {
            field,
            target: target.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

//! The SQLite side of the scheduler: its state per environment, job runs and
//! their logs, as functions on the pool that `SqliteStore`'s trait impl calls.
//!
//! The state is one row per environment, written with `INSERT ... ON CONFLICT
//! DO UPDATE` (the same statement works on PostgreSQL). Job log seqs come from
//! the job run's `log_seq` counter, as run logs do (see `sqlite_runs`).
//!
//! Rejected: `ON DELETE CASCADE` from job runs to their logs (a reset should
//! say in code what it deletes, and a cascade makes an accidental delete of a
//! job run silently take its log with it).

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::error::{StoreError, corrupt};
use crate::{JobRun, JobRunState, SchedulerState, check_text, now_ms};

/// `SELECT <job run columns> FROM job_runs <$tail>`.
macro_rules! select_job_runs {
    ($tail:literal) => {
        concat!(
            "SELECT id, env, job, version, triggered_by, state, started_at_ms, ended_at_ms, exit_code, note \
             FROM job_runs ",
            $tail
        )
    };
}

fn job_run_from_row(row: &SqliteRow, op: &'static str) -> Result<JobRun, StoreError> {
    let id: i64 = row.try_get("id").map_err(StoreError::db(op))?;
    let state: String = row.try_get("state").map_err(StoreError::db(op))?;
    let exit_code: Option<i64> = row.try_get("exit_code").map_err(StoreError::db(op))?;
    Ok(JobRun {
        id,
        env: row.try_get("env").map_err(StoreError::db(op))?,
        job: row.try_get("job").map_err(StoreError::db(op))?,
        version: row.try_get("version").map_err(StoreError::db(op))?,
        trigger: row.try_get("triggered_by").map_err(StoreError::db(op))?,
        state: JobRunState::parse(&state)
            .ok_or_else(|| corrupt(format!("state of job run {id}"), &state, "a job run state"))?,
        started_at_ms: row.try_get("started_at_ms").map_err(StoreError::db(op))?,
        ended_at_ms: row.try_get("ended_at_ms").map_err(StoreError::db(op))?,
        exit_code: exit_code
            .map(|c| {
                i32::try_from(c).map_err(|_| {
                    corrupt(
                        format!("exit code of job run {id}"),
                        &c.to_string(),
                        "a 32-bit integer",
                    )
                })
            })
            .transpose()?,
        note: row.try_get("note").map_err(StoreError::db(op))?,
    })
}

fn state_from_row(row: &SqliteRow, op: &'static str) -> Result<SchedulerState, StoreError> {
    let suspended: i64 = row.try_get("suspended").map_err(StoreError::db(op))?;
    Ok(SchedulerState {
        env: row.try_get("env").map_err(StoreError::db(op))?,
        suspended: suspended != 0,
        reason: row.try_get("reason").map_err(StoreError::db(op))?,
        version: row.try_get("version").map_err(StoreError::db(op))?,
        pending_version: row.try_get("pending_version").map_err(StoreError::db(op))?,
        updated_at_ms: row.try_get("updated_at_ms").map_err(StoreError::db(op))?,
        updated_by: row.try_get("updated_by").map_err(StoreError::db(op))?,
    })
}

pub(crate) async fn get(pool: &SqlitePool, env: &str) -> Result<Option<SchedulerState>, StoreError> {
    const OP: &str = "reading the scheduler state";
    let row = sqlx::query(
        "SELECT env, suspended, reason, version, pending_version, updated_at_ms, updated_by \
         FROM scheduler_state WHERE env = ?",
    )
    .bind(env)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::db(OP))?;
    row.as_ref().map(|r| state_from_row(r, OP)).transpose()
}

pub(crate) async fn put(pool: &SqlitePool, state: &SchedulerState) -> Result<(), StoreError> {
    const OP: &str = "writing the scheduler state";
    check_text(
        &[
            ("environment", &state.env),
            ("reason", state.reason.as_deref().unwrap_or_default()),
            ("version", state.version.as_deref().unwrap_or_default()),
            (
                "pending version",
                state.pending_version.as_deref().unwrap_or_default(),
            ),
            ("actor", &state.updated_by),
        ],
        "the scheduler state",
    )?;
    sqlx::query(
        "INSERT INTO scheduler_state (env, suspended, reason, version, pending_version, updated_at_ms, updated_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (env) DO UPDATE SET suspended = excluded.suspended, reason = excluded.reason, \
         version = excluded.version, pending_version = excluded.pending_version, \
         updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
    )
    .bind(&state.env)
    .bind(i64::from(state.suspended))
    .bind(&state.reason)
    .bind(&state.version)
    .bind(&state.pending_version)
    .bind(now_ms())
    .bind(&state.updated_by)
    .execute(pool)
    .await
    .map_err(StoreError::db(OP))?;
    Ok(())
}

pub(crate) async fn job_run_start(
    pool: &SqlitePool,
    env: &str,
    job: &str,
    version: &str,
    trigger: &str,
) -> Result<JobRun, StoreError> {
    const OP: &str = "recording a job run";
    check_text(
        &[
            ("environment", env),
            ("job", job),
            ("version", version),
            ("trigger", trigger),
        ],
        "a new job run",
    )?;
    let started_at_ms = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO job_runs (env, job, version, triggered_by, state, started_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(env)
    .bind(job)
    .bind(version)
    .bind(trigger)
    .bind(JobRunState::Running.as_str())
    .bind(started_at_ms)
    .fetch_one(pool)
    .await
    .map_err(StoreError::db(OP))?;
    Ok(JobRun {
        id,
        env: env.to_owned(),
        job: job.to_owned(),
        version: version.to_owned(),
        trigger: trigger.to_owned(),
        state: JobRunState::Running,
        started_at_ms,
        ended_at_ms: None,
        exit_code: None,
        note: None,
    })
}

pub(crate) async fn job_run_finish(
    pool: &SqlitePool,
    id: i64,
    state: JobRunState,
    exit_code: Option<i32>,
    note: Option<&str>,
) -> Result<JobRun, StoreError> {
    const OP: &str = "finishing a job run";
    check_text(&[("note", note.unwrap_or_default())], &format!("job run {id}"))?;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(OP))?;
    let row = sqlx::query(select_job_runs!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    let mut run = match row {
        Some(row) => job_run_from_row(&row, OP)?,
        None => return Err(StoreError::JobRunNotFound { id }),
    };
    if run.state.is_finished() || !state.is_finished() {
        return Err(StoreError::JobRunConflict {
            id,
            current: run.state,
            wanted: state,
        });
    }
    let ended_at_ms = now_ms();
    sqlx::query("UPDATE job_runs SET state = ?, ended_at_ms = ?, exit_code = ?, note = ? WHERE id = ?")
        .bind(state.as_str())
        .bind(ended_at_ms)
        .bind(exit_code.map(i64::from))
        .bind(note)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    run.state = state;
    run.ended_at_ms = Some(ended_at_ms);
    run.exit_code = exit_code;
    run.note = note.map(str::to_owned);
    Ok(run)
}

pub(crate) async fn job_runs(
    pool: &SqlitePool,
    env: &str,
    job: Option<&str>,
    limit: u32,
) -> Result<Vec<JobRun>, StoreError> {
    const OP: &str = "listing job runs";
    let query = match job {
        Some(job) => sqlx::query(select_job_runs!(
            "WHERE env = ? AND job = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(env)
        .bind(job),
        None => sqlx::query(select_job_runs!("WHERE env = ? ORDER BY id DESC LIMIT ?")).bind(env),
    };
    let rows = query
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(OP))?;
    rows.iter().map(|r| job_run_from_row(r, OP)).collect()
}

pub(crate) async fn job_run_get(pool: &SqlitePool, id: i64) -> Result<Option<JobRun>, StoreError> {
    const OP: &str = "reading a job run";
    let row = sqlx::query(select_job_runs!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(OP))?;
    row.as_ref().map(|r| job_run_from_row(r, OP)).transpose()
}

pub(crate) async fn job_runs_unfinished(pool: &SqlitePool) -> Result<Vec<JobRun>, StoreError> {
    const OP: &str = "listing unfinished job runs";
    let rows = sqlx::query(select_job_runs!("WHERE state = ? ORDER BY id"))
        .bind(JobRunState::Running.as_str())
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(OP))?;
    rows.iter().map(|r| job_run_from_row(r, OP)).collect()
}

pub(crate) async fn job_log_append(
    pool: &SqlitePool,
    job_run_id: i64,
    line: &str,
) -> Result<i64, StoreError> {
    const OP: &str = "appending to a job run's log";
    check_text(&[("log line", line)], &format!("job run {job_run_id}"))?;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(OP))?;
    let seq: Option<i64> =
        sqlx::query_scalar("UPDATE job_runs SET log_seq = log_seq + 1 WHERE id = ? RETURNING log_seq")
            .bind(job_run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
    let seq = seq.ok_or(StoreError::JobRunNotFound { id: job_run_id })?;
    sqlx::query("INSERT INTO job_logs (job_run_id, seq, at_ms, line) VALUES (?, ?, ?, ?)")
        .bind(job_run_id)
        .bind(seq)
        .bind(now_ms())
        .bind(line)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    Ok(seq)
}

pub(crate) async fn job_log_read(
    pool: &SqlitePool,
    job_run_id: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<(i64, i64, String)>, StoreError> {
    const OP: &str = "reading a job run's log";
    let rows = sqlx::query(
        "SELECT seq, at_ms, line FROM job_logs WHERE job_run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(job_run_id)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(OP))?;
    rows.iter()
        .map(|row| Ok((row.try_get("seq")?, row.try_get("at_ms")?, row.try_get("line")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::db(OP))
}

pub(crate) async fn job_history_reset(pool: &SqlitePool, env: &str) -> Result<u64, StoreError> {
    const OP: &str = "resetting the job history";
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(OP))?;
    sqlx::query("DELETE FROM job_logs WHERE job_run_id IN (SELECT j.id FROM job_runs j WHERE j.env = ?)")
        .bind(env)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    let deleted = sqlx::query("DELETE FROM job_runs WHERE env = ?")
        .bind(env)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?
        .rows_affected();
    tx.commit().await.map_err(StoreError::db(OP))?;
    Ok(deleted)
}

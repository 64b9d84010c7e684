//! The PostgreSQL side of pipeline runs: the queries behind the run methods
//! of [`Store`](crate::Store), as functions on the pool that `PostgresStore`'s
//! trait impl calls. The twin of `sqlite_runs`, statement for statement, with
//! `$n` placeholders and PostgreSQL's own way of serialising writers.
//!
//! Transactions run at READ COMMITTED (PostgreSQL's default). Where SQLite
//! takes its one write lock up front (`BEGIN IMMEDIATE`), this side locks
//! exactly what the decision depends on: a state compare-and-set reads the
//! run `FOR UPDATE` (a second writer waits, then sees the first one's state);
//! queueing takes a transaction-scoped advisory lock on the environment, so
//! two runs queued at once in one environment cannot both miss each other
//! when superseding. Log seqs come from the run's `log_seq` counter, bumped
//! by an `UPDATE ... RETURNING`, whose row lock serialises appenders.
//!
//! Rejected: SERIALIZABLE transactions (every caller would need a retry loop
//! for serialization failures, which the trait does not expose), `LOCK TABLE`
//! (would serialise log appends of unrelated runs behind a queueing) and
//! `MAX(seq) + 1` (two appenders can read the same maximum).

use cutover_core::{RunKind, RunState, Stage, StageStatus};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{PgExecutor, Row};

use crate::error::{StoreError, corrupt};
use crate::runs::UNFINISHED;
use crate::{
    ApprovalRecord, Decision, NewRun, RunLogLine, RunRecord, RunUpdate, StageRecord, check_text, now_ms,
};

/// The first key of the advisory lock `enqueue` takes per environment
/// (the second is the environment's hash); "cq" in ASCII.
const ENQUEUE_LOCK: i32 = 0x6371;

/// The run columns and its stages, one row per stage; `$tail` filters and orders.
macro_rules! select_runs {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.env, r.kind, r.state, r.requested_by, r.reason, r.target_version, r.version_chosen_by, r.version, \
             r.previous_version, r.created_at_ms, r.started_at_ms, r.ended_at_ms, r.current_stage, \
             r.failed_stage, r.error, r.superseded_by, s.stage, s.status, \
             s.started_at_ms AS stage_started_at_ms, s.ended_at_ms AS stage_ended_at_ms, s.note AS stage_note \
             FROM runs r JOIN run_stages s ON s.run_id = r.id ",
            $tail
        )
    };
}

async fn begin(
    pool: &PgPool,
    op: &'static str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    pool.begin().await.map_err(StoreError::db(op))
}

fn stage_of(text: &str, what: impl FnOnce() -> String) -> Result<Stage, StoreError> {
    Stage::parse(text).map_err(|_| corrupt(what(), text, "a known stage"))
}

fn opt_stage(text: Option<String>, what: impl FnOnce() -> String) -> Result<Option<Stage>, StoreError> {
    text.map(|t| stage_of(&t, what)).transpose()
}

/// Folds rows of `select_runs!` (grouped by run, stages in order) into runs.
fn runs_from_rows(rows: &[PgRow], op: &'static str) -> Result<Vec<RunRecord>, StoreError> {
    let mut runs: Vec<RunRecord> = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("id").map_err(StoreError::db(op))?;
        if runs.last().is_none_or(|r| r.id != id) {
            runs.push(run_from_row(row, id, op)?);
        }
        let run = runs.last_mut().expect("pushed above");
        run.stages.push(stage_from_row(row, id, op)?);
    }
    for run in &runs {
        let stages: Vec<Stage> = run.stages.iter().map(|s| s.stage).collect();
        if stages != Stage::ALL {
            return Err(corrupt(
                format!("stages of run {}", run.id),
                &format!("{stages:?}"),
                "the 13 pipeline stages",
            ));
        }
    }
    Ok(runs)
}

fn run_from_row(row: &PgRow, id: i64, op: &'static str) -> Result<RunRecord, StoreError> {
    let get_text = |col: &str| -> Result<String, StoreError> { row.try_get(col).map_err(StoreError::db(op)) };
    let get_opt =
        |col: &str| -> Result<Option<String>, StoreError> { row.try_get(col).map_err(StoreError::db(op)) };
    let get_ms =
        |col: &str| -> Result<Option<i64>, StoreError> { row.try_get(col).map_err(StoreError::db(op)) };
    let kind = get_text("kind")?;
    let state = get_text("state")?;
    Ok(RunRecord {
        id,
        env: get_text("env")?,
        kind: RunKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("kind of run {id}"), &kind, "a run kind"))?,
        state: RunState::parse(&state)
            .ok_or_else(|| corrupt(format!("state of run {id}"), &state, "a run state"))?,
        requested_by: get_text("requested_by")?,
        reason: get_opt("reason")?,
        target_version: get_opt("target_version")?,
        version_chosen_by: get_opt("version_chosen_by")?,
        version: get_opt("version")?,
        previous_version: get_opt("previous_version")?,
        created_at_ms: row.try_get("created_at_ms").map_err(StoreError::db(op))?,
        started_at_ms: get_ms("started_at_ms")?,
        ended_at_ms: get_ms("ended_at_ms")?,
        current_stage: opt_stage(get_opt("current_stage")?, || format!("current stage of run {id}"))?,
        failed_stage: opt_stage(get_opt("failed_stage")?, || format!("failed stage of run {id}"))?,
        error: get_opt("error")?,
        superseded_by: get_ms("superseded_by")?,
        stages: Vec::with_capacity(Stage::ALL.len()),
    })
}

fn stage_from_row(row: &PgRow, id: i64, op: &'static str) -> Result<StageRecord, StoreError> {
    let stage: String = row.try_get("stage").map_err(StoreError::db(op))?;
    let stage = stage_of(&stage, || format!("a stage of run {id}"))?;
    let status: String = row.try_get("status").map_err(StoreError::db(op))?;
    Ok(StageRecord {
        stage,
        status: StageStatus::parse(&status).ok_or_else(|| {
            corrupt(
                format!("status of stage {} of run {id}", stage.slug()),
                &status,
                "a stage status",
            )
        })?,
        started_at_ms: row.try_get("stage_started_at_ms").map_err(StoreError::db(op))?,
        ended_at_ms: row.try_get("stage_ended_at_ms").map_err(StoreError::db(op))?,
        note: row.try_get("stage_note").map_err(StoreError::db(op))?,
    })
}

async fn fetch_run<'e>(
    ex: impl PgExecutor<'e>,
    id: i64,
    op: &'static str,
) -> Result<Option<RunRecord>, StoreError> {
    let rows = sqlx::query(select_runs!("WHERE r.id = $1 ORDER BY s.ordinal"))
        .bind(id)
        .fetch_all(ex)
        .await
        .map_err(StoreError::db(op))?;
    Ok(runs_from_rows(&rows, op)?.pop())
}

/// Fails with `RunNotFound` unless the run exists.
async fn require_run(conn: &mut PgConnection, id: i64, op: &'static str) -> Result<(), StoreError> {
    let found = sqlx::query("SELECT 1 FROM runs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(StoreError::db(op))?;
    found.map(|_| ()).ok_or(StoreError::RunNotFound { id })
}

pub(crate) async fn enqueue(pool: &PgPool, new: NewRun) -> Result<(RunRecord, Vec<i64>), StoreError> {
    const OP: &str = "queueing a pipeline run";
    check_text(
        &[
            ("environment", &new.env),
            ("requester", &new.requested_by),
            (
                "target version",
                new.target_version.as_deref().unwrap_or_default(),
            ),
            ("reason", new.reason.as_deref().unwrap_or_default()),
            (
                "version chooser",
                new.version_chosen_by.as_deref().unwrap_or_default(),
            ),
        ],
        &format!("a new run of {}", new.env.replace('\0', "\\0")),
    )?;
    let mut tx = begin(pool, OP).await?;
    // Queueings in one environment take turns (until commit), so each sees
    // the runs the previous one queued and supersedes them.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(ENQUEUE_LOCK)
        .bind(&new.env)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    let now = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (env, kind, state, requested_by, reason, target_version, version_chosen_by, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&new.env)
    .bind(new.kind.as_str())
    .bind(RunState::Queued.as_str())
    .bind(&new.requested_by)
    .bind(&new.reason)
    .bind(&new.target_version)
    .bind(&new.version_chosen_by)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    for (ordinal, stage) in Stage::ALL.iter().enumerate() {
        sqlx::query("INSERT INTO run_stages (run_id, stage, ordinal, status) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(stage.slug())
            .bind(ordinal as i64)
            .bind(StageStatus::Pending.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
    }
    let mut superseded: Vec<i64> = sqlx::query_scalar(
        "UPDATE runs SET state = $1, superseded_by = $2, ended_at_ms = $3 \
         WHERE env = $4 AND state = $5 AND id <> $6 RETURNING id",
    )
    .bind(RunState::Superseded.as_str())
    .bind(id)
    .bind(now)
    .bind(&new.env)
    .bind(RunState::Queued.as_str())
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    superseded.sort_unstable();
    sqlx::query(
        "UPDATE run_stages SET status = $1 WHERE status = $2 \
         AND run_id IN (SELECT r.id FROM runs r WHERE r.superseded_by = $3)",
    )
    .bind(StageStatus::NotRun.as_str())
    .bind(StageStatus::Pending.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    let run = fetch_run(&mut *tx, id, OP)
        .await?
        .ok_or(StoreError::RunNotFound { id })?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    Ok((run, superseded))
}

pub(crate) async fn get(pool: &PgPool, id: i64) -> Result<Option<RunRecord>, StoreError> {
    fetch_run(pool, id, "reading a pipeline run").await
}

pub(crate) async fn list(
    pool: &PgPool,
    env: Option<&str>,
    limit: u32,
    before_id: Option<i64>,
) -> Result<Vec<RunRecord>, StoreError> {
    const OP: &str = "listing pipeline runs";
    let before = before_id.unwrap_or(i64::MAX);
    let query = match env {
        Some(env) => sqlx::query(select_runs!(
            "WHERE r.id IN (SELECT q.id FROM runs q WHERE q.env = $1 AND q.id < $2 ORDER BY q.id DESC LIMIT $3) \
             ORDER BY r.id DESC, s.ordinal"
        ))
        .bind(env),
        None => sqlx::query(select_runs!(
            "WHERE r.id IN (SELECT q.id FROM runs q WHERE q.id < $1 ORDER BY q.id DESC LIMIT $2) \
             ORDER BY r.id DESC, s.ordinal"
        )),
    };
    let rows = query
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(OP))?;
    runs_from_rows(&rows, OP)
}

pub(crate) async fn succeeded_with(pool: &PgPool, env: &str, version: &str) -> Result<bool, StoreError> {
    const OP: &str = "looking for a succeeded run of a version";
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM runs WHERE env = $1 AND version = $2 AND state = $3 LIMIT 1")
            .bind(env)
            .bind(version)
            .bind(RunState::Succeeded.as_str())
            .fetch_optional(pool)
            .await
            .map_err(StoreError::db(OP))?;
    Ok(found.is_some())
}

pub(crate) async fn unfinished(pool: &PgPool) -> Result<Vec<RunRecord>, StoreError> {
    const OP: &str = "listing unfinished pipeline runs";
    let [a, b, c] = UNFINISHED.map(RunState::as_str);
    let rows = sqlx::query(select_runs!(
        "WHERE r.state IN ($1, $2, $3) ORDER BY r.id, s.ordinal"
    ))
    .bind(a)
    .bind(b)
    .bind(c)
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(OP))?;
    runs_from_rows(&rows, OP)
}

pub(crate) async fn transition(
    pool: &PgPool,
    id: i64,
    from: &[RunState],
    to: RunState,
    update: RunUpdate,
) -> Result<RunRecord, StoreError> {
    write(pool, id, "changing a pipeline run's state", update, |current| {
        let conflict = |message: String| StoreError::RunStateConflict { id, current, wanted: to, message };
        current.transition(to).map_err(conflict)?;
        if !from.contains(&current) {
            let expected: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
            return Err(conflict(format!(
                "the change expected it to be {}; it changed meanwhile, so read the run again and decide anew",
                if expected.is_empty() { "in no state at all".to_owned() } else { expected.join(" or ") }
            )));
        }
        Ok(to)
    })
    .await
}

pub(crate) async fn update(pool: &PgPool, id: i64, update: RunUpdate) -> Result<RunRecord, StoreError> {
    write(pool, id, "updating a pipeline run", update, |current| {
        if current.is_terminal() {
            return Err(StoreError::RunStateConflict {
                id,
                current,
                wanted: current,
                message: "the run already ended; its record is final".to_owned(),
            });
        }
        Ok(current)
    })
    .await
}

/// One transaction: reads the run's state, lets `decide` refuse or name the
/// next state, then writes the state and the `Some` fields of `update`.
async fn write(
    pool: &PgPool,
    id: i64,
    op: &'static str,
    update: RunUpdate,
    decide: impl FnOnce(RunState) -> Result<RunState, StoreError>,
) -> Result<RunRecord, StoreError> {
    check_text(
        &[
            ("version", update.version.as_deref().unwrap_or_default()),
            (
                "previous version",
                update.previous_version.as_deref().unwrap_or_default(),
            ),
            ("error", update.error.as_deref().unwrap_or_default()),
        ],
        &format!("run {id}"),
    )?;
    let mut tx = begin(pool, op).await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(op))?;
    let state = state.ok_or(StoreError::RunNotFound { id })?;
    let current = RunState::parse(&state)
        .ok_or_else(|| corrupt(format!("state of run {id}"), &state, "a run state"))?;
    let next = decide(current)?;
    sqlx::query(
        "UPDATE runs SET state = $1, version = COALESCE($2, version), \
         previous_version = COALESCE($3, previous_version), started_at_ms = COALESCE($4, started_at_ms), \
         ended_at_ms = COALESCE($5, ended_at_ms), failed_stage = COALESCE($6, failed_stage), \
         error = COALESCE($7, error) WHERE id = $8 AND state = $9",
    )
    .bind(next.as_str())
    .bind(&update.version)
    .bind(&update.previous_version)
    .bind(update.started_at_ms)
    .bind(update.ended_at_ms)
    .bind(update.failed_stage.map(Stage::slug))
    .bind(&update.error)
    .bind(id)
    .bind(current.as_str())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(op))?;
    let run = fetch_run(&mut *tx, id, op)
        .await?
        .ok_or(StoreError::RunNotFound { id })?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(run)
}

pub(crate) async fn stage_update(
    pool: &PgPool,
    run_id: i64,
    stage: Stage,
    status: StageStatus,
    note: Option<&str>,
) -> Result<(), StoreError> {
    const OP: &str = "updating a pipeline stage";
    check_text(
        &[("note", note.unwrap_or_default())],
        &format!("stage {} of run {run_id}", stage.slug()),
    )?;
    let stamps = status == StageStatus::Running || status.is_done();
    let sql = if status == StageStatus::Running {
        "UPDATE run_stages SET status = $1, note = COALESCE($2, note), started_at_ms = $3, ended_at_ms = NULL \
         WHERE run_id = $4 AND stage = $5"
    } else if stamps {
        "UPDATE run_stages SET status = $1, note = COALESCE($2, note), ended_at_ms = $3 WHERE run_id = $4 AND stage = $5"
    } else {
        "UPDATE run_stages SET status = $1, note = COALESCE($2, note) WHERE run_id = $3 AND stage = $4"
    };
    let mut tx = begin(pool, OP).await?;
    let mut query = sqlx::query(sql).bind(status.as_str()).bind(note);
    if stamps {
        query = query.bind(now_ms());
    }
    let updated = query
        .bind(run_id)
        .bind(stage.slug())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::RunNotFound { id: run_id });
    }
    if status == StageStatus::Running {
        sqlx::query("UPDATE runs SET current_stage = $1 WHERE id = $2")
            .bind(stage.slug())
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
    }
    tx.commit().await.map_err(StoreError::db(OP))
}

pub(crate) async fn stages_mark_not_run(pool: &PgPool, run_id: i64) -> Result<(), StoreError> {
    const OP: &str = "marking a run's pending stages not run";
    let mut tx = begin(pool, OP).await?;
    require_run(&mut tx, run_id, OP).await?;
    sqlx::query("UPDATE run_stages SET status = $1 WHERE run_id = $2 AND status = $3")
        .bind(StageStatus::NotRun.as_str())
        .bind(run_id)
        .bind(StageStatus::Pending.as_str())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))
}

pub(crate) async fn log_append(
    pool: &PgPool,
    run_id: i64,
    stage: Stage,
    line: &str,
) -> Result<RunLogLine, StoreError> {
    const OP: &str = "appending to a run's log";
    check_text(&[("log line", line)], &format!("run {run_id}"))?;
    let mut tx = begin(pool, OP).await?;
    let seq: Option<i64> =
        sqlx::query_scalar("UPDATE runs SET log_seq = log_seq + 1 WHERE id = $1 RETURNING log_seq")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
    let seq = seq.ok_or(StoreError::RunNotFound { id: run_id })?;
    let at_ms = now_ms();
    sqlx::query("INSERT INTO run_logs (run_id, seq, stage, at_ms, line) VALUES ($1, $2, $3, $4, $5)")
        .bind(run_id)
        .bind(seq)
        .bind(stage.slug())
        .bind(at_ms)
        .bind(line)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    Ok(RunLogLine {
        run_id,
        seq,
        stage,
        at_ms,
        line: line.to_owned(),
    })
}

pub(crate) async fn log_read(
    pool: &PgPool,
    run_id: i64,
    stage: Option<Stage>,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<RunLogLine>, StoreError> {
    const OP: &str = "reading a run's log";
    let query = match stage {
        Some(stage) => sqlx::query(
            "SELECT seq, stage, at_ms, line FROM run_logs WHERE run_id = $1 AND stage = $2 AND seq > $3 \
             ORDER BY seq LIMIT $4",
        )
        .bind(run_id)
        .bind(stage.slug()),
        None => sqlx::query(
            "SELECT seq, stage, at_ms, line FROM run_logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id),
    };
    let rows = query
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(OP))?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row.try_get("seq").map_err(StoreError::db(OP))?;
            let stage: String = row.try_get("stage").map_err(StoreError::db(OP))?;
            Ok(RunLogLine {
                run_id,
                seq,
                stage: stage_of(&stage, || format!("stage of log line {seq} of run {run_id}"))?,
                at_ms: row.try_get("at_ms").map_err(StoreError::db(OP))?,
                line: row.try_get("line").map_err(StoreError::db(OP))?,
            })
        })
        .collect()
}

pub(crate) async fn approval_add(
    pool: &PgPool,
    run_id: i64,
    actor: &str,
    decision: Decision,
    comment: Option<&str>,
) -> Result<ApprovalRecord, StoreError> {
    const OP: &str = "recording an approval";
    check_text(
        &[("actor", actor), ("comment", comment.unwrap_or_default())],
        &format!("the approval of run {run_id}"),
    )?;
    let mut tx = begin(pool, OP).await?;
    require_run(&mut tx, run_id, OP).await?;
    let at_ms = now_ms();
    sqlx::query(
        "INSERT INTO run_approvals (run_id, actor, decision, comment, at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(run_id)
    .bind(actor)
    .bind(decision.as_str())
    .bind(comment)
    .bind(at_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    Ok(ApprovalRecord {
        run_id,
        actor: actor.to_owned(),
        decision,
        comment: comment.map(str::to_owned),
        at_ms,
    })
}

pub(crate) async fn approvals(pool: &PgPool, run_id: i64) -> Result<Vec<ApprovalRecord>, StoreError> {
    const OP: &str = "reading a run's approvals";
    let rows = sqlx::query(
        "SELECT actor, decision, comment, at_ms FROM run_approvals WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(OP))?;
    rows.iter()
        .map(|row| {
            let decision: String = row.try_get("decision").map_err(StoreError::db(OP))?;
            Ok(ApprovalRecord {
                run_id,
                actor: row.try_get("actor").map_err(StoreError::db(OP))?,
                decision: Decision::parse(&decision).ok_or_else(|| {
                    corrupt(
                        format!("an approval of run {run_id}"),
                        &decision,
                        "approve or reject",
                    )
                })?,
                comment: row.try_get("comment").map_err(StoreError::db(OP))?,
                at_ms: row.try_get("at_ms").map_err(StoreError::db(OP))?,
            })
        })
        .collect()
}

//! `PostgresStore`: the [`Store`] in a PostgreSQL database, for teams that
//! run two or more control-plane instances against one shared state.
//!
//! Connects with a URL (`postgres://user:password@host:port/database`; a
//! schema other than `public` through `?options[search_path]=name`), applies
//! the PostgreSQL migrations with the same runner as SQLite (see
//! [`migrate`](crate::migrate)) and refuses a schema written by a newer
//! Cutover. Transactions run at READ COMMITTED.
//!
//! Compare-and-set on parameters: read the newest version and insert the next
//! one in one transaction; the primary key `(key, version)` is the arbiter.
//! When a concurrent writer inserted that version first, PostgreSQL makes the
//! second insert wait for the first commit and then fail with a unique
//! violation: a compare-and-set write reports [`StoreError::VersionMismatch`]
//! with the version now current, a write without compare-and-set reads again
//! and retries (each lost race is another writer's success, so it ends).
//!
//! The run and scheduler queries live in `postgres_runs` and
//! `postgres_scheduler`, the twins of the SQLite ones.
//!
//! Rejected: an advisory lock per key around `param_put` (correct, but the
//! unique constraint already decides, and a lock would hide whether the SQL
//! is atomic); SERIALIZABLE transactions (a retry loop in every method for
//! serialization failures); JSONB for the audit detail (it reorders keys).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use crate::error::StoreError;
use crate::migrate::migrate_postgres;
use crate::{
    ApprovalRecord, AuditEntry, Decision, JobRun, JobRunState, NewAuditEntry, NewRun, NewToken, ParamKey,
    ParamVersion, RunLogLine, RunRecord, RunUpdate, SchedulerState, Store, TokenRecord, check_text, now_ms,
    parse_prefix, postgres_runs, postgres_scheduler, postgres_tokens,
};
use cutover_core::{RunState, Stage, StageStatus};

const MAX_CONNECTIONS: u32 = 10;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a write without compare-and-set that keeps losing races.
const PUT_ATTEMPTS: usize = 1000;

/// The PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// The URL without its password; for messages.
    label: PathBuf,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.label)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Takes the leader lock of this store's schema (installations may share a
    /// database in separate schemas): a session-level advisory lock held by
    /// one dedicated connection for as long as the returned guard lives.
    /// `None` when another server holds it. One server leads pipelines per
    /// schema; a second one must not run them too.
    pub async fn lead(&self) -> Result<Option<LeaderLock>, StoreError> {
        const OP: &str = "taking the leader lock";
        let mut conn = self.pool.acquire().await.map_err(StoreError::db(OP))?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(7362024, hashtext(current_schema()))")
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::db(OP))?;
        Ok(got.then(|| LeaderLock { _conn: conn.detach() }))
    }

    /// Connects to the database at `url` and applies pending migrations.
    /// Refuses a database written by a newer Cutover; errors name the URL
    /// without its password.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open {
            path: PathBuf::from("(the PostgreSQL URL)"),
            hint: "write it as postgres://user:password@host:port/database".to_owned(),
            source,
        })?;
        let label = PathBuf::from(format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        ));
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: label.clone(),
                hint: connect_hint(&source),
                source,
            })?;
        if let Err(e) = migrate_postgres(&pool, &label).await {
            pool.close().await;
            return Err(e);
        }
        Ok(PostgresStore { pool, label })
    }

    /// The database, as its URL without the password.
    pub fn label(&self) -> &Path {
        &self.label
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map(Option::unwrap_or_default)
            .map_err(StoreError::db("reading the schema version"))
    }
}

fn connect_hint(e: &sqlx::Error) -> String {
    let code = match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
            return "no PostgreSQL server answers there: start it, or check host and port".to_owned();
        }
        _ => None,
    };
    match code.as_deref() {
        Some("28P01" | "28000") => {
            "the server refused the user or password: check them in the URL".to_owned()
        }
        Some("3D000") => "the database does not exist: create it (CREATE DATABASE ... OWNER ...)".to_owned(),
        Some("42501") => "the user may not use this database or schema: grant it the rights".to_owned(),
        _ => "check the URL, and that the server runs and accepts this user".to_owned(),
    }
}

fn param_from_row(row: &PgRow) -> Result<ParamVersion, sqlx::Error> {
    Ok(ParamVersion {
        key: row.try_get("key")?,
        version: row.try_get("version")?,
        value: row.try_get("value")?,
        actor: row.try_get("actor")?,
        at_ms: row.try_get("at_ms")?,
    })
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry, StoreError> {
    let read = |row: &PgRow| -> Result<(AuditEntry, String), sqlx::Error> {
        let entry = AuditEntry {
            id: row.try_get("id")?,
            at_ms: row.try_get("at_ms")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            detail: serde_json::Value::Null,
        };
        Ok((entry, row.try_get("detail")?))
    };
    let (mut entry, detail) = read(row).map_err(StoreError::db("reading the audit log"))?;
    entry.detail = serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt {
        what: format!("detail of audit entry {}", entry.id),
        source: Box::new(e),
    })?;
    Ok(entry)
}

/// What one attempt of `param_put` came to.
enum Put {
    Written(ParamVersion),
    /// Compare-and-set failed on what this transaction read.
    Mismatch(Option<i64>),
    /// A concurrent writer inserted the same version first.
    Raced,
}

const PUT_OP: &str = "writing a parameter";

async fn put_once(
    pool: &PgPool,
    key: &ParamKey,
    value: &str,
    actor: &str,
    expect_version: Option<i64>,
) -> Result<Put, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::db(PUT_OP))?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM param_versions WHERE key = $1")
        .bind(key.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(PUT_OP))?;
    if let Some(expected) = expect_version
        && current.unwrap_or(0) != expected
    {
        // Dropping `tx` rolls back; nothing was written.
        return Ok(Put::Mismatch(current));
    }
    let written = ParamVersion {
        key: key.to_string(),
        version: current.unwrap_or(0) + 1,
        value: value.to_owned(),
        actor: actor.to_owned(),
        at_ms: now_ms(),
    };
    let inserted = sqlx::query(
        "INSERT INTO param_versions (key, version, value, actor, at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&written.key)
    .bind(written.version)
    .bind(&written.value)
    .bind(&written.actor)
    .bind(written.at_ms)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(sqlx::Error::Database(db)) if db.kind() == ErrorKind::UniqueViolation => return Ok(Put::Raced),
        other => other.map_err(StoreError::db(PUT_OP))?,
    };
    tx.commit().await.map_err(StoreError::db(PUT_OP))?;
    Ok(Put::Written(written))
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn param_get(&self, key: &ParamKey) -> Result<Option<ParamVersion>, StoreError> {
        let row = sqlx::query(
            "SELECT key, version, value, actor, at_ms FROM param_versions WHERE key = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading a parameter"))?;
        row.as_ref()
            .map(param_from_row)
            .transpose()
            .map_err(StoreError::db("reading a parameter"))
    }

    async fn param_put(
        &self,
        key: &ParamKey,
        value: &str,
        actor: &str,
        expect_version: Option<i64>,
    ) -> Result<ParamVersion, StoreError> {
        check_text(&[("value", value), ("actor", actor)], key.as_str())?;
        let mismatch = |expected: i64, current: Option<i64>| StoreError::VersionMismatch {
            key: key.to_string(),
            expected,
            current,
        };
        for _ in 0..PUT_ATTEMPTS {
            match (
                put_once(&self.pool, key, value, actor, expect_version).await?,
                expect_version,
            ) {
                (Put::Written(written), _) => return Ok(written),
                (Put::Mismatch(current), Some(expected)) => return Err(mismatch(expected, current)),
                // The winner has committed (the insert waited for it): name
                // the version that is current now.
                (Put::Raced, Some(expected)) => {
                    let current = self.param_get(key).await?.map(|p| p.version);
                    return Err(mismatch(expected, current));
                }
                (Put::Mismatch(_) | Put::Raced, None) => tokio::task::yield_now().await,
            }
        }
        Err(StoreError::Database {
            operation: PUT_OP,
            source: sqlx::Error::Protocol(format!(
                "lost {PUT_ATTEMPTS} races in a row to concurrent writers of {key}; retry"
            )),
        })
    }

    async fn param_history(&self, key: &ParamKey) -> Result<Vec<ParamVersion>, StoreError> {
        const OP: &str = "reading a parameter's history";
        let rows = sqlx::query(
            "SELECT key, version, value, actor, at_ms FROM param_versions WHERE key = $1 ORDER BY version DESC",
        )
        .bind(key.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db(OP))?;
        rows.iter()
            .map(param_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db(OP))
    }

    async fn param_list(&self, prefix: &str) -> Result<Vec<ParamVersion>, StoreError> {
        const OP: &str = "listing parameters";
        // As on SQLite: the keys strictly below `p` are those in
        // [p + "/", p + "0"); `key` is COLLATE "C", so this is byte-wise.
        let exact = parse_prefix(prefix)?.map(|k| k.to_string()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT p.key, p.version, p.value, p.actor, p.at_ms FROM param_versions p \
             WHERE (p.key = $1 OR (p.key >= $2 AND p.key < $3)) \
             AND p.version = (SELECT MAX(q.version) FROM param_versions q WHERE q.key = p.key) \
             ORDER BY p.key",
        )
        .bind(&exact)
        .bind(format!("{exact}/"))
        .bind(format!("{exact}0"))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db(OP))?;
        rows.iter()
            .map(param_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db(OP))
    }

    async fn audit_append(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        const OP: &str = "appending to the audit log";
        check_text(
            &[
                ("actor", &entry.actor),
                ("action", &entry.action),
                ("target", &entry.target),
            ],
            "an audit entry",
        )?;
        let at_ms = now_ms();
        let detail = serde_json::to_string(&entry.detail).map_err(|e| StoreError::Corrupt {
            what: "audit detail to store".to_owned(),
            source: Box::new(e),
        })?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(at_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&detail)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db(OP))?;
        Ok(AuditEntry {
            id,
            at_ms,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            detail: entry.detail,
        })
    }

    async fn audit_list(&self, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn run_enqueue(&self, new: NewRun) -> Result<(RunRecord, Vec<i64>), StoreError> {
        postgres_runs::enqueue(&self.pool, new).await
    }

    async fn run_get(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        postgres_runs::get(&self.pool, id).await
    }

    async fn run_list(
        &self,
        env: Option<&str>,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        postgres_runs::list(&self.pool, env, limit, before_id).await
    }

    async fn run_transition(
        &self,
        id: i64,
        from: &[RunState],
        to: RunState,
        update: RunUpdate,
    ) -> Result<RunRecord, StoreError> {
        postgres_runs::transition(&self.pool, id, from, to, update).await
    }

    async fn run_update(&self, id: i64, update: RunUpdate) -> Result<RunRecord, StoreError> {
        postgres_runs::update(&self.pool, id, update).await
    }

    async fn stage_update(
        &self,
        run_id: i64,
        stage: Stage,
        status: StageStatus,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        postgres_runs::stage_update(&self.pool, run_id, stage, status, note).await
    }

    async fn stages_mark_not_run(&self, run_id: i64) -> Result<(), StoreError> {
        postgres_runs::stages_mark_not_run(&self.pool, run_id).await
    }

    async fn log_append(&self, run_id: i64, stage: Stage, line: &str) -> Result<RunLogLine, StoreError> {
        postgres_runs::log_append(&self.pool, run_id, stage, line).await
    }

    async fn log_read(
        &self,
        run_id: i64,
        stage: Option<Stage>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunLogLine>, StoreError> {
        postgres_runs::log_read(&self.pool, run_id, stage, after_seq, limit).await
    }

    async fn runs_unfinished(&self) -> Result<Vec<RunRecord>, StoreError> {
        postgres_runs::unfinished(&self.pool).await
    }

    async fn run_succeeded_with(&self, env: &str, version: &str) -> Result<bool, StoreError> {
        postgres_runs::succeeded_with(&self.pool, env, version).await
    }

    async fn approval_add(
        &self,
        run_id: i64,
        actor: &str,
        decision: Decision,
        comment: Option<&str>,
    ) -> Result<ApprovalRecord, StoreError> {
        postgres_runs::approval_add(&self.pool, run_id, actor, decision, comment).await
    }

    async fn approvals(&self, run_id: i64) -> Result<Vec<ApprovalRecord>, StoreError> {
        postgres_runs::approvals(&self.pool, run_id).await
    }

    async fn scheduler_get(&self, env: &str) -> Result<Option<SchedulerState>, StoreError> {
        postgres_scheduler::get(&self.pool, env).await
    }

    async fn scheduler_put(&self, state: &SchedulerState) -> Result<(), StoreError> {
        postgres_scheduler::put(&self.pool, state).await
    }

    async fn job_run_start(
        &self,
        env: &str,
        job: &str,
        version: &str,
        trigger: &str,
    ) -> Result<JobRun, StoreError> {
        postgres_scheduler::job_run_start(&self.pool, env, job, version, trigger).await
    }

    async fn job_run_finish(
        &self,
        id: i64,
        state: JobRunState,
        exit_code: Option<i32>,
        note: Option<&str>,
    ) -> Result<JobRun, StoreError> {
        postgres_scheduler::job_run_finish(&self.pool, id, state, exit_code, note).await
    }

    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<JobRun>, StoreError> {
        postgres_scheduler::job_runs(&self.pool, env, job, limit).await
    }

    async fn job_runs_unfinished(&self) -> Result<Vec<JobRun>, StoreError> {
        postgres_scheduler::job_runs_unfinished(&self.pool).await
    }

    async fn job_log_append(&self, job_run_id: i64, line: &str) -> Result<i64, StoreError> {
        postgres_scheduler::job_log_append(&self.pool, job_run_id, line).await
    }

    async fn job_log_read(
        &self,
        job_run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, i64, String)>, StoreError> {
        postgres_scheduler::job_log_read(&self.pool, job_run_id, after_seq, limit).await
    }

    async fn job_history_reset(&self, env: &str) -> Result<u64, StoreError> {
        postgres_scheduler::job_history_reset(&self.pool, env).await
    }

    async fn job_run_get(&self, id: i64) -> Result<Option<JobRun>, StoreError> {
        postgres_tokens::job_run_get(&self.pool, id).await
    }

    async fn token_create(&self, new: NewToken) -> Result<TokenRecord, StoreError> {
        postgres_tokens::create(&self.pool, new).await
    }

    async fn token_bootstrap(&self, new: NewToken) -> Result<Option<TokenRecord>, StoreError> {
        postgres_tokens::bootstrap(&self.pool, new).await
    }

    async fn token_find(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        postgres_tokens::find(&self.pool, secret_hash).await
    }

    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        postgres_tokens::list(&self.pool).await
    }

    async fn token_revoke(&self, name: &str, by: &str) -> Result<TokenRecord, StoreError> {
        postgres_tokens::revoke(&self.pool, name, by).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Held while a server leads a PostgreSQL database; the lock goes with the
/// connection when the guard is dropped or the process dies.
pub struct LeaderLock {
    _conn: sqlx::PgConnection,
}

impl fmt::Debug for LeaderLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaderLock")
    }
}

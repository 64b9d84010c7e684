//! `SqliteStore`: the [`Store`] in one SQLite file, `<data_dir>/cutover.db`.
//!
//! WAL journal (readers never block the writer), `synchronous = FULL` (a
//! commit is on disk before `param_put` returns, also across power loss),
//! a 5 s busy timeout, foreign keys on. Writers that read-then-write start
//! with `BEGIN IMMEDIATE`, which takes SQLite's write lock up front: two
//! writers can never both read version `n` and both append `n + 1`, whether
//! they share this pool or are separate processes.
//!
//! The run and scheduler queries live in `sqlite_runs` and `sqlite_scheduler`;
//! the trait impl here delegates to them.
//!
//! Two pools on the one file: every write goes through the *writer* pool of one
//! connection, so writers of this process queue fairly on an async semaphore
//! instead of sleeping in SQLite's busy handler (which backs off in coarse
//! steps: with a hundred runs logging at once, a reader that had to wait for
//! a pool slot held by a sleeping writer answered after a second and more);
//! reads go through the *reader* pool, which WAL never blocks. The busy timeout
//! and `BEGIN IMMEDIATE` still guard against a second process on the file.
//!
//! Rejected: a process-wide mutex around writes (does not protect against a
//! second process on the same file, and hides whether the SQL is atomic) and
//! deferred `BEGIN` (the read takes a shared lock that must later be upgraded,
//! which fails with SQLITE_BUSY immediately instead of waiting).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::error::{StoreError, sqlite_code};
use crate::migrate::migrate_sqlite;
use crate::{
    ApprovalRecord, AuditEntry, Decision, JobRun, JobRunState, NewAuditEntry, NewRun, NewToken, ParamKey,
    ParamVersion, RunLogLine, RunRecord, RunUpdate, SchedulerState, Store, TokenRecord, check_text, now_ms,
    parse_prefix, sqlite_runs, sqlite_scheduler, sqlite_tokens,
};
use cutover_core::{RunState, Stage, StageStatus};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections of the reader pool.
const MAX_READERS: u32 = 8;

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    /// Every write (one connection).
    pool: SqlitePool,
    /// Reads only (the same connection as `pool` for an in-memory store).
    readers: SqlitePool,
    /// The database file, or `:memory:`; for messages.
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The database file's name inside the data directory.
    pub const FILE_NAME: &'static str = "cutover.db";

    /// Creates `data_dir` if needed and opens (or creates) `data_dir/cutover.db`
    /// with WAL, a 5 s busy timeout and foreign keys on, then applies pending
    /// migrations. Refuses a database written by a newer Cutover.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(|source| StoreError::CreateDataDir {
                path: data_dir.to_owned(),
                hint: io_hint(&source),
                source,
            })?;
        let path = data_dir.join(Self::FILE_NAME);
        // Created 0600 here rather than by SQLite (0644 under the usual umask): the database
        // holds every setting in plain; SQLite gives its -wal and -shm files the same mode.
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(StoreError::CreateDataDir {
                        path: path.clone(),
                        hint: io_hint(&source),
                        source,
                    });
                }
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
        // locked" at once (no busy wait) when another connection is opening the same new file:
        // retry that, bounded by the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let pool = loop {
            let connected = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await;
            match connected {
                Ok(pool) => break pool,
                Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        path: path.clone(),
                        hint: open_hint(&source),
                        source,
                    });
                }
            }
        };
        let store = Self::migrated(pool, path.clone()).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .connect_with(options.read_only(true))
            .await;
        let readers = match readers {
            Ok(readers) => readers,
            Err(source) => {
                store.pool.close().await;
                return Err(StoreError::Open {
                    path: path.clone(),
                    hint: open_hint(&source),
                    source,
                });
            }
        };
        Ok(SqliteStore { readers, ..store })
    }

    /// A private in-memory database, for tests. One connection, kept open for
    /// the store's lifetime (each SQLite connection to `:memory:` would
    /// otherwise see its own empty database).
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let path = PathBuf::from(":memory:");
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                hint: open_hint(&source),
                source,
            })?;
        Self::migrated(pool, path).await
    }

    /// Migrates through `pool` (the writer), which is also the reader until `open` gives the
    /// store its own reader pool.
    async fn migrated(pool: SqlitePool, path: PathBuf) -> Result<SqliteStore, StoreError> {
        if let Err(e) = migrate_sqlite(&pool, &path).await {
            pool.close().await;
            return Err(e);
        }
        let readers = pool.clone();
        Ok(SqliteStore { pool, readers, path })
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.readers)
            .await
            .map(Option::unwrap_or_default)
            .map_err(StoreError::db("reading the schema version"))
    }
}

fn io_hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: give the user running Cutover write access to it, or choose another data directory"
                .to_owned()
        }
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
            "a file is in the way where a directory is needed: move it, or choose another data directory".to_owned()
        }
        std::io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only: choose another data directory".to_owned(),
        _ => "check that the path is a writable directory, or choose another data directory".to_owned(),
    }
}

fn open_hint(e: &sqlx::Error) -> String {
    if let sqlx::Error::Io(io) = e {
        return io_hint(io);
    }
    match sqlite_code(e) {
        Some(26) => "the file is not a SQLite database: move it away, or choose another data directory".to_owned(),
        Some(11) => "the database file is corrupt: restore it from a backup, or move it away to start empty".to_owned(),
        Some(14) => {
            "SQLite cannot open the file: check that it and its directory exist and are readable and writable by the \
             user running Cutover"
                .to_owned()
        }
        Some(8) | Some(3) => {
            "the file or its directory is read-only or not accessible: give the user running Cutover write access"
                .to_owned()
        }
        Some(5) | Some(6) => {
            "the database is locked by another program: stop it (or the other Cutover using this data directory)"
                .to_owned()
        }
        _ => "check that it is a Cutover database in a writable directory".to_owned(),
    }
}

fn param_from_row(row: &SqliteRow) -> Result<ParamVersion, sqlx::Error> {
    Ok(ParamVersion {
        key: row.try_get("key")?,
        version: row.try_get("version")?,
        value: row.try_get("value")?,
        actor: row.try_get("actor")?,
        at_ms: row.try_get("at_ms")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    let read = |row: &SqliteRow| -> Result<(AuditEntry, String), sqlx::Error> {
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

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn param_get(&self, key: &ParamKey) -> Result<Option<ParamVersion>, StoreError> {
        let row = sqlx::query(
            "SELECT key, version, value, actor, at_ms FROM param_versions WHERE key = ? ORDER BY version DESC LIMIT 1",
        )
            .bind(key.as_str())
            .fetch_optional(&self.readers)
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
        const OP: &str = "writing a parameter";
        check_text(&[("value", value), ("actor", actor)], key.as_str())?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db(OP))?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM param_versions WHERE key = ?")
                .bind(key.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
        if let Some(expected) = expect_version
            && current.unwrap_or(0) != expected
        {
            // Dropping `tx` rolls back; nothing was written.
            return Err(StoreError::VersionMismatch {
                key: key.to_string(),
                expected,
                current,
            });
        }
        let written = ParamVersion {
            key: key.to_string(),
            version: current.unwrap_or(0) + 1,
            value: value.to_owned(),
            actor: actor.to_owned(),
            at_ms: now_ms(),
        };
        sqlx::query("INSERT INTO param_versions (key, version, value, actor, at_ms) VALUES (?, ?, ?, ?, ?)")
            .bind(&written.key)
            .bind(written.version)
            .bind(&written.value)
            .bind(&written.actor)
            .bind(written.at_ms)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
        tx.commit().await.map_err(StoreError::db(OP))?;
        Ok(written)
    }

    async fn param_history(&self, key: &ParamKey) -> Result<Vec<ParamVersion>, StoreError> {
        const OP: &str = "reading a parameter's history";
        let rows = sqlx::query("SELECT key, version, value, actor, at_ms FROM param_versions WHERE key = ? ORDER BY version DESC")
            .bind(key.as_str())
            .fetch_all(&self.readers)
            .await
            .map_err(StoreError::db(OP))?;
        rows.iter()
            .map(param_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db(OP))
    }

    async fn param_list(&self, prefix: &str) -> Result<Vec<ParamVersion>, StoreError> {
        const OP: &str = "listing parameters";
        // Keys are ASCII and compare byte-wise, and '0' is the byte after '/':
        // the keys strictly below `p` are exactly those in [p + "/", p + "0").
        // Unlike LIKE, this has no wildcard characters to escape ('_' is one)
        // and can use the primary key index.
        let exact = parse_prefix(prefix)?.map(|k| k.to_string()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT p.key, p.version, p.value, p.actor, p.at_ms FROM param_versions p \
             WHERE (p.key = ? OR (p.key >= ? AND p.key < ?)) \
             AND p.version = (SELECT MAX(q.version) FROM param_versions q WHERE q.key = p.key) \
             ORDER BY p.key",
        )
        .bind(&exact)
        .bind(format!("{exact}/"))
        .bind(format!("{exact}0"))
        .fetch_all(&self.readers)
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
            "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?) RETURNING id",
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
            "SELECT id, at_ms, actor, action, target, detail FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(StoreError::db("reading the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn run_enqueue(&self, new: NewRun) -> Result<(RunRecord, Vec<i64>), StoreError> {
        sqlite_runs::enqueue(&self.pool, new).await
    }

    async fn run_get(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        sqlite_runs::get(&self.readers, id).await
    }

    async fn run_list(
        &self,
        env: Option<&str>,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        sqlite_runs::list(&self.readers, env, limit, before_id).await
    }

    async fn run_transition(
        &self,
        id: i64,
        from: &[RunState],
        to: RunState,
        update: RunUpdate,
    ) -> Result<RunRecord, StoreError> {
        sqlite_runs::transition(&self.pool, id, from, to, update).await
    }

    async fn run_update(&self, id: i64, update: RunUpdate) -> Result<RunRecord, StoreError> {
        sqlite_runs::update(&self.pool, id, update).await
    }

    async fn stage_update(
        &self,
        run_id: i64,
        stage: Stage,
        status: StageStatus,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlite_runs::stage_update(&self.pool, run_id, stage, status, note).await
    }

    async fn stages_mark_not_run(&self, run_id: i64) -> Result<(), StoreError> {
        sqlite_runs::stages_mark_not_run(&self.pool, run_id).await
    }

    async fn log_append(&self, run_id: i64, stage: Stage, line: &str) -> Result<RunLogLine, StoreError> {
        sqlite_runs::log_append(&self.pool, run_id, stage, line).await
    }

    async fn log_read(
        &self,
        run_id: i64,
        stage: Option<Stage>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunLogLine>, StoreError> {
        sqlite_runs::log_read(&self.readers, run_id, stage, after_seq, limit).await
    }

    async fn runs_unfinished(&self) -> Result<Vec<RunRecord>, StoreError> {
        sqlite_runs::unfinished(&self.readers).await
    }

    async fn run_succeeded_with(&self, env: &str, version: &str) -> Result<bool, StoreError> {
        sqlite_runs::succeeded_with(&self.readers, env, version).await
    }

    async fn approval_add(
        &self,
        run_id: i64,
        actor: &str,
        decision: Decision,
        comment: Option<&str>,
    ) -> Result<ApprovalRecord, StoreError> {
        sqlite_runs::approval_add(&self.pool, run_id, actor, decision, comment).await
    }

    async fn approvals(&self, run_id: i64) -> Result<Vec<ApprovalRecord>, StoreError> {
        sqlite_runs::approvals(&self.readers, run_id).await
    }

    async fn scheduler_get(&self, env: &str) -> Result<Option<SchedulerState>, StoreError> {
        sqlite_scheduler::get(&self.readers, env).await
    }

    async fn scheduler_put(&self, state: &SchedulerState) -> Result<(), StoreError> {
        sqlite_scheduler::put(&self.pool, state).await
    }

    async fn job_run_start(
        &self,
        env: &str,
        job: &str,
        version: &str,
        trigger: &str,
    ) -> Result<JobRun, StoreError> {
        sqlite_scheduler::job_run_start(&self.pool, env, job, version, trigger).await
    }

    async fn job_run_finish(
        &self,
        id: i64,
        state: JobRunState,
        exit_code: Option<i32>,
        note: Option<&str>,
    ) -> Result<JobRun, StoreError> {
        sqlite_scheduler::job_run_finish(&self.pool, id, state, exit_code, note).await
    }

    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<JobRun>, StoreError> {
        sqlite_scheduler::job_runs(&self.readers, env, job, limit).await
    }

    async fn job_runs_unfinished(&self) -> Result<Vec<JobRun>, StoreError> {
        sqlite_scheduler::job_runs_unfinished(&self.readers).await
    }

    async fn job_log_append(&self, job_run_id: i64, line: &str) -> Result<i64, StoreError> {
        sqlite_scheduler::job_log_append(&self.pool, job_run_id, line).await
    }

    async fn job_log_read(
        &self,
        job_run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, i64, String)>, StoreError> {
        sqlite_scheduler::job_log_read(&self.readers, job_run_id, after_seq, limit).await
    }

    async fn job_history_reset(&self, env: &str) -> Result<u64, StoreError> {
        sqlite_scheduler::job_history_reset(&self.pool, env).await
    }

    async fn job_run_get(&self, id: i64) -> Result<Option<JobRun>, StoreError> {
        sqlite_tokens::job_run_get(&self.readers, id).await
    }

    async fn token_create(&self, new: NewToken) -> Result<TokenRecord, StoreError> {
        sqlite_tokens::create(&self.pool, new).await
    }

    async fn token_bootstrap(&self, new: NewToken) -> Result<Option<TokenRecord>, StoreError> {
        sqlite_tokens::bootstrap(&self.pool, new).await
    }

    async fn token_find(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        sqlite_tokens::find(&self.readers, secret_hash).await
    }

    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        sqlite_tokens::list(&self.readers).await
    }

    async fn token_revoke(&self, name: &str, by: &str) -> Result<TokenRecord, StoreError> {
        sqlite_tokens::revoke(&self.pool, name, by).await
    }

    async fn close(&self) {
        self.readers.close().await;
        self.pool.close().await;
    }
}

/// SQLite's SQLITE_BUSY ("database is locked"), possibly extended.
fn is_locked(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c == "5" || c.parse::<i32>().is_ok_and(|n| n & 0xff == 5)),
        _ => false,
    }
}

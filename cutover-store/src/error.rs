//! `StoreError`: everything the store can report, with the context a person
//! needs to act on it. Causes are kept as `#[source]` and not repeated in the
//! message; callers log the whole chain.
//!
//! Rejected: passing `sqlx::Error` through unchanged (it names neither the
//! file nor the operation, and would tie callers to one database library).

use std::path::PathBuf;

use cutover_core::{NameError, RunState};

use crate::JobRunState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Compare-and-set failed: the newest version is not the one the writer
    /// expected. Nothing was written.
    #[error("{}", mismatch_message(.key, *.expected, *.current))]
    VersionMismatch {
        key: String,
        expected: i64,
        current: Option<i64>,
    },

    /// A key or list prefix that is not a valid parameter key.
    #[error("{key:?} is not a valid parameter key or prefix")]
    InvalidKey {
        key: String,
        #[source]
        source: NameError,
    },

    /// Text the store cannot keep on every backend (PostgreSQL TEXT cannot
    /// hold a NUL character). Nothing was written.
    #[error(
        "the {field} for {target} contains a NUL character (\\0), which cannot be stored; remove it and retry"
    )]
    InvalidText { field: &'static str, target: String },

    /// No pipeline run has this id.
    #[error("there is no pipeline run {id}; list the runs to find the right id")]
    RunNotFound { id: i64 },

    /// A run state compare-and-set failed: the run is not in a state it may
    /// move from to `wanted`. Nothing was written.
    #[error("run {id} is {current}, so it cannot become {wanted}: {message}")]
    RunStateConflict {
        id: i64,
        current: RunState,
        wanted: RunState,
        message: String,
    },

    /// No scheduler job run has this id.
    #[error("there is no job run {id}; list the environment's job runs to find the right id")]
    JobRunNotFound { id: i64 },

    /// A job run can be finished once, with a final state. Nothing was written.
    #[error("{}", job_conflict_message(*.id, *.current, *.wanted))]
    JobRunConflict {
        id: i64,
        current: JobRunState,
        wanted: JobRunState,
    },

    /// A live (not revoked) token already has this name. Nothing was written.
    #[error(
        "a token named {name:?} already exists; revoke it first (`cutover token revoke {name}`) or choose another name"
    )]
    TokenNameTaken { name: String },

    /// No live token has this name.
    #[error("there is no live token named {name:?}; `cutover token list` shows the tokens")]
    TokenNotFound { name: String },

    #[error("cannot create the data directory {path}; {hint}")]
    CreateDataDir {
        path: PathBuf,
        hint: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open the database {path}; {hint}")]
    Open {
        path: PathBuf,
        hint: String,
        #[source]
        source: sqlx::Error,
    },

    /// The database was migrated by a newer Cutover; opening it could corrupt it.
    #[error(
        "the database {path} has schema version {found}, but this Cutover knows schema versions up to {known} only: \
         it was written by a newer Cutover. Run that newer Cutover (or newer), or restore a backup taken before the \
         upgrade; this one refuses to open it rather than risk corrupting it"
    )]
    SchemaTooNew { path: PathBuf, found: i64, known: i64 },

    /// sqlx's migrator refused the database for another reason (a migration changed after it
    /// was applied, or one left half-applied).
    #[error(
        "the schema migrations of {path} cannot run: the recorded migrations (table _sqlx_migrations) do not match \
         this Cutover's; restore a backup taken before the last upgrade, or run the Cutover that wrote it"
    )]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error(
        "applying schema migration {version} ({name}) to {path} failed; the database was left at the previous version"
    )]
    Migration {
        path: PathBuf,
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A query failed. `operation` names what the store was doing.
    #[error("the database failed while {operation}{}", busy_hint(.source))]
    Database {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A stored row could not be read back (e.g. audit detail that is not JSON).
    #[error("stored {what} could not be read back; the database may have been edited by hand")]
    Corrupt {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { operation, source }
    }
}

fn mismatch_message(key: &str, expected: i64, current: Option<i64>) -> String {
    let now = match current {
        Some(v) => format!("is at version {v}"),
        None => "does not exist yet".to_owned(),
    };
    let wanted = match expected {
        0 => "expected it not to exist yet".to_owned(),
        n => format!("expected version {n}"),
    };
    let retry = match current {
        Some(v) => {
            format!("read it again (someone may have changed it since) and retry with expected version {v}")
        }
        None => "retry with expected version 0 to create it".to_owned(),
    };
    format!("parameter {key} {now}, but the write {wanted}; nothing was written. To overwrite, {retry}")
}

/// A stored row with a value this build does not know (e.g. a run state a
/// newer Cutover wrote, or a hand edit).
pub(crate) fn corrupt(what: String, value: &str, expected: &str) -> StoreError {
    StoreError::Corrupt {
        what,
        source: Box::new(UnknownValue(format!("{value:?} is not {expected}"))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UnknownValue(String);

fn job_conflict_message(id: i64, current: JobRunState, wanted: JobRunState) -> String {
    if current == JobRunState::Running {
        format!(
            "job run {id} cannot be finished as {}: finish it with a final state (succeeded, failed, skipped, \
             interrupted or terminated)",
            wanted.as_str()
        )
    } else {
        format!(
            "job run {id} already ended ({}); it cannot be finished again as {}",
            current.as_str(),
            wanted.as_str()
        )
    }
}

fn busy_hint(source: &sqlx::Error) -> &'static str {
    match source {
        e if matches!(sqlite_code(e), Some(5 | 6)) => {
            " (the database stayed locked by another writer for longer than the busy timeout; retry, and check that no \
             other program holds a long transaction on it)"
        }
        sqlx::Error::PoolTimedOut => {
            " (no database connection became free in time; the server is overloaded, retry)"
        }
        _ => "",
    }
}

/// The primary SQLite result code of a database error (extended codes folded).
pub(crate) fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => {
            let db = db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
            sqlx::error::DatabaseError::code(db)?
                .parse::<i32>()
                .ok()
                .map(|c| c & 0xff)
        }
        _ => None,
    }
}

//! Schema migrations: numbered SQL files per backend, embedded in the binary and applied by
//! sqlx's own migrator (`sqlx::migrate::Migrator`, bookkeeping in `_sqlx_migrations`).
//!
//! Each backend has its own folder (`migrations/sqlite`, `migrations/postgres`) with the same
//! file names; the `migrations!` list below names each file once and embeds it for both, so a
//! migration missing for one backend is a compile error. Adding a migration is: write
//! `NNNN_name.sql` in both folders, add one line to the list.
//!
//! What sqlx does for us: each migration in a transaction with the row that records it; a
//! database with a migration this binary does not know (written by a newer Cutover) is refused
//! (`VersionMissing`, reported as [`StoreError::SchemaTooNew`]); a migration edited after it was
//! applied is refused (`VersionMismatch`; the old runner only warned); on PostgreSQL it holds
//! an advisory lock (per database) while it migrates, so two servers starting at once apply
//! each migration once. What it does not do, and we add: SQLite has no advisory lock (sqlx's
//! `lock` is a no-op there), so two processes opening a new file at once could both try 0001
//! (the two-stores test did not catch it in three tries without this; the window is small); the
//! whole run is therefore wrapped in one `BEGIN IMMEDIATE` transaction (sqlx's own transactions
//! become savepoints inside it), which serialises them on the file's write lock.
//!
//! Databases made by the hand-written runner this replaced (a `schema_migrations` table) are
//! converted once, under the same lock, before sqlx runs: their rows are copied into
//! `_sqlx_migrations` with sqlx's checksums of the embedded SQL, and a row numbered
//! [`MOVED_VERSION`] is added to `schema_migrations` so that an older Cutover, which reads only
//! that table, refuses the database as written by a newer one instead of applying migrations again.
//!
//! Rejected: keeping the hand-written runner (its reason was that sqlx had no "refuse a newer
//! schema" mode, which it has: `VersionMissing` unless `ignore_missing`), and `sqlx::migrate!`
//! (needs the `macros` feature, which the workspace leaves off; `Migrator::with_migrations`
//! takes the embedded files instead).

use std::borrow::Cow;
use std::path::Path;

use sqlx::migrate::{MigrateError, MigrationType, Migrator};
use sqlx::{PgPool, SqlSafeStr, SqlitePool};

use crate::error::StoreError;

/// sqlx's bookkeeping table.
const TABLE: &str = "_sqlx_migrations";

/// The row added to the old runner's `schema_migrations` table once converted: larger than
/// any schema version, so an older Cutover refuses the database.
pub const MOVED_VERSION: i64 = 1_000_000;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    /// The file stem, e.g. `0001_init`.
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The step as sqlx's migrator takes it.
    fn to_sqlx(self) -> sqlx::migrate::Migration {
        sqlx::migrate::Migration::new(
            self.version,
            Cow::Borrowed(self.name),
            MigrationType::Simple,
            self.sql.into_sql_str(),
            false,
        )
    }

    /// sqlx's checksum of the SQL text (SHA-384), as recorded in `_sqlx_migrations`.
    pub fn checksum(&self) -> Vec<u8> {
        self.to_sqlx().checksum.into_owned()
    }
}

macro_rules! migrations {
    ($($version:literal $file:literal),* $(,)?) => {
        /// The SQLite migrations, oldest first.
        pub const SQLITE: &[Migration] = &[$(Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../migrations/sqlite/", $file, ".sql")),
        }),*];
        /// The PostgreSQL migrations, oldest first.
        pub const POSTGRES: &[Migration] = &[$(Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../migrations/postgres/", $file, ".sql")),
        }),*];
    };
}

migrations! {
    1 "0001_init",
    2 "0002_runs",
    3 "0003_tokens",
    4 "0004_run_chooser",
}

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = SQLITE[SQLITE.len() - 1].version;

fn migrator(migrations: &[Migration]) -> Migrator {
    Migrator::with_migrations(migrations.iter().map(|m| m.to_sqlx()).collect())
}

/// What sqlx refused, as the store says it; `newest` reads the highest recorded version.
fn refused(label: &Path, migrations: &[Migration], e: MigrateError, newest: Option<i64>) -> StoreError {
    match e {
        MigrateError::VersionMissing(v) => StoreError::SchemaTooNew {
            path: label.to_owned(),
            found: newest.unwrap_or(v).max(v),
            known: SCHEMA_VERSION,
        },
        MigrateError::ExecuteMigration(source, version) => StoreError::Migration {
            path: label.to_owned(),
            version,
            name: migrations
                .iter()
                .find(|m| m.version == version)
                .map_or("?", |m| m.name),
            source,
        },
        other => StoreError::Migrate {
            path: label.to_owned(),
            source: other,
        },
    }
}

/// Brings the SQLite database at `path` (used in messages only) up to [`SCHEMA_VERSION`];
/// returns the version it is at afterwards.
pub(crate) async fn migrate_sqlite(pool: &SqlitePool, path: &Path) -> Result<i64, StoreError> {
    const OP: &str = "taking the database's write lock to migrate it";
    // The file's write lock for the whole run: sqlx has no lock of its own on SQLite.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(OP))?;
    convert_sqlite(&mut tx).await?;
    let mut m = migrator(SQLITE);
    m.set_locking(false);
    if let Err(e) = m.run_direct(None, &mut *tx, false).await {
        let newest = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *tx)
            .await
            .ok()
            .flatten();
        return Err(refused(path, SQLITE, e, newest));
    }
    tx.commit()
        .await
        .map_err(StoreError::db("committing the schema migrations"))?;
    Ok(SCHEMA_VERSION)
}

/// Copies the old runner's bookkeeping into sqlx's, once.
async fn convert_sqlite(tx: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    const OP: &str = "converting schema_migrations to _sqlx_migrations";
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('schema_migrations', '_sqlx_migrations')",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    if !tables.iter().any(|t| t == "schema_migrations") || tables.iter().any(|t| t == TABLE) {
        return Ok(());
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    sqlx::migrate::Migrate::ensure_migrations_table(&mut *tx, TABLE)
        .await
        .map_err(|source| StoreError::Migrate {
            path: "schema_migrations".into(),
            source,
        })?;
    for v in versions {
        // A version this binary does not know stays unknown: sqlx then refuses it as newer.
        let (name, checksum) = match SQLITE.iter().find(|m| m.version == v) {
            Some(m) => (m.name.to_owned(), m.checksum()),
            None => (format!("unknown {v}"), Vec::new()),
        };
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?, ?, TRUE, ?, 0)",
        )
        .bind(v)
        .bind(name)
        .bind(checksum)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    }
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) \
         VALUES (?, 'moved_to__sqlx_migrations', '', 0)",
    )
    .bind(MOVED_VERSION)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    Ok(())
}

/// The first key of the advisory lock that serialises the conversion of one schema's old
/// bookkeeping (the second is the schema name's hash); "cm" in ASCII.
const PG_CONVERT_LOCK: i32 = 0x636d;

/// Brings the PostgreSQL database `label` (its URL without password, for messages) up to
/// [`SCHEMA_VERSION`], in the connection's current schema; returns the version it is at
/// afterwards.
pub(crate) async fn migrate_postgres(pool: &PgPool, label: &Path) -> Result<i64, StoreError> {
    convert_postgres(pool).await?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(StoreError::db("connecting to migrate the schema"))?;
    // sqlx takes pg_advisory_lock for the run (and leaves it held if the run fails: the
    // connection is closed then rather than returned to the pool).
    if let Err(e) = migrator(POSTGRES).run_direct(None, &mut *conn, false).await {
        let newest = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .ok()
            .flatten();
        conn.detach();
        return Err(refused(label, POSTGRES, e, newest));
    }
    Ok(SCHEMA_VERSION)
}

/// Copies the old runner's bookkeeping into sqlx's, once, under a per-schema lock.
async fn convert_postgres(pool: &PgPool) -> Result<(), StoreError> {
    const OP: &str = "converting schema_migrations to _sqlx_migrations";
    let mut tx = pool.begin().await.map_err(StoreError::db(OP))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))")
        .bind(PG_CONVERT_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    let old: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    let new: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    if !old || new {
        return Ok(());
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    sqlx::migrate::Migrate::ensure_migrations_table(&mut *tx, TABLE)
        .await
        .map_err(|source| StoreError::Migrate {
            path: "schema_migrations".into(),
            source,
        })?;
    for v in versions {
        let (name, checksum) = match POSTGRES.iter().find(|m| m.version == v) {
            Some(m) => (m.name.to_owned(), m.checksum()),
            None => (format!("unknown {v}"), Vec::new()),
        };
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, 0)",
        )
        .bind(v)
        .bind(name)
        .bind(checksum)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    }
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) \
         VALUES ($1, 'moved_to__sqlx_migrations', '', 0)",
    )
    .bind(MOVED_VERSION)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_have_the_same_numbered_migrations_in_order() {
        assert_eq!(SQLITE.len(), POSTGRES.len());
        for (i, (s, p)) in SQLITE.iter().zip(POSTGRES).enumerate() {
            assert_eq!(s.version, i as i64 + 1, "versions are 1, 2, 3... without gaps");
            assert_eq!((s.version, s.name), (p.version, p.name));
            assert!(
                s.name.starts_with(&format!("{:04}_", s.version)),
                "{} must start with its number",
                s.name
            );
        }
    }

    #[test]
    fn migrations_avoid_sqlite_only_types() {
        for m in SQLITE {
            let sql = m.sql.to_ascii_uppercase();
            for banned in ["DATETIME", "BLOB", "STRICT", "WITHOUT ROWID"] {
                assert!(
                    !sql.contains(banned),
                    "{} uses {banned}, which has no PostgreSQL equivalent",
                    m.name
                );
            }
        }
    }
}

//! Schema migrations: numbered SQL files per backend, embedded in the binary,
//! applied in order and recorded in a `schema_migrations` table.
//!
//! Each backend has its own folder (`migrations/sqlite`, `migrations/postgres`)
//! with the same file names; the `migrations!` list below names each file
//! once and embeds it for both, so a migration missing for one backend is a
//! compile error. Adding a migration is: write `NNNN_name.sql` in both folders,
//! add one line to the list.
//!
//! Every migration runs in its own transaction (`BEGIN IMMEDIATE` on SQLite,
//! so two processes opening the same file cannot both apply it; on PostgreSQL
//! a transaction-scoped advisory lock per schema does the same for two
//! servers starting at once) together with the row that records it. A database whose newest recorded migration is
//! unknown to this binary was written by a newer Cutover and is refused.
//!
//! Rejected: `sqlx::migrate!` (needs the `macros` feature, which the workspace
//! leaves off) and `sqlx::migrate::Migrator` built at run time (its checksum
//! bookkeeping and `_sqlx_migrations` table differ subtly between backends and
//! it has no "refuse a newer schema" mode; forty lines of our own are easier
//! to reason about).

use std::path::Path;

use sqlx::{PgPool, Row, SqlitePool};

use crate::error::StoreError;
use crate::now_ms;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    /// The file stem, e.g. `0001_init`.
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// FNV-1a of the SQL text, recorded to notice a file edited after release.
    pub fn checksum(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.sql.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
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

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
)";

/// Brings the SQLite database at `path` (used in messages only) up to
/// [`SCHEMA_VERSION`]; returns the version it is at afterwards.
pub(crate) async fn migrate_sqlite(pool: &SqlitePool, path: &Path) -> Result<i64, StoreError> {
    sqlx::raw_sql(CREATE_TABLE)
        .execute(pool)
        .await
        .map_err(StoreError::db("creating the schema_migrations table"))?;
    let applied = sqlx::query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("reading schema_migrations"))?;
    let mut found = 0;
    for row in &applied {
        let version: i64 = row
            .try_get("version")
            .map_err(StoreError::db("reading schema_migrations"))?;
        let checksum: String = row
            .try_get("checksum")
            .map_err(StoreError::db("reading schema_migrations"))?;
        found = found.max(version);
        if let Some(m) = SQLITE.iter().find(|m| m.version == version)
            && m.checksum() != checksum
        {
            tracing::warn!(
                path = %path.display(),
                version,
                name = m.name,
                "migration {} was changed after it was applied to this database; the schema may differ from a fresh one",
                m.name
            );
        }
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for m in SQLITE.iter().filter(|m| m.version > found) {
        apply_sqlite(pool, path, m).await?;
    }
    Ok(SCHEMA_VERSION)
}

async fn apply_sqlite(pool: &SqlitePool, path: &Path, m: &Migration) -> Result<(), StoreError> {
    let fail = |source| StoreError::Migration {
        path: path.to_owned(),
        version: m.version,
        name: m.name,
        source,
    };
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
    // Another process may have applied it while we waited for the lock.
    let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = ?")
        .bind(m.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
    if done.is_some() {
        return Ok(());
    }
    sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(fail)?;
    sqlx::query("INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) VALUES (?, ?, ?, ?)")
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    tracing::info!(path = %path.display(), version = m.version, name = m.name, "applied schema migration");
    Ok(())
}

/// The first key of the advisory lock that serialises migrations of one
/// schema (the second is the schema name's hash); "cm" in ASCII.
const PG_MIGRATE_LOCK: i32 = 0x636d;

/// Waits for the migration lock of the connection's current schema (held
/// until the transaction ends).
const PG_LOCK: &str = "SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))";

/// Brings the PostgreSQL database `label` (its URL without password, for
/// messages) up to [`SCHEMA_VERSION`], in the connection's current schema;
/// returns the version it is at afterwards.
pub(crate) async fn migrate_postgres(pool: &PgPool, label: &Path) -> Result<i64, StoreError> {
    const OP: &str = "creating the schema_migrations table";
    // CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator on
    // PostgreSQL (both may pass the check), hence the lock.
    let mut tx = pool.begin().await.map_err(StoreError::db(OP))?;
    sqlx::query(PG_LOCK)
        .bind(PG_MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    sqlx::raw_sql(CREATE_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    let applied = sqlx::query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("reading schema_migrations"))?;
    let mut found = 0;
    for row in &applied {
        let version: i64 = row
            .try_get("version")
            .map_err(StoreError::db("reading schema_migrations"))?;
        let checksum: String = row
            .try_get("checksum")
            .map_err(StoreError::db("reading schema_migrations"))?;
        found = found.max(version);
        if let Some(m) = POSTGRES.iter().find(|m| m.version == version)
            && m.checksum() != checksum
        {
            tracing::warn!(
                database = %label.display(),
                version,
                name = m.name,
                "migration {} was changed after it was applied to this database; the schema may differ from a fresh one",
                m.name
            );
        }
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: label.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for m in POSTGRES.iter().filter(|m| m.version > found) {
        apply_postgres(pool, label, m).await?;
    }
    Ok(SCHEMA_VERSION)
}

async fn apply_postgres(pool: &PgPool, label: &Path, m: &Migration) -> Result<(), StoreError> {
    let fail = |source| StoreError::Migration {
        path: label.to_owned(),
        version: m.version,
        name: m.name,
        source,
    };
    let mut tx = pool.begin().await.map_err(fail)?;
    sqlx::query(PG_LOCK)
        .bind(PG_MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    // Another server may have applied it while we waited for the lock.
    let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
        .bind(m.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
    if done.is_some() {
        return Ok(());
    }
    sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(fail)?;
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(m.version)
    .bind(m.name)
    .bind(m.checksum())
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    tracing::info!(database = %label.display(), version = m.version, name = m.name, "applied schema migration");
    Ok(())
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

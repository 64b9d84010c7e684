//! The SQLite side of API tokens, as functions on the pool that
//! `SqliteStore`'s trait impl calls. One live token per name is enforced by a
//! partial unique index; the first (bootstrap) token is inserted under
//! `BEGIN IMMEDIATE`, so of two processes only one finds the table empty.

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::error::{StoreError, corrupt};
use crate::{JobRun, NewToken, TokenRecord, check_text, now_ms};

/// `$head <token columns> $tail`.
macro_rules! with_columns {
    ($head:literal, $tail:literal) => {
        concat!(
            $head,
            " id, name, grants, created_at_ms, created_by, expires_at_ms, revoked_at_ms, revoked_by ",
            $tail
        )
    };
}

fn token_from_row(row: &SqliteRow, op: &'static str) -> Result<TokenRecord, StoreError> {
    let name: String = row.try_get("name").map_err(StoreError::db(op))?;
    let grants: String = row.try_get("grants").map_err(StoreError::db(op))?;
    Ok(TokenRecord {
        id: row.try_get("id").map_err(StoreError::db(op))?,
        grants: serde_json::from_str(&grants)
            .map_err(|_| corrupt(format!("grants of token {name}"), &grants, "grants as JSON"))?,
        name,
        created_at_ms: row.try_get("created_at_ms").map_err(StoreError::db(op))?,
        created_by: row.try_get("created_by").map_err(StoreError::db(op))?,
        expires_at_ms: row.try_get("expires_at_ms").map_err(StoreError::db(op))?,
        revoked_at_ms: row.try_get("revoked_at_ms").map_err(StoreError::db(op))?,
        revoked_by: row.try_get("revoked_by").map_err(StoreError::db(op))?,
    })
}

pub(crate) fn check_new(new: &NewToken) -> Result<String, StoreError> {
    check_text(
        &[
            ("name", &new.name),
            ("secret hash", &new.secret_hash),
            ("creator", &new.created_by),
        ],
        "a new token",
    )?;
    serde_json::to_string(&new.grants).map_err(|e| StoreError::Corrupt {
        what: "token grants to store".to_owned(),
        source: Box::new(e),
    })
}

async fn insert<'c, E>(
    exec: E,
    new: &NewToken,
    grants: &str,
    op: &'static str,
) -> Result<TokenRecord, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let row = sqlx::query(with_columns!(
        "INSERT INTO api_tokens (name, secret_hash, grants, created_at_ms, created_by, expires_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING",
        ""
    ))
    .bind(&new.name)
    .bind(&new.secret_hash)
    .bind(grants)
    .bind(now_ms())
    .bind(&new.created_by)
    .bind(new.expires_at_ms)
    .fetch_one(exec)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::TokenNameTaken {
            name: new.name.clone(),
        },
        _ => StoreError::Database {
            operation: op,
            source: e,
        },
    })?;
    token_from_row(&row, op)
}

pub(crate) async fn create(pool: &SqlitePool, new: NewToken) -> Result<TokenRecord, StoreError> {
    let grants = check_new(&new)?;
    insert(pool, &new, &grants, "creating a token").await
}

pub(crate) async fn bootstrap(pool: &SqlitePool, new: NewToken) -> Result<Option<TokenRecord>, StoreError> {
    const OP: &str = "creating the first token";
    let grants = check_new(&new)?;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(OP))?;
    let any: Option<i64> = sqlx::query_scalar("SELECT id FROM api_tokens LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
    if any.is_some() {
        return Ok(None);
    }
    let token = insert(&mut *tx, &new, &grants, OP).await?;
    tx.commit().await.map_err(StoreError::db(OP))?;
    Ok(Some(token))
}

pub(crate) async fn find(pool: &SqlitePool, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
    const OP: &str = "looking a token up";
    let row = sqlx::query(with_columns!("SELECT", "FROM api_tokens WHERE secret_hash = ?"))
        .bind(secret_hash)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(OP))?;
    row.as_ref().map(|r| token_from_row(r, OP)).transpose()
}

pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<TokenRecord>, StoreError> {
    const OP: &str = "listing tokens";
    let rows = sqlx::query(with_columns!("SELECT", "FROM api_tokens ORDER BY id"))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(OP))?;
    rows.iter().map(|r| token_from_row(r, OP)).collect()
}

pub(crate) async fn revoke(pool: &SqlitePool, name: &str, by: &str) -> Result<TokenRecord, StoreError> {
    const OP: &str = "revoking a token";
    check_text(&[("name", name), ("revoker", by)], "a token revocation")?;
    let row = sqlx::query(with_columns!(
        "UPDATE api_tokens SET revoked_at_ms = ?, revoked_by = ? \
         WHERE name = ? AND revoked_at_ms IS NULL RETURNING",
        ""
    ))
    .bind(now_ms())
    .bind(by)
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::db(OP))?;
    match row {
        Some(r) => token_from_row(&r, OP),
        None => Err(StoreError::TokenNotFound {
            name: name.to_owned(),
        }),
    }
}

pub(crate) async fn job_run_get(pool: &SqlitePool, id: i64) -> Result<Option<JobRun>, StoreError> {
    crate::sqlite_scheduler::job_run_get(pool, id).await
}

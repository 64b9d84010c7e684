//! Persistence for Cutover, behind one trait: [`Store`].
//!
//! The store keeps the parameter store (every write a new numbered version,
//! with compare-and-set) and the append-only audit log. It holds no business
//! rules: which keys are reserved, who may write what, and what gets audited
//! are decided by the engine; the store only stores, atomically and durably.
//!
//! Backends: [`SqliteStore`] (the default, one file in the data directory).
//! A PostgreSQL adapter for multi-instance deployments will implement the same
//! trait; to keep that possible the SQL is portable (TEXT and BIGINT columns,
//! times as unix milliseconds, JSON as TEXT, no SQLite-only functions in
//! queries), migrations are kept per backend side by side (see [`migrate`]),
//! and the behaviour is pinned by one backend-agnostic conformance suite
//! (`conformance`, behind the `conformance` feature).
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
mod sqlite;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use key::{PARAM_KEY_MAX_LEN, ParamKey};
pub use migrate::SCHEMA_VERSION;
pub use sqlite::SqliteStore;

/// One version of a parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

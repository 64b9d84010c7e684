//! The storage conformance suite: what every [`Store`](crate::Store) backend must do,
//! written once against the trait so SQLite and PostgreSQL pass the same tests.
//!
//! Each case is an `async fn` that panics (through `assert!`) when the backend
//! misbehaves. Most take `&dyn Store`; the concurrency cases take
//! `Arc<dyn Store>` because they spawn tokio tasks. Every case expects a fresh,
//! empty store. [`conformance_tests!`](crate::conformance_tests) turns the
//! whole list into `#[tokio::test]`s for a backend in one line; the
//! persistence pair [`reopen_write`]/[`reopen_check`] needs the backend to
//! close and reopen its store in between, so the backend's test calls it.
//!
//! Cases are grouped by subject: `params`, `audit`, `concurrency` (racing
//! writers) and `persistence` (survives a reopen).
//!
//! Rejected: one big test (a failure would hide the rest) and per-backend
//! copies of the tests (they drift; the point is that both pass the same).

mod audit;
mod concurrency;
mod params;
mod persistence;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{NewAuditEntry, ParamKey, ParamVersion};

pub use audit::{audit_append_and_list, audit_paging};
pub use concurrency::{
    concurrent_cas_writers_one_winner_per_version, concurrent_writers_without_cas_lose_nothing,
};
pub use params::{
    cas_mismatch_names_current_and_writes_nothing, cas_success, cas_zero_on_existing_key,
    history_is_newest_first, list_by_path_prefix, list_rejects_invalid_prefix, nul_characters_are_refused,
    put_then_get, values_round_trip_verbatim, versions_are_numbered_per_key,
};
pub use persistence::{reopen_check, reopen_write};

/// Generates one `#[tokio::test]` per conformance case. `$fresh` is the path
/// of an `async fn() -> (Arc<dyn Store>, G)` giving a fresh, empty store and a
/// guard `G` (e.g. its temporary directory) kept alive for the test. The
/// calling crate needs `tokio` (with `macros` and `rt-multi-thread`).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@cases $fresh;
            ref: put_then_get, versions_are_numbered_per_key, history_is_newest_first, list_by_path_prefix,
                 list_rejects_invalid_prefix, cas_success, cas_mismatch_names_current_and_writes_nothing,
                 cas_zero_on_existing_key, values_round_trip_verbatim, nul_characters_are_refused,
                 audit_append_and_list, audit_paging;
            arc: concurrent_cas_writers_one_winner_per_version, concurrent_writers_without_cas_lose_nothing);
    };
    (@cases $fresh:path; ref: $($r:ident),*; arc: $($a:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $r() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::$r(&*store).await;
                store.close().await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $a() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::$a(store.clone()).await;
                store.close().await;
            }
        )*
    };
}

fn key(raw: &str) -> ParamKey {
    ParamKey::parse(raw).unwrap_or_else(|e| panic!("test key {raw}: {e}"))
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn audit(actor: &str, action: &str, target: &str, detail: serde_json::Value) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail,
    }
}

fn keys_of(list: &[ParamVersion]) -> Vec<&str> {
    list.iter().map(|p| p.key.as_str()).collect()
}

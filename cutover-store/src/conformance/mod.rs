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
//! writers), `runs` (queueing, state compare-and-set, stages), `run_logs`
//! (logs, approvals, refused text), `scheduler` (state, job runs, job logs),
//! `tokens` (API tokens by hash, unique live names, revoke, bootstrap)
//! and `persistence` (survives a reopen: [`reopen_write`]/[`reopen_check`]
//! and [`runs_reopen_write`]/[`runs_reopen_check`]).
//!
//! Rejected: one big test (a failure would hide the rest) and per-backend
//! copies of the tests (they drift; the point is that both pass the same).

mod audit;
mod concurrency;
mod params;
mod persistence;
mod run_logs;
mod runs;
mod scheduler;
mod stages;
mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use cutover_core::RunKind;

use crate::{NewAuditEntry, NewRun, ParamKey, ParamVersion};

pub use audit::{audit_append_and_list, audit_paging};
pub use concurrency::{
    concurrent_cas_writers_one_winner_per_version, concurrent_writers_without_cas_lose_nothing,
};
pub use params::{
    cas_mismatch_names_current_and_writes_nothing, cas_success, cas_zero_on_existing_key,
    history_is_newest_first, list_by_path_prefix, list_rejects_invalid_prefix, nul_characters_are_refused,
    put_then_get, values_round_trip_verbatim, versions_are_numbered_per_key,
};
pub use persistence::{reopen_check, reopen_write, runs_reopen_check, runs_reopen_write};
pub use run_logs::{
    approvals_are_recorded_in_order, concurrent_log_appends_are_gapless,
    log_read_filters_by_stage_and_after_seq, run_text_with_nul_is_refused,
};
pub use runs::{
    concurrent_transitions_one_winner, enqueue_supersedes_only_queued_runs_of_the_same_env,
    illegal_transitions_conflict_and_write_nothing, legal_transitions_write_the_update,
    new_run_has_thirteen_pending_stages_in_order, run_list_pages_newest_first,
    run_succeeded_with_needs_that_env_that_version_and_success,
    run_update_writes_fields_but_not_on_ended_runs, runs_unfinished_lists_queued_and_active_oldest_first,
};
pub use scheduler::{
    job_history_reset_deletes_runs_and_logs, job_log_append_and_read, job_runs_start_finish_and_list,
    job_runs_unfinished_oldest_first, scheduler_state_upsert,
};
pub use stages::{stage_update_sets_times_and_current_stage, stages_mark_not_run_touches_only_pending};
pub use tokens::{
    concurrent_bootstraps_create_one_token, job_run_get_by_id, token_bootstrap_only_into_an_empty_store,
    token_create_and_find_by_hash, token_expiry_is_stored_verbatim, token_names_are_unique_among_live_tokens,
};

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
                 audit_append_and_list, audit_paging,
                 new_run_has_thirteen_pending_stages_in_order, enqueue_supersedes_only_queued_runs_of_the_same_env,
                 run_list_pages_newest_first, legal_transitions_write_the_update, run_update_writes_fields_but_not_on_ended_runs,
                 illegal_transitions_conflict_and_write_nothing, stage_update_sets_times_and_current_stage,
                 stages_mark_not_run_touches_only_pending, runs_unfinished_lists_queued_and_active_oldest_first,
                 run_succeeded_with_needs_that_env_that_version_and_success,
                 log_read_filters_by_stage_and_after_seq, approvals_are_recorded_in_order,
                 run_text_with_nul_is_refused, scheduler_state_upsert, job_runs_start_finish_and_list,
                 job_runs_unfinished_oldest_first, job_log_append_and_read, job_history_reset_deletes_runs_and_logs,
                 token_create_and_find_by_hash, token_names_are_unique_among_live_tokens,
                 token_bootstrap_only_into_an_empty_store, token_expiry_is_stored_verbatim, job_run_get_by_id;
            arc: concurrent_cas_writers_one_winner_per_version, concurrent_writers_without_cas_lose_nothing,
                 concurrent_transitions_one_winner, concurrent_log_appends_are_gapless,
                 concurrent_bootstraps_create_one_token);
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

/// A run request by alice with no target version and no reason.
fn new_run(env: &str, kind: RunKind) -> NewRun {
    NewRun {
        env: env.into(),
        kind,
        requested_by: "alice".into(),
        target_version: None,
        version_chosen_by: None,
        reason: None,
    }
}

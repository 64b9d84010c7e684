//! Conformance: the scheduler's state per environment, job runs and their logs.

use super::wall_ms;
use crate::{JobRunState, SchedulerState, Store, StoreError};

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn state(env: &str, suspended: bool, version: Option<&str>, pending: Option<&str>) -> SchedulerState {
    SchedulerState {
        env: env.into(),
        suspended,
        reason: suspended.then(|| "run 7 is deploying".to_owned()),
        version: version.map(str::to_owned),
        pending_version: pending.map(str::to_owned),
        updated_at_ms: 0,
        updated_by: "pipeline".into(),
    }
}

/// Put inserts, then replaces every field; the store stamps the time.
pub async fn scheduler_state_upsert(store: &dyn Store) {
    assert_eq!(store.scheduler_get("shop-prod").await.unwrap(), None);
    let before = wall_ms();
    store
        .scheduler_put(&state("shop-prod", false, Some(SHA_A), None))
        .await
        .unwrap();
    let first = store.scheduler_get("shop-prod").await.unwrap().unwrap();
    assert!(
        before <= first.updated_at_ms && first.updated_at_ms <= wall_ms(),
        "the store stamps the time"
    );
    assert_eq!(
        first,
        SchedulerState {
            updated_at_ms: first.updated_at_ms,
            ..state("shop-prod", false, Some(SHA_A), None)
        }
    );

    let suspended = state("shop-prod", true, Some(SHA_A), Some(SHA_B));
    store.scheduler_put(&suspended).await.unwrap();
    let second = store.scheduler_get("shop-prod").await.unwrap().unwrap();
    assert_eq!(
        second,
        SchedulerState {
            updated_at_ms: second.updated_at_ms,
            ..suspended
        }
    );
    assert!(second.updated_at_ms >= first.updated_at_ms);

    let mut resumed = state("shop-prod", false, Some(SHA_B), None);
    resumed.updated_by = "alice".into();
    store.scheduler_put(&resumed).await.unwrap();
    let third = store.scheduler_get("shop-prod").await.unwrap().unwrap();
    assert_eq!(
        third,
        SchedulerState {
            updated_at_ms: third.updated_at_ms,
            ..resumed
        },
        "None clears a field"
    );

    assert_eq!(
        store.scheduler_get("shop-stage").await.unwrap(),
        None,
        "states are per environment"
    );
    store
        .scheduler_put(&state("shop-stage", true, None, None))
        .await
        .unwrap();
    assert!(
        store
            .scheduler_get("shop-stage")
            .await
            .unwrap()
            .unwrap()
            .suspended
    );
    assert!(!store.scheduler_get("shop-prod").await.unwrap().unwrap().suspended);
    let mut bad = state("shop-dev", true, None, None);
    bad.reason = Some("\0".into());
    assert!(matches!(
        store.scheduler_put(&bad).await,
        Err(StoreError::InvalidText { field: "reason", .. })
    ));
    assert_eq!(store.scheduler_get("shop-dev").await.unwrap(), None);
}

/// Job runs start running, finish once with a final state, and list newest first.
pub async fn job_runs_start_finish_and_list(store: &dyn Store) {
    assert!(store.job_runs("shop-prod", None, 10).await.unwrap().is_empty());
    let before = wall_ms();
    let a = store
        .job_run_start("shop-prod", "reindex", SHA_A, "schedule")
        .await
        .unwrap();
    let b = store
        .job_run_start("shop-prod", "import", SHA_A, "manual")
        .await
        .unwrap();
    let c = store
        .job_run_start("shop-prod", "reindex", SHA_A, "schedule")
        .await
        .unwrap();
    let elsewhere = store
        .job_run_start("shop-stage", "reindex", SHA_B, "schedule")
        .await
        .unwrap();
    assert!(a.id < b.id && b.id < c.id && c.id < elsewhere.id);
    assert_eq!(
        (
            a.env.as_str(),
            a.job.as_str(),
            a.version.as_str(),
            a.trigger.as_str(),
            a.state
        ),
        ("shop-prod", "reindex", SHA_A, "schedule", JobRunState::Running)
    );
    assert!(before <= a.started_at_ms && a.started_at_ms <= wall_ms());
    assert_eq!((a.ended_at_ms, a.exit_code, &a.note), (None, None, &None));

    let done = store
        .job_run_finish(a.id, JobRunState::Succeeded, Some(0), None)
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.exit_code, &done.note),
        (JobRunState::Succeeded, Some(0), &None)
    );
    assert!(done.ended_at_ms.is_some_and(|e| e >= a.started_at_ms));
    let failed = store
        .job_run_finish(b.id, JobRunState::Failed, Some(-9), Some("killed"))
        .await
        .unwrap();
    assert_eq!(
        (failed.exit_code, failed.note.as_deref()),
        (Some(-9), Some("killed"))
    );

    let listed = store.job_runs("shop-prod", None, 10).await.unwrap();
    assert_eq!(listed, [c.clone(), failed.clone(), done.clone()]);
    assert_eq!(
        store.job_runs("shop-prod", Some("reindex"), 10).await.unwrap(),
        [c.clone(), done.clone()]
    );
    assert_eq!(
        store.job_runs("shop-prod", Some("reindex"), 1).await.unwrap(),
        std::slice::from_ref(&c)
    );
    assert_eq!(
        store.job_runs("shop-stage", None, 10).await.unwrap(),
        std::slice::from_ref(&elsewhere)
    );
    assert!(
        store
            .job_runs("shop-prod", Some("nothing"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Finishing twice, or "finishing" as running, is a conflict and writes nothing.
    match store
        .job_run_finish(a.id, JobRunState::Failed, Some(1), None)
        .await
    {
        Err(StoreError::JobRunConflict {
            id,
            current: JobRunState::Succeeded,
            wanted: JobRunState::Failed,
        }) => {
            assert_eq!(id, a.id)
        }
        other => panic!("expected JobRunConflict, got {other:?}"),
    }
    assert!(matches!(
        store.job_run_finish(c.id, JobRunState::Running, None, None).await,
        Err(StoreError::JobRunConflict {
            current: JobRunState::Running,
            wanted: JobRunState::Running,
            ..
        })
    ));
    assert!(matches!(
        store
            .job_run_finish(999_999, JobRunState::Failed, None, None)
            .await,
        Err(StoreError::JobRunNotFound { id: 999_999 })
    ));
    assert_eq!(
        store.job_runs("shop-prod", None, 10).await.unwrap(),
        listed,
        "a refused finish wrote something"
    );
}

/// Running job runs of every environment, oldest first.
pub async fn job_runs_unfinished_oldest_first(store: &dyn Store) {
    assert!(store.job_runs_unfinished().await.unwrap().is_empty());
    let a = store
        .job_run_start("a-prod", "cron", SHA_A, "schedule")
        .await
        .unwrap();
    let b = store
        .job_run_start("b-prod", "cron", SHA_A, "schedule")
        .await
        .unwrap();
    let c = store
        .job_run_start("a-prod", "other", SHA_A, "manual")
        .await
        .unwrap();
    store
        .job_run_finish(b.id, JobRunState::Skipped, None, Some("previous still running"))
        .await
        .unwrap();
    assert_eq!(store.job_runs_unfinished().await.unwrap(), [a.clone(), c]);
    store
        .job_run_finish(a.id, JobRunState::Interrupted, None, Some("server restarted"))
        .await
        .unwrap();
    let left = store.job_runs_unfinished().await.unwrap();
    assert_eq!(left.len(), 1);
    store
        .job_run_finish(left[0].id, JobRunState::Terminated, Some(143), None)
        .await
        .unwrap();
    assert!(store.job_runs_unfinished().await.unwrap().is_empty());
}

/// Job logs number lines per job run and read back after a seq.
pub async fn job_log_append_and_read(store: &dyn Store) {
    let a = store
        .job_run_start("shop-dev", "import", SHA_A, "manual")
        .await
        .unwrap();
    let b = store
        .job_run_start("shop-dev", "import", SHA_A, "manual")
        .await
        .unwrap();
    let before = wall_ms();
    for i in 1..=5 {
        assert_eq!(store.job_log_append(a.id, &format!("line {i}")).await.unwrap(), i);
    }
    assert_eq!(
        store.job_log_append(b.id, "b's first").await.unwrap(),
        1,
        "seqs are per job run"
    );
    let all = store.job_log_read(a.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|(seq, _, line)| (*seq, line.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "line 1"),
            (2, "line 2"),
            (3, "line 3"),
            (4, "line 4"),
            (5, "line 5")
        ]
    );
    assert!(all.iter().all(|(_, at, _)| before <= *at && *at <= wall_ms()));
    let page: Vec<i64> = store
        .job_log_read(a.id, 2, 2)
        .await
        .unwrap()
        .iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(page, [3, 4]);
    assert!(store.job_log_read(a.id, 5, 100).await.unwrap().is_empty());
    assert!(matches!(
        store.job_log_append(a.id, "\0").await,
        Err(StoreError::InvalidText {
            field: "log line",
            ..
        })
    ));
    assert!(matches!(
        store.job_log_append(888_888, "x").await,
        Err(StoreError::JobRunNotFound { id: 888_888 })
    ));
    assert_eq!(
        store.job_log_append(a.id, "after a refusal").await.unwrap(),
        6,
        "no seq was used up"
    );
}

/// A reset deletes the environment's job runs and their logs, nothing else.
pub async fn job_history_reset_deletes_runs_and_logs(store: &dyn Store) {
    let mut prod_ids = Vec::new();
    for job in ["reindex", "import", "reindex"] {
        let run = store
            .job_run_start("shop-prod", job, SHA_A, "schedule")
            .await
            .unwrap();
        store.job_log_append(run.id, "working").await.unwrap();
        store.job_log_append(run.id, "done").await.unwrap();
        prod_ids.push(run.id);
    }
    store
        .job_run_finish(prod_ids[0], JobRunState::Succeeded, Some(0), None)
        .await
        .unwrap();
    let kept = store
        .job_run_start("shop-prod-eu", "reindex", SHA_A, "schedule")
        .await
        .unwrap();
    store.job_log_append(kept.id, "kept").await.unwrap();
    store
        .scheduler_put(&state("shop-prod", true, Some(SHA_A), Some(SHA_B)))
        .await
        .unwrap();
    let scheduler = store.scheduler_get("shop-prod").await.unwrap();

    assert_eq!(store.job_history_reset("shop-prod").await.unwrap(), 3);
    assert!(store.job_runs("shop-prod", None, 10).await.unwrap().is_empty());
    for id in &prod_ids {
        assert!(
            store.job_log_read(*id, 0, 10).await.unwrap().is_empty(),
            "job run {id}'s log survived"
        );
    }
    assert!(
        store
            .job_runs_unfinished()
            .await
            .unwrap()
            .iter()
            .all(|r| r.env != "shop-prod")
    );
    assert_eq!(
        store.job_runs("shop-prod-eu", None, 10).await.unwrap(),
        std::slice::from_ref(&kept)
    );
    assert_eq!(store.job_log_read(kept.id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(
        store.scheduler_get("shop-prod").await.unwrap(),
        scheduler,
        "the scheduler state stays"
    );
    assert_eq!(store.job_history_reset("shop-prod").await.unwrap(), 0);
    let next = store
        .job_run_start("shop-prod", "reindex", SHA_B, "schedule")
        .await
        .unwrap();
    assert!(next.id > kept.id, "ids are not reused after a reset");
}

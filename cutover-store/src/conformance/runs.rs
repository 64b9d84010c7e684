//! Conformance: pipeline runs (queueing, listing, state compare-and-set, stages).

use std::sync::Arc;

use cutover_core::{RunKind, RunState, Stage, StageStatus};
use tokio::sync::Barrier;

use super::{new_run, wall_ms};
use crate::{RunRecord, RunUpdate, Store, StoreError};

const SHA_A: &str = "1111111111111111111111111111111111111111";
const SHA_B: &str = "2222222222222222222222222222222222222222";

fn states(runs: &[RunRecord]) -> Vec<(i64, RunState)> {
    runs.iter().map(|r| (r.id, r.state)).collect()
}

/// A new run is queued with all 13 stages pending, in pipeline order.
pub async fn new_run_has_thirteen_pending_stages_in_order(store: &dyn Store) {
    assert_eq!(store.run_get(1).await.unwrap(), None);
    let before = wall_ms();
    let mut request = new_run("shop-prod", RunKind::Rollback);
    request.target_version = Some(SHA_A.into());
    request.reason = Some("bad release".into());
    request.version_chosen_by = Some("bob".into());
    let (run, superseded) = store.run_enqueue(request).await.unwrap();
    let after = wall_ms();
    assert!(superseded.is_empty());
    assert_eq!(
        (run.env.as_str(), run.kind, run.state, run.requested_by.as_str()),
        ("shop-prod", RunKind::Rollback, RunState::Queued, "alice")
    );
    assert_eq!(run.target_version.as_deref(), Some(SHA_A));
    assert_eq!(run.version_chosen_by.as_deref(), Some("bob"));
    assert_eq!(run.reason.as_deref(), Some("bad release"));
    assert!(before <= run.created_at_ms && run.created_at_ms <= after);
    assert_eq!(
        (
            &run.version,
            &run.previous_version,
            run.started_at_ms,
            run.ended_at_ms
        ),
        (&None, &None, None, None)
    );
    assert_eq!(
        (run.current_stage, run.failed_stage, &run.error),
        (None, None, &None)
    );
    assert_eq!(run.superseded_by, None);
    assert_eq!(run.stages.iter().map(|s| s.stage).collect::<Vec<_>>(), Stage::ALL);
    for s in &run.stages {
        assert_eq!(
            (s.status, s.started_at_ms, s.ended_at_ms, &s.note),
            (StageStatus::Pending, None, None, &None)
        );
    }
    assert_eq!(store.run_get(run.id).await.unwrap(), Some(run.clone()));
    let (next, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    assert!(next.id > run.id, "ids must increase");
    assert_eq!(
        (next.target_version, next.version_chosen_by, next.reason),
        (None, None, None)
    );
}

/// `run_succeeded_with` is true only for a run of that environment that
/// ended `Succeeded` with that version: not another environment's, not a
/// failed one, not one still running.
pub async fn run_succeeded_with_needs_that_env_that_version_and_success(store: &dyn Store) {
    let ended = |version: &str| RunUpdate {
        version: Some(version.into()),
        ended_at_ms: Some(wall_ms()),
        ..RunUpdate::default()
    };
    assert!(!store.run_succeeded_with("shop-stage", SHA_A).await.unwrap());
    // A failed run of SHA_A on stage, a running one of SHA_B there.
    let (failed, _) = store
        .run_enqueue(new_run("shop-stage", RunKind::Normal))
        .await
        .unwrap();
    store
        .run_transition(
            failed.id,
            &[RunState::Queued],
            RunState::Running,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    store
        .run_transition(failed.id, &[RunState::Running], RunState::Failed, ended(SHA_A))
        .await
        .unwrap();
    let (running, _) = store
        .run_enqueue(new_run("shop-stage", RunKind::Normal))
        .await
        .unwrap();
    let update = RunUpdate {
        version: Some(SHA_B.into()),
        ..RunUpdate::default()
    };
    store
        .run_transition(running.id, &[RunState::Queued], RunState::Running, update)
        .await
        .unwrap();
    assert!(!store.run_succeeded_with("shop-stage", SHA_A).await.unwrap());
    assert!(!store.run_succeeded_with("shop-stage", SHA_B).await.unwrap());
    // SHA_A succeeds on prod: still not on stage.
    let (prod, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    store
        .run_transition(
            prod.id,
            &[RunState::Queued],
            RunState::Running,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    store
        .run_transition(prod.id, &[RunState::Running], RunState::Succeeded, ended(SHA_A))
        .await
        .unwrap();
    assert!(!store.run_succeeded_with("shop-stage", SHA_A).await.unwrap());
    assert!(store.run_succeeded_with("shop-prod", SHA_A).await.unwrap());
    // The running one succeeds.
    store
        .run_transition(
            running.id,
            &[RunState::Running],
            RunState::Succeeded,
            ended(SHA_B),
        )
        .await
        .unwrap();
    assert!(store.run_succeeded_with("shop-stage", SHA_B).await.unwrap());
    assert!(!store.run_succeeded_with("shop-stage", SHA_A).await.unwrap());
}

/// A new request supersedes the queued runs of its environment only: not
/// running ones, not other environments'.
pub async fn enqueue_supersedes_only_queued_runs_of_the_same_env(store: &dyn Store) {
    let (active, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    store
        .run_transition(
            active.id,
            &[RunState::Queued],
            RunState::Running,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    let (queued, superseded) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    assert!(
        superseded.is_empty(),
        "a running run is not superseded: {superseded:?}"
    );
    let (other_env, superseded) = store
        .run_enqueue(new_run("shop-stage", RunKind::Normal))
        .await
        .unwrap();
    assert!(
        superseded.is_empty(),
        "another environment's run is not superseded: {superseded:?}"
    );
    let (waiting, _) = store
        .run_enqueue(new_run("shop-dev", RunKind::Normal))
        .await
        .unwrap();
    store
        .run_transition(
            waiting.id,
            &[RunState::Queued],
            RunState::Running,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    store
        .run_transition(
            waiting.id,
            &[RunState::Running],
            RunState::AwaitingApproval,
            RunUpdate::default(),
        )
        .await
        .unwrap();

    let before = wall_ms();
    let (newest, superseded) = store
        .run_enqueue(new_run("shop-prod", RunKind::Destructive))
        .await
        .unwrap();
    let after = wall_ms();
    assert_eq!(superseded, [queued.id]);
    assert_eq!(newest.state, RunState::Queued);
    let old = store.run_get(queued.id).await.unwrap().unwrap();
    assert_eq!(
        (old.state, old.superseded_by),
        (RunState::Superseded, Some(newest.id))
    );
    let ended = old.ended_at_ms.expect("a superseded run has ended");
    assert!(before <= ended && ended <= after);
    assert!(
        old.stages.iter().all(|s| s.status == StageStatus::NotRun),
        "a superseded run's stages never run: {:?}",
        old.stages
    );
    assert_eq!(
        store.run_get(active.id).await.unwrap().unwrap().state,
        RunState::Running
    );
    assert_eq!(
        store.run_get(other_env.id).await.unwrap().unwrap().state,
        RunState::Queued
    );
    assert_eq!(
        store.run_get(waiting.id).await.unwrap().unwrap().state,
        RunState::AwaitingApproval
    );

    let (last, superseded) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    assert_eq!(
        superseded,
        [newest.id],
        "each request supersedes the one queued before it"
    );
    assert_eq!(
        store.run_get(newest.id).await.unwrap().unwrap().superseded_by,
        Some(last.id)
    );
    assert_eq!(
        store.run_get(queued.id).await.unwrap().unwrap().superseded_by,
        Some(newest.id),
        "an already superseded run keeps who superseded it"
    );
}

/// Listing is newest first, optionally by environment, paged by id.
pub async fn run_list_pages_newest_first(store: &dyn Store) {
    assert!(store.run_list(None, 10, None).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..7 {
        let env = if i % 2 == 0 { "app-dev" } else { "app-stage" };
        ids.push((
            env,
            store
                .run_enqueue(new_run(env, RunKind::Normal))
                .await
                .unwrap()
                .0
                .id,
        ));
    }
    let all = store.run_list(None, 10, None).await.unwrap();
    let mut expected: Vec<i64> = ids.iter().map(|(_, id)| *id).collect();
    expected.reverse();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), expected);
    assert!(
        all.iter().all(|r| r.stages.len() == 13),
        "every listed run has its 13 stages"
    );
    for run in &all {
        assert_eq!(Some(run), store.run_get(run.id).await.unwrap().as_ref());
    }

    let dev: Vec<i64> = store
        .run_list(Some("app-dev"), 10, None)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let mut expected_dev: Vec<i64> = ids
        .iter()
        .filter(|(e, _)| *e == "app-dev")
        .map(|(_, id)| *id)
        .collect();
    expected_dev.reverse();
    assert_eq!(dev, expected_dev);
    let page = store.run_list(Some("app-dev"), 2, None).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), expected_dev[..2]);
    let next = store
        .run_list(Some("app-dev"), 2, Some(page[1].id))
        .await
        .unwrap();
    assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), expected_dev[2..]);
    assert!(store.run_list(None, 0, None).await.unwrap().is_empty());
    assert!(
        store
            .run_list(Some("nowhere"), 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .run_list(None, 10, Some(expected[6]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Legal moves write the state and the `Some` fields of the update, and leave the rest.
pub async fn legal_transitions_write_the_update(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    let started = store
        .run_transition(
            run.id,
            &[RunState::Queued],
            RunState::Running,
            RunUpdate {
                version: Some(SHA_B.into()),
                previous_version: Some(SHA_A.into()),
                started_at_ms: Some(1_000),
                ..RunUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(started.state, RunState::Running);
    assert_eq!(
        (
            started.version.as_deref(),
            started.previous_version.as_deref(),
            started.started_at_ms
        ),
        (Some(SHA_B), Some(SHA_A), Some(1_000))
    );
    assert_eq!(store.run_get(run.id).await.unwrap(), Some(started.clone()));

    let parked = store
        .run_transition(
            run.id,
            &[RunState::Running],
            RunState::AwaitingApproval,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        parked,
        RunRecord {
            state: RunState::AwaitingApproval,
            ..started.clone()
        },
        "None leaves columns"
    );
    let resumed = store
        .run_transition(
            run.id,
            &[RunState::Queued, RunState::AwaitingApproval],
            RunState::Running,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    assert_eq!(resumed.state, RunState::Running);
    let failed = store
        .run_transition(
            run.id,
            &[RunState::Running, RunState::AwaitingApproval],
            RunState::Failed,
            RunUpdate {
                ended_at_ms: Some(2_000),
                failed_stage: Some(Stage::DeployServices),
                error: Some("health check of web failed".into()),
                ..RunUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert_eq!(
        (failed.ended_at_ms, failed.failed_stage),
        (Some(2_000), Some(Stage::DeployServices))
    );
    assert_eq!(failed.error.as_deref(), Some("health check of web failed"));
    assert_eq!(
        (failed.version.as_deref(), failed.started_at_ms),
        (Some(SHA_B), Some(1_000))
    );
}

/// An illegal move or a stale `from` is a conflict naming the current state; nothing is written.
pub async fn illegal_transitions_conflict_and_write_nothing(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    let update = || RunUpdate {
        version: Some(SHA_A.into()),
        error: Some("should not be written".into()),
        ..RunUpdate::default()
    };
    // Legal from `from`, but not from the state the run is in.
    let err = store
        .run_transition(run.id, &[RunState::Queued], RunState::Succeeded, update())
        .await
        .unwrap_err();
    let message = err.to_string();
    match err {
        StoreError::RunStateConflict {
            id,
            current,
            wanted,
            message,
        } => {
            assert_eq!(
                (id, current, wanted),
                (run.id, RunState::Queued, RunState::Succeeded)
            );
            assert!(
                message.contains("queued run cannot become succeeded"),
                "{message}"
            );
        }
        other => panic!("expected RunStateConflict, got {other:?}"),
    }
    assert!(
        message.contains(&format!("run {} is queued", run.id)),
        "{message}"
    );
    // A legal move, but the caller believed the run was in another state.
    match store
        .run_transition(run.id, &[RunState::Running], RunState::Cancelled, update())
        .await
    {
        Err(StoreError::RunStateConflict {
            current: RunState::Queued,
            wanted: RunState::Cancelled,
            message,
            ..
        }) => {
            assert!(
                message.contains("running"),
                "the message names the expected state: {message}"
            )
        }
        other => panic!("expected RunStateConflict for a stale from, got {other:?}"),
    }
    assert_eq!(
        store.run_get(run.id).await.unwrap(),
        Some(run.clone()),
        "a conflict wrote something"
    );

    let cancelled = store
        .run_transition(
            run.id,
            &[RunState::Queued],
            RunState::Cancelled,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    for to in RunState::ALL {
        match store.run_transition(run.id, &RunState::ALL, to, update()).await {
            Err(StoreError::RunStateConflict {
                current: RunState::Cancelled,
                message,
                ..
            }) => {
                assert!(message.contains("already ended"), "{message}")
            }
            other => panic!("a cancelled run became {to}: {other:?}"),
        }
    }
    assert_eq!(store.run_get(run.id).await.unwrap(), Some(cancelled));

    match store
        .run_transition(987_654, &[RunState::Queued], RunState::Running, update())
        .await
    {
        Err(StoreError::RunNotFound { id: 987_654 }) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }
}

/// Racing compare-and-sets on one run: exactly one moves it.
pub async fn concurrent_transitions_one_winner(store: Arc<dyn Store>) {
    const RACERS: usize = 10;
    let (run, _) = store
        .run_enqueue(new_run("race-prod", RunKind::Normal))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let to = if i % 2 == 0 {
                    RunState::Running
                } else {
                    RunState::Cancelled
                };
                let update = RunUpdate {
                    error: Some(format!("racer {i}")),
                    ..RunUpdate::default()
                };
                store
                    .run_transition(run.id, &[RunState::Queued], to, update)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(r) => winners.push(r),
            Err(StoreError::RunStateConflict { current, .. }) => assert_ne!(current, RunState::Queued),
            Err(e) => panic!("unexpected error from a racing transition: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing transition may win");
    assert_eq!(store.run_get(run.id).await.unwrap().as_ref(), winners.first());
}

/// Queued, running and awaiting-approval runs of every environment, oldest first.
pub async fn runs_unfinished_lists_queued_and_active_oldest_first(store: &dyn Store) {
    assert!(store.runs_unfinished().await.unwrap().is_empty());
    let mut ids = Vec::new();
    for env in ["a-dev", "b-dev", "c-dev", "d-dev", "e-dev"] {
        ids.push(
            store
                .run_enqueue(new_run(env, RunKind::Normal))
                .await
                .unwrap()
                .0
                .id,
        );
    }
    let moves = [
        (ids[1], RunState::Queued, RunState::Running),
        (ids[2], RunState::Queued, RunState::Running),
        (ids[2], RunState::Running, RunState::AwaitingApproval),
        (ids[3], RunState::Queued, RunState::Running),
        (ids[3], RunState::Running, RunState::Succeeded),
        (ids[4], RunState::Queued, RunState::Cancelled),
    ];
    for (id, from, to) in moves {
        store
            .run_transition(id, &[from], to, RunUpdate::default())
            .await
            .unwrap();
    }
    let unfinished = store.runs_unfinished().await.unwrap();
    assert_eq!(
        states(&unfinished),
        [
            (ids[0], RunState::Queued),
            (ids[1], RunState::Running),
            (ids[2], RunState::AwaitingApproval)
        ]
    );
    assert!(unfinished.iter().all(|r| r.stages.len() == 13));
}

/// `run_update` writes fields without moving the state, and refuses ended runs.
pub async fn run_update_writes_fields_but_not_on_ended_runs(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-dev", RunKind::Normal))
        .await
        .unwrap();
    store
        .run_transition(
            run.id,
            &[RunState::Queued],
            RunState::Running,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    let updated = store
        .run_update(
            run.id,
            RunUpdate {
                version: Some(SHA_B.into()),
                ..RunUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.state, updated.version.as_deref()),
        (RunState::Running, Some(SHA_B))
    );
    store
        .run_transition(
            run.id,
            &[RunState::Running],
            RunState::Succeeded,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    let err = store
        .run_update(
            run.id,
            RunUpdate {
                version: Some(SHA_A.into()),
                ..RunUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RunStateConflict { .. }), "{err}");
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().version.as_deref(),
        Some(SHA_B)
    );
    assert!(matches!(
        store.run_update(9_999, RunUpdate::default()).await,
        Err(StoreError::RunNotFound { .. })
    ));
}

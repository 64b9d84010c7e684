//! Conformance: the stages of a run (status, times, the run's current stage).

use cutover_core::{RunKind, Stage, StageStatus};

use super::{new_run, wall_ms};
use crate::{RunRecord, Store, StoreError};

/// Running stamps the start and the run's current stage; a done status stamps the end.
pub async fn stage_update_sets_times_and_current_stage(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-stage", RunKind::Normal))
        .await
        .unwrap();
    let stage_of = |run: &RunRecord, stage: Stage| run.stages[stage.index()].clone();
    let before = wall_ms();
    store
        .stage_update(run.id, Stage::Source, StageStatus::Running, None)
        .await
        .unwrap();
    let now = store.run_get(run.id).await.unwrap().unwrap();
    let source = stage_of(&now, Stage::Source);
    assert_eq!(now.current_stage, Some(Stage::Source));
    assert_eq!(
        (source.status, source.ended_at_ms, source.note),
        (StageStatus::Running, None, None)
    );
    let started = source.started_at_ms.expect("running stamps the start");
    assert!(before <= started && started <= wall_ms());

    store
        .stage_update(
            run.id,
            Stage::Source,
            StageStatus::Succeeded,
            Some("resolved main"),
        )
        .await
        .unwrap();
    store
        .stage_update(run.id, Stage::VersionInfo, StageStatus::Running, None)
        .await
        .unwrap();
    store
        .stage_update(run.id, Stage::VersionInfo, StageStatus::Succeeded, None)
        .await
        .unwrap();
    store
        .stage_update(
            run.id,
            Stage::Approval,
            StageStatus::Skipped,
            Some("not required on stage"),
        )
        .await
        .unwrap();
    let now = store.run_get(run.id).await.unwrap().unwrap();
    let source = stage_of(&now, Stage::Source);
    assert_eq!(
        (source.status, source.started_at_ms),
        (StageStatus::Succeeded, Some(started))
    );
    assert!(source.ended_at_ms.is_some_and(|e| e >= started));
    assert_eq!(source.note.as_deref(), Some("resolved main"));
    let info = stage_of(&now, Stage::VersionInfo);
    assert!(info.started_at_ms.is_some() && info.ended_at_ms.is_some() && info.note.is_none());
    let approval = stage_of(&now, Stage::Approval);
    assert_eq!(
        (approval.status, approval.started_at_ms),
        (StageStatus::Skipped, None)
    );
    assert!(approval.ended_at_ms.is_some());
    assert_eq!(approval.note.as_deref(), Some("not required on stage"));
    assert_eq!(
        now.current_stage,
        Some(Stage::VersionInfo),
        "only running moves the current stage"
    );
    assert_eq!(stage_of(&now, Stage::Build).status, StageStatus::Pending);

    // A note of None keeps the note; a stage run again gets a fresh start and no end.
    store
        .stage_update(run.id, Stage::Approval, StageStatus::Running, None)
        .await
        .unwrap();
    let approval = stage_of(&store.run_get(run.id).await.unwrap().unwrap(), Stage::Approval);
    assert_eq!(
        (approval.status, approval.ended_at_ms),
        (StageStatus::Running, None)
    );
    assert!(approval.started_at_ms.is_some());
    assert_eq!(approval.note.as_deref(), Some("not required on stage"));

    match store
        .stage_update(424_242, Stage::Source, StageStatus::Running, None)
        .await
    {
        Err(StoreError::RunNotFound { id: 424_242 }) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }
}

/// Only pending stages become not-run; the others keep their status and times.
pub async fn stages_mark_not_run_touches_only_pending(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    let (other, _) = store
        .run_enqueue(new_run("shop-stage", RunKind::Normal))
        .await
        .unwrap();
    store
        .stage_update(run.id, Stage::Source, StageStatus::Succeeded, None)
        .await
        .unwrap();
    store
        .stage_update(run.id, Stage::VersionInfo, StageStatus::Running, None)
        .await
        .unwrap();
    store
        .stage_update(
            run.id,
            Stage::VersionInfo,
            StageStatus::Failed,
            Some("git failed"),
        )
        .await
        .unwrap();
    let before = store.run_get(run.id).await.unwrap().unwrap();
    store.stages_mark_not_run(run.id).await.unwrap();
    let after = store.run_get(run.id).await.unwrap().unwrap();
    let statuses: Vec<StageStatus> = after.stages.iter().map(|s| s.status).collect();
    let mut expected = vec![StageStatus::Succeeded, StageStatus::Failed];
    expected.resize(13, StageStatus::NotRun);
    assert_eq!(statuses, expected);
    assert_eq!(after.stages[..2], before.stages[..2], "done stages are untouched");
    assert!(
        after.stages[2..]
            .iter()
            .all(|s| s.started_at_ms.is_none() && s.ended_at_ms.is_none())
    );
    assert_eq!(
        store.run_get(other.id).await.unwrap(),
        Some(other),
        "other runs are untouched"
    );
    match store.stages_mark_not_run(555_555).await {
        Err(StoreError::RunNotFound { id: 555_555 }) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }
}

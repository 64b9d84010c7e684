//! Conformance: run logs (gapless seqs, filtered reads), approvals, and text
//! the store refuses on runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use cutover_core::{RunKind, Stage};
use tokio::sync::Barrier;

use super::{new_run, wall_ms};
use crate::{Decision, RunLogLine, Store, StoreError};

fn seqs(lines: &[RunLogLine]) -> Vec<i64> {
    lines.iter().map(|l| l.seq).collect()
}

/// 10 tasks append to one run at once: seqs are 1..=n, each handed out once.
pub async fn concurrent_log_appends_are_gapless(store: Arc<dyn Store>) {
    const APPENDERS: usize = 10;
    const EACH: usize = 20;
    let (run, _) = store
        .run_enqueue(new_run("logs-prod", RunKind::Normal))
        .await
        .unwrap();
    let (other, _) = store
        .run_enqueue(new_run("logs-stage", RunKind::Normal))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(APPENDERS + 1));
    let mut tasks: Vec<_> = (0..APPENDERS)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                for j in 0..EACH {
                    let stage = Stage::ALL[i % Stage::ALL.len()];
                    got.push(
                        store
                            .log_append(run.id, stage, &format!("{i}-{j}"))
                            .await
                            .unwrap()
                            .seq,
                    );
                }
                got
            })
        })
        .collect();
    // Another run's log, appended at the same time, numbers its own lines.
    let (store2, barrier2) = (store.clone(), barrier.clone());
    tasks.push(tokio::spawn(async move {
        barrier2.wait().await;
        let mut got = Vec::new();
        for j in 0..EACH {
            got.push(
                store2
                    .log_append(other.id, Stage::Build, &format!("other-{j}"))
                    .await
                    .unwrap()
                    .seq,
            );
        }
        got
    }));
    let other_seqs = tasks.pop().unwrap().await.unwrap();
    assert_eq!(
        other_seqs,
        (1..=EACH as i64).collect::<Vec<_>>(),
        "seqs are per run"
    );
    let mut handed_out = BTreeSet::new();
    for task in tasks {
        let got = task.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "one appender's seqs increase: {got:?}"
        );
        for seq in got {
            assert!(handed_out.insert(seq), "seq {seq} handed out twice");
        }
    }
    let total = (APPENDERS * EACH) as i64;
    assert_eq!(
        handed_out,
        (1..=total).collect::<BTreeSet<_>>(),
        "seqs must be gapless"
    );

    // Read back in pages, in order; every line exactly once.
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store.log_read(run.id, None, after, 64).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        read.extend(page);
    }
    assert_eq!(seqs(&read), (1..=total).collect::<Vec<_>>());
    let lines: BTreeSet<&str> = read.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(lines.len(), APPENDERS * EACH, "a line was lost");
    assert!(read.iter().all(|l| l.run_id == run.id));
}

/// Reads return lines after `after_seq`, of one stage if asked, at most `limit`.
pub async fn log_read_filters_by_stage_and_after_seq(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    assert!(store.log_read(run.id, None, 0, 100).await.unwrap().is_empty());
    let before = wall_ms();
    let script = [
        (Stage::Source, "resolving main"),
        (Stage::Source, "main is 1111111"),
        (Stage::VersionInfo, "deployment version 1111111"),
        (Stage::Build, "building web"),
        (Stage::Source, "on main: yes"),
        (Stage::Build, "  indented\tline with 'quotes' and 🚀"),
    ];
    for (i, (stage, line)) in script.iter().enumerate() {
        let appended = store.log_append(run.id, *stage, line).await.unwrap();
        assert_eq!(
            (appended.run_id, appended.seq, appended.stage),
            (run.id, i as i64 + 1, *stage)
        );
        assert_eq!(appended.line, *line);
        assert!(appended.at_ms >= before && appended.at_ms <= wall_ms());
    }
    let all = store.log_read(run.id, None, 0, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.iter().map(|l| (l.stage, l.line.as_str())).collect::<Vec<_>>(),
        script.to_vec()
    );
    let source = store.log_read(run.id, Some(Stage::Source), 0, 100).await.unwrap();
    assert_eq!(seqs(&source), [1, 2, 5]);
    assert_eq!(
        seqs(&store.log_read(run.id, Some(Stage::Source), 2, 100).await.unwrap()),
        [5]
    );
    assert_eq!(seqs(&store.log_read(run.id, None, 3, 2).await.unwrap()), [4, 5]);
    assert_eq!(
        seqs(&store.log_read(run.id, Some(Stage::Build), 0, 1).await.unwrap()),
        [4]
    );
    assert!(
        store
            .log_read(run.id, Some(Stage::Install), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.log_read(run.id, None, 6, 100).await.unwrap().is_empty());
    assert!(store.log_read(run.id, None, 0, 0).await.unwrap().is_empty());
    match store.log_append(31_337, Stage::Source, "x").await {
        Err(StoreError::RunNotFound { id: 31_337 }) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }
}

/// Every decision is one row, kept in order with its comment.
pub async fn approvals_are_recorded_in_order(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    let (other, _) = store
        .run_enqueue(new_run("shop-stage", RunKind::Normal))
        .await
        .unwrap();
    assert!(store.approvals(run.id).await.unwrap().is_empty());
    let before = wall_ms();
    let first = store
        .approval_add(run.id, "bob", Decision::Reject, Some("wait for QA"))
        .await
        .unwrap();
    let second = store
        .approval_add(run.id, "carol", Decision::Approve, None)
        .await
        .unwrap();
    store
        .approval_add(other.id, "dave", Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        (
            first.run_id,
            first.actor.as_str(),
            first.decision,
            first.comment.as_deref()
        ),
        (run.id, "bob", Decision::Reject, Some("wait for QA"))
    );
    assert!(before <= first.at_ms && first.at_ms <= second.at_ms && second.at_ms <= wall_ms());
    assert_eq!(store.approvals(run.id).await.unwrap(), [first, second]);
    assert_eq!(store.approvals(other.id).await.unwrap().len(), 1);
    assert_eq!(
        serde_json::to_value(Decision::Approve).unwrap(),
        serde_json::json!("approve")
    );
    assert_eq!(
        serde_json::to_value(Decision::Reject).unwrap(),
        serde_json::json!("reject")
    );
    match store.approval_add(777_777, "bob", Decision::Approve, None).await {
        Err(StoreError::RunNotFound { id: 777_777 }) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }
}

/// NUL in any text of a run is refused and nothing is written.
pub async fn run_text_with_nul_is_refused(store: &dyn Store) {
    let mut bad = new_run("shop-prod", RunKind::Normal);
    bad.reason = Some("because\0".into());
    match store.run_enqueue(bad).await {
        Err(StoreError::InvalidText { field: "reason", .. }) => {}
        other => panic!("expected InvalidText for the reason, got {other:?}"),
    }
    assert!(
        store.run_list(None, 10, None).await.unwrap().is_empty(),
        "a refused run was stored"
    );
    let (run, _) = store
        .run_enqueue(new_run("shop-prod", RunKind::Normal))
        .await
        .unwrap();
    match store.log_append(run.id, Stage::Source, "a\0b").await {
        Err(StoreError::InvalidText {
            field: "log line", ..
        }) => {}
        other => panic!("expected InvalidText for the log line, got {other:?}"),
    }
    assert!(store.log_read(run.id, None, 0, 10).await.unwrap().is_empty());
    assert_eq!(
        store.log_append(run.id, Stage::Source, "ok").await.unwrap().seq,
        1,
        "no seq was used up"
    );
    for (actor, comment, field) in [("b\0b", None, "actor"), ("bob", Some("\0"), "comment")] {
        match store
            .approval_add(run.id, actor, Decision::Approve, comment)
            .await
        {
            Err(StoreError::InvalidText { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected InvalidText for the {field}, got {other:?}"),
        }
    }
    assert!(store.approvals(run.id).await.unwrap().is_empty());
    match store
        .stage_update(
            run.id,
            Stage::Source,
            cutover_core::StageStatus::Skipped,
            Some("\0"),
        )
        .await
    {
        Err(StoreError::InvalidText { field: "note", .. }) => {}
        other => panic!("expected InvalidText for the note, got {other:?}"),
    }
    let update = crate::RunUpdate {
        error: Some("bad\0".into()),
        ..crate::RunUpdate::default()
    };
    match store
        .run_transition(
            run.id,
            &[cutover_core::RunState::Queued],
            cutover_core::RunState::Running,
            update,
        )
        .await
    {
        Err(StoreError::InvalidText { field: "error", .. }) => {}
        other => panic!("expected InvalidText for the error, got {other:?}"),
    }
    assert_eq!(store.run_get(run.id).await.unwrap(), Some(run));
}

//! Conformance: what was written survives closing and reopening the store:
//! parameters and the audit log, and a pipeline run caught mid-way with the
//! scheduler suspended under it.

use cutover_core::{RunKind, RunState, Stage, StageStatus};
use serde_json::json;

use super::{audit, key, keys_of, new_run};
use crate::{Decision, JobRunState, RunUpdate, SchedulerState, Store};

/// First half of the persistence test: write, then the backend closes and reopens.
pub async fn reopen_write(store: &dyn Store) {
    let (a, b) = (key("/keep-prod/desired_version"), key("/keep-prod/db/host"));
    for v in ["one", "two", "three"] {
        store.param_put(&a, v, "alice", None).await.unwrap();
    }
    store.param_put(&b, "db.internal", "bob", Some(0)).await.unwrap();
    store
        .audit_append(audit("alice", "param.put", a.as_str(), json!({ "version": 3 })))
        .await
        .unwrap();
    store
        .audit_append(audit("bob", "param.put", b.as_str(), json!({ "version": 1 })))
        .await
        .unwrap();
}

/// Second half: everything written before the reopen is there, and numbering continues.
pub async fn reopen_check(store: &dyn Store) {
    let (a, b) = (key("/keep-prod/desired_version"), key("/keep-prod/db/host"));
    let history = store.param_history(&a).await.unwrap();
    let seen: Vec<_> = history.iter().map(|p| (p.version, p.value.as_str())).collect();
    assert_eq!(seen, [(3, "three"), (2, "two"), (1, "one")]);
    assert_eq!(
        keys_of(&store.param_list("/keep-prod").await.unwrap()),
        [b.as_str(), a.as_str()]
    );
    let log = store.audit_list(10, None).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
        ["bob", "alice"]
    );
    assert_eq!(log[1].detail, json!({ "version": 3 }));
    assert_eq!(
        store
            .param_put(&a, "four", "carol", Some(3))
            .await
            .unwrap()
            .version,
        4
    );
    let next = store
        .audit_append(audit("carol", "param.put", a.as_str(), json!(null)))
        .await
        .unwrap();
    assert!(next.id > log[0].id, "audit ids continue after a reopen");
}

const SHA: &str = "cccccccccccccccccccccccccccccccccccccccc";

/// First half of the run persistence test: a run stopped in Deploy services,
/// with logs, an approval, a suspended scheduler and a running job.
pub async fn runs_reopen_write(store: &dyn Store) {
    let (run, _) = store
        .run_enqueue(new_run("keep-prod", RunKind::Normal))
        .await
        .unwrap();
    store
        .run_enqueue(new_run("keep-stage", RunKind::Normal))
        .await
        .unwrap();
    let started = RunUpdate {
        version: Some(SHA.into()),
        started_at_ms: Some(5_000),
        ..RunUpdate::default()
    };
    store
        .run_transition(run.id, &[RunState::Queued], RunState::Running, started)
        .await
        .unwrap();
    for stage in &Stage::ALL[..Stage::DeployServices.index()] {
        store
            .stage_update(run.id, *stage, StageStatus::Running, None)
            .await
            .unwrap();
        store
            .log_append(run.id, *stage, &format!("{} done", stage.slug()))
            .await
            .unwrap();
        store
            .stage_update(run.id, *stage, StageStatus::Succeeded, None)
            .await
            .unwrap();
    }
    store
        .approval_add(run.id, "bob", Decision::Approve, Some("ship it"))
        .await
        .unwrap();
    store
        .stage_update(
            run.id,
            Stage::DeployServices,
            StageStatus::Running,
            Some("web 1/2"),
        )
        .await
        .unwrap();
    store
        .log_append(run.id, Stage::DeployServices, "starting web")
        .await
        .unwrap();
    store
        .scheduler_put(&SchedulerState {
            env: "keep-prod".into(),
            suspended: true,
            reason: Some(format!("run {} is deploying", run.id)),
            version: None,
            pending_version: Some(SHA.into()),
            updated_at_ms: 0,
            updated_by: "pipeline".into(),
        })
        .await
        .unwrap();
    let job = store
        .job_run_start("keep-prod", "reindex", SHA, "manual")
        .await
        .unwrap();
    store.job_log_append(job.id, "halfway").await.unwrap();
}

/// Second half: the run is found unfinished exactly where it stopped, and
/// its log, approvals, the scheduler and the job continue from there.
pub async fn runs_reopen_check(store: &dyn Store) {
    let unfinished = store.runs_unfinished().await.unwrap();
    assert_eq!(
        unfinished
            .iter()
            .map(|r| (r.env.as_str(), r.state))
            .collect::<Vec<_>>(),
        [("keep-prod", RunState::Running), ("keep-stage", RunState::Queued)]
    );
    let run = &unfinished[0];
    assert_eq!(
        (run.version.as_deref(), run.started_at_ms),
        (Some(SHA), Some(5_000))
    );
    assert_eq!(run.current_stage, Some(Stage::DeployServices));
    let done = Stage::DeployServices.index();
    assert!(
        run.stages[..done]
            .iter()
            .all(|s| s.status == StageStatus::Succeeded && s.ended_at_ms.is_some())
    );
    assert_eq!(run.stages[done].status, StageStatus::Running);
    assert_eq!(run.stages[done].note.as_deref(), Some("web 1/2"));
    assert!(
        run.stages[done + 1..]
            .iter()
            .all(|s| s.status == StageStatus::Pending)
    );
    assert_eq!(store.run_get(run.id).await.unwrap().as_ref(), Some(run));

    let log = store.log_read(run.id, None, 0, 100).await.unwrap();
    assert_eq!(log.len(), done + 1);
    assert_eq!(
        log.last().map(|l| (l.seq, l.line.as_str())),
        Some((done as i64 + 1, "starting web"))
    );
    assert_eq!(
        store
            .log_append(run.id, Stage::DeployServices, "after restart")
            .await
            .unwrap()
            .seq,
        done as i64 + 2,
        "log seqs continue after a reopen"
    );
    let approvals = store.approvals(run.id).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].comment.as_deref(), Some("ship it"));

    let scheduler = store.scheduler_get("keep-prod").await.unwrap().unwrap();
    assert!(scheduler.suspended);
    assert_eq!(scheduler.pending_version.as_deref(), Some(SHA));
    let jobs = store.job_runs_unfinished().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        store.job_log_read(jobs[0].id, 0, 10).await.unwrap()[0].2,
        "halfway"
    );
    assert_eq!(store.job_log_append(jobs[0].id, "again").await.unwrap(), 2);
    store
        .job_run_finish(
            jobs[0].id,
            JobRunState::Interrupted,
            None,
            Some("server restarted"),
        )
        .await
        .unwrap();

    let ended = store
        .run_transition(
            run.id,
            &[RunState::Running],
            RunState::Interrupted,
            RunUpdate::default(),
        )
        .await
        .unwrap();
    assert_eq!(ended.state, RunState::Interrupted);
    let (next, superseded) = store
        .run_enqueue(new_run("keep-stage", RunKind::Normal))
        .await
        .unwrap();
    assert_eq!(superseded, [unfinished[1].id]);
    assert!(next.id > run.id, "run ids continue after a reopen");
}

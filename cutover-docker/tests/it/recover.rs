//! A server that detaches leaves its containers running; the next server on
//! the same data directory adopts those that run (unclaimed, untouched,
//! serving throughout), claims them with the right spec only, and removes
//! what does not run and the one-off task containers a run left. Other
//! servers' containers are never touched.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, StopContainerOptionsBuilder};
use cutover_docker::{TASK_IMAGE_VAR, labels};
use cutover_runtime::{InstanceState, RecoveryAction, Runtime, RuntimeError, TaskExit, TaskSpec};
use tokio_util::sync::CancellationToken;

use crate::support::{
    Cleanup, Fixture, Load, RemoveImage, SHA, chain, connect, container_exists, container_labels,
    quick_health,
};

/// Whether the engine says the container runs.
async fn running(rt: &cutover_docker::DockerRuntime, id: &str) -> bool {
    rt.docker()
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|c| c.state?.running)
        .unwrap_or(false)
}

#[tokio::test]
async fn a_detached_servers_running_containers_are_adopted_and_serve_throughout() {
    let f = Fixture::new("itadopt").await;
    let _image = RemoveImage(f.tag());
    let state = f.dir.path().join("state");
    let a = f.rt.start(f.spec(0)).await.expect("start replica 0");
    let b = f.rt.start(f.spec(1)).await.expect("start replica 1");
    let c = f.rt.start(f.spec(2)).await.expect("start replica 2");
    for s in [&a, &b, &c] {
        assert_eq!(s.owner.pid, std::process::id());
        assert!(!s.owner.adopted, "{s:#?}");
        assert_eq!(
            s.owner.since, s.created_at,
            "started here: owned since its creation"
        );
        f.rt.wait_healthy(&s.id, "/health", &quick_health())
            .await
            .expect("healthy");
    }
    let load = Load::start(a.addr);
    // Replica 2 was stopped before the next server looks: it is not adopted.
    let stop = StopContainerOptionsBuilder::new().t(1).build();
    f.rt.docker()
        .stop_container(c.id.as_str(), Some(stop))
        .await
        .expect("docker stop");
    // A one-off task container of a run of the previous server.
    let task =
        f.rt.docker()
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::new()
                        .name(&format!("itadopt-task-{}", std::process::id()))
                        .build(),
                ),
                ContainerCreateBody {
                    image: Some("cutover-base:latest".into()),
                    cmd: Some(vec!["sleep".into(), "60".into()]),
                    labels: Some(HashMap::from([
                        (labels::OWNER.to_owned(), f.rt.owner().to_owned()),
                        (labels::RUNTIME.to_owned(), "a-previous-server".to_owned()),
                        (labels::TASK.to_owned(), "migrate hook".to_owned()),
                    ])),
                    ..Default::default()
                },
            )
            .await
            .expect("create a task container")
            .id;
    f.rt.docker()
        .start_container(&task, None)
        .await
        .expect("start the task container");

    // A hook of a run of this server, running when it detaches.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let hook = TaskSpec {
        label: "install hook".into(),
        command: "echo started; exec sleep 60".into(),
        dir: f.release(),
        env_vars: vec![(TASK_IMAGE_VAR.into(), f.tag())],
        timeout: Duration::from_secs(60),
    };
    let runtime = f.rt.clone();
    let hook = tokio::spawn(async move { runtime.run_task(hook, lines_tx, CancellationToken::new()).await });
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.recv().await {
            if line.text == "started" {
                return;
            }
        }
        panic!("the hook ended before it started");
    })
    .await
    .expect("the hook started");

    f.rt.detach().await.expect("detach");
    // A run ends with its server: its hook was cancelled (and removed).
    let outcome = hook.await.expect("the hook's task").expect("run_task");
    assert_eq!(outcome.exit, TaskExit::Cancelled);
    let (lines_tx, _lines) = tokio::sync::mpsc::unbounded_channel();
    let refused =
        f.rt.run_task(
            TaskSpec {
                label: "job".into(),
                command: "true".into(),
                dir: f.release(),
                env_vars: vec![(TASK_IMAGE_VAR.into(), f.tag())],
                timeout: Duration::from_secs(5),
            },
            lines_tx,
            CancellationToken::new(),
        )
        .await;
    assert!(matches!(refused, Err(RuntimeError::ShutDown)), "{refused:?}");
    assert!(matches!(f.rt.start(f.spec(3)).await, Err(RuntimeError::ShutDown)));
    for s in [&a, &b] {
        assert!(running(&f.rt, s.id.as_str()).await, "detach stopped {}", s.id);
    }

    // The next server on the same data directory.
    let next = connect(&state).await;
    let before = now_ms();
    let recovery = next.recover_adopting().await.expect("recover");
    let mut adopted: Vec<_> = recovery.adopted.iter().map(|s| (s.id.clone(), s.port)).collect();
    adopted.sort();
    let mut expected = vec![(a.id.clone(), a.port), (b.id.clone(), b.port)];
    expected.sort();
    assert_eq!(adopted, expected, "{recovery:#?}");
    let removed = &recovery.report.instances;
    assert_eq!(removed.len(), 2, "{recovery:#?}");
    let stopped = removed
        .iter()
        .find(|r| r.state.as_ref().map(|s| &s.id) == Some(&c.id))
        .expect("the stopped instance is reported");
    assert_eq!(stopped.action, RecoveryAction::AlreadyGone, "{stopped:#?}");
    let task_entry = removed
        .iter()
        .find(|r| r.state.is_none())
        .expect("the task container");
    assert!(
        matches!(task_entry.action, RecoveryAction::Terminated { .. }),
        "{task_entry:#?}"
    );
    assert!(
        !container_exists(&next, c.id.as_str()).await,
        "the stopped instance is still there"
    );
    assert!(
        !container_exists(&next, &task).await,
        "the task container is still there"
    );
    // Nothing more the second time; the adopted stay adopted.
    assert!(next.recover().await.expect("recover again").instances.is_empty());

    let status = next.status().await.expect("status");
    assert_eq!(status.len(), 2, "{status:#?}");
    for (s, old) in status.iter().zip([&a, &b]) {
        assert_eq!((&s.id, s.port, s.replica), (&old.id, old.port, old.replica));
        assert_eq!(s.state, InstanceState::Running, "{s:#?}");
        assert_eq!(s.version.as_ref().map(|v| v.as_str()), Some(SHA));
        assert!(s.owner.adopted, "{s:#?}");
        assert_eq!(s.owner.pid, std::process::id());
        assert!(s.owner.since >= before && s.owner.since <= now_ms(), "{s:#?}");
    }
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(next.unclaimed(), both);

    // A claim names what runs, or it is refused.
    let mut wrong = f.spec(0);
    wrong.replica = 1;
    let err = next.adopt(&a.id, wrong).await.expect_err("wrong replica");
    assert!(
        chain(&err).contains("adopt it with the spec it was started with"),
        "{}",
        chain(&err)
    );
    let mut wrong = f.spec(0);
    wrong.version = cutover_core::Version::parse(&"e".repeat(40)).unwrap();
    assert!(next.adopt(&a.id, wrong).await.is_err(), "wrong version");
    assert!(next.unclaimed().contains(&a.id));
    let claimed = next.adopt(&a.id, f.spec(0)).await.expect("adopt");
    assert!(claimed.owner.adopted && claimed.id == a.id, "{claimed:#?}");
    assert_eq!(next.unclaimed(), vec![b.id.clone()]);
    next.wait_healthy(&a.id, "/health", &quick_health())
        .await
        .expect("the adopted instance is healthy");

    // Only what recover found can be adopted.
    let own = next.start(f.spec(4)).await.expect("start on the next server");
    assert!(
        !own.owner.adopted && own.owner.since == own.created_at,
        "{own:#?}"
    );
    let err = next.adopt(&own.id, f.spec(4)).await.expect_err("not adoptable");
    assert!(
        chain(&err).contains("was not found by recover"),
        "{}",
        chain(&err)
    );

    // It answered the whole time, across detach, recover and adopt.
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:?}",
        failures.len(),
        answered + failures.len() as u64
    );
    assert!(answered > 0);

    // An unclaimed instance is stoppable; so is a claimed one.
    next.stop(&b.id).await.expect("stop the unclaimed instance");
    assert!(!container_exists(&next, b.id.as_str()).await);
    next.stop(&a.id).await.expect("stop the claimed instance");
    assert!(!container_exists(&next, a.id.as_str()).await);
    assert_eq!(next.shutdown().await.expect("shutdown").len(), 1);
    assert!(!container_exists(&next, own.id.as_str()).await);
}

#[tokio::test]
async fn recover_leaves_its_own_and_other_servers_containers_alone() {
    let f = Fixture::new("itrecover").await;
    let _image = RemoveImage(f.tag());
    let state = f.dir.path().join("state");
    // The "previous server" (never detached: killed); its instance runs on.
    let left = f.rt.start(f.spec(0)).await.expect("start");
    // Another server (another data directory) must not be touched.
    let other_dir = tempfile::tempdir().unwrap();
    let other = connect(other_dir.path()).await;
    let _cleanup = Cleanup(other.owner().to_owned());
    let foreign = other.start(f.spec(1)).await.expect("start");

    // The next server on the same data directory.
    let next = connect(&state).await;
    let own = next.start(f.spec(2)).await.expect("start");
    let recovery = next.recover_adopting().await.expect("recover");
    assert!(recovery.report.instances.is_empty(), "{recovery:#?}");
    assert_eq!(recovery.adopted.len(), 1, "{recovery:#?}");
    assert_eq!(recovery.adopted[0].id, left.id);
    assert_eq!(recovery.report.terminated(), 0);
    for id in [&left.id, &own.id, &foreign.id] {
        assert!(running(&next, id.as_str()).await, "recover touched {id}");
    }
    assert_eq!(
        container_labels(&next, own.id.as_str()).await[labels::OWNER],
        next.owner()
    );
    let ids: Vec<_> = next.status().await.unwrap().into_iter().map(|s| s.id).collect();
    assert!(
        ids.contains(&left.id) && ids.contains(&own.id) && !ids.contains(&foreign.id),
        "{ids:?}"
    );

    // Shutdown stops everything this server has, adopted or started.
    assert_eq!(next.shutdown().await.unwrap().len(), 2);
    assert!(!container_exists(&next, own.id.as_str()).await);
    assert!(!container_exists(&next, left.id.as_str()).await);
    assert!(container_exists(&next, foreign.id.as_str()).await);
    other.shutdown().await.unwrap();
    assert!(!container_exists(&other, foreign.id.as_str()).await);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

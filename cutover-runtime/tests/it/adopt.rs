//! Instances outlive their server: `detach` (or the server's death) leaves them running, the
//! next runtime's `recover` adopts them unclaimed, `adopt` claims them.

use std::time::Duration;

use cutover_core::{ServiceName, Version};
use cutover_runtime::{
    InstanceState, InstanceStatus, LogStream, ProcessRuntime, RecoveryAction, Runtime, RuntimeError, os,
};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

const UNCLAIMED_EXIT: &str =
    "exited while not supervised by this server (not its child: exit status unknown)";

/// An instance started by a first runtime, which detached; a second runtime on the same
/// state directory has recovered it (unclaimed).
struct Handover {
    fx: Fixture,
    next: ProcessRuntime,
    first: InstanceStatus,
    guard: KillOnDrop,
}

async fn started_then_handed_over() -> Handover {
    let fx = Fixture::new(Duration::from_secs(5));
    let first = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    let guard = KillOnDrop::new([first.pid.unwrap()]);
    fx.rt
        .wait_healthy(&first.id, "/health", &quick_health())
        .await
        .unwrap();
    fx.rt.detach().await.unwrap();
    let next = ProcessRuntime::new(fx.rt.config().clone()).unwrap();
    let report = next.recover().await.unwrap();
    assert_eq!(
        report
            .instances
            .iter()
            .map(|i| (i.state.as_ref().map(|s| s.id.clone()), i.action.clone()))
            .collect::<Vec<_>>(),
        [(Some(first.id.clone()), RecoveryAction::Adopted)]
    );
    Handover {
        fx,
        next,
        first,
        guard,
    }
}

fn kill(pid: u32) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
}

#[tokio::test]
async fn a_detached_instance_is_adopted_claimed_restarted_by_the_next_runtime_and_stopped() {
    let Handover {
        fx,
        next,
        first,
        guard,
    } = started_then_handed_over().await;
    let pid = first.pid.unwrap();

    // The detached runtime starts nothing more; the instance runs on.
    let err = fx.rt.start(fx.spec(run_testapp(""), 1)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ShutDown), "{err}");
    assert!(os::is_alive(pid));
    assert_eq!(http_get(first.addr, "/pid").await.1, pid.to_string());

    // Listed by the next runtime: same pid and port, adopted by this process.
    let adopted = next.instance(&first.id).await.unwrap();
    assert_eq!(
        (adopted.pid, adopted.port, adopted.state, adopted.restarts),
        (Some(pid), first.port, InstanceState::Running, 0)
    );
    assert_eq!(adopted.version.as_ref(), Some(&version()), "read from /proc");
    assert!(adopted.owner.adopted, "{adopted:?}");
    assert_eq!(adopted.owner.pid, std::process::id());
    assert!(adopted.owner.since >= first.owner.since, "{adopted:?}");
    assert!(!first.owner.adopted);
    let listed = next.status().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, first.id);

    // What it wrote after the detach is in its log, as is the hand-over.
    let log = next.log_tail(&first.id, 50).await.unwrap();
    assert!(log.iter().any(|l| l == "GET /pid"), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("cutover left running for the next server (detached)")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("cutover adopted pid")), "{log:?}");

    // Claimed with the right spec: from now on an exit restarts it, as our own child, and
    // its health path is watched.
    let mut spec = fx.spec(run_testapp(""), 0);
    spec.health_path = Some("/health".into());
    let claimed = next.adopt(&first.id, spec).await.unwrap();
    assert_eq!(claimed.pid, Some(pid));
    assert!(claimed.owner.adopted);
    eventually(
        Duration::from_secs(10),
        "the health monitor's first probe",
        || async { (next.instance(&first.id).await.unwrap().healthy == Some(true)).then_some(()) },
    )
    .await;
    kill(pid);
    let restarted = eventually(Duration::from_secs(10), "a restart", || async {
        let s = next.instance(&first.id).await.unwrap();
        (s.state == InstanceState::Running && s.pid.is_some_and(|p| p != pid)).then_some(s)
    })
    .await;
    let new_pid = restarted.pid.unwrap();
    guard.add(new_pid);
    assert_eq!(restarted.restarts, 1);
    assert_eq!(restarted.port, first.port);
    assert_eq!(
        restarted.last_exit.as_deref(),
        Some("exited (not a child of this server: exit status unknown)")
    );
    next.wait_healthy(&first.id, "/health", &quick_health())
        .await
        .unwrap();
    assert_eq!(http_get(first.addr, "/").await.1, SHA);
    let recorded: cutover_runtime::StateFile =
        serde_json::from_slice(&std::fs::read(fx.rt.config().state_file(&first.id)).unwrap()).unwrap();
    assert_eq!(recorded.pid, new_pid, "the state file follows the restart");

    let outcome = next.stop(&first.id).await.unwrap();
    assert!(outcome.graceful, "{outcome:?}");
    assert!(os::group_gone(new_pid));
    assert!(!fx.rt.config().state_file(&first.id).exists());
    assert!(next.status().await.unwrap().is_empty());
}

#[tokio::test]
async fn adopt_refuses_another_version_or_service_and_changes_nothing() {
    let Handover {
        fx,
        next,
        first,
        guard: _guard,
    } = started_then_handed_over().await;
    let before = next.instance(&first.id).await.unwrap();

    let mut other_version = fx.spec(run_testapp(""), 0);
    other_version.version = Version::parse(&"ab".repeat(20)).unwrap();
    let err = next.adopt(&first.id, other_version).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::AdoptRefused { .. }), "{text}");
    assert!(
        text.contains(&format!("cannot adopt instance {} of shop-staging-web", first.id))
            && text.contains(&format!("it runs version {SHA}, the spec asks for abababab")),
        "{text}"
    );
    let mut other_service = fx.spec(run_testapp(""), 0);
    other_service.service = ServiceName::parse("worker").unwrap();
    let text = next
        .adopt(&first.id, other_service)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("it runs service web, the spec asks for worker"),
        "{text}"
    );
    let unknown = cutover_runtime::InstanceId::parse("abc-r0-000000").unwrap();
    assert!(matches!(
        next.adopt(&unknown, fx.spec(run_testapp(""), 0)).await,
        Err(RuntimeError::UnknownInstance { .. })
    ));
    assert_eq!(next.instance(&first.id).await.unwrap(), before, "nothing changed");

    // Still unclaimed: an exit is not followed by a restart. Then the right spec claims it,
    // and a claim of an instance that exited restarts it.
    kill(first.pid.unwrap());
    eventually(Duration::from_secs(10), "the exit to be seen", || async {
        let s = next.instance(&first.id).await.unwrap();
        (s.state == InstanceState::Backoff).then_some(())
    })
    .await;
    let claimed = next.adopt(&first.id, fx.spec(run_testapp(""), 0)).await.unwrap();
    assert_eq!(claimed.pid, None);
    let restarted = eventually(Duration::from_secs(10), "the restart after the claim", || async {
        let s = next.instance(&first.id).await.unwrap();
        (s.state == InstanceState::Running && s.pid.is_some()).then_some(s)
    })
    .await;
    _guard.add(restarted.pid.unwrap());
    assert_eq!(restarted.restarts, 1);
    assert!(matches!(
        next.adopt(&first.id, fx.spec(run_testapp(""), 0)).await,
        Err(RuntimeError::AdoptRefused { .. })
    ));
    next.shutdown().await.unwrap();
    assert!(os::group_gone(restarted.pid.unwrap()));
}

#[tokio::test]
async fn an_unclaimed_instance_that_exits_is_reported_down_and_not_restarted() {
    let Handover {
        fx,
        next,
        first,
        guard: _guard,
    } = started_then_handed_over().await;
    let pid = first.pid.unwrap();
    kill(pid);
    let down = eventually(Duration::from_secs(10), "the exit to be seen", || async {
        let s = next.instance(&first.id).await.unwrap();
        (s.state == InstanceState::Backoff).then_some(s)
    })
    .await;
    assert_eq!(down.pid, None);
    assert_eq!(down.version, None);
    assert_eq!(down.last_exit.as_deref(), Some(UNCLAIMED_EXIT));
    let log = next.log_tail(&first.id, 20).await.unwrap().join("\n");
    assert!(
        log.contains("not restarted: adopted from a previous server"),
        "{log}"
    );
    // Longer than the fixture's whole back-off (50 ms doubling to 400 ms): no restart came.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = next.instance(&first.id).await.unwrap();
    assert_eq!(
        (later.pid, later.restarts, later.state),
        (None, 0, InstanceState::Backoff)
    );
    assert!(!os::is_alive(pid));

    // Stopping it removes it and its state file.
    let outcome = next.stop(&first.id).await.unwrap();
    assert_eq!(outcome.exit, UNCLAIMED_EXIT);
    assert!(!fx.rt.config().state_file(&first.id).exists());
}

#[tokio::test]
async fn an_adopted_instance_can_be_followed_and_its_stream_ends_with_it() {
    let Handover {
        fx: _fx,
        next,
        first,
        guard: _guard,
    } = started_then_handed_over().await;
    let mut follow = next.follow_logs(&first.id).await.unwrap();
    // The tail starts at the end of the file at subscription: poll until our line comes.
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            assert_eq!(http_get(first.addr, "/slow?ms=1").await.0, 200);
            while let Ok(line) = follow.try_recv() {
                if line.text == "GET /slow?ms=1" {
                    return line;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a followed line");
    assert_eq!(line.stream, LogStream::Stdout);

    next.stop(&first.id).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = follow.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the follow stream did not end with the instance");
}

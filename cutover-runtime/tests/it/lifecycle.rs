//! Start, status, supervision, stop, logs.

use std::time::Duration;

use cutover_runtime::os;
use cutover_runtime::{InstanceState, LogStream, Runtime, RuntimeError, VersionSource};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

#[tokio::test]
async fn two_replicas_start_healthy_and_report_the_version_read_from_proc() {
    let fx = Fixture::new(Duration::from_secs(5));
    let a = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    // The second replica changes directory inside the release: the version
    // is still found in an ancestor of its cwd.
    let b = fx
        .rt
        .start(fx.spec(format!("cd web && {}", run_testapp("")), 1))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_ne!(a.port, b.port);
    for s in [&a, &b] {
        fx.rt
            .wait_healthy(&s.id, "/health", &quick_health())
            .await
            .unwrap();
        let (code, body) = http_get(s.addr, "/").await;
        assert_eq!((code, body.as_str()), (200, SHA));
    }

    let list = fx.rt.status().await.unwrap();
    assert_eq!(list.len(), 2);
    for (s, replica) in list.iter().zip([0, 1]) {
        assert_eq!(s.replica, replica);
        assert_eq!(s.version.as_ref().map(|v| v.as_str()), Some(SHA), "{s:?}");
        assert_eq!(s.version_source, VersionSource::Cwd);
        assert_eq!(s.requested_version, version());
        assert_eq!(s.state, InstanceState::Running);
        assert_eq!(s.healthy, Some(true));
        assert_eq!(s.restarts, 0);
        assert!(s.pid.is_some_and(os::is_alive));
        assert!(s.started_at > 1_600_000_000_000);
        let (code, body) = http_get(s.addr, "/pid").await;
        assert_eq!((code, body.parse::<u32>().ok()), (200, s.pid), "exec replaced sh");
    }
    assert_eq!(
        std::fs::read_dir(fx.rt.config().instances_dir()).unwrap().count(),
        2
    );

    let pids: Vec<u32> = list.iter().filter_map(|s| s.pid).collect();
    let outcomes = fx.rt.shutdown().await.unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.graceful), "{outcomes:?}");
    assert!(pids.iter().all(|p| !os::is_alive(*p)));
    assert!(fx.rt.status().await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(fx.rt.config().instances_dir()).unwrap().count(),
        0
    );
    let err = fx.rt.start(fx.spec(run_testapp(""), 2)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ShutDown), "{err}");
}

#[tokio::test]
async fn a_killed_instance_is_restarted_on_the_same_port() {
    let fx = Fixture::new(Duration::from_secs(5));
    let s = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    fx.rt
        .wait_healthy(&s.id, "/health", &quick_health())
        .await
        .unwrap();
    let old = s.pid.unwrap();
    kill_process(Pid::from_raw(old as i32).unwrap(), Signal::KILL).unwrap();

    let after = eventually(Duration::from_secs(10), "a restart", || async {
        let s = fx.rt.instance(&s.id).await.unwrap();
        (s.state == InstanceState::Running && s.pid.is_some_and(|p| p != old)).then_some(s)
    })
    .await;
    assert_eq!(after.restarts, 1);
    assert_eq!(after.port, s.port);
    assert_eq!(after.last_exit.as_deref(), Some("killed by signal 9 (SIGKILL)"));
    fx.rt
        .wait_healthy(&s.id, "/health", &quick_health())
        .await
        .unwrap();
    assert_eq!(http_get(s.addr, "/").await.1, SHA);

    // An exit the app chose itself is a crash too.
    let _ = http_get(s.addr, "/exit?code=7").await;
    let after = eventually(Duration::from_secs(10), "a second restart", || async {
        let s = fx.rt.instance(&s.id).await.unwrap();
        (s.restarts == 2 && s.state == InstanceState::Running).then_some(s)
    })
    .await;
    assert_eq!(after.last_exit.as_deref(), Some("exit status 7"));
    let log = fx.rt.log_tail(&s.id, 100).await.unwrap().join("\n");
    assert!(
        log.contains("exited unexpectedly (killed by signal 9 (SIGKILL))"),
        "{log}"
    );
    assert!(log.contains("restarting in 50ms"), "{log}");
    assert!(log.contains("restarting in 100ms"), "back-off doubles: {log}");
    fx.rt.stop(&s.id).await.unwrap();
    assert!(matches!(
        fx.rt.instance(&s.id).await,
        Err(RuntimeError::UnknownInstance { .. })
    ));
}

#[tokio::test]
async fn stop_terms_the_whole_process_group() {
    let fx = Fixture::new(Duration::from_secs(5));
    let run = format!("sleep 1000 & {}", run_testapp(""));
    let s = fx.rt.start(fx.spec(run, 0)).await.unwrap();
    fx.rt
        .wait_healthy(&s.id, "/health", &quick_health())
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    let members = os::group_members(pid);
    assert_eq!(members.len(), 2, "testapp and its sleep: {members:?}");

    let outcome = fx.rt.stop(&s.id).await.unwrap();
    assert!(outcome.graceful, "{outcome:?}");
    assert_eq!(outcome.exit, "exit status 0");
    for m in &members {
        assert!(!os::is_alive(*m), "{m} survived the stop");
    }
    assert!(os::group_members(pid).is_empty());
    assert!(!fx.rt.config().state_file(&s.id).exists());
    let spec = fx.spec(String::new(), 0);
    let file = fx
        .rt
        .config()
        .log_file(&spec.app, &spec.env, &spec.service, &s.id);
    let log = std::fs::read_to_string(file).unwrap();
    assert!(log.contains("\nreceived SIGTERM, exiting\n"), "{log}");
    assert!(log.contains("cutover stopped (exit status 0)"), "{log}");
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace_period() {
    let fx = Fixture::new(Duration::from_millis(300));
    let s = fx
        .rt
        .start(fx.spec(run_testapp("IGNORE_TERM=1"), 0))
        .await
        .unwrap();
    fx.rt
        .wait_healthy(&s.id, "/health", &quick_health())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = fx.rt.stop(&s.id).await.unwrap();
    assert!(!outcome.graceful);
    assert_eq!(outcome.exit, "killed by signal 9 (SIGKILL)");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!os::is_alive(s.pid.unwrap()));
}

#[tokio::test]
async fn logs_are_written_by_the_instance_into_a_file_with_timestamped_events_and_can_be_followed() {
    let fx = Fixture::new(Duration::from_secs(5));
    let s = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    let mut follow = fx.rt.follow_logs(&s.id).await.unwrap();
    fx.rt
        .wait_healthy(&s.id, "/health", &quick_health())
        .await
        .unwrap();
    assert_eq!(http_get(s.addr, "/slow?ms=20").await.0, 200);

    let line = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let line = follow.recv().await.unwrap();
            if line.text == "GET /slow?ms=20" {
                return line;
            }
        }
    })
    .await
    .expect("followed line");
    assert_eq!(line.stream, LogStream::Stdout);

    let file = fx
        .dir
        .path()
        .join(format!("state/logs/shop-staging-web-{}.log", s.id));
    let text = std::fs::read_to_string(&file).unwrap();
    // The application's lines as it wrote them; the runtime's events timestamped:
    // 2026-05-01T10:00:00.123Z cutover started pid 42 ...
    assert!(
        text.lines()
            .any(|l| l.starts_with("testapp listening on 127.0.0.1:")),
        "{text}"
    );
    let event = text.lines().find(|l| l.contains("started pid")).unwrap();
    let (stamp, rest) = event.split_once(' ').unwrap();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.contains('T'),
        "{event}"
    );
    assert!(rest.starts_with("cutover started pid"), "{event}");

    let tail = fx.rt.log_tail(&s.id, 1).await.unwrap();
    assert_eq!(tail, ["GET /slow?ms=20"]);

    fx.rt.stop(&s.id).await.unwrap();
    // The follow stream ends after the stop (all senders gone).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = follow.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "follow stream did not end");
}

#[tokio::test]
async fn start_refuses_a_missing_release_dir_and_stop_an_unknown_id() {
    let fx = Fixture::new(Duration::from_secs(5));
    let mut spec = fx.spec(run_testapp(""), 0);
    spec.release_dir = fx.dir.path().join("nope");
    let err = fx.rt.start(spec).await.unwrap_err().to_string();
    assert!(
        err.contains("release directory") && err.contains("shop-staging-web"),
        "{err}"
    );
    let id = cutover_runtime::InstanceId::parse("abc-r0-000000").unwrap();
    assert!(matches!(
        fx.rt.stop(&id).await,
        Err(RuntimeError::UnknownInstance { .. })
    ));
}

/// An empty `run` means "the image's command" on docker/swarm; here it is refused up front
/// (`sh -c ""` would exit at once and look like a crash loop).
#[tokio::test]
async fn start_refuses_an_empty_run_command_saying_how_to_fix_it() {
    let fx = Fixture::new(Duration::from_secs(5));
    let err = fx.rt.start(fx.spec("  ".to_owned(), 0)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NoRunCommand { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("shop-staging-web has no `run` command"),
        "{text}"
    );
    assert!(
        text.contains("add `run:`") && text.contains("docker or swarm"),
        "{text}"
    );
    assert!(fx.rt.status().await.unwrap().is_empty(), "nothing was recorded");
}

/// The server's death (here: its runtime dropped without `detach` or `shutdown`) leaves the
/// instance running, with its state file, for the next server to adopt.
#[tokio::test]
async fn dropping_the_runtime_leaves_its_instances_running() {
    let fx = Fixture::new(Duration::from_secs(5));
    let s = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    let pid = s.pid.unwrap();
    let _guard = KillOnDrop::new([pid]);
    fx.rt
        .wait_healthy(&s.id, "/health", &quick_health())
        .await
        .unwrap();
    let state_file = fx.rt.config().state_file(&s.id);
    let log_file = fx
        .rt
        .config()
        .log_file(&fx.spec(String::new(), 0).app, &s.env, &s.service, &s.id);
    drop(fx.rt);
    eventually(Duration::from_secs(5), "the supervisor to let go", || async {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        log.contains("left running for the next server (detached)")
            .then_some(())
    })
    .await;
    assert!(os::is_alive(pid), "the instance must outlive its runtime");
    assert!(state_file.exists(), "its state file stays for the next server");
    // It still serves, and its output still reaches its log file.
    assert_eq!(http_get(s.addr, "/pid").await.1, pid.to_string());
    eventually(Duration::from_secs(5), "the request in the log", || async {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        log.lines().any(|l| l == "GET /pid").then_some(())
    })
    .await;
}

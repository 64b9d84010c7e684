//! A crashed container is restarted by Docker's restart policy, on the same
//! loopback address.

use std::time::Duration;

use cutover_runtime::{InstanceState, Runtime};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::{Fixture, SHA, http_get, quick_health};

#[tokio::test]
async fn a_killed_container_is_restarted_by_the_restart_policy() {
    let f = Fixture::new("itcrash").await;
    let s = f.rt.start(f.spec(0)).await.expect("start");
    f.rt.wait_healthy(&s.id, "/health", &quick_health())
        .await
        .expect("healthy");
    let before = f.rt.instance(&s.id).await.unwrap();
    assert_eq!(before.restarts, 0);
    let pid = before.pid.expect("a running container has a host pid");

    // SIGKILL to the container's main process from outside: a crash.
    // (`docker kill` would be a manual stop, which Docker never restarts.)
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).expect("pid > 0");
    kill_process(pid, Signal::KILL).expect("kill the container's main process");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let now = f.rt.instance(&s.id).await.expect("still an instance");
        if now.restarts >= 1 && now.state == InstanceState::Running {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "not restarted: {now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.id, s.id);
    assert_eq!(after.addr, s.addr, "a restart keeps the published port");
    assert_ne!(after.pid, before.pid);
    let exit = after.last_exit.clone().unwrap_or_default();
    assert!(exit.contains("137"), "{after:#?}");
    f.rt.wait_healthy(&s.id, "/health", &quick_health())
        .await
        .expect("healthy again");
    assert_eq!(http_get(s.addr, "/version").await, (200, SHA.to_owned()));
    let tail = f.rt.log_tail(&s.id, 50).await.unwrap();
    assert_eq!(
        tail.iter().filter(|l| l.contains("listening on 8080")).count(),
        2,
        "{tail:#?}"
    );
    f.rt.stop(&s.id).await.unwrap();
}

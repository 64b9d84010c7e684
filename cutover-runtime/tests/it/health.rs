//! Health checks and what their failures say.

use std::time::Duration;

use cutover_runtime::{HealthSettings, InstanceState, ProbeResult, Runtime, RuntimeError, VersionSource};

use crate::support::*;

fn short_deadline() -> HealthSettings {
    HealthSettings {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn a_deadline_error_names_the_last_status_and_the_last_log_lines() {
    let fx = Fixture::new(Duration::from_secs(5));
    let s = fx.rt.start(fx.spec(run_testapp("UNHEALTHY=1"), 0)).await.unwrap();
    let err = fx
        .rt
        .wait_healthy(&s.id, "/health", &short_deadline())
        .await
        .unwrap_err();
    let RuntimeError::Unhealthy(report) = &err else {
        panic!("{err}")
    };
    assert_eq!(report.last, "HTTP 503");
    assert!(report.attempts >= 2, "{report:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "instance {} of shop-staging-web was not healthy within 1s",
            s.id
        )),
        "{text}"
    );
    assert!(text.contains("the last saw HTTP 503"), "{text}");
    // The application's lines are in the log as it wrote them (stderr too, no label).
    assert!(
        text.contains("\n  UNHEALTHY=1: /health will answer 503"),
        "{text}"
    );
    assert!(text.contains("\n  GET /health"), "{text}");
    assert_eq!(fx.rt.instance(&s.id).await.unwrap().healthy, Some(false));

    assert_eq!(
        fx.rt
            .probe(&s.id, "/health", Duration::from_secs(1))
            .await
            .unwrap(),
        ProbeResult::Status(503)
    );
    assert_eq!(
        fx.rt.probe(&s.id, "/", Duration::from_secs(1)).await.unwrap(),
        ProbeResult::Status(200)
    );
    assert_eq!(fx.rt.instance(&s.id).await.unwrap().healthy, Some(true));
    assert!(matches!(
        fx.rt.probe(&s.id, "/x y", Duration::from_secs(1)).await,
        Err(RuntimeError::BadHealthPath { .. })
    ));
    fx.rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_crash_looping_instance_reports_refusals_restarts_and_its_output() {
    let fx = Fixture::new(Duration::from_secs(5));
    let s = fx
        .rt
        .start(fx.spec("echo \"boom in $CUTOVER_SERVICE\" >&2; exit 3".into(), 0))
        .await
        .unwrap();
    let err = fx
        .rt
        .wait_healthy(&s.id, "/health", &short_deadline())
        .await
        .unwrap_err();
    let RuntimeError::Unhealthy(report) = &err else {
        panic!("{err}")
    };
    // Refused while it restarts, or given up after three exits in a row, whichever comes first.
    assert!(
        report.last == "connection refused" || report.last.starts_with("no answer: the process exited"),
        "{report:?}"
    );
    assert!(report.restarts >= 2, "{report:?}");
    assert_eq!(report.last_exit.as_deref(), Some("exit status 3"));
    let text = err.to_string();
    assert!(text.contains("\n  boom in web"), "{text}");
    assert!(text.contains("exited unexpectedly (exit status 3)"), "{text}");
    // Between restarts there is no process: the version is unknown, not
    // filled in from memory.
    let waiting = eventually(Duration::from_secs(5), "a back-off snapshot", || async {
        let s = fx.rt.instance(&s.id).await.unwrap();
        (s.state == InstanceState::Backoff).then_some(s)
    })
    .await;
    assert_eq!(
        (waiting.pid, waiting.version, waiting.version_source),
        (None, None, VersionSource::Unavailable)
    );
    let outcome = fx.rt.stop(&s.id).await.unwrap();
    assert!(outcome.graceful);
}

#[tokio::test]
async fn a_probe_of_a_silent_port_times_out() {
    // A listener that accepts but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let r = cutover_runtime::health::probe(addr, "/health", Duration::from_millis(200)).await;
    assert_eq!(r, ProbeResult::Failed("no answer within 200ms".into()));
}

#[tokio::test]
async fn a_health_path_keeps_the_healthy_flag_current_in_the_background() {
    use rustix::process::{Pid, Signal, kill_process};
    let fx = Fixture::new(Duration::from_secs(5));
    let with_path = |prefix: &str, replica, path: &str| {
        let mut spec = fx.spec(run_testapp(prefix), replica);
        spec.health_path = Some(path.into());
        spec
    };
    let good = fx.rt.start(with_path("", 0, "/health")).await.unwrap();
    let bad = fx.rt.start(with_path("UNHEALTHY=1", 1, "/health")).await.unwrap();
    assert_eq!(good.healthy, None);
    for (s, want) in [(&good, true), (&bad, false)] {
        eventually(Duration::from_secs(10), "a background probe", || async {
            (fx.rt.instance(&s.id).await.unwrap().healthy == Some(want)).then_some(())
        })
        .await;
    }
    // After a crash and restart the flag is reset, then probed again.
    let old = good.pid.unwrap();
    kill_process(Pid::from_raw(old as i32).unwrap(), Signal::KILL).unwrap();
    eventually(
        Duration::from_secs(10),
        "healthy again after a restart",
        || async {
            let s = fx.rt.instance(&good.id).await.unwrap();
            (s.pid.is_some_and(|p| p != old) && s.restarts == 1 && s.healthy == Some(true)).then_some(())
        },
    )
    .await;

    let err = fx.rt.start(with_path("", 2, "health")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::BadHealthPath { .. }), "{err}");
    fx.rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_instance_that_keeps_exiting_fails_its_check_long_before_the_deadline() {
    let fx = Fixture::new(Duration::from_secs(5));
    let s = fx.rt.start(fx.spec("exit 3".into(), 0)).await.unwrap();
    let patient = HealthSettings {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(120),
    };
    let err = fx.rt.wait_healthy(&s.id, "/health", &patient).await.unwrap_err();
    let RuntimeError::Unhealthy(report) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        report.last, "no answer: the process exited 3 times in a row (last: exit status 3)",
        "{report:?}"
    );
    fx.rt.stop(&s.id).await.unwrap();
}

//! Build, start, health, status, logs, stop.

use std::time::Duration;

use bollard::query_parameters::RemoveImageOptionsBuilder;
use cutover_core::Version;
use cutover_docker::{DockerConfig, DockerError, DockerRuntime, labels};
use cutover_runtime::{InstanceState, LogStream, Runtime, RuntimeError, VersionSource};
use tokio::sync::mpsc;

use crate::support::{Fixture, SHA, chain, container_exists, container_labels, http_get, quick_health};

#[tokio::test]
async fn a_build_is_skipped_when_the_tag_exists_and_fails_clearly_without_a_base() {
    let f = Fixture::new("itbuild").await;
    // Start from scratch: Fixture::new may have found the tag of a previous run.
    let options = RemoveImageOptionsBuilder::new().force(true).build();
    f.rt.docker()
        .remove_image(&f.tag(), Some(options), None)
        .await
        .expect("remove the image");
    assert!(!f.rt.image_exists(&f.tag()).await.unwrap());

    let (tx, mut rx) = mpsc::unbounded_channel();
    let built =
        f.rt.build_image(&f.release(), "Dockerfile", &f.tag(), tx)
            .await
            .expect("build");
    assert!(!built.skipped);
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("FROM cutover-base:latest")),
        "{lines:#?}"
    );
    assert!(f.rt.image_exists(&f.tag()).await.unwrap());

    let (tx, mut rx) = mpsc::unbounded_channel();
    let again =
        f.rt.build_image(&f.release(), "Dockerfile", &f.tag(), tx)
            .await
            .expect("build");
    assert!(again.skipped);
    assert!(rx.try_recv().unwrap().contains("skipped"));

    // No registry: a base image that is not local fails with a hint.
    std::fs::write(
        f.release().join("Dockerfile.bad"),
        "FROM cutover-no-such-base:1\n",
    )
    .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let err =
        f.rt.build_image(&f.release(), "Dockerfile.bad", "itbuild-test-bad:1", tx)
            .await
            .expect_err("no such base image");
    assert!(matches!(err, DockerError::Build { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing is pulled"), "{err}");

    let (tx, _rx) = mpsc::unbounded_channel();
    let err =
        f.rt.build_image(&f.release(), "../Dockerfile", "itbuild-test-bad:2", tx)
            .await;
    assert!(
        matches!(err, Err(DockerError::BadDockerfilePath { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn two_instances_serve_on_loopback_report_their_image_and_are_removed_by_stop() {
    let f = Fixture::new("itlife").await;
    let a = f.rt.start(f.spec(0)).await.expect("start replica 0");
    let b = f.rt.start(f.spec(1)).await.expect("start replica 1");
    let mut follow = f.rt.follow_logs(&a.id).await.unwrap();
    for s in [&a, &b] {
        assert!(s.addr.ip().is_loopback(), "{}", s.addr);
        f.rt.wait_healthy(&s.id, "/health", &quick_health())
            .await
            .expect("healthy");
        assert_eq!(http_get(s.addr, "/version").await, (200, SHA.to_owned()));
    }
    assert_ne!(a.addr, b.addr);

    let status = f.rt.status().await.unwrap();
    assert_eq!(status.len(), 2, "{status:#?}");
    for (s, replica) in status.iter().zip([0, 1]) {
        assert_eq!(s.replica, replica);
        assert_eq!(s.version.as_ref().map(Version::as_str), Some(SHA), "{s:#?}");
        assert_eq!(s.version_source, VersionSource::ImageTag);
        assert_eq!(s.requested_version.as_str(), SHA);
        assert_eq!(s.state, InstanceState::Running);
        assert_eq!(s.restarts, 0);
        assert_eq!(s.healthy, Some(true));
        assert!(s.pid.is_some() && s.started_at > 0 && s.created_at > 0, "{s:#?}");
        // The id is the container's: the engine knows it by that id.
        let c =
            f.rt.docker()
                .inspect_container(s.id.as_str(), None)
                .await
                .unwrap();
        assert_eq!(c.config.as_ref().and_then(|c| c.image.clone()), Some(f.tag()));
        let bindings = c.host_config.and_then(|h| h.port_bindings).unwrap();
        let binding = bindings["8080/tcp"].as_ref().unwrap()[0].clone();
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port, Some(s.port.to_string()));
        let l = container_labels(&f.rt, s.id.as_str()).await;
        assert_eq!(l[labels::APP], "itlife");
        assert_eq!(l[labels::ENV], "test");
        assert_eq!(l[labels::SERVICE], "web");
        assert_eq!(l[labels::VERSION], SHA);
        assert!(
            l[labels::INSTANCE].starts_with("itlife-test-web-d0c4e12a-r"),
            "{l:?}"
        );
    }

    let tail = f.rt.log_tail(&a.id, 50).await.unwrap();
    assert!(
        tail.iter()
            .any(|l| l.contains("stdout listening on 8080 as itlife-test-web-")),
        "{tail:#?}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let line = follow.recv().await.expect("log line");
            // busybox httpd -vv logs each request on stderr.
            if line.stream == LogStream::Stderr && line.text.contains("url:/version") {
                return line;
            }
        }
    })
    .await
    .expect("the follower saw a request line");
    assert!(seen.at > 0);

    for s in [&a, &b] {
        let out = f.rt.stop(&s.id).await.expect("stop");
        assert!(out.graceful, "{out:?}");
        assert!(
            !container_exists(&f.rt, s.id.as_str()).await,
            "container {} is left",
            s.id
        );
    }
    assert!(f.rt.status().await.unwrap().is_empty());
    assert!(matches!(
        f.rt.instance(&a.id).await,
        Err(RuntimeError::UnknownInstance { .. })
    ));
    // The follow stream ends with the instance.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = follow.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the follow stream did not end after stop");
}

#[tokio::test]
async fn an_unhealthy_instance_reports_status_and_logs_and_a_missing_image_says_build_it() {
    let f = Fixture::new("itsick").await;
    let mut spec = f.spec(0);
    spec.health_path = None; // no background probes: only ours count
    let s = f.rt.start(spec).await.expect("start");
    let mut settings = quick_health();
    settings.deadline = Duration::from_secs(2);
    let err =
        f.rt.wait_healthy(&s.id, "/no-such-page", &settings)
            .await
            .expect_err("404");
    let RuntimeError::Unhealthy(report) = err else {
        panic!("{err:?}")
    };
    assert_eq!(report.last, "HTTP 404");
    assert!(
        report.log_tail.iter().any(|l| l.contains("url:/no-such-page")),
        "{report}"
    );
    assert_eq!(f.rt.instance(&s.id).await.unwrap().healthy, Some(false));
    f.rt.stop(&s.id).await.unwrap();

    let mut spec = f.spec(0);
    spec.version = Version::parse(&"e".repeat(40)).unwrap();
    let err = f.rt.start(spec).await.expect_err("no image for that version");
    let text = chain(&err);
    assert!(matches!(err, RuntimeError::Engine { .. }), "{err:?}");
    assert!(text.contains("does not exist: build it first"), "{text}");
    assert!(f.rt.status().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_engine_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = DockerConfig::new(dir.path());
    config.socket = dir.path().join("no-docker.sock");
    let err = DockerRuntime::connect(config).await.expect_err("no daemon there");
    let text = err.to_string();
    assert!(text.contains("Docker is not running"), "{text}");
    assert!(text.contains("scripts/docker-setup"), "{text}");
}

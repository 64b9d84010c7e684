//! The swarm runtime against the single-node swarm of `scripts/docker-setup`:
//! public instances as one-replica services on their own host-mode ports,
//! non-public services converged by Swarm's start-first update with
//! rollback, adoption by the next server. Loopback only; every service of a test's owner is
//! removed at its end, also when it fails (`SwarmCleanup`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cutover_core::{AppName, ServiceName, Version};
use cutover_docker::swarm::{ConvergeAction, ConvergeSpec};
use cutover_docker::{DockerConfig, DockerError, SwarmRuntime, TASK_IMAGE_VAR, image_tag, labels};
use cutover_runtime::{
    InstanceSpec, InstanceState, LogStream, RecoveryAction, Runtime, RuntimeError, TaskExit, TaskSpec,
    VersionSource,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{
    DOCKERFILE, Load, RemoveImage, SHA, chain, env, http_get, quick_health, remove_all_of, service,
};

const V2: &str = "2222222222222222222222222222222222222222";
const V3: &str = "3333333333333333333333333333333333333333";

/// The worker: prints and sleeps (under Docker's init, so SIGTERM ends it).
const WORKER: &str = "FROM cutover-base:latest\n\
CMD [\"sh\", \"-c\", \"echo worker $CUTOVER_VERSION on $CUTOVER_INSTANCE; exec sleep 3600\"]\n";
/// A worker version that cannot start.
const BROKEN: &str = "FROM cutover-base:latest\nCMD [\"sh\", \"-c\", \"echo broken >&2; exit 1\"]\n";

async fn connect(state_dir: &Path) -> SwarmRuntime {
    let mut config = DockerConfig::new(state_dir);
    config.stop_grace = Duration::from_secs(2);
    config.health_interval = Duration::from_millis(200);
    match SwarmRuntime::connect(config).await {
        Ok(rt) => rt,
        Err(err) => panic!(
            "the swarm runtime cannot be tested: {}\n\
             Run scripts/docker-setup as root first (dockerd, cutover-base:latest, swarm init).",
            chain(&err)
        ),
    }
}

/// Removes every service and container of an owner when dropped.
struct SwarmCleanup(String);

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        let owner = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(docker) = bollard::Docker::connect_with_socket_defaults() else {
                    return;
                };
                let filters = HashMap::from([("label", vec![format!("{}={owner}", labels::OWNER)])]);
                let options = bollard::query_parameters::ListServicesOptionsBuilder::new()
                    .filters(&filters)
                    .build();
                for s in docker.list_services(Some(options)).await.unwrap_or_default() {
                    if let Some(id) = s.id {
                        let _ = docker.delete_service(&id).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
        remove_all_of(self.0.clone());
    }
}

struct SwarmFixture {
    dir: tempfile::TempDir,
    rt: SwarmRuntime,
    app: AppName,
    _cleanup: SwarmCleanup,
}

impl SwarmFixture {
    async fn new(app: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = connect(&dir.path().join("state")).await;
        let cleanup = SwarmCleanup(rt.owner().to_owned());
        Self {
            dir,
            rt,
            app: AppName::parse(app).unwrap(),
            _cleanup: cleanup,
        }
    }

    /// Builds `<app>-test-<service>:<sha>` from `dockerfile` (a web page
    /// tree comes along).
    async fn build(&self, service: &ServiceName, sha: &str, dockerfile: &str) -> PathBuf {
        let release = self.dir.path().join("releases").join(format!("{service}-{sha}"));
        std::fs::create_dir_all(release.join("www")).unwrap();
        std::fs::write(release.join("www/health"), "ok\n").unwrap();
        std::fs::write(release.join("www/version"), sha).unwrap();
        std::fs::write(release.join("Dockerfile"), dockerfile).unwrap();
        let tag = image_tag(&self.app, &env(), service, &Version::parse(sha).unwrap());
        let (tx, _rx) = mpsc::unbounded_channel();
        self.rt
            .containers()
            .build_image(&release, "Dockerfile", &tag, tx)
            .await
            .expect("build the test image");
        release
    }

    fn spec(&self, release: &Path, replica: u32) -> InstanceSpec {
        InstanceSpec {
            app: self.app.clone(),
            env: env(),
            service: service(),
            version: Version::parse(SHA).unwrap(),
            release_dir: release.to_owned(),
            run:
                "echo \"branch=$CUTOVER_BRANCH as $CUTOVER_INSTANCE\"; exec httpd -f -vv -p \"$PORT\" -h /www"
                    .to_owned(),
            // Swarm expands templates in the environment: this must arrive verbatim.
            env_vars: vec![("CUTOVER_BRANCH".into(), "feat/{{.Node.ID}}".into())],
            replica,
            health_path: Some("/health".into()),
            placement: Default::default(),
        }
    }

    fn converge_spec(&self, sha: &str) -> ConvergeSpec {
        ConvergeSpec {
            app: self.app.clone(),
            env: env(),
            service: ServiceName::parse("worker").unwrap(),
            version: Version::parse(sha).unwrap(),
            replicas: 2,
            env_vars: vec![("CUTOVER_RUN_ID".into(), "7".into())],
            run: None,
            monitor: Duration::from_secs(1),
            timeout: Duration::from_secs(40),
            placement: Default::default(),
        }
    }
}

#[tokio::test]
async fn public_instances_are_one_service_each_on_their_own_loopback_port() {
    let began = Instant::now();
    let f = SwarmFixture::new("itswarm").await;
    let release = f.build(&service(), SHA, DOCKERFILE).await;
    let a = f.rt.start(f.spec(&release, 0)).await.expect("start replica 0");
    let b = f.rt.start(f.spec(&release, 1)).await.expect("start replica 1");
    assert_ne!(a.port, b.port, "each replica gets its own host port");
    let mut follow = f.rt.follow_logs(&a.id).await.unwrap();
    for s in [&a, &b] {
        assert!(s.addr.ip().is_loopback(), "{}", s.addr);
        f.rt.wait_healthy(&s.id, "/health", &quick_health())
            .await
            .expect("healthy through 127.0.0.1");
        assert_eq!(http_get(s.addr, "/version").await, (200, SHA.to_owned()));
    }

    let status = f.rt.status().await.unwrap();
    assert_eq!(status.len(), 2, "{status:#?}");
    for (s, replica) in status.iter().zip([0, 1]) {
        assert_eq!(s.replica, replica);
        assert_eq!(s.version.as_ref().map(Version::as_str), Some(SHA), "{s:#?}");
        assert_eq!(s.version_source, VersionSource::ImageTag);
        assert_eq!(s.state, InstanceState::Running);
        assert!(s.pid.is_some() && s.started_at > 0 && s.created_at > 0, "{s:#?}");
        assert_eq!(s.restarts, 0);
        // The id is the Swarm service's: the engine knows it by that id.
        let svc = f.rt.docker().inspect_service(s.id.as_str(), None).await.unwrap();
        let spec = svc.spec.unwrap();
        let l = spec.labels.unwrap();
        assert_eq!(l[labels::APP], "itswarm");
        assert_eq!(l[labels::VERSION], SHA);
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(1));
        let name = spec.name.unwrap();
        assert!(
            name.starts_with(&format!("itswarm-test-web-d0c4e12a-r{replica}-")),
            "{name}"
        );
        let image = spec.task_template.unwrap().container_spec.unwrap().image.unwrap();
        assert!(image.starts_with(&format!("itswarm-test-web:{SHA}")), "{image}");
    }

    let tail = f.rt.log_tail(&a.id, 50).await.unwrap();
    assert!(
        tail.iter()
            .any(|l| l.contains("stdout branch=feat/{{.Node.ID}} as itswarm-test-web-")),
        "{tail:#?}"
    );

    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = follow.recv().await.expect("log line");
            // busybox httpd -vv logs each request on stderr.
            if line.stream == LogStream::Stderr && line.text.contains("url:/version") {
                return line;
            }
        }
    })
    .await
    .expect("the follower saw a request line (service logs)");
    assert!(seen.at > 0);

    // Hooks and jobs run in a one-off container of the given image.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = TaskSpec {
        label: "migrate hook".into(),
        command: "echo migrated $CUTOVER_VERSION".into(),
        dir: release.clone(),
        env_vars: vec![
            (
                TASK_IMAGE_VAR.into(),
                image_tag(&f.app, &env(), &service(), &Version::parse(SHA).unwrap()),
            ),
            ("CUTOVER_VERSION".into(), SHA.into()),
        ],
        timeout: Duration::from_secs(20),
    };
    let outcome =
        f.rt.run_task(task, tx, CancellationToken::new())
            .await
            .expect("task");
    assert_eq!(outcome.exit, TaskExit::Code(0));
    let mut texts = Vec::new();
    while let Ok(line) = rx.try_recv() {
        texts.push(line.text);
    }
    assert!(texts.contains(&format!("migrated {SHA}")), "{texts:#?}");

    for s in [&a, &b] {
        let out = f.rt.stop(&s.id).await.expect("stop");
        assert!(out.graceful, "{out:?}");
        assert!(
            f.rt.docker().inspect_service(s.id.as_str(), None).await.is_err(),
            "service {} is left",
            s.id
        );
    }
    assert!(f.rt.status().await.unwrap().is_empty());
    assert!(matches!(
        f.rt.instance(&a.id).await,
        Err(RuntimeError::UnknownInstance { .. })
    ));
    eprintln!("public instances: {:?}", began.elapsed());
}

#[tokio::test]
async fn workers_converge_start_first_and_swarm_rolls_a_broken_version_back() {
    let began = Instant::now();
    let f = SwarmFixture::new("itconverge").await;
    let worker = ServiceName::parse("worker").unwrap();
    f.build(&worker, SHA, WORKER).await;
    f.build(&worker, V2, WORKER).await;
    f.build(&worker, V3, BROKEN).await;
    let versions = |status: &[cutover_runtime::InstanceStatus]| -> Vec<String> {
        status
            .iter()
            .map(|s| s.version.as_ref().map(|v| v.to_string()).unwrap_or_default())
            .collect()
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    let created = f.rt.converge(f.converge_spec(SHA), tx).await.expect("create");
    assert_eq!(created.action, ConvergeAction::Created);
    assert_eq!(created.running, 2);
    assert_eq!(created.name, "itconverge-test-worker");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("2/2 tasks of d0c4e12a running")),
        "{lines:#?}"
    );
    let status = f.rt.converged_status(&f.app, &env()).await.unwrap();
    assert_eq!(versions(&status), [SHA, SHA], "{status:#?}");
    eprintln!("created: {:?}", began.elapsed());

    let (tx, _rx) = mpsc::unbounded_channel();
    let updated =
        f.rt.converge(f.converge_spec(V2), tx)
            .await
            .expect("update to v2");
    assert_eq!(updated.action, ConvergeAction::Updated);
    let status = f.rt.converged_status(&f.app, &env()).await.unwrap();
    assert_eq!(versions(&status), [V2, V2], "{status:#?}");
    assert!(
        status
            .iter()
            .all(|s| s.state == InstanceState::Running && s.pid.is_some())
    );
    assert_eq!(status.iter().map(|s| s.replica).collect::<Vec<_>>(), [0, 1]);
    let svc =
        f.rt.docker()
            .inspect_service(&updated.service_id, None)
            .await
            .unwrap();
    let update = svc.spec.unwrap().update_config.unwrap();
    assert_eq!(
        update.order.map(|o| o.to_string()).as_deref(),
        Some("start-first")
    );
    eprintln!("updated: {:?}", began.elapsed());

    // Same spec again: nothing to update.
    let (tx, _rx) = mpsc::unbounded_channel();
    let again = f.rt.converge(f.converge_spec(V2), tx).await.expect("unchanged");
    assert_eq!(again.action, ConvergeAction::Unchanged);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let err =
        f.rt.converge(f.converge_spec(V3), tx)
            .await
            .expect_err("v3 cannot start");
    let text = chain(&err);
    assert!(matches!(err, DockerError::RolledBack { .. }), "{text}");
    assert!(text.contains("rolled it back"), "{text}");
    assert!(
        text.contains("exit status 1") || text.contains("non-zero exit"),
        "{text}"
    );
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.starts_with("update rolled back: ")),
        "{lines:#?}"
    );
    // Swarm's start-first rollback can list a third task (a second V2 task in the slot whose
    // V3 task failed) after the update reports "rolled back"; usually for a moment, but now and
    // then (one of fifteen runs here, and one CI run; Docker 20.10) for longer than this test
    // waits. So:
    // wait (bounded) for exactly the two replicas of V2, and if Swarm keeps its extra task,
    // require what Cutover answers for: every running task is V2, both replicas are there, and
    // nothing beyond the one leftover.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = f.rt.converged_status(&f.app, &env()).await.unwrap();
        if versions(&status) == [V2, V2] || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    if versions(&status) != [V2, V2] {
        eprintln!("Swarm kept a leftover task of the rollback: {status:#?}");
    }
    assert!(
        versions(&status).iter().all(|v| v == V2) && (2..=3).contains(&status.len()),
        "{status:#?}"
    );
    let mut replicas: Vec<u32> = status.iter().map(|s| s.replica).collect();
    replicas.dedup();
    assert_eq!(replicas, [0, 1], "{status:#?}");
    assert!(
        status.iter().all(|s| s.requested_version.as_str() == V2),
        "{status:#?}"
    );
    eprintln!("rolled back: {:?}", began.elapsed());

    // Converged services are not instances: status() and shutdown() leave them.
    assert!(f.rt.status().await.unwrap().is_empty());
    assert!(f.rt.shutdown().await.unwrap().is_empty());
    eprintln!("shutdown: {:?}", began.elapsed());
    assert!(f.rt.remove_converged(&f.app, &env(), &worker).await.unwrap());
    assert!(!f.rt.remove_converged(&f.app, &env(), &worker).await.unwrap());
    assert!(f.rt.converged_status(&f.app, &env()).await.unwrap().is_empty());
    eprintln!("converge test: {:?}", began.elapsed());
}

#[tokio::test]
async fn a_detached_servers_running_services_are_adopted_and_serve_throughout() {
    let f = SwarmFixture::new("itswarmrec").await;
    let release = f.build(&service(), SHA, DOCKERFILE).await;
    let _image = RemoveImage(image_tag(
        &f.app,
        &env(),
        &service(),
        &Version::parse(SHA).unwrap(),
    ));
    let state = f.dir.path().join("state");
    let a = f.rt.start(f.spec(&release, 0)).await.expect("start replica 0");
    let b = f.rt.start(f.spec(&release, 1)).await.expect("start replica 1");
    for s in [&a, &b] {
        assert!(!s.owner.adopted && s.owner.since == s.created_at, "{s:#?}");
        assert_eq!(s.owner.pid, std::process::id());
        f.rt.wait_healthy(&s.id, "/health", &quick_health())
            .await
            .expect("healthy");
    }
    // Replica 2's task ended (exit 0 is not restarted): nothing to adopt.
    let mut ended = f.spec(&release, 2);
    ended.run = "echo done".into();
    ended.health_path = None;
    let ended = f.rt.start(ended).await.expect("start replica 2");
    let until = Instant::now() + Duration::from_secs(20);
    while f.rt.instance(&ended.id).await.expect("instance").state == InstanceState::Running {
        assert!(Instant::now() < until, "replica 2's task did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = Load::start(a.addr);

    f.rt.detach().await.expect("detach");
    assert!(matches!(
        f.rt.start(f.spec(&release, 3)).await,
        Err(RuntimeError::ShutDown)
    ));
    for s in [&a, &b] {
        assert!(
            f.rt.docker().inspect_service(s.id.as_str(), None).await.is_ok(),
            "detach removed {}",
            s.id
        );
    }

    // The next server on the same data directory.
    let next = connect(&state).await;
    let recovery = next.recover_adopting().await.expect("recover");
    let mut adopted: Vec<_> = recovery.adopted.iter().map(|s| (s.id.clone(), s.port)).collect();
    adopted.sort();
    let mut expected = vec![(a.id.clone(), a.port), (b.id.clone(), b.port)];
    expected.sort();
    assert_eq!(adopted, expected, "{recovery:#?}");
    assert_eq!(recovery.report.instances.len(), 1, "{recovery:#?}");
    let entry = &recovery.report.instances[0];
    assert_eq!(entry.state.as_ref().map(|s| s.id.clone()), Some(ended.id.clone()));
    assert_eq!(entry.action, RecoveryAction::AlreadyGone, "{entry:#?}");
    assert!(
        entry
            .file
            .display()
            .to_string()
            .starts_with("swarm:itswarmrec-test-web-d0c4e12a-r2-"),
        "{entry:#?}"
    );
    assert!(
        next.docker()
            .inspect_service(ended.id.as_str(), None)
            .await
            .is_err(),
        "the ended service is still there"
    );
    assert!(next.recover().await.expect("recover again").instances.is_empty());

    let status = next.status().await.expect("status");
    assert_eq!(status.len(), 2, "{status:#?}");
    for (s, old) in status.iter().zip([&a, &b]) {
        assert_eq!((&s.id, s.port, s.replica), (&old.id, old.port, old.replica));
        assert_eq!(s.state, InstanceState::Running, "{s:#?}");
        assert_eq!(s.version.as_ref().map(Version::as_str), Some(SHA));
        assert!(s.owner.adopted && s.owner.pid == std::process::id(), "{s:#?}");
    }
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(next.unclaimed(), both);

    let err = next
        .adopt(&a.id, f.spec(&release, 1))
        .await
        .expect_err("wrong replica");
    assert!(
        chain(&err).contains("adopt it with the spec it was started with"),
        "{}",
        chain(&err)
    );
    let claimed = next.adopt(&a.id, f.spec(&release, 0)).await.expect("adopt");
    assert!(claimed.owner.adopted && claimed.id == a.id, "{claimed:#?}");
    assert_eq!(next.unclaimed(), vec![b.id.clone()]);
    next.wait_healthy(&a.id, "/health", &quick_health())
        .await
        .expect("the adopted instance is healthy");

    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed of {answered} answered: {failures:?}",
        failures.len()
    );
    assert!(answered > 0);

    // Unclaimed or claimed, an adopted instance is stoppable.
    for s in [&b, &a] {
        next.stop(&s.id).await.expect("stop");
        assert!(
            next.docker().inspect_service(s.id.as_str(), None).await.is_err(),
            "service {} is left",
            s.id
        );
    }
    assert!(next.status().await.unwrap().is_empty());
    assert!(next.shutdown().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_crashing_instance_is_restarted_by_swarm_and_a_missing_image_says_build_it() {
    let f = SwarmFixture::new("itswarmmiss").await;
    let release = f.build(&service(), SHA, DOCKERFILE).await;
    let mut spec = f.spec(&release, 0);
    spec.run = "echo up; sleep 1; exit 3".into();
    spec.health_path = None;
    let s = f.rt.start(spec).await.expect("start");
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = f.rt.instance(&s.id).await.unwrap();
        if status.restarts >= 1 || Instant::now() > until {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.restarts >= 1, "{status:#?}");
    assert!(
        status
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("exit status 3")),
        "{status:#?}"
    );
    f.rt.stop(&s.id).await.expect("stop");

    let mut spec = f.spec(f.dir.path(), 0);
    spec.version = Version::parse(&"e".repeat(40)).unwrap();
    let err = f.rt.start(spec).await.expect_err("no image for that version");
    assert!(
        chain(&err).contains("does not exist: build it first"),
        "{}",
        chain(&err)
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut conv = f.converge_spec(&"e".repeat(40));
    conv.service = ServiceName::parse("nope").unwrap();
    let err = f.rt.converge(conv, tx).await.expect_err("no image");
    assert!(matches!(err, DockerError::ImageMissing { .. }), "{err:?}");
}

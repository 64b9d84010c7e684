//! The version is the whole truth: each run deploys the application definition (`services`,
//! `hooks`, `scheduler`, ...) of its own commit's `cutover.yml`, validated in Source; a rollback
//! brings the older version's services back. The server's file keeps the platform part.

use std::time::{Duration, Instant};

use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::git;

/// Commits `cutover.yml` (the application definition) into the app's repository.
fn commit_definition(app: &App, text: &str, message: &str) -> String {
    let repo = app.dir.path().join("repo");
    std::fs::write(repo.join("cutover.yml"), text).unwrap();
    git(&repo, &["add", "cutover.yml"]);
    git(&repo, &["commit", "-qm", message]);
    git(&repo, &["rev-parse", "HEAD"])
}

const EXTRA: &str =
    "  extra:\n    run: \"sh run.sh api\"\n    health: /health\n    health_timeout: 3s\n    public: true\n";

fn instances_of(server: &crate::support::Server, env: &str, service: &str, role: &str) -> usize {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .filter(|i| i["role"] == role)
        .count()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_release_deploys_its_commits_services_and_a_rollback_restores_them() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    assert_eq!(
        server.via_router("extra", "dev", "/health").map(|r| r.0),
        Some(404)
    );

    // A commit that adds a public service: built, started, health-checked and routed with the
    // others, without a server restart.
    let with_extra = commit_definition(
        &app,
        &APP_CONFIG.replace("  worker:\n", &format!("{EXTRA}  worker:\n")),
        "add the extra service",
    );
    let id = server.deploy("alice", "dev", &with_extra);
    let logs = server.logs(id);
    assert!(
        logs.contains("application definition: cutover.yml of the commit"),
        "{logs}"
    );
    assert!(
        logs.contains("* service extra added (public, 1 replica(s))"),
        "the version info names it: {logs}"
    );
    let (status, head, _) = server.via_router("extra", "dev", "/health").unwrap();
    assert_eq!(status, 200, "the new service serves through the router");
    assert!(head.to_lowercase().contains(&with_extra), "{head}");
    assert_eq!(instances_of(&server, "dev", "extra", "serving"), 1);

    // A commit that removes it and asks for three api replicas.
    let without = commit_definition(
        &app,
        &APP_CONFIG
            .replace("    replicas: 2\n", "    replicas: 3\n")
            .replace(
                "    run: \"sh run.sh worker\"\n",
                "    run: \"echo changed-run >> $CUTOVER_ENV_DIR/worker-runs; exec sh run.sh worker\"\n",
            ),
        "drop extra, three api replicas, a new worker command",
    );
    let id = server.deploy("alice", "dev", &without);
    let logs = server.logs(id);
    assert!(
        logs.contains("* service api changed: replicas") && logs.contains("* service extra removed"),
        "{logs}"
    );
    assert_eq!(
        server.via_router("extra", "dev", "/health").map(|r| r.0),
        Some(404),
        "a removed service's route is gone"
    );
    assert_eq!(instances_of(&server, "dev", "extra", "serving"), 0);
    assert_eq!(instances_of(&server, "dev", "api", "serving"), 3);
    wait_for("the worker to run the commit's new command", || {
        std::fs::read_to_string(app.env_dir("dev").join("worker-runs"))
            .is_ok_and(|t| t.contains("changed-run"))
    });

    // A fast rollback restores the previous version's definition: extra serves again, api has
    // its two replicas.
    let fast = server.cli_json("alice", &["rollback", "dev", "--fast", "--force", "--wait"]);
    assert_eq!(fast["state"], "succeeded", "{fast:#}");
    assert_eq!(server.api_version("dev").as_deref(), Some(with_extra.as_str()));
    assert_eq!(
        server.via_router("extra", "dev", "/health").map(|r| r.0),
        Some(200)
    );
    wait_for("two api replicas after the rollback", || {
        instances_of(&server, "dev", "api", "serving") == 2
    });

    // A full rollback to the very first version (the server's definition: no extra).
    let back = server.cli_json("alice", &["rollback", "dev", "--to", &app.good[0], "--wait"]);
    assert_eq!(back["state"], "succeeded", "{back:#}");
    assert_eq!(
        server.via_router("extra", "dev", "/health").map(|r| r.0),
        Some(404)
    );
    assert_eq!(instances_of(&server, "dev", "api", "serving"), 2);

    // After a restart the deployed version's own definition is what is reconciled.
    let server = {
        drop(server);
        app.start()
    };
    server.deploy("alice", "dev", &with_extra);
    assert_eq!(
        server.via_router("extra", "dev", "/health").map(|r| r.0),
        Some(200)
    );
}

#[test]
fn an_invalid_definition_in_a_commit_fails_source_and_changes_nothing() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    let broken = commit_definition(
        &app,
        &APP_CONFIG.replace("    replicas: 2\n", "    replicas: many\n"),
        "a definition with a typo",
    );
    let id = server.release("alice", "dev", &broken);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(
        (run["state"].as_str(), run["failed_stage"].as_str()),
        (Some("failed"), Some("source")),
        "{run:#}"
    );
    let logs = server.logs(id);
    let short = &broken[..12];
    assert!(
        logs.contains(&format!("cutover.yml@{short}")) && logs.contains("replicas"),
        "the error names file@sha, line and the key: {logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("cutover.yml@{short}:")) && l.contains(":9:")),
        "with its line: {logs}"
    );
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[0].as_str()));
}

#[test]
fn config_check_version_checks_a_commits_definition_as_a_release_would() {
    let app = App::new();
    let config = app.dir.path().join("cutover.yml");
    let check = |reference: &str| {
        std::process::Command::new(crate::support::BIN)
            .args(["config", "check", "-f"])
            .arg(&config)
            .args(["--version", reference])
            .output()
            .unwrap()
    };
    // No definition in the commit: the server's file's application part applies.
    let out = check("main");
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert!(
        crate::support::stdout(&out).contains("has no cutover.yml"),
        "{}",
        crate::support::stdout(&out)
    );
    let good = commit_definition(
        &app,
        &APP_CONFIG.replace("  worker:\n", &format!("{EXTRA}  worker:\n")),
        "add extra",
    );
    let out = check(&good);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert!(
        crate::support::stdout(&out).contains("extra"),
        "{}",
        crate::support::stdout(&out)
    );
    let broken = commit_definition(
        &app,
        &APP_CONFIG.replace("    replicas: 2\n", "    replicas: many\n"),
        "typo",
    );
    let out = check("main");
    assert!(!out.status.success());
    let err = crate::support::stderr(&out);
    assert!(
        err.contains(&format!("cutover.yml@{}:9:", &broken[..12])),
        "{err}"
    );
}

/// The same on Docker: the added service gets its image built at the commit and its container
/// routed; the fast rollback takes it away again.
#[test]
fn on_docker_a_commit_adds_a_service_and_a_fast_rollback_removes_it() {
    let fx = crate::runtimes::fixture("docker");
    let env = fx.env.clone();
    let _containers = crate::control_plane::ContainerCleanup(env.clone());
    let shop = crate::example_shop::release().join("bin/shop");
    let server = crate::support::Server::start_with(
        &fx.dir.path().join("cutover.yml"),
        &fx.dir.path().join("data"),
        &[("SHOP_BIN", shop.to_str().unwrap())],
    );
    let first = &fx.versions[1];
    let id = server.release("alice", &env, first);
    assert_eq!(
        server.wait_run(id, &["succeeded", "failed"])["state"],
        "succeeded",
        "{}",
        server.logs(id)
    );
    let host = format!("extra.{env}.shop.localhost");
    let extra = |server: &crate::support::Server| {
        crate::pipeline_support::http_get(server.router_port, &host, "/health").map(|r| r.0)
    };
    assert_eq!(extra(&server), Some(404));
    let config = std::fs::read_to_string(fx.dir.path().join("cutover.yml")).unwrap();
    let with_extra = config.replacen(
        "  worker:\n",
        "  extra:\n    run: \"busybox httpd -f -p $PORT -h /www\"\n    health: /health\n    health_timeout: 5s\n    public: true\n  worker:\n",
        1,
    );
    assert_ne!(
        with_extra, config,
        "the fixture has a worker service to insert before"
    );
    let repo = fx.dir.path().join("repo");
    std::fs::write(repo.join("cutover.yml"), with_extra).unwrap();
    // On top of the fixture's last commit (a broken version): healthy again.
    std::fs::write(repo.join("www/health"), "ok\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "add extra"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let id = server.release("alice", &env, &second);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    assert_eq!(
        extra(&server),
        Some(200),
        "the new service's container serves through the router"
    );
    let fast = server.cli_json("alice", &["rollback", &env, "--fast", "--force", "--wait"]);
    assert_eq!(fast["state"], "succeeded", "{fast:#}");
    assert_eq!(
        extra(&server),
        Some(404),
        "the older version has no extra service"
    );
}

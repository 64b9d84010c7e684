//! The pipeline end to end: real server, real repository, real processes
//! behind the real router.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::pipeline_support::{App, header, http_get};
use crate::support::{fails_with, stdout};

/// The pipeline's stages in order, as the API names them.
pub(crate) const STAGES: [&str; 13] = [
    "source",
    "version_info",
    "approval",
    "build",
    "message_broker",
    "pre_deploy_hook",
    "pre_deploy_config",
    "deploy_scheduler",
    "install",
    "deploy_services",
    "update_deployed_version",
    "post_deploy_config",
    "post_deploy_hook",
];

#[test]
fn a_release_runs_every_stage_and_serves_the_version_through_the_router() {
    let app = App::new();
    let server = app.start();
    let id = server.release("alice", "staging", &app.good[0][..8]);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let stages = crate::support::Server::stages(&run);
    let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, STAGES);
    let status: Vec<&str> = stages.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        status,
        [
            "succeeded",
            "succeeded",
            "skipped",
            "succeeded",
            "skipped",
            "succeeded",
            "skipped",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "skipped"
        ],
        "{run:#}"
    );
    assert_eq!(run["version"], app.good[0]);

    // The version really serves, through the router, on every answer.
    let (status, head, body) = server.via_router("api", "staging", "/api/products").unwrap();
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(
        header(&head, "x-cutover-version").as_deref(),
        Some(app.good[0].as_str())
    );
    assert!(body.contains(&app.good[0]), "{body}");

    // The install hook ran with the version in its environment.
    let installs = std::fs::read_to_string(app.env_dir("staging").join("installs")).unwrap();
    assert_eq!(installs.trim(), app.good[0]);

    // Logs of every stage, readable later; the version info names the commit.
    let logs = server.logs(id);
    for needle in [
        "deployment version:",
        "latest deployed version: none",
        "migrating to",
        "traffic switched",
    ] {
        assert!(logs.contains(needle), "{needle}: {logs}");
    }
    let env = server.cli_json("x", &["env", "show", "staging"]);
    assert_eq!(env["last_deployed_version"], app.good[0]);
    assert_eq!(env["last_build_version"], app.good[0]);

    // Status reads each instance's version from the process itself.
    let status = server.cli_json("x", &["status", "staging"]);
    let api = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap();
    assert!(
        api["url"]
            .as_str()
            .unwrap()
            .contains("api.staging.shop.localhost")
    );
    let instances = api["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for i in instances {
        assert_eq!(i["version"], app.good[0], "{i}");
        assert_eq!(i["version_source"], "cwd");
        assert_eq!(i["healthy"], true);
    }
}

#[test]
fn v2_under_continuous_load_drops_nothing_and_v1_never_answers_after_the_switch() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);

    let port = server.router_port;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        clients.push(std::thread::spawn(move || {
            // (sent at, answered version or None for a failure)
            let mut seen: Vec<(Instant, Option<String>)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && seen.len() < 20_000 {
                let sent = Instant::now();
                let v = http_get(port, "api.staging.shop.localhost", "/health")
                    .filter(|(s, _, _)| *s == 200)
                    .and_then(|(_, h, _)| header(&h, "x-cutover-version"));
                seen.push((sent, v));
            }
            seen
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let second = server.release("alice", "staging", &app.good[1]);
    let run = server.wait_run(second, &["succeeded", "failed"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(second));
    let seen: Vec<(Instant, Option<String>)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();

    let failures = seen.iter().filter(|(_, v)| v.is_none()).count();
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed during the deploy",
        seen.len()
    );
    assert!(
        seen.iter()
            .any(|(_, v)| v.as_deref() == Some(app.good[0].as_str())),
        "v1 served before"
    );
    assert!(
        seen.iter()
            .any(|(_, v)| v.as_deref() == Some(app.good[1].as_str())),
        "v2 served after"
    );
    // Every request sent after the first v2 answer arrived is v2: no mix.
    let first_v2 = seen
        .iter()
        .filter(|(_, v)| v.as_deref() == Some(app.good[1].as_str()))
        .map(|(t, _)| *t)
        .min();
    let switched = first_v2.unwrap();
    let late_v1 = seen
        .iter()
        .filter(|(t, v)| {
            *t > switched + Duration::from_millis(5) && v.as_deref() == Some(app.good[0].as_str())
        })
        .count();
    assert_eq!(
        late_v1, 0,
        "v1 answered {late_v1} requests sent after v2 began serving"
    );
}

#[test]
fn a_version_that_fails_its_health_check_never_serves_and_the_old_one_keeps_serving() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);

    let bad = server.release("alice", "staging", &app.broken);
    let run = server.wait_run(bad, &["succeeded", "failed"]);
    assert_eq!(run["state"], "failed");
    assert_eq!(run["failed_stage"], "deploy_services");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("not healthy") && error.contains("this version cannot start"),
        "{error}"
    );
    let statuses = crate::support::Server::stages(&run);
    assert_eq!(statuses[9].1, "failed");
    assert!(statuses[10..].iter().all(|(_, s)| s == "not_run"), "{statuses:?}");

    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[0].as_str())
    );
    let env = server.cli_json("x", &["env", "show", "staging"]);
    assert_eq!(
        env["last_deployed_version"], app.good[0],
        "failure never writes last_deployed_version"
    );
    let status = server.cli_json("x", &["status", "staging"]);
    for svc in status["services"].as_array().unwrap() {
        for i in svc["instances"].as_array().unwrap() {
            assert_eq!(i["version"], app.good[0], "only the old version runs: {i}");
        }
    }
    // The scheduler is back on the serving version, not suspended.
    let sched = server.cli_json("x", &["scheduler", "status", "staging"]);
    assert_eq!(
        (sched["suspended"].as_bool(), sched["version"].as_str()),
        (Some(false), Some(app.good[0].as_str()))
    );
}

#[test]
fn a_failing_install_hook_stops_the_run_and_the_old_version_keeps_serving() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    let bad = server.release("alice", "staging", &app.bad_install);
    let run = server.wait_run(bad, &["succeeded", "failed"]);
    assert_eq!(run["failed_stage"], "install");
    assert!(
        run["error"].as_str().unwrap().contains("exited with status 4"),
        "{run:#}"
    );
    assert!(
        server.logs(bad).contains("migration 7 failed"),
        "hook output is in the stage log"
    );
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[0].as_str())
    );
    let sched = server.cli_json("x", &["scheduler", "status", "staging"]);
    assert_eq!(sched["suspended"], false);
    assert_eq!(sched["version"], app.good[0]);
}

#[test]
fn production_waits_for_approval_and_enforces_four_eyes() {
    let app = App::new();
    let server = app.start();
    let id = server.release("alice", "prod", &app.good[0]);
    let waiting = server.wait_run(id, &["awaiting_approval"]);
    assert_eq!(waiting["current_stage"], "approval");
    let sid = id.to_string();

    fails_with(&server.cli("alice", &["approve", &sid]), &["four-eyes", "alice"]);
    fails_with(
        &server.cli("bob", &["reject", &sid]),
        &["needs a reason", "--comment"],
    );
    let approved = server.cli_json("bob", &["approve", &sid, "--comment", "looks good"]);
    assert_eq!(approved["approvals"][0]["actor"], "bob");
    fails_with(
        &server.cli("carol", &["approve", &sid]),
        &["not waiting for approval"],
    );
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    assert!(server.logs(id).contains("approved by bob: looks good"));

    // A rejection fails the run with the reason, and changes nothing.
    let id2 = server.release("alice", "prod", &app.good[1]);
    server.wait_run(id2, &["awaiting_approval"]);
    server.cli_json(
        "carol",
        &["reject", &id2.to_string(), "-m", "not during the sale"],
    );
    let run = server.wait_run(id2, &["failed"]);
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("rejected by carol: not during the sale"),
        "{run:#}"
    );
    assert_eq!(server.api_version("prod").as_deref(), Some(app.good[0].as_str()));

    // Bad requests change nothing.
    fails_with(
        &server.cli("bob", &["approve", &id2.to_string()]),
        &["not waiting for approval", "failed"],
    );
    fails_with(
        &server.cli("bob", &["cancel", &id.to_string()]),
        &["already ended"],
    );
    fails_with(
        &server.cli("bob", &["release", "prod", "--destructive", "--yes"]),
        &["refused on prod", "production"],
    );
    fails_with(
        &server.cli("bob", &["release", "dev", "--destructive"]),
        &["--yes"],
    );
    fails_with(
        &server.cli("bob", &["release", "nowhere"]),
        &["unknown environment"],
    );
    fails_with(
        &server.cli("bob", &["approve", "999"]),
        &["run 999 does not exist"],
    );
}

#[test]
fn requests_queue_behind_the_active_run_and_newer_ones_supersede_older_queued_ones() {
    let app = App::new();
    let server = app.start();
    let active = server.release("alice", "prod", &app.good[0]);
    server.wait_run(active, &["awaiting_approval"]);
    let queued = server.cli_json("alice", &["release", "prod"])["id"]
        .as_i64()
        .unwrap();
    let newer = server.cli_json("alice", &["release", "prod"])["id"]
        .as_i64()
        .unwrap();
    let old = server.cli_json("x", &["run", &queued.to_string()]);
    assert_eq!(old["state"], "superseded");
    assert_eq!(old["superseded_by"], newer);
    assert_eq!(
        server.cli_json("x", &["run", &newer.to_string()])["state"],
        "queued"
    );
    // Other environments are not held up.
    server.deploy("alice", "dev", &app.good[1]);

    server.cli_json("bob", &["approve", &active.to_string()]);
    assert_eq!(
        server.wait_run(active, &["succeeded", "failed"])["state"],
        "succeeded"
    );
    server.wait_run(newer, &["awaiting_approval"]);
    server.cli_json("bob", &["cancel", &newer.to_string()]);
    let cancelled = server.wait_run(newer, &["cancelled"]);
    assert!(
        cancelled["error"].as_str().unwrap().contains("cancelled"),
        "{cancelled:#}"
    );
    assert_eq!(server.api_version("prod").as_deref(), Some(app.good[0].as_str()));
}

#[test]
fn rollback_fast_rollback_and_promote() {
    let app = App::new();
    let server = app.start();
    for v in &app.good[..2] {
        server.deploy("alice", "staging", v);
    }
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[1].as_str())
    );

    // Fast: traffic back to the warm previous release.
    let fast = server.cli_json("alice", &["rollback", "staging", "--fast", "--force"])["id"]
        .as_i64()
        .unwrap();
    let run = server.wait_run(fast, &["succeeded", "failed"]);
    assert_eq!(
        (run["state"].as_str(), run["kind"].as_str()),
        (Some("succeeded"), Some("fast_rollback"))
    );
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[0].as_str())
    );
    let logs = server.logs(fast);
    let ms: u64 = logs
        .split("traffic switched to")
        .nth(1)
        .and_then(|s| s.split(" in ").nth(1))
        .and_then(|s| s.split(" ms").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no switch time in {logs}"));
    assert!(ms < 1000, "fast rollback switched in {ms} ms");

    // Full rollback: the version deployed before the current one, through the pipeline.
    let back = server.cli_json("alice", &["rollback", "staging"])["id"]
        .as_i64()
        .unwrap();
    let run = server.wait_run(back, &["succeeded", "failed"]);
    assert_eq!(
        (run["state"].as_str(), run["kind"].as_str()),
        (Some("succeeded"), Some("rollback"))
    );
    assert_eq!(run["version"], app.good[1]);
    assert!(
        server.logs(back).contains("commits being deployed"),
        "{}",
        server.logs(back)
    );

    // Promote staging's deployed version to dev.
    let promoted = server.cli_json("alice", &["promote", "staging", "dev"])["id"]
        .as_i64()
        .unwrap();
    let run = server.wait_run(promoted, &["succeeded", "failed"]);
    assert_eq!(run["version"], app.good[1]);
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[1].as_str()));
    fails_with(
        &server.cli("alice", &["promote", "prod", "dev"]),
        &["prod has no deployed version"],
    );
    let table = stdout(&server.cli("x", &["runs", "staging"]));
    assert!(
        table.contains("fast_rollback") && table.contains("rollback"),
        "{table}"
    );
}

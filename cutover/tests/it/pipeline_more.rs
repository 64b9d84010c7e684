//! More of the pipeline: live log following, approval expiry, the rolling
//! strategy, supervision through the whole stack, the destructive pipeline,
//! fixed router ports and the suspend-timeout action.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::pipeline_support::{APP_CONFIG, App, header, http_get};
use crate::support::fails_with;

fn config_with(extra_envs: &str, scheduler: Option<&str>) -> String {
    let mut cfg = APP_CONFIG.to_owned();
    if let Some(s) = scheduler {
        cfg = cfg.replace("  suspend_timeout: 20s\n", s);
    }
    format!("{cfg}{extra_envs}")
}

#[test]
fn logs_follow_streams_a_run_live_until_it_ends() {
    let app = App::new();
    let server = app.start();
    app.hold("staging", "hold-install");
    let id = server.release("alice", "staging", &app.good[0]);
    server.wait_stage(id, "install");
    let mut follower = server
        .command("alice")
        .args(["logs", &id.to_string(), "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "still following while the run is held"
    );
    app.release_hold("staging", "hold-install");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = follower.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "logs --follow did not end with the run"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    follower.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    assert!(status.success(), "exit 0 for a succeeded run: {text}");
    let migrating = text
        .find("migrating to")
        .expect("lines from before the follow began");
    let switched = text
        .find("traffic switched")
        .expect("lines written while following");
    assert!(migrating < switched, "in order: {text}");
    assert!(
        text.trim_end().ends_with(&format!("run {id} succeeded")),
        "{text}"
    );
    // One line each, nothing doubled between backlog and live.
    assert_eq!(text.matches("── Install ──").count(), 1, "{text}");
}

#[test]
fn an_approval_that_nobody_gives_expires_and_the_run_fails() {
    let cfg = config_with(
        "  qa:      { tier: stage, branch: main, approval: true, approval_timeout: 1s }\n",
        None,
    );
    let app = App::with_config(&cfg);
    let server = app.start();
    let id = server.release("alice", "qa", &app.good[0]);
    let run = server.wait_run(id, &["failed", "succeeded"]);
    assert_eq!(run["failed_stage"], "approval");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("approval expired after 1s"),
        "{run:#}"
    );
    fails_with(
        &server.cli("bob", &["approve", &id.to_string()]),
        &["not waiting for approval"],
    );
}

#[test]
fn rolling_replaces_instance_by_instance_without_failures() {
    let cfg = config_with("  roll:    { tier: dev, strategy: rolling }\n", None);
    let app = App::with_config(&cfg);
    let server = app.start();
    server.deploy("alice", "roll", &app.good[0]);
    let port = server.router_port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) && seen.len() < 20_000 {
                let v = http_get(port, "api.roll.shop.localhost", "/health")
                    .filter(|(s, _, _)| *s == 200)
                    .and_then(|(_, h, _)| header(&h, "x-cutover-version"));
                seen.push(v);
            }
            seen
        })
    };
    let second = server.release("alice", "roll", &app.good[1]);
    let run = server.wait_run(second, &["succeeded", "failed"]);
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert_eq!(run["state"], "succeeded", "{}", server.logs(second));
    assert_eq!(
        seen.iter().filter(|v| v.is_none()).count(),
        0,
        "no failed request during a rolling deploy"
    );
    assert!(server.logs(second).contains("replaced old instance"));
    assert_eq!(server.api_version("roll").as_deref(), Some(app.good[1].as_str()));
    let status = server.cli_json("x", &["status", "roll"]);
    let api = &status["services"][0];
    assert_eq!(api["instances"].as_array().unwrap().len(), 2);
    assert!(
        api["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["version"] == app.good[1])
    );
}

#[test]
fn a_killed_instance_is_restarted_and_keeps_its_version() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    let status = server.cli_json("x", &["status", "staging"]);
    let victim = &status["services"][0]["instances"][0];
    let (inst, pid) = (
        victim["id"].as_str().unwrap().to_owned(),
        victim["pid"].as_u64().unwrap(),
    );
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.cli_json("x", &["status", "staging"]);
        let i = status["services"][0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == inst)
            .cloned();
        if let Some(i) = i.filter(|i| i["restarts"] == 1 && i["healthy"] == true) {
            assert_ne!(i["pid"].as_u64(), Some(pid));
            assert_eq!(i["version"], app.good[0]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance {inst} was not restarted: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[0].as_str())
    );
}

#[test]
fn the_destructive_pipeline_resets_data_and_job_history() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    server.cli_json("alice", &["scheduler", "run", "dev", "report"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.cli_json("x", &["scheduler", "logs", "dev", "report"])["runs"][0]["state"] == "running" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = server.cli_json("alice", &["release", "dev", "--destructive", "--yes"]);
    let id = run["id"].as_i64().unwrap();
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(
        (run["state"].as_str(), run["kind"].as_str()),
        (Some("succeeded"), Some("destructive"))
    );
    let logs = server.logs(id);
    assert!(logs.contains("resetting data for dev"), "{logs}");
    assert!(logs.contains("scheduler reset: 1 job runs"), "{logs}");
    assert!(
        !logs.contains("migrating to"),
        "the normal install hook did not run: {logs}"
    );
    assert_eq!(
        server.cli_json("x", &["scheduler", "logs", "dev", "report"])["runs"],
        serde_json::json!([])
    );
}

#[test]
fn a_fixed_router_port_serves_its_service_and_service_logs_follow() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config_with(
        &format!("  fixed:   {{ tier: dev, ports: {{ api: {port} }} }}\n"),
        None,
    );
    let app = App::with_config(&cfg);
    let server = app.start();
    server.deploy("alice", "fixed", &app.good[0]);
    let (status, head, _) = http_get(port, "anything.example", "/health").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "x-cutover-version").as_deref(),
        Some(app.good[0].as_str())
    );
    let st = server.cli_json("x", &["status", "fixed"]);
    assert_eq!(st["services"][0]["port_url"], format!("http://127.0.0.1:{port}/"));

    let mut follower = server
        .command("x")
        .args(["service", "logs", "fixed", "api", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..4 {
        http_get(port, "x", "/api/products?marker=followed").unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = follower.kill();
    let mut text = String::new();
    follower.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let _ = follower.wait();
    assert!(
        text.contains("marker=followed"),
        "request lines arrive live: {text}"
    );
}

#[test]
fn on_suspend_timeout_terminate_stops_the_running_job_and_goes_on() {
    let cfg = config_with(
        "",
        Some("  suspend_timeout: 1s\n  on_suspend_timeout: terminate\n"),
    );
    let app = App::with_config(&cfg);
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    app.hold("staging", "job-hold");
    server.cli_json("alice", &["scheduler", "run", "staging", "report"]);
    let id = server.release("alice", "staging", &app.good[1]);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    assert!(
        server.logs(id).contains("terminating jobs still running"),
        "{}",
        server.logs(id)
    );
    let runs = server.cli_json("x", &["scheduler", "logs", "staging", "report"]);
    assert_eq!(runs["runs"][0]["state"], "terminated", "{runs:#}");
    app.release_hold("staging", "job-hold");
}

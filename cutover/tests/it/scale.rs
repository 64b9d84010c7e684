//! Scale changes end to end: on dev applied at once, blue-green, under load with no failed
//! request, and kept by the next deploy; on a fixed-size tier a change request that only
//! someone else can approve (or reject with a reason).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pipeline_support::{App, http_get};
use crate::support::{Server, fails_with};

/// The `api` service's serving instances: (id, pid, version).
fn serving(server: &Server, env: &str) -> Vec<(String, u64, String)> {
    let status = server.cli_json("x", &["status", env]);
    let api = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .expect("an api service")
        .clone();
    api["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["role"] == "serving")
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["pid"].as_u64().unwrap_or(0),
                i["version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn dev_scales_at_once_without_dropping_a_request_and_keeps_the_count() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    let before = serving(&server, "dev");
    assert_eq!(before.len(), 2);

    // Continuous requests through the router while the service scales to 3.
    let port = server.router_port;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, 0);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && ok + failed < 20_000 {
                    match http_get(port, "api.dev.shop.localhost", "/health") {
                        Some((200, _, _)) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let answer = server.cli_json("alice", &["scale", "dev", "api", "3", "-m", "more room"]);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!(answer["applied"], true, "{answer:#}");
    assert_eq!(answer["request"]["state"], "applied");
    assert_eq!(
        (
            answer["request"]["from"].as_u64(),
            answer["request"]["to"].as_u64()
        ),
        (Some(2), Some(3))
    );
    assert!(ok > 50, "the load ran ({ok} answers)");
    assert_eq!(failed, 0, "no request failed while scaling ({ok} ok)");

    let after = serving(&server, "dev");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|(_, _, v)| v == &app.good[0]),
        "same version: {after:?}"
    );
    for (id, pid, _) in &before {
        assert!(
            !after.iter().any(|(i, _, _)| i == id),
            "old instance {id} replaced"
        );
        assert!(!alive(*pid), "old instance {id} (pid {pid}) stopped");
    }
    let status = server.cli_json("x", &["status", "dev"]);
    let api = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap()
        .clone();
    assert_eq!(api["replicas"], 3);

    // The count holds for the next deploy; people cannot write it around `scale`.
    server.deploy("alice", "dev", &app.good[1]);
    let next = serving(&server, "dev");
    assert_eq!(next.len(), 3, "{next:?}");
    assert!(next.iter().all(|(_, _, v)| v == &app.good[1]));
    fails_with(
        &server.cli("alice", &["param", "put", "/shop-dev/replicas/api", "9"]),
        &["cutover scale"],
    );
    // Bad requests change nothing.
    fails_with(
        &server.cli("alice", &["scale", "dev", "nosuch", "2"]),
        &["unknown service", "api"],
    );
    fails_with(
        &server.cli("alice", &["scale", "dev", "api", "0"]),
        &["between 1 and 32"],
    );
    fails_with(
        &server.cli("alice", &["scale", "dev", "api", "3"]),
        &["already runs 3"],
    );
    fails_with(
        &server.cli("alice", &["scale", "prod", "api", "3"]),
        &["nothing is deployed in prod"],
    );
    assert_eq!(serving(&server, "dev").len(), 3);
    let audit = server.cli_json("x", &["audit", "-n", "100"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "scale.apply"),
        "the change is audited"
    );
}

#[test]
fn a_fixed_size_tier_scales_only_after_someone_else_approves() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);

    let answer = server.cli_json("alice", &["scale", "staging", "api", "3", "-m", "load test"]);
    assert_eq!(answer["applied"], false, "{answer:#}");
    assert_eq!(answer["request"]["state"], "pending");
    let id = answer["request"]["id"].as_i64().unwrap().to_string();
    assert_eq!(
        serving(&server, "staging").len(),
        2,
        "nothing changes before approval"
    );

    fails_with(
        &server.cli("alice", &["scale", "approve", &id]),
        &["someone else"],
    );
    let approved = server.cli_json("bob", &["scale", "approve", &id]);
    assert_eq!(approved["applied"], true, "{approved:#}");
    assert_eq!(approved["request"]["state"], "applied");
    assert_eq!(approved["request"]["decided_by"], "bob");
    assert_eq!(serving(&server, "staging").len(), 3);
    fails_with(
        &server.cli("carol", &["scale", "approve", &id]),
        &["applied already"],
    );

    // A rejection needs a reason and leaves the count as it is.
    let second = server.cli_json("alice", &["scale", "staging", "api", "1"]);
    let id2 = second["request"]["id"].as_i64().unwrap().to_string();
    assert_ne!(id, id2);
    fails_with(
        &server.cli("bob", &["scale", "reject", &id2]),
        &["needs a reason"],
    );
    let rejected = server.cli_json("bob", &["scale", "reject", &id2, "-m", "not during the sale"]);
    assert_eq!(rejected["request"]["state"], "rejected");
    assert_eq!(serving(&server, "staging").len(), 3);

    let list: Value = server.cli_json("x", &["scale", "requests", "staging"]);
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert_eq!(states, ["rejected", "applied"], "newest first: {list:#}");
}

/// The `api` service's replica count in force.
fn replicas(server: &Server, env: &str) -> u64 {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .and_then(|s| s["replicas"].as_u64())
        .unwrap_or(0)
}

#[test]
fn production_follows_its_request_rate_between_min_and_max() {
    let config = crate::pipeline_support::APP_CONFIG.replace(
        "prod:    { tier: prod, branch: main, requires: [] }",
        "prod:    { tier: prod, branch: main, requires: [], autoscale: { min: 1, max: 3, target_rps_per_replica: 20 } }",
    );
    assert!(config.contains("autoscale"), "the fixture's prod line changed");
    let app = App::with_config(&config);
    let server = app.start_with(&[("CUTOVER_AUTOSCALE_INTERVAL", "1s")]);
    let id = server.release("alice", "prod", &app.good[0]);
    server.wait_run(id, &["awaiting_approval"]);
    server.cli_json("bob", &["approve", &id.to_string()]);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    // cutover.yml says 2 replicas; with no traffic the autoscaler brings it down to min.
    let deadline = Instant::now() + Duration::from_secs(30);
    while replicas(&server, "prod") != 1 || serving(&server, "prod").len() != 1 {
        assert!(Instant::now() < deadline, "idle prod scales down to min 1");
        std::thread::sleep(Duration::from_millis(250));
    }

    // ~100 req/s against a target of 20 per replica: up to max 3, with no failed request.
    let port = server.router_port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match http_get(port, "api.prod.shop.localhost", "/health") {
                    Some((200, _, _)) => ok += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(8));
            }
            (ok, failed)
        })
    };
    // The count is recorded before the instances start: wait for both.
    let deadline = Instant::now() + Duration::from_secs(30);
    while replicas(&server, "prod") != 3 || serving(&server, "prod").len() != 3 {
        assert!(Instant::now() < deadline, "busy prod scales up to max 3");
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 100, "the load ran ({ok})");
    assert_eq!(failed, 0, "no request failed while autoscaling");

    // Quiet again: back down to min after a few quiet looks.
    // Every change the autoscaler made is recorded as applied once it is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = server.cli_json("x", &["scale", "requests", "prod"]);
        let auto: Vec<&Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["requested_by"] == "cutover")
            .collect();
        let done = auto.len() >= 3
            && auto.iter().all(|r| r["state"] == "applied")
            && replicas(&server, "prod") == 1
            && serving(&server, "prod").len() == 1;
        if done {
            assert!(
                auto.iter()
                    .all(|r| r["comment"].as_str().is_some_and(|c| c.starts_with("autoscale:"))),
                "{list:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "quiet prod scales back to min 1 (down, up, down): {list:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

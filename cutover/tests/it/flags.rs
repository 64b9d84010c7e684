//! Feature flags per environment: `cutover flag set/list`, delivered to running instances
//! through `$CUTOVER_FLAGS_FILE` without a restart, owned by the flag command (`param put`
//! refuses the keys), validated, with history in the parameter store.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::pipeline_support::App;
use crate::security::raw;
use crate::support::{Server, fails_with, stdout};

/// The pids of `env`'s serving instances.
fn serving_pids(server: &Server, env: &str) -> BTreeSet<u64> {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .filter(|i| i["role"] == "serving")
        .filter_map(|i| i["pid"].as_u64())
        .collect()
}

fn flags_file(app: &App, env: &str) -> Value {
    let path = app.env_dir(env).join("flags.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", path.display()))
}

#[test]
fn flags_reach_running_instances_without_a_restart_and_only_the_flag_command_writes_them() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);

    // At start the file exists, empty: apps need not special-case a missing file.
    assert_eq!(flags_file(&app, "dev")["flags"], serde_json::json!({}));

    // Every instance has the variable, pointing at the environment's file.
    let pids = serving_pids(&server, "dev");
    assert!(pids.len() >= 2, "api (2 replicas) and worker serve: {pids:?}");
    let expected = format!(
        "CUTOVER_FLAGS_FILE={}",
        app.env_dir("dev").join("flags.json").display()
    );
    for pid in &pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert!(
            vars.contains(&expected),
            "instance {pid} lacks {expected}: {vars:?}"
        );
    }

    // Setting a flag rewrites the file before the command returns; the instances stay.
    let before = flags_file(&app, "dev")["updated_at_ms"].as_i64().unwrap();
    let set = server.cli_json("alice", &["flag", "set", "dev", "new_checkout", "on"]);
    assert_eq!(set["value"], "on");
    assert_eq!(set["version"], 1);
    let file = flags_file(&app, "dev");
    assert_eq!(file["flags"], serde_json::json!({ "new_checkout": true }));
    assert!(file["updated_at_ms"].as_i64().unwrap() >= before);
    server.cli_json("alice", &["flag", "set", "dev", "new_checkout", "off"]);
    server.cli_json("alice", &["flag", "set", "dev", "dark-mode", "on"]);
    assert_eq!(
        flags_file(&app, "dev")["flags"],
        serde_json::json!({ "new_checkout": false, "dark-mode": true })
    );
    assert_eq!(
        serving_pids(&server, "dev"),
        pids,
        "a flag change restarted instances"
    );
    // Other environments are untouched.
    assert_eq!(flags_file(&app, "staging")["flags"], serde_json::json!({}));

    // The list, human and JSON.
    let list = server.cli_json("x", &["flag", "list", "dev"]);
    let names: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["value"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("dark-mode", "on"), ("new_checkout", "off")]);
    let human = stdout(&server.cli("x", &["flag", "list", "dev"]));
    assert!(human.contains("new_checkout") && human.contains("off"), "{human}");

    // History in the parameter store, with who set it.
    let history = server.cli_json("x", &["param", "history", "/shop-dev/flags/new_checkout"]);
    let values: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(sorted, ["off", "on"], "{history}");

    // Audited as flag.set.
    let audit = server.cli_json("x", &["audit"]);
    let flag_sets = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "flag.set" && e["actor"] == "alice")
        .count();
    assert_eq!(flag_sets, 3, "{audit}");

    // Only the flag command writes flags.
    fails_with(
        &server.cli("alice", &["param", "put", "/shop-dev/flags/new_checkout", "on"]),
        &["feature flag", "cutover flag set"],
    );

    // Bad values and names are refused, saying what is accepted; nothing changes.
    fails_with(
        &server.cli("alice", &["flag", "set", "dev", "new_checkout", "yes"]),
        &["\"yes\"", "\"on\" or \"off\""],
    );
    fails_with(
        &server.cli("alice", &["flag", "set", "dev", "New", "on"]),
        &["flag name", "\"New\"", "lowercase letter first"],
    );
    fails_with(
        &server.cli("alice", &["flag", "set", "dev", &"a".repeat(64), "on"]),
        &["flag name", "too long"],
    );
    fails_with(
        &server.cli("alice", &["flag", "set", "nosuch", "x", "on"]),
        &["unknown environment"],
    );
    assert_eq!(
        flags_file(&app, "dev")["flags"],
        serde_json::json!({ "new_checkout": false, "dark-mode": true })
    );

    // The API refuses unknown fields, naming the one it did not expect.
    let token = server.token("alice");
    let (status, _, body) = raw(
        &server,
        "PUT",
        "/api/v1/environments/dev/flags/new_checkout",
        Some(&token),
        r#"{"value": "on", "percent": 10}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("percent"), "{body}");
    let (status, _, body) = raw(
        &server,
        "PUT",
        "/api/v1/environments/dev/flags/new_checkout",
        Some(&token),
        r#"{"value": "on"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(flags_file(&app, "dev")["flags"]["new_checkout"], true);

    // Instances started where the file is missing (an environment made after the start) get
    // it written first, with the stored flags.
    std::fs::remove_file(app.env_dir("dev").join("flags.json")).unwrap();
    let scaled = server.cli_json("alice", &["scale", "dev", "worker", "2"]);
    assert_eq!(scaled["applied"], true, "{scaled}");
    assert_eq!(
        flags_file(&app, "dev")["flags"],
        serde_json::json!({ "new_checkout": true, "dark-mode": true })
    );
}

#[test]
fn promote_carries_flags_only_when_asked_and_onto_production_only_for_an_approver() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    server.cli_json("alice", &["flag", "set", "staging", "new_checkout", "on"]);
    server.cli_json("alice", &["flag", "set", "staging", "beta", "off"]);
    server.cli_json("alice", &["flag", "set", "prod", "new_checkout", "off"]);
    server.cli_json("alice", &["flag", "set", "prod", "prod_only", "on"]);
    let prod_before = serde_json::json!({ "new_checkout": false, "prod_only": true });

    // Without --flags: prod's flags stay as they were.
    let run = server.cli_json("alice", &["promote", "staging", "prod"]);
    assert!(run["id"].is_i64(), "{run}");
    assert_eq!(flags_file(&app, "prod")["flags"], prod_before);

    // Onto production, carrying flags is an approver's decision: a deployer is refused, and
    // nothing changes (not even the run).
    let dora = crate::dashboard_live::mint(&server, "dora", &["--role", "deployer"]);
    let runs_before = server.cli_json("x", &["runs", "prod"]).as_array().unwrap().len();
    let refused = server
        .command_with_token(&dora)
        .args(["promote", "staging", "prod", "--flags"])
        .output()
        .unwrap();
    fails_with(&refused, &["approver", "prod"]);
    assert_eq!(flags_file(&app, "prod")["flags"], prod_before);
    assert_eq!(
        server.cli_json("x", &["runs", "prod"]).as_array().unwrap().len(),
        runs_before
    );

    // With --flags: every flag of staging lands on prod (flags only prod has stay), audited as
    // flag.set with the promote as reason.
    let run = server.cli_json("alice", &["promote", "staging", "prod", "--flags"]);
    let id = run["id"].as_i64().unwrap();
    assert_eq!(
        flags_file(&app, "prod")["flags"],
        serde_json::json!({ "new_checkout": true, "beta": false, "prod_only": true })
    );
    let audit = server.cli_json("x", &["audit"]);
    let carried: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "flag.set" && e["detail"]["env"] == "prod")
        .filter(|e| e["detail"]["reason"] == format!("promote from staging (run #{id})").as_str())
        .collect();
    assert_eq!(
        carried.len(),
        2,
        "new_checkout and beta, not the unchanged: {audit:#}"
    );
    assert!(carried.iter().all(|e| e["actor"] == "alice"));

    // Elsewhere a deployer may carry them.
    let out = server
        .command_with_token(&dora)
        .args(["promote", "staging", "dev", "--flags", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert_eq!(
        flags_file(&app, "dev")["flags"],
        serde_json::json!({ "new_checkout": true, "beta": false })
    );

    // The promotes' runs are not this test's subject: cancel what still waits.
    for run in server.cli_json("x", &["runs"]).as_array().unwrap() {
        if ["queued", "awaiting_approval", "running"].contains(&run["state"].as_str().unwrap()) {
            let id = run["id"].as_i64().unwrap();
            server.cli("alice", &["cancel", &id.to_string()]);
            server.wait_run(id, &["cancelled", "succeeded", "failed", "superseded"]);
        }
    }
}

const ECHO_PY: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        seen = self.headers.get_all("Cutover-Flags") or []
        body = ("%d\n%s\n" % (os.getpid(), " | ".join(seen) if seen else "-")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Echo).serve_forever()
"#;

const ECHO_CONFIG: &str = r#"
app: shop
repo: repo
services:
  web:
    run: "exec python3 echo.py"
    health: /health
    health_timeout: 20s
    replicas: 2
    public: true
environments:
  dev:   { tier: dev }
  other: { tier: dev }
"#;

/// One GET of `/` on `env`'s web through the router with `extra` header lines:
/// (the instance's pid, the Cutover-Flags it saw, "-" for none).
fn echo(port: u16, env: &str, extra: &str) -> Option<(u32, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: web.{env}.shop.localhost\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let mut lines = body.lines();
    Some((lines.next()?.parse().ok()?, lines.next()?.to_owned()))
}

/// A repository whose one public service echoes the Cutover-Flags it receives.
fn echo_app() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    crate::support::git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("echo.py"), ECHO_PY).unwrap();
    crate::support::git(&repo, &["add", "-A"]);
    crate::support::git(&repo, &["commit", "-q", "-m", "echo"]);
    let sha = crate::support::git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(dir.path().join("cutover.yml"), ECHO_CONFIG).unwrap();
    (dir, sha)
}

#[test]
fn a_control_plane_start_gives_a_fresh_router_the_stored_flags() {
    // The embedded router starts empty with each server: only the start's push can fill it.
    let (dir, sha) = echo_app();
    let (config, data) = (dir.path().join("cutover.yml"), dir.path().join("data"));
    let embedded = ["--data-plane", "embedded"];
    let server = Server::start_with_args(&config, &data, &[], &embedded);
    server.deploy("alice", "dev", &sha);
    server.cli_json("alice", &["flag", "set", "dev", "beta", "on"]);
    assert_eq!(echo(server.router_port, "dev", "").unwrap().1, "beta=on");
    assert!(server.terminate().success());

    let server = Server::start_with_args(&config, &data, &[], &embedded);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let seen = loop {
        if let Some((_, seen)) = echo(server.router_port, "dev", "") {
            break seen;
        }
        assert!(std::time::Instant::now() < deadline, "dev never served again");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(seen, "beta=on");
}

#[test]
fn the_router_sends_flags_in_a_header_that_clients_cannot_forge_and_a_toggle_reaches_the_app_at_once() {
    let (dir, sha) = echo_app();
    let server = Server::start(&dir.path().join("cutover.yml"), &dir.path().join("data"));
    server.deploy("alice", "dev", &sha);
    server.deploy("alice", "other", &sha);
    let port = server.router_port;

    // No flags yet: no header reaches the app, and a client's own is removed.
    let forged = "Cutover-Flags: admin_mode=on\r\ncutover-flags: beta=on\r\n";
    assert_eq!(echo(port, "dev", "").unwrap().1, "-");
    assert_eq!(echo(port, "dev", forged).unwrap().1, "-");

    // Continuous requests while the flag is toggled: every one answers, by the same pids.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = echo(port, "dev", "");
                seen.push((std::time::Instant::now(), answer));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            seen
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pids = serving_pids(&server, "dev");
    let set_at = std::time::Instant::now();
    server.cli_json("alice", &["flag", "set", "dev", "beta", "on"]);
    let returned = std::time::Instant::now();
    // Seen by the very next request.
    assert_eq!(echo(port, "dev", "").unwrap().1, "beta=on");
    server.cli_json("alice", &["flag", "set", "dev", "new_checkout", "off"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(seen.len() >= 10, "{}", seen.len());
    assert_eq!(
        seen[0].1.as_ref().map(|a| a.1.as_str()),
        Some("-"),
        "before the toggle"
    );
    assert!(
        seen.iter().all(|(_, a)| a.is_some()),
        "a request failed during the toggles"
    );
    let first_on = seen
        .iter()
        .find(|(_, a)| a.as_ref().unwrap().1.contains("beta=on"))
        .expect("the load saw the flag");
    assert!(
        first_on.0.saturating_duration_since(set_at) < std::time::Duration::from_secs(1),
        "seen {:?} after the command started (it returned after {:?})",
        first_on.0.saturating_duration_since(set_at),
        returned - set_at
    );
    let answered_by: BTreeSet<u64> = seen
        .iter()
        .map(|(_, a)| u64::from(a.as_ref().unwrap().0))
        .collect();
    assert_eq!(answered_by, pids, "the instances answering changed");
    assert_eq!(
        serving_pids(&server, "dev"),
        pids,
        "a flag change restarted instances"
    );

    // Both flags, sorted; the client's forged ones are gone; the other environment gets none.
    assert_eq!(echo(port, "dev", forged).unwrap().1, "beta=on, new_checkout=off");
    assert_eq!(echo(port, "other", forged).unwrap().1, "-");

    // A share of users: the header says it, the file keeps the flag off for apps that do not
    // look at percentages and gives the share beside it.
    let set = server.cli_json("alice", &["flag", "set", "dev", "new_checkout", "25%"]);
    assert_eq!(set["value"], "25%");
    assert_eq!(echo(port, "dev", forged).unwrap().1, "beta=on, new_checkout=25%");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/envs/dev/flags.json")).unwrap())
            .unwrap();
    assert_eq!(
        file["flags"],
        serde_json::json!({ "beta": true, "new_checkout": false })
    );
    assert_eq!(file["percent"], serde_json::json!({ "new_checkout": 25 }));
    for bad in ["101%", "2.5%", "25", "%"] {
        fails_with(
            &server.cli("alice", &["flag", "set", "dev", "new_checkout", bad]),
            &[&format!("{bad:?}"), "\"25%\""],
        );
    }

    // Persisted with the routes (routes.json), as gates are: a restarted data plane keeps them.
    let routes: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/dataplane/routes.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        routes["flags"],
        serde_json::json!([{ "app": "shop", "env": "dev", "flags": { "beta": "on", "new_checkout": "25%" } }]),
        "{routes:#}"
    );
}

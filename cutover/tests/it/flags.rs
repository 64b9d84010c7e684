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

//! Expand / contract and hooks that undo (issue: migration windows, items 3 and 4): a
//! `post_switch` hook runs after the switch, once the previous version (the warm release too) is
//! stopped; a rollback run executes `hooks.rollback` in the release it restores, with
//! CUTOVER_VERSION and CUTOVER_PREVIOUS_VERSION.

use crate::pipeline_support::{APP_CONFIG, App};

#[test]
fn post_switch_runs_after_the_old_version_stopped_and_a_rollback_runs_the_rollback_hook() {
    let hooks = "  post_switch: \"echo contract for $CUTOVER_VERSION >> $CUTOVER_ENV_DIR/contracts\"\n  \
                 rollback: \"echo down to $CUTOVER_VERSION from $CUTOVER_PREVIOUS_VERSION >> $CUTOVER_ENV_DIR/rollbacks\"\n";
    let config = APP_CONFIG.replacen("hooks:\n", &format!("hooks:\n{hooks}"), 1);
    assert_ne!(config, APP_CONFIG);
    let app = App::with_config(&config);
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    let id = server.deploy("alice", "dev", &app.good[1]);
    let contracts = std::fs::read_to_string(app.env_dir("dev").join("contracts")).unwrap_or_default();
    assert!(
        contracts.contains(&format!("contract for {}", app.good[1])),
        "{contracts}"
    );
    // In order: the switch, the previous release stopped, then the hook.
    let logs = server.logs(id);
    let at = |needle: &str| {
        logs.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {logs}"))
    };
    assert!(
        at("traffic switched to") < at("stopped before post_switch"),
        "{logs}"
    );
    assert!(at("stopped before post_switch") < at("$ echo contract"), "{logs}");
    let status = server.cli_json("x", &["status", "dev"]);
    assert!(
        status["warm_version"].is_null(),
        "no warm release after post_switch: {status:#}"
    );
    // So no fast rollback; a full rollback runs the rollback hook with both versions.
    let fast = server.cli("alice", &["rollback", "dev", "--fast", "--wait"]);
    assert!(!fast.status.success());
    let back = server.cli_json("alice", &["rollback", "dev", "--to", &app.good[0], "--wait"]);
    assert_eq!(back["state"], "succeeded", "{back:#}");
    let rollbacks = std::fs::read_to_string(app.env_dir("dev").join("rollbacks")).unwrap_or_default();
    assert_eq!(
        rollbacks.trim(),
        format!("down to {} from {}", app.good[0], app.good[1]),
        "the rollback hook ran once, in the restored release, naming both versions"
    );
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[0].as_str()));
    // A normal release does not run the rollback hook.
    server.deploy("alice", "dev", &app.good[2]);
    let rollbacks = std::fs::read_to_string(app.env_dir("dev").join("rollbacks")).unwrap_or_default();
    assert_eq!(rollbacks.lines().count(), 1, "{rollbacks}");
}

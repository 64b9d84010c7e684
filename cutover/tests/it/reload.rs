//! `cutover config reload`: the server's own cutover.yml swapped without a restart; a bad file,
//! a removed environment that still runs, or a change only a restart can apply changes nothing.

use crate::pipeline_support::App;
use crate::support::fails_with;

fn env_names(server: &crate::support::Server) -> Vec<String> {
    let list = server.cli_json("admin", &["env", "list"]);
    let items = list
        .as_array()
        .cloned()
        .or_else(|| list["environments"].as_array().cloned())
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|e| {
            e["name"]
                .as_str()
                .or_else(|| e["env"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn config_reload_adds_environments_and_refuses_what_it_cannot_apply_without_changing_anything() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    let file = app.dir.path().join("cutover.yml");
    let original = std::fs::read_to_string(&file).unwrap();
    let with_qa = original.replace(
        "  dev:     { tier: dev }\n",
        "  dev:     { tier: dev }\n  qa:      { tier: dev }\n",
    );
    assert_ne!(with_qa, original);

    // A new environment: listed, and deployable at once (its worker runs).
    std::fs::write(&file, &with_qa).unwrap();
    let report = server.cli_json("admin", &["config", "reload"]);
    assert_eq!(report["added"], serde_json::json!(["qa"]), "{report:#}");
    assert!(env_names(&server).contains(&"qa".to_owned()));
    server.deploy("alice", "qa", &app.good[1]);
    assert_eq!(server.api_version("qa").as_deref(), Some(app.good[1].as_str()));
    // (Only an admin may reload: `auth_matrix` checks every role against the route.)

    // A broken file: every error with its position, and nothing changes.
    std::fs::write(&file, "app: shop\nservices: [\n").unwrap();
    let out = server.cli("admin", &["config", "reload"]);
    fails_with(&out, &["cutover.yml:", "the running configuration stays"]);
    assert!(env_names(&server).contains(&"qa".to_owned()));

    // A change only a restart can apply.
    std::fs::write(&file, format!("{with_qa}router:\n  port: 7999\n")).unwrap();
    fails_with(
        &server.cli("admin", &["config", "reload"]),
        &["need a restart", "router"],
    );

    // Removing qa while it runs is refused; with --tear-down its instances stop first.
    std::fs::write(&file, &original).unwrap();
    fails_with(
        &server.cli("admin", &["config", "reload"]),
        &["qa", "still runs", "--tear-down qa"],
    );
    assert_eq!(
        server.api_version("qa").as_deref(),
        Some(app.good[1].as_str()),
        "nothing changed"
    );
    let report = server.cli_json("admin", &["config", "reload", "--tear-down", "qa"]);
    assert_eq!(report["removed"], serde_json::json!(["qa"]), "{report:#}");
    assert!(!env_names(&server).contains(&"qa".to_owned()));
    assert_eq!(server.via_router("api", "qa", "/health").map(|r| r.0), Some(404));
    // dev never noticed.
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[0].as_str()));
    let audit = server.cli_json("admin", &["audit"]);
    assert!(audit.to_string().contains("config.reload"), "{audit}");
}

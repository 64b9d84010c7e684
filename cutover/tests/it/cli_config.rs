//! `cutover config check` and the CLI's behaviour without a server.

use std::process::Command;

use crate::support::{BIN, Fixture, fails_with, json, stderr, stdout};

#[test]
fn config_check_summarizes_a_valid_file() {
    let fx = Fixture::new();
    let out = Command::new(BIN)
        .args(["config", "check", "-f"])
        .arg(fx.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in ["app: shop", "yves", "zed", "staging", "stage", "prod"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let out = Command::new(BIN)
        .args(["config", "check", "-o", "json", "-f"])
        .arg(fx.config())
        .output()
        .unwrap();
    assert_eq!(json(&out)["valid"], true);
}

#[test]
fn config_check_reports_every_error_with_line_and_column() {
    let fx = Fixture::new();
    let bad = fx.dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "app: Shop\nrepo: repo\nservices:\n  web:\n    run: x\n    replica: 2\nenvironments:\n  prod: { tier: production }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    fails_with(
        &out,
        &[
            "bad.yml:1:",
            "app",
            "bad.yml:6:",
            "replicas",
            "environments.prod.tier",
            "production",
        ],
    );
}

#[test]
fn serve_refuses_an_invalid_config_and_says_where() {
    let fx = Fixture::new();
    let bad = fx.dir.path().join("bad.yml");
    std::fs::write(&bad, "app: shop\nservices: [\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(fx.data_dir())
        .output()
        .unwrap();
    fails_with(&out, &["bad.yml:"]);
    assert!(!fx.data_dir().join("cutover.db").exists(), "nothing was created");
}

#[test]
fn a_cli_call_with_no_server_says_how_to_start_one() {
    // Port 1 on loopback: nothing listens there.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["env", "list"])
        .env("CUTOVER_URL", "http://127.0.0.1:1")
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    fails_with(
        &out,
        &["no Cutover server answers at http://127.0.0.1:1", "cutover serve"],
    );
}

#[test]
fn help_teaches_each_command() {
    let out = Command::new(BIN)
        .args(["param", "put", "--help"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("--expect-version") && text.contains("Example"),
        "{text}"
    );
}

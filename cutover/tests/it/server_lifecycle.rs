//! The server's life: one owner per data directory, state kept across
//! restarts, graceful stop on SIGTERM.

use crate::support::Fixture;

#[test]
fn state_survives_a_restart_and_sigterm_stops_cleanly() {
    let fx = Fixture::new();
    let server = fx.start();
    server.cli_json(
        "alice",
        &["param", "put", "/shop-staging/desired_version", &fx.main[0]],
    );
    let status = server.terminate();
    assert!(status.success(), "graceful exit on SIGTERM, got {status}");

    let server = fx.start();
    let get = server.cli_json("x", &["param", "get", "/shop-staging/desired_version"]);
    assert_eq!(get["value"], fx.main[0]);
    assert_eq!(get["actor"], "alice");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let fx = Fixture::new();
    let _first = fx.start();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(fx.config())
        .arg("--data-dir")
        .arg(fx.data_dir())
        .output()
        .unwrap();
    crate::support::fails_with(&out, &["already using the data directory", "--data-dir"]);
}

#[test]
fn the_server_refuses_a_config_whose_repo_is_not_git() {
    let fx = Fixture::new();
    std::fs::remove_dir_all(fx.dir.path().join("repo").join(".git")).unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(fx.config())
        .arg("--data-dir")
        .arg(fx.data_dir())
        .output()
        .unwrap();
    crate::support::fails_with(&out, &["repo"]);
}

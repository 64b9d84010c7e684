//! The CLI behaves as a Unix tool: a closed pipe ends it quietly, secrets can come from stdin,
//! and logs written to a file carry no colour codes.

use std::io::Write;
use std::process::Stdio;

use crate::support::{Fixture, serve_command, stdout};

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let fx = Fixture::new();
    let server = fx.start();
    for _ in 0..3 {
        let mut child = server
            .command("admin")
            .args(["env", "list"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -0`: the reader is gone before the command prints.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "{err}");
    }
}

#[test]
fn param_put_reads_the_value_from_stdin_with_a_dash() {
    let fx = Fixture::new();
    let server = fx.start();
    let mut child = server
        .command("admin")
        .args(["param", "put", "/shop-dev/secrets/db_password", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not on the command line\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !stdout(&out).contains("not on the command line"),
        "a secret is shown as ****"
    );
    // The value arrived without its newline: a setting shows its value back.
    let mut child = server
        .command("admin")
        .args(["param", "put", "/shop-dev/env/GREETING", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello there\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let got = server.cli_json("admin", &["param", "get", "/shop-dev/env/GREETING"]);
    assert_eq!(got["value"], "hello there");
}

#[test]
fn the_server_log_written_to_a_file_has_no_colour_codes() {
    let fx = Fixture::new();
    let log = fx.dir.path().join("server.log");
    let home = tempfile::tempdir().unwrap();
    let mut child = serve_command(fx.config(), fx.data_dir())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env("XDG_CONFIG_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    crate::support::addresses(&mut child);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "the server logged at info: {text}");
    assert!(!text.contains('\u{1b}'), "ANSI codes in a log file: {text:?}");
}

#[test]
fn a_busy_router_port_is_named_with_the_flag_that_moves_it() {
    let fx = Fixture::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--router-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(fx.config())
        .arg("--data-dir")
        .arg(fx.data_dir())
        .env("XDG_CONFIG_HOME", fx.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (the router)"))
            && err.contains("--router-listen or router.port"),
        "{err}"
    );
    assert!(!err.contains("choose another with --listen"), "{err}");
}

#[test]
fn role_is_a_fixed_choice_and_stage_names_take_either_spelling() {
    let fx = Fixture::new();
    let server = fx.start();
    let out = server.cli("admin", &["token", "create", "eve", "--role", "superuser"]);
    assert!(!out.status.success());
    let err = crate::support::stderr(&out);
    assert!(
        err.contains("possible values: viewer, deployer, approver, admin"),
        "{err}"
    );
    let run = server.cli_json("admin", &["release", "dev", "--version", &fx.develop_only]);
    let id = run["id"].as_i64().unwrap().to_string();
    for spelling in ["version-info", "version_info"] {
        let out = server.cli("admin", &["logs", &id, "--stage", spelling]);
        assert!(
            out.status.success(),
            "{spelling}: {}",
            crate::support::stderr(&out)
        );
    }
}

#[test]
fn release_wait_exits_with_the_outcome_of_the_run() {
    use crate::pipeline_support::App;
    let app = App::new();
    let server = app.start();
    let code = |args: &[&str]| {
        let out = server.cli("admin", args);
        (out.status.code(), stdout(&out))
    };
    let (c, line) = code(&["release", "dev", "--version", &app.good[0], "--wait"]);
    assert_eq!(c, Some(0), "{line}");
    assert!(
        line.contains("succeeded after") && line.lines().count() == 1,
        "{line}"
    );
    let (c, line) = code(&["release", "dev", "--version", &app.broken, "--wait"]);
    assert_eq!(c, Some(1), "{line}");
    assert_eq!(
        line.lines().count(),
        1,
        "one line, the full report stays in the log: {line}"
    );
    let (c, line) = code(&["release", "prod", "--version", &app.good[0], "--wait"]);
    assert_eq!(c, Some(5), "{line}");
    assert!(line.contains("waits for approval"), "{line}");
    app.hold("dev", "hold");
    let (c, line) = code(&[
        "release",
        "dev",
        "--version",
        &app.good[1],
        "--wait",
        "--timeout",
        "2s",
    ]);
    app.release_hold("dev", "hold");
    assert_eq!(c, Some(4), "{line}");
    assert!(line.contains("after --timeout 2s"), "{line}");
    // The held run goes on; let it end so the list below cannot change under the check.
    let (c, line) = code(&["release", "dev", "--wait"]);
    assert!(matches!(c, Some(0 | 3)), "{line}");
    server.wait_run(
        server.cli_json("admin", &["runs", "dev", "-n", "1"])[0]["id"]
            .as_i64()
            .unwrap(),
        &["succeeded", "failed", "cancelled", "superseded"],
    );
    let before = server.cli_json("admin", &["runs", "dev"]);
    let out = server.cli("admin", &["release", "dev", "--wait", "--timeout", "soon"]);
    // Refused by clap with cutover.yml's own duration parser: a usage error, exit 2.
    assert_eq!(out.status.code(), Some(2));
    let err = crate::support::stderr(&out);
    assert!(err.contains("'soon'") && err.contains("--timeout"), "{err}");
    assert_eq!(
        server.cli_json("admin", &["runs", "dev"]),
        before,
        "a bad --timeout queues nothing"
    );
}

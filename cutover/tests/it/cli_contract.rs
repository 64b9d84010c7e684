//! The CLI behaves as a Unix tool: a closed pipe ends it quietly, secrets can come from stdin,
//! and logs written to a file carry no colour codes.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    let lines = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.lines().map_while(Result::ok) {
        if line.starts_with("cutover: listening on ") || Instant::now() > deadline {
            break;
        }
    }
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

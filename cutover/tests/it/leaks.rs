//! No secret leaks (issue 11, finding 4): settings and secrets are masked in service logs (as
//! served, tail and follow), in run logs in their common encodings, short and multi-line, in
//! the server's own log; the broker stage never repeats a broker's answer (which may echo the
//! request) and never follows a redirect elsewhere; webhooks follow no redirect elsewhere.
//!
//! Fake brokers and receivers are tiny HTTP servers on 127.0.0.1 in this file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::{Server, git, serve_command};

const PASSWORD: &str = "s3cr3t/pa ss+wd?";
const CERT: &str = "-----BEGIN TEST-----\nline-one-Xq9\nline-two-Zr7\n-----END TEST-----";
const PIN: &str = "7q";

/// Standard base64 (the test crate has no base64 dependency).
fn base64(raw: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `cutover serve` with its log (at info) in a file: (server, path of the log).
fn start_logged(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> (Server, PathBuf) {
    let log_path = data_dir.with_extension("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = serve_command(config, data_dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("cutover serve starts");
    let (url, router_port) = crate::support::addresses(&mut child);
    let admin = std::fs::read_to_string(data_dir.join("admin.token")).unwrap();
    (
        Server::adopt(child, url, router_port, admin.trim().to_owned()),
        log_path,
    )
}

/// A repository with one commit of `files` and `cutover.yml`: (its directory, the commit).
fn repo_with(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for (name, text) in files {
        std::fs::write(repo.join(name), text).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "leaky"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(dir.path().join("cutover.yml"), config).unwrap();
    (dir, sha)
}

const LEAKY_CONFIG: &str = r#"
app: shop
repo: repo
services:
  printer:
    run: "sh printer.sh"
hooks:
  install: "sh leak.sh"
scheduler:
  jobs:
    leak: { schedule: "0 0 1 1 *", run: "sh leak.sh" }
environments:
  dev: { tier: dev }
"#;

/// An instance that prints its environment (and an encoded setting) again and again.
const PRINTER: &str =
    "while true; do env; echo \"printed-b64=$(printf %s \"$DB_PASSWORD\" | base64 -w0)\"; sleep 0.2; done\n";

/// A hook that prints the settings in every form a careless script might.
const LEAK: &str = r#"echo "plain=$DB_PASSWORD"
echo "b64=$(printf %s "$DB_PASSWORD" | base64 -w0)"
echo "b64url=$(printf %s "$DB_PASSWORD" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
echo "basic=$(printf 'deploy:%s' "$DB_PASSWORD" | base64 -w0)"
echo "hex=$(printf %s "$DB_PASSWORD" | od -An -tx1 | tr -d ' \n')"
echo "HEX=$(printf %s "$DB_PASSWORD" | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
echo "url=$(printf %s "$DB_PASSWORD" | od -An -tx1 | tr -s ' \n' ' ' | sed 's/ *$//; s/ /%/g')"
echo "cert=$CERT"
echo "pin=[$PIN]"
echo "constant=token-abc-123-later"
"#;

/// The text after `key=` on the first line that has it.
fn value_of<'a>(log: &'a str, key: &str) -> &'a str {
    let needle = format!("{key}=");
    log.lines()
        .find_map(|l| l.split_once(&needle).map(|(_, v)| v.trim_end()))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{log}"))
}

fn assert_no_leak(what: &str, text: &str) {
    let forms = [
        PASSWORD.to_owned(),
        base64(PASSWORD.as_bytes()),
        PASSWORD.bytes().map(|b| format!("{b:02x}")).collect(),
        "line-one-Xq9".to_owned(),
        "line-two-Zr7".to_owned(),
        format!("[{PIN}]"),
        format!("PIN={PIN}\n"),
    ];
    for form in forms {
        assert!(!text.contains(&form), "{what} shows {form:?}:\n{text}");
    }
}

#[test]
fn settings_are_masked_in_run_job_service_and_server_logs_in_every_form() {
    let (dir, sha) = repo_with(LEAKY_CONFIG, &[("printer.sh", PRINTER), ("leak.sh", LEAK)]);
    let (server, server_log) = start_logged(&dir.path().join("cutover.yml"), &dir.path().join("data"), &[]);
    for (name, value) in [("DB_PASSWORD", PASSWORD), ("CERT", CERT), ("PIN", PIN)] {
        let key = format!("/shop-dev/env/{name}");
        let put = server.cli("alice", &["param", "put", "--", &key, value]);
        assert!(put.status.success(), "{put:?}");
    }
    let id = server.deploy("alice", "dev", &sha);

    // The hook's run log: every form masked, each line of the certificate, the short PIN.
    let log = server.logs(id);
    for key in ["plain", "b64", "b64url", "hex", "HEX", "url"] {
        assert_eq!(value_of(&log, key), "****", "{key} in:\n{log}");
    }
    let basic = value_of(&log, "basic");
    assert!(
        basic.starts_with("ZGVwbG95O") && basic.contains("****") && basic.len() < 20,
        "the password inside base64(user:password) is masked: {basic}"
    );
    assert_eq!(value_of(&log, "cert"), "****", "{log}");
    assert_eq!(value_of(&log, "pin"), "[****]", "{log}");
    assert_no_leak("the run log", &log);
    // A value set after the line was written is masked as the log is served.
    assert_eq!(value_of(&log, "constant"), "token-abc-123-later");
    let put = server.cli(
        "alice",
        &["param", "put", "/shop-dev/env/LATER", "token-abc-123-later"],
    );
    assert!(put.status.success(), "{put:?}");
    assert_eq!(value_of(&server.logs(id), "constant"), "****");

    // A job's log: the same hook as a job.
    server.cli_json("alice", &["scheduler", "run", "dev", "leak"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let job_log = loop {
        let out = server.cli("x", &["scheduler", "logs", "dev", "leak"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("pin=") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for key in ["plain", "b64", "b64url", "hex", "HEX", "url", "cert"] {
        assert_eq!(value_of(&job_log, key), "****", "{key} in:\n{job_log}");
    }
    assert_eq!(value_of(&job_log, "pin"), "[****]", "{job_log}");
    assert_no_leak("the job log", &job_log);

    // Service logs as served: the last lines, and followed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tail = loop {
        let out = server.cli("x", &["service", "logs", "dev", "printer", "--lines", "200"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("printed-b64=") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(tail.contains("DB_PASSWORD=****"), "{tail}");
    assert!(tail.contains("PIN=****"), "{tail}");
    assert!(tail.contains("printed-b64=****"), "{tail}");
    assert_no_leak("service logs", &tail);

    let mut follower = server
        .command("x")
        .args(["service", "logs", "dev", "printer", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = follower.kill();
    let mut followed = String::new();
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    let _ = follower.wait();
    assert!(
        followed.contains("DB_PASSWORD=****"),
        "lines arrive live: {followed}"
    );
    assert_no_leak("followed service logs", &followed);

    server.terminate();
    let text = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        text.contains("b64=****"),
        "the hook's lines are in the server log:\n{text}"
    );
    assert_no_leak("the server log", &text);
}

/// A fake RabbitMQ management API on 127.0.0.1: GETs find nothing (404), PUTs of vhosts and
/// permissions succeed, and a PUT of a user gets `user_answer(raw request)` as the whole
/// HTTP answer. Returns its port.
fn fake_broker(user_answer: fn(&str) -> String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Some((request, mut conn)) = read_request(conn) else {
                    return;
                };
                let answer = if request.starts_with("GET ") {
                    let body = r#"{"error":"Object Not Found"}"#;
                    format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else if request.starts_with("PUT /api/users/") {
                    user_answer(&request)
                } else {
                    "HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                };
                let _ = conn.write_all(answer.as_bytes());
            });
        }
    });
    port
}

/// One request (head and `content-length` body) as text.
fn read_request(conn: TcpStream) -> Option<(String, TcpStream)> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn);
    let mut text = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        text.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    text.push_str(&String::from_utf8_lossy(&body));
    Some((text, reader.into_inner()))
}

/// Counts and keeps every byte sent to it; answers nothing useful.
fn recording_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || {
                if let Some((request, mut conn)) = read_request(conn) {
                    keep.lock().unwrap().push(request);
                    let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
                }
            });
        }
    });
    (port, seen)
}

/// The pipeline fixture with a `rabbitmq:` section for a broker on `port` (admin `boss`,
/// user `shop`) and a webhook to `hook_port` whose URL carries a token.
fn broker_config(port: u16, hook_port: u16) -> String {
    format!(
        "{APP_CONFIG}rabbitmq:\n  url: http://127.0.0.1:{port}/\n  admin_user: boss\n  admin_password_secret: rabbit_admin\n\
         \x20 vhosts:\n    - name: /orders\n      users:\n\
         \x20       - {{ name: shop, password_secret: rabbit_shop, configure: \".*\", write: \".*\", read: \".*\" }}\n\
         webhooks:\n  - url: \"http://127.0.0.1:{hook_port}/hook?token=hook-token-4711\"\n"
    )
}

const USER_PASSWORD: &str = "usr-Pa55word-xyz";
const ADMIN_PASSWORD: &str = "adm1n-Pa55word";

/// Releases to dev against the broker on `broker` and returns (run, run log, webhook bodies,
/// server log), the run failed in the message-broker stage.
fn failed_broker_run(broker: u16) -> (serde_json::Value, String, String, String) {
    let (hook_port, hooks) = recording_listener();
    let app = App::with_config(&broker_config(broker, hook_port));
    let (server, server_log) = start_logged(
        &app.dir.path().join("cutover.yml"),
        &app.dir.path().join("data"),
        &[],
    );
    for (key, value) in [
        ("/shop-dev/secrets/rabbit_shop", USER_PASSWORD),
        ("/shop-dev/secrets/rabbit_admin", ADMIN_PASSWORD),
    ] {
        let put = server.cli("alice", &["param", "put", key, value]);
        assert!(put.status.success(), "{put:?}");
    }
    let id = server.release("alice", "dev", &app.good[0]);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["failed_stage"], "message_broker", "{run:#}");
    let log = server.logs(id);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !hooks.lock().unwrap().iter().any(|h| h.contains("run.finished")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let webhooks = hooks.lock().unwrap().join("\n");
    assert!(webhooks.contains("run.finished"), "webhooks arrived: {webhooks}");
    server.terminate();
    let server_log = std::fs::read_to_string(server_log).unwrap();
    (run, log, webhooks, server_log)
}

fn assert_no_credentials(what: &str, text: &str) {
    for form in [
        USER_PASSWORD.to_owned(),
        ADMIN_PASSWORD.to_owned(),
        base64(format!("boss:{ADMIN_PASSWORD}").as_bytes()),
        base64(USER_PASSWORD.as_bytes()),
    ] {
        assert!(!text.contains(&form), "{what} shows {form:?}:\n{text}");
    }
    assert!(
        !text.to_ascii_lowercase().contains("authorization"),
        "{what} repeats request headers:\n{text}"
    );
}

#[test]
fn a_broker_that_echoes_the_request_leaks_no_password_anywhere() {
    let broker = fake_broker(|request| {
        let body = serde_json::json!({ "error": "bad_request", "reason": request }).to_string();
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    });
    let (run, log, webhooks, server_log) = failed_broker_run(broker);
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("400") && error.contains("/api/users/shop"),
        "the error says what failed: {error}"
    );
    assert_no_credentials("the run's error", error);
    assert_no_credentials("the run log", &log);
    assert_no_credentials("the webhook bodies", &webhooks);
    assert_no_credentials("the server log", &server_log);
}

#[test]
fn a_broker_redirect_to_another_host_gets_no_password() {
    let (elsewhere, stolen) = recording_listener();
    // The answer names the other listener; `fn` pointers cannot capture, so it goes in a static.
    static ELSEWHERE: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    ELSEWHERE.set(elsewhere).unwrap();
    let broker = fake_broker(|_| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{}/api/users/shop\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n",
            ELSEWHERE.get().unwrap()
        )
    });
    let (run, log, webhooks, server_log) = failed_broker_run(broker);
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("307") && error.contains("redirect"),
        "the error says the broker redirected: {error}"
    );
    assert!(
        stolen.lock().unwrap().is_empty(),
        "the redirect target received: {:?}",
        stolen.lock().unwrap()
    );
    assert_no_credentials("the run log", &log);
    assert_no_credentials("the webhook bodies", &webhooks);
    assert_no_credentials("the server log", &server_log);
}

#[test]
fn a_webhook_receiver_answering_307_sends_nothing_to_the_redirect_target() {
    let (target, stolen) = recording_listener();
    let receiver = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_port = receiver.local_addr().unwrap().port();
    let posts = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&posts);
    std::thread::spawn(move || {
        for conn in receiver.incoming().flatten() {
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || {
                if let Some((request, mut conn)) = read_request(conn) {
                    keep.lock().unwrap().push(request);
                    let answer = format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{target}/steal\r\n\
                         content-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(answer.as_bytes());
                }
            });
        }
    });
    let app = App::with_config(&format!(
        "{APP_CONFIG}webhooks:\n  - url: \"http://127.0.0.1:{receiver_port}/hook?token=hook-token-4711\"\n"
    ));
    let (server, server_log) = start_logged(
        &app.dir.path().join("cutover.yml"),
        &app.dir.path().join("data"),
        &[],
    );
    let id = server.release("alice", "dev", &app.bad_install);
    server.wait_run(id, &["succeeded", "failed"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !posts.lock().unwrap().iter().any(|p| p.contains("run.finished")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        posts.lock().unwrap().iter().any(|p| p.contains("run.finished")),
        "the receiver got the events"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        stolen.lock().unwrap().is_empty(),
        "the redirect target received: {:?}",
        stolen.lock().unwrap()
    );
    server.terminate();
    let log = std::fs::read_to_string(server_log).unwrap();
    assert!(log.contains("webhook refused an event"), "{log}");
    assert!(
        !log.contains("hook-token-4711"),
        "the server log shows the webhook URL's token:\n{log}"
    );
}

#[test]
fn settings_are_encrypted_at_rest_and_shown_decrypted() {
    let fixture = crate::support::Fixture::new();
    let server = fixture.start();
    let key = "/shop-dev/env/API_KEY";
    let value = "plain-setting-value-4242";
    let put = server.cli_json("alice", &["param", "put", key, value]);
    assert_eq!(put["value"], value, "{put:#}");
    let got = server.cli_json("x", &["param", "get", key]);
    assert_eq!(got["value"], value, "whoever may read a setting sees it: {got:#}");
    let listed = server.cli_json("x", &["param", "list", "/shop-dev/env"]);
    assert!(listed.to_string().contains(value), "{listed:#}");
    server.terminate();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(fixture.data_dir()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("cutover.db") {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    assert!(!stored.is_empty(), "the database files were read");
    assert!(
        !stored.windows(value.len()).any(|w| w == value.as_bytes()),
        "the setting is stored in plain"
    );
    assert!(
        stored.windows(7).any(|w| w == b"enc:v1:"),
        "encrypted values are stored"
    );
}

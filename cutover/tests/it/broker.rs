//! Stage 5, "Configure message broker", against a real RabbitMQ: vhosts,
//! users and permissions are created, left alone when nothing changed, and
//! only the difference is applied when something did; a missing secret fails
//! the stage naming the key to set.
//!
//! Needs the broker of `scripts/rabbitmq-setup` (management API on
//! 127.0.0.1:15672, admin guest/guest) and fails, not skips, without it.
//! The broker is shared between tests and runs: every test uses vhost and
//! user names with its own random suffix and deletes them at the end, even
//! when it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::Server;

const MGMT: &str = "127.0.0.1:15672";
/// `guest:guest` in base64, RabbitMQ's default administrator.
const GUEST_AUTH: &str = "Z3Vlc3Q6Z3Vlc3Q=";

/// One request to the management API as guest: (status, body). Panics
/// with the way out when the broker is not there.
fn mgmt(method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    request(method, path, body).unwrap_or_else(|e| {
        panic!(
            "the RabbitMQ management API on {MGMT} is unreachable ({e}); \
             these tests need a local broker: run scripts/rabbitmq-setup as root"
        )
    })
}

fn request(method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(MGMT)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    // HTTP/1.0: the answer ends at close, never chunked.
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {MGMT}\r\nAuthorization: Basic {GUEST_AUTH}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn mgmt_json(path: &str) -> Value {
    let (status, body) = mgmt("GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn enc(segment: &str) -> String {
    segment.replace('/', "%2F")
}

/// Vhost and user names of one test, deleted from the broker on drop.
struct Names {
    vhosts: Vec<String>,
    user: String,
    secret: String,
}

impl Names {
    fn new() -> Names {
        let (status, body) = mgmt("GET", "/api/overview", None);
        assert_eq!(
            status, 200,
            "the RabbitMQ management API on {MGMT} refused guest/guest ({status}: {body}); \
             run scripts/rabbitmq-setup as root"
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let sfx = format!("{}-{nanos:x}", std::process::id());
        Names {
            vhosts: vec![format!("/it-{sfx}-a"), format!("/it-{sfx}-b")],
            user: format!("it-{sfx}-shop"),
            secret: format!("rabbit_{}", sfx.replace('-', "_")),
        }
    }

    /// cutover.yml: the pipeline fixture's app plus a rabbitmq section;
    /// `write_b` is the write permission of the user on the second vhost.
    fn config(&self, write_b: &str) -> String {
        format!(
            "{APP_CONFIG}rabbitmq:\n  url: http://{MGMT}/\n  vhosts:\n\
             \x20   - name: {a}\n      users:\n\
             \x20       - {{ name: {u}, password_secret: {s}, configure: \".*\", write: \".*\", read: \".*\" }}\n\
             \x20   - name: {b}\n      users:\n\
             \x20       - {{ name: {u}, password_secret: {s}, configure: \"\", write: \"{write_b}\", read: \"^orders\\\\.\" }}\n",
            a = self.vhosts[0],
            b = self.vhosts[1],
            u = self.user,
            s = self.secret,
        )
    }

    fn secret_key(&self) -> String {
        format!("/shop-dev/secrets/{}", self.secret)
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        // Best effort, and never a panic inside a drop.
        for v in &self.vhosts {
            let _ = request("DELETE", &format!("/api/vhosts/{}", enc(v)), None);
        }
        let _ = request("DELETE", &format!("/api/users/{}", self.user), None);
    }
}

/// Releases `version` to dev and returns (run, its message-broker log lines).
fn release(server: &Server, version: &str) -> (Value, String) {
    let id = server.release("alice", "dev", version);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    let logs = server.logs(id);
    let stage: String = logs
        .lines()
        .skip_while(|l| !l.contains("Configure message broker"))
        .skip(1)
        .take_while(|l| !l.contains("── "))
        .map(|l| format!("{l}\n"))
        .collect();
    (run, stage)
}

fn broker_stage(run: &Value) -> &Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "message_broker")
        .expect("a message-broker stage")
}

#[test]
fn the_broker_stage_applies_vhosts_users_and_permissions_and_then_only_differences() {
    let names = Names::new();
    let (a, b, user) = (&names.vhosts[0], &names.vhosts[1], &names.user);
    let app = App::with_config(&names.config("^orders\\\\."));
    let server = app.start();
    let put = server.cli("alice", &["param", "put", &names.secret_key(), "s3cret-one"]);
    assert!(put.status.success(), "{put:?}");

    // First release: everything is created.
    let (run, log) = release(&server, &app.good[0]);
    assert_eq!(run["state"], "succeeded", "{run:#}\n{log}");
    for line in [
        format!("created vhost {a}"),
        format!("created vhost {b}"),
        format!("created user {user}"),
        format!("set permissions of {user} on {a}"),
        format!("set permissions of {user} on {b}"),
    ] {
        assert!(log.contains(&line), "{line:?} missing from:\n{log}");
    }
    assert!(!log.contains("s3cret-one"), "a password was logged:\n{log}");
    assert_eq!(broker_stage(&run)["note"], "5 changes");
    mgmt_json(&format!("/api/vhosts/{}", enc(a)));
    mgmt_json(&format!("/api/vhosts/{}", enc(b)));
    let created = mgmt_json(&format!("/api/users/{user}"));
    let perms = mgmt_json(&format!("/api/permissions/{}/{user}", enc(b)));
    assert_eq!(
        (&perms["configure"], &perms["write"], &perms["read"]),
        (
            &Value::from(""),
            &Value::from("^orders\\."),
            &Value::from("^orders\\.")
        )
    );

    // Second release, nothing declared changed: nothing is written.
    let (run, log) = release(&server, &app.good[1]);
    assert_eq!(run["state"], "succeeded", "{run:#}\n{log}");
    for line in [
        format!("vhost {a} exists"),
        format!("vhost {b} exists"),
        format!("user {user} unchanged"),
        format!("permissions of {user} on {a} unchanged"),
        format!("permissions of {user} on {b} unchanged"),
    ] {
        assert!(log.contains(&line), "{line:?} missing from:\n{log}");
    }
    assert!(
        !log.contains("created") && !log.contains("changed the") && !log.contains("changed perm"),
        "{log}"
    );
    assert_eq!(broker_stage(&run)["note"], "nothing changed");
    assert_eq!(
        mgmt_json(&format!("/api/users/{user}"))["password_hash"],
        created["password_hash"],
        "an unchanged password is not set again (a new salt would change the hash)"
    );

    // A changed permission regex: only that permission is applied.
    server.terminate();
    std::fs::write(app.dir.path().join("cutover.yml"), names.config("^audit$")).unwrap();
    let server = app.start();
    let (run, log) = release(&server, &app.good[2]);
    assert_eq!(run["state"], "succeeded", "{run:#}\n{log}");
    assert!(
        log.contains(&format!(
            "changed permissions of {user} on {b}: write \"^orders\\.\" -> \"^audit$\""
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("permissions of {user} on {a} unchanged")),
        "{log}"
    );
    assert!(log.contains(&format!("user {user} unchanged")), "{log}");
    assert_eq!(broker_stage(&run)["note"], "1 change");
    let perms = mgmt_json(&format!("/api/permissions/{}/{user}", enc(b)));
    assert_eq!(perms["write"], "^audit$");
    assert_eq!(perms["read"], "^orders\\.", "the other regexes are kept");

    // A new password in the secret: only the password is set again.
    let put = server.cli("alice", &["param", "put", &names.secret_key(), "s3cret-two"]);
    assert!(put.status.success(), "{put:?}");
    let (run, log) = release(&server, &app.good[0]);
    assert_eq!(run["state"], "succeeded", "{run:#}\n{log}");
    assert!(
        log.contains(&format!("changed the password of user {user}")),
        "{log}"
    );
    assert!(!log.contains("s3cret-two"), "a password was logged:\n{log}");
    assert_eq!(broker_stage(&run)["note"], "1 change");
    assert_ne!(
        mgmt_json(&format!("/api/users/{user}"))["password_hash"],
        created["password_hash"]
    );
}

#[test]
fn a_missing_broker_secret_fails_the_stage_naming_the_key_and_changes_nothing() {
    let names = Names::new();
    let app = App::with_config(&names.config(".*"));
    let server = app.start();
    let (run, log) = release(&server, &app.good[0]);
    assert_eq!(run["state"], "failed", "{run:#}");
    assert_eq!(run["failed_stage"], "message_broker", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    let key = names.secret_key();
    assert!(
        error.contains(&key) && error.contains(&format!("cutover param put {key}")),
        "the error names the key and the command: {error}"
    );
    assert!(log.contains(&key), "{log}");
    let (status, _) = mgmt("GET", &format!("/api/vhosts/{}", enc(&names.vhosts[0])), None);
    assert_eq!(status, 404, "nothing is applied before every secret is known");
    assert!(
        !app.env_dir("dev").join("installs").exists(),
        "the run stopped at stage 5"
    );
}

#[test]
fn broker_errors_say_what_to_fix() {
    let names = Names::new();
    let app = App::with_config(&names.config(".*"));
    let failing = |config: String, secrets: &[(&str, &str)]| -> String {
        std::fs::write(app.dir.path().join("cutover.yml"), config).unwrap();
        let server = app.start();
        for (key, value) in secrets {
            let put = server.cli("alice", &["param", "put", key, value]);
            assert!(put.status.success(), "{put:?}");
        }
        let (run, log) = release(&server, &app.good[0]);
        assert_eq!(run["failed_stage"], "message_broker", "{run:#}\n{log}");
        run["error"].as_str().unwrap_or_default().to_owned()
    };
    let secret = (names.secret_key(), "s3cret".to_owned());
    let secret = [(secret.0.as_str(), secret.1.as_str())];

    let https = names.config(".*").replace("url: http://", "url: https://");
    let error = failing(https, &secret);
    assert!(error.contains("plain http only"), "{error}");

    let closed = names.config(".*").replace(MGMT, "127.0.0.1:1");
    let error = failing(closed, &secret);
    assert!(
        error.contains("cannot reach the RabbitMQ management API")
            && error.contains("scripts/rabbitmq-setup"),
        "{error}"
    );

    let wrong_admin = names.config(".*").replace(
        "  vhosts:\n",
        "  admin_password_secret: rabbit_admin\n  vhosts:\n",
    );
    let error = failing(
        wrong_admin,
        &[secret[0], ("/shop-dev/secrets/rabbit_admin", "not-the-password")],
    );
    assert!(
        error.contains("401")
            && error.contains("refused user guest")
            && error.contains("/shop-dev/secrets/rabbit_admin"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");
}

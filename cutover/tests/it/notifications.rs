//! Notifications people read: a local receiver on 127.0.0.1 plays both Slack's incoming
//! webhook, GitHub's and GitLab's APIs, records every request, and the test checks the payloads against
//! the documented shapes (required fields, status strings, header names, description length)
//! for a succeeded, a failed and an approval-waiting run; a run interrupted by a crash ends its
//! own GitHub deployment from the next server; a receiver that answers 500 once gets
//! its message once, after a retry; the secrets (the Slack URL, the token) appear in neither
//! the server's log nor the runs' logs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::{Server, serve_command};

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    /// Header names lower-cased.
    headers: BTreeMap<String, String>,
    body: Value,
    /// What the receiver answered.
    status: u16,
    answer: Value,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Request>>>);

impl Recorder {
    fn all(&self) -> Vec<Request> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds for what was received; returns it.
    fn until(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let got = self.all();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "never got {what}; got {} requests",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A receiver on 127.0.0.1: answers `fail_first` requests with 500, then deployments with 201
/// and an id, everything else with 200 (Slack answers `ok`).
fn receiver(fail_first: usize) -> (u16, Recorder) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let recorder = Recorder::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let rec = recorder.clone();
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            let (rec, seen) = (rec.clone(), seen.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let mut reader = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let method = line.split_whitespace().next().unwrap_or_default().to_owned();
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    let mut headers = BTreeMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let (status, answer) = if n < fail_first {
                        (500, json!({ "message": "try again" }).to_string())
                    } else if method == "GET" && path.contains("/deployments?") {
                        (200, deployments_list(&rec.all(), &path).to_string())
                    } else if path.ends_with("/deployments") {
                        (201, json!({ "id": 7000 + n }).to_string())
                    } else if path.starts_with("/services/") {
                        (200, "ok".to_owned())
                    } else {
                        (201, "{}".to_owned())
                    };
                    rec.0.lock().unwrap().push(Request {
                        method,
                        path,
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        status,
                        answer: serde_json::from_str(&answer).unwrap_or(Value::Null),
                    });
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    let conn = reader.get_mut();
                    if conn
                        .write_all(reply.as_bytes())
                        .and_then(|_| conn.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, recorder)
}

/// GitHub's answer to `GET …/deployments?sha=S&environment=E`: the deployments created so far
/// for that SHA and environment, newest first, as GitHub lists them.
fn deployments_list(seen: &[Request], path: &str) -> Value {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let (sha, env) = (param("sha"), param("environment"));
    let mut list: Vec<Value> = seen
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/deployments") && r.status == 201)
        .filter(|r| r.body["ref"] == sha.as_str() && r.body["environment"] == env.as_str())
        .map(|r| json!({ "id": r.answer["id"], "payload": r.body["payload"] }))
        .collect();
    list.reverse();
    Value::Array(list)
}

/// The app's server with its log (RUST_LOG=info) written to a file.
fn start_logged(app: &App) -> (Server, PathBuf) {
    let data = app.dir.path().join("data");
    let log_path = app.dir.path().join("server.log");
    let shop = crate::example_shop::release().join("bin/shop");
    let mut child = serve_command(app.dir.path().join("cutover.yml"), &data)
        .env("RUST_LOG", "info")
        .env("SHOP_BIN", shop)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("cutover serve starts");
    let (url, router_port) = crate::support::addresses(&mut child);
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut server = Server::adopt(child, url, router_port, admin.trim().to_owned());
    server.data_dir = Some(data);
    (server, log_path)
}

fn put_secret(server: &Server, name: &str, value: &str) {
    let out = server.cli(
        "admin",
        &["param", "put", &format!("/shop/secrets/{name}"), value],
    );
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
}

const SLACK_PATH: &str = "/services/T0CUTOVER/B0CUTOVER/s3cretSlackPath42";
const GH_TOKEN: &str = "ghp_notARealTokenButSecret0123456789";
const GL_TOKEN: &str = "glpat-notARealTokenEither987654";

fn text_of(m: &Value) -> String {
    m.to_string()
}

#[test]
fn slack_github_and_gitlab_get_documented_payloads_for_succeeded_failed_and_waiting_runs() {
    let (port, rec) = receiver(0);
    let app = App::with_config(&format!(
        "{APP_CONFIG}notifications:\n  public_url: \"https://cutover.example.com/\"\n  receivers:\n    \
         - kind: slack\n      url_secret: slack_url\n    \
         - kind: github\n      repository: acme/shop\n      token_secret: gh_token\n      \
         api_url: \"http://127.0.0.1:{port}\"\n    \
         - kind: gitlab\n      project: acme/shop\n      token_secret: gl_token\n      \
         api_url: \"http://127.0.0.1:{port}/api/v4\"\n"
    ));
    let (server, log_path) = start_logged(&app);
    put_secret(
        &server,
        "slack_url",
        &format!("http://127.0.0.1:{port}{SLACK_PATH}"),
    );
    put_secret(&server, "gh_token", GH_TOKEN);
    put_secret(&server, "gl_token", GL_TOKEN);

    let ok = server.deploy("alice", "staging", &app.good[0]);
    let bad = server.release("alice", "staging", &app.broken);
    assert_eq!(server.wait_run(bad, &["succeeded", "failed"])["state"], "failed");
    let waiting = server.release("alice", "prod", &app.good[0]);
    server.wait_run(waiting, &["awaiting_approval"]);

    let slack = |r: &[Request]| {
        r.iter()
            .filter(|q| q.path == SLACK_PATH)
            .cloned()
            .collect::<Vec<_>>()
    };
    let got = rec.until("three Slack messages and the prod commit statuses", |r| {
        slack(r).len() >= 3
            && r.iter().any(|q| {
                q.body["name"] == "cutover/prod"
                    && q.body["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("approval"))
            })
            && r.iter().any(|q| {
                q.body["context"] == "cutover/prod"
                    && q.body["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("approval"))
            })
    });

    // Slack: text + blocks, one message per event, in order.
    let messages = slack(&got);
    assert_eq!(messages.len(), 3, "{messages:#?}");
    for m in &messages {
        assert!(m.body["text"].as_str().is_some_and(|t| !t.is_empty()), "{m:#?}");
        let blocks = m.body["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty());
        for b in blocks {
            let kind = b["type"].as_str().unwrap();
            assert!(["section", "context"].contains(&kind), "{b}");
            if kind == "section" {
                assert!(b["text"]["type"] == "mrkdwn" || b["fields"].is_array(), "{b}");
            }
        }
        assert_eq!(
            m.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert!(
            !m.headers.contains_key("authorization"),
            "a Slack URL carries its own secret"
        );
    }
    let (succeeded, failed, approval) = (
        text_of(&messages[0].body),
        text_of(&messages[1].body),
        text_of(&messages[2].body),
    );
    for needle in [
        "*staging*",
        "succeeded",
        &format!("`{}`", &app.good[0][..7]),
        "release 1",
        "alice",
        &format!("<https://cutover.example.com/#/run/{ok}|run #{ok}>"),
    ] {
        assert!(succeeded.contains(needle), "{needle} in {succeeded}");
    }
    for needle in [
        "*staging*",
        "failed",
        &app.broken[..7],
        "a version that cannot start",
        "not healthy",
    ] {
        assert!(failed.contains(needle), "{needle} in {failed}");
    }
    for needle in [
        "*prod*",
        "waits for approval",
        &format!("cutover approve {waiting}"),
    ] {
        assert!(approval.contains(needle), "{needle} in {approval}");
    }

    // GitHub: every request authenticated and versioned as documented.
    let github: Vec<&Request> = got.iter().filter(|q| q.path.starts_with("/repos/")).collect();
    for q in &github {
        assert_eq!(
            q.headers.get("authorization"),
            Some(&format!("Bearer {GH_TOKEN}")),
            "{q:#?}"
        );
        assert_eq!(
            q.headers.get("accept").map(String::as_str),
            Some("application/vnd.github+json")
        );
        assert_eq!(
            q.headers.get("x-github-api-version").map(String::as_str),
            Some("2022-11-28")
        );
        assert!(
            q.headers
                .get("user-agent")
                .is_some_and(|u| u.starts_with("cutover/"))
        );
    }
    // A deployment per run, with its SHA as ref.
    let deployments: Vec<&&Request> = github
        .iter()
        .filter(|q| q.path == "/repos/acme/shop/deployments")
        .collect();
    let refs: Vec<(&str, &str)> = deployments
        .iter()
        .map(|q| {
            (
                q.body["ref"].as_str().unwrap(),
                q.body["environment"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        [
            (app.good[0].as_str(), "staging"),
            (app.broken.as_str(), "staging"),
            (app.good[0].as_str(), "prod")
        ]
    );
    for d in &deployments {
        assert_eq!(d.body["auto_merge"], false);
        assert_eq!(d.body["required_contexts"], json!([]));
    }
    assert_eq!(deployments[2].body["production_environment"], true);
    // Deployment statuses of each run, in order, on the id the receiver gave.
    let statuses_of = |sha: &str, env: &str| -> Vec<String> {
        let id = github
            .iter()
            .find(|q| {
                q.path == "/repos/acme/shop/deployments"
                    && q.body["ref"] == sha
                    && q.body["environment"] == env
            })
            .unwrap()
            .answer["id"]
            .as_u64()
            .unwrap();
        let path = format!("/repos/acme/shop/deployments/{id}/statuses");
        github
            .iter()
            .filter(|q| q.path == path)
            .map(|q| {
                assert_eq!(q.body["environment"], env);
                q.body["state"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(
        statuses_of(&app.good[0], "staging"),
        ["queued", "in_progress", "success"]
    );
    assert_eq!(
        statuses_of(&app.broken, "staging"),
        ["queued", "in_progress", "failure"]
    );
    assert_eq!(statuses_of(&app.good[0], "prod"), ["queued", "in_progress"]);
    let last_ok = github
        .iter()
        .rfind(|q| {
            q.path.contains("/statuses") && q.body["state"] == "success" && q.path.contains("/deployments/")
        })
        .unwrap();
    assert_eq!(
        last_ok.body["log_url"],
        format!("https://cutover.example.com/#/run/{ok}")
    );
    assert_eq!(
        last_ok.body["environment_url"],
        "https://cutover.example.com/#/env/staging"
    );
    // Commit statuses: cutover/<env>, pending then the outcome, descriptions ≤ 140 characters.
    let commit = |sha: &str, env: &str| -> Vec<String> {
        github
            .iter()
            .filter(|q| {
                q.path == format!("/repos/acme/shop/statuses/{sha}")
                    && q.body["context"] == format!("cutover/{env}")
            })
            .map(|q| {
                let d = q.body["description"].as_str().unwrap();
                assert!(d.chars().count() <= 140, "{d}");
                q.body["state"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(commit(&app.good[0], "staging"), ["pending", "pending", "success"]);
    assert_eq!(commit(&app.broken, "staging"), ["pending", "pending", "failure"]);
    assert_eq!(commit(&app.good[0], "prod"), ["pending", "pending", "pending"]);
    let success = github
        .iter()
        .find(|q| q.path.starts_with("/repos/acme/shop/statuses/") && q.body["state"] == "success")
        .unwrap();
    assert_eq!(
        success.body["target_url"],
        format!("https://cutover.example.com/#/run/{ok}")
    );

    // GitLab: commit statuses named cutover/<env> with GitLab's own state names.
    let gitlab = |sha: &str, env: &str| -> Vec<String> {
        got.iter()
            .filter(|q| {
                q.path == format!("/api/v4/projects/acme%2Fshop/statuses/{sha}")
                    && q.body["name"] == format!("cutover/{env}")
            })
            .map(|q| {
                assert_eq!(q.headers.get("private-token").map(String::as_str), Some(GL_TOKEN));
                assert!(q.body["description"].as_str().unwrap().chars().count() <= 140);
                q.body["state"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(gitlab(&app.good[0], "staging"), ["pending", "running", "success"]);
    assert_eq!(gitlab(&app.broken, "staging"), ["pending", "running", "failed"]);
    assert_eq!(gitlab(&app.good[0], "prod"), ["pending", "running", "running"]);

    // The secrets appear in no log.
    let mut logs = std::fs::read_to_string(&log_path).unwrap();
    for id in [ok, bad, waiting] {
        logs.push_str(&server.logs(id));
    }
    for secret in ["s3cretSlackPath42", GH_TOKEN, GL_TOKEN] {
        assert!(!logs.contains(secret), "{secret} leaked into a log:\n{logs}");
    }
    let out = server.cli("alice", &["cancel", &waiting.to_string()]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
}

#[test]
fn a_receiver_that_fails_once_gets_the_message_once_and_failures_are_counted() {
    let (port, rec) = receiver(1);
    let app = App::with_config(&format!(
        "{APP_CONFIG}notifications:\n  receivers:\n    \
         - {{ kind: slack, url_secret: slack_url, events: [succeeded], environments: [staging] }}\n    \
         - {{ kind: slack, url_secret: never_set, events: [succeeded] }}\n    \
         - {{ kind: slack, url_secret: slack_url, environments: [prod] }}\n"
    ));
    let (server, log_path) = start_logged(&app);
    put_secret(
        &server,
        "slack_url",
        &format!("http://127.0.0.1:{port}{SLACK_PATH}"),
    );
    server.deploy("alice", "staging", &app.good[0]);
    let got = rec.until("the message after a 500", |r| r.iter().any(|q| q.status == 200));
    // Nothing more comes: no second copy, and the prod-only receiver stays quiet.
    std::thread::sleep(Duration::from_secs(5));
    let got_later = rec.all();
    assert_eq!(got_later.len(), 2, "one 500, one delivery: {got_later:#?}");
    assert_eq!(got[0].status, 500);
    assert_eq!(got_later[0].body, got_later[1].body, "the same message, retried");
    assert!(text_of(&got_later[1].body).contains("No link: set notifications.public_url"));

    let port_api: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_, _, metrics) = crate::pipeline_support::http_get(port_api, "127.0.0.1", "/metrics").unwrap();
    for line in [
        "cutover_notifications_total{kind=\"slack\",receiver=\"0\",outcome=\"delivered\"} 1",
        "cutover_notifications_total{kind=\"slack\",receiver=\"1\",outcome=\"failed\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("/shop/secrets/never_set, which is not set"),
        "the unset secret is named in the log:\n{log}"
    );
    assert!(
        log.contains("notifications.receivers[1].url_secret names /shop/secrets/never_set, which is not set"),
        "the server warns at start:\n{log}"
    );
    assert!(!log.contains("s3cretSlackPath42"), "{log}");
}

#[test]
fn a_run_cut_short_by_a_server_crash_is_reported_as_interrupted_by_the_next_server() {
    let (port, rec) = receiver(0);
    let app = App::with_config(&format!(
        "{APP_CONFIG}notifications:\n  receivers:\n    - {{ kind: slack, url_secret: slack_url }}\n    \
         - {{ kind: github, repository: acme/shop, token_secret: gh_token, api_url: \"http://127.0.0.1:{port}\" }}\n"
    ));
    let (mut server, _) = start_logged(&app);
    put_secret(
        &server,
        "slack_url",
        &format!("http://127.0.0.1:{port}{SLACK_PATH}"),
    );
    put_secret(&server, "gh_token", GH_TOKEN);
    app.hold("staging", "hold");
    let id = server.release("alice", "staging", &app.good[0]);
    server.wait_stage(id, "pre_deploy_hook");
    // GitHub has the run's deployment, in progress.
    let statuses = |r: &[Request]| -> Vec<(String, String)> {
        r.iter()
            .filter(|q| q.path.contains("/deployments/") && q.path.ends_with("/statuses"))
            .map(|q| {
                (
                    q.path.clone(),
                    q.body["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let before = rec.until("the deployment in progress", |r| {
        statuses(r).iter().any(|(_, s)| s == "in_progress")
    });
    let created: Vec<&Request> = before
        .iter()
        .filter(|q| q.method == "POST" && q.path.ends_with("/deployments"))
        .collect();
    assert_eq!(created.len(), 1, "{before:#?}");
    let deployment = created[0].answer["id"].as_u64().unwrap();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    app.release_hold("staging", "hold");
    drop(server);
    assert!(
        !rec.all().iter().any(|q| q.path.starts_with("/services/")),
        "nothing to tell Slack while the run was active"
    );

    let (server, _) = start_logged(&app);
    let got = rec.until("the interrupted run's message", |r| {
        r.iter().any(|q| q.path.starts_with("/services/"))
    });
    let slack = got.iter().find(|q| q.path.starts_with("/services/")).unwrap();
    let text = text_of(&slack.body);
    assert!(
        text.contains(&format!("run #{id} was interrupted")) && text.contains("*staging*"),
        "{text}"
    );
    // The next server ends the same deployment (found by its payload), creating none.
    let got = rec.until("the deployment's end", |r| {
        statuses(r).iter().any(|(_, s)| s == "error")
    });
    assert!(
        statuses(&got).contains(&(
            format!("/repos/acme/shop/deployments/{deployment}/statuses"),
            "error".to_owned()
        )),
        "{:#?}",
        statuses(&got)
    );
    let created = got
        .iter()
        .filter(|q| q.method == "POST" && q.path.ends_with("/deployments"))
        .count();
    assert_eq!(created, 1, "no second deployment for the same run");
    assert_eq!(
        server.cli_json("x", &["run", &id.to_string()])["state"],
        "interrupted"
    );
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_a_run() {
    // Accepts every connection and never answers: each try of each request waits for the
    // client's own bound, and the first notice is given up only after all its tries.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in server.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let app = App::with_config(&format!(
        "{APP_CONFIG}notifications:\n  receivers:\n    - kind: github\n      repository: acme/shop\n      \
         token_secret: gh_token\n      api_url: \"http://127.0.0.1:{port}\"\n"
    ));
    let (server, _) = start_logged(&app);
    put_secret(&server, "gh_token", GH_TOKEN);
    server.deploy("alice", "staging", &app.good[0]);
    // The run is over while the receiver still has its first request (the deployment of the
    // queued notice) open: nothing was given up yet, so the run never waited for a delivery.
    let port_api: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_, _, metrics) = crate::pipeline_support::http_get(port_api, "127.0.0.1", "/metrics").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the receiver was never tried");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !metrics.contains("cutover_notifications_total{"),
        "no delivery had ended (delivered or given up) when the run ended:\n{metrics}"
    );
}

#[test]
fn a_reload_that_changes_notifications_is_refused_with_a_pointer_to_a_restart() {
    let app = App::new();
    let server = app.start();
    let file = app.dir.path().join("cutover.yml");
    std::fs::write(
        &file,
        format!("{APP_CONFIG}notifications:\n  receivers:\n    - {{ kind: slack, url_secret: slack_url }}\n"),
    )
    .unwrap();
    crate::support::fails_with(
        &server.cli("admin", &["config", "reload"]),
        &["need a restart", "notifications"],
    );
}

#[test]
fn a_rollback_is_told_as_one_and_the_events_filter_keeps_the_rest_away() {
    let (port, rec) = receiver(0);
    let app = App::with_config(&format!(
        "{APP_CONFIG}notifications:\n  receivers:\n    \
         - {{ kind: slack, url_secret: slack_url, events: [rolled_back] }}\n"
    ));
    let (server, _) = start_logged(&app);
    put_secret(
        &server,
        "slack_url",
        &format!("http://127.0.0.1:{port}{SLACK_PATH}"),
    );
    server.deploy("alice", "staging", &app.good[0]);
    server.deploy("alice", "staging", &app.good[1]);
    let back = server.cli_json("bob", &["rollback", "staging"]);
    let id = back["id"].as_i64().unwrap();
    assert_eq!(
        server.wait_run(id, &["succeeded", "failed"])["state"],
        "succeeded"
    );
    let got = rec.until("the rollback's message", |r| !r.is_empty());
    let text = text_of(&got[0].body);
    for needle in [
        format!(
            "run #{id} rolled back to `{}` from `{}`",
            &app.good[0][..7],
            &app.good[1][..7]
        ),
        "release 1".to_owned(),
        "bob".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle} in {text}");
    }
    // The two releases before succeeded, but this receiver asked for rollbacks only (their
    // messages would have come first: a receiver gets its notices in order).
    assert_eq!(got.len(), 1, "{got:#?}");
}

//! Webhooks: run and stage events arrive as JSON, in order, at real HTTP and
//! HTTPS listeners on loopback; failed deliveries are retried with the same
//! delivery id; an https receiver whose certificate is not trusted gets nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::pipeline_support::{APP_CONFIG, App};

/// One received POST: its delivery and signature headers, exact body bytes and JSON.
struct Received {
    delivery: Option<String>,
    signature: Option<String>,
    timestamp: Option<String>,
    raw: Vec<u8>,
    body: serde_json::Value,
}

/// Serves one connection: reads requests, answers each with `answer(n)` (n counts every
/// request this listener saw, from 0) and sends each JSON body on the channel.
fn serve_conn(
    conn: impl Read + Write,
    tx: &mpsc::Sender<Received>,
    seen: &AtomicUsize,
    answer: fn(usize) -> u16,
) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut delivery = None;
        let mut signature = None;
        let mut timestamp = None;
        let mut line = String::new();
        let mut saw_request = false;
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            saw_request = true;
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            let value = || line.split_once(':').map(|(_, v)| v.trim().to_owned());
            if lower.starts_with("x-cutover-delivery:") {
                delivery = value();
            }
            if lower.starts_with("x-cutover-signature:") {
                signature = value();
            }
            if lower.starts_with("x-cutover-timestamp:") {
                timestamp = value();
            }
            line.clear();
        }
        if !saw_request {
            return;
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = answer(seen.fetch_add(1, Ordering::SeqCst));
        if status < 300
            && let Ok(v) = serde_json::from_slice(&body)
        {
            let _ = tx.send(Received {
                delivery,
                signature,
                timestamp,
                raw: body,
                body: v,
            });
        }
        let reply = format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\n\r\n");
        let conn = reader.get_mut();
        if conn
            .write_all(reply.as_bytes())
            .and_then(|_| conn.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Accepts POSTs on plain http, answers `answer(n)`, sends each accepted body on the channel.
fn listener_with(answer: fn(usize) -> u16) -> (u16, mpsc::Receiver<Received>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let seen = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            let (tx, seen) = (tx.clone(), Arc::clone(&seen));
            std::thread::spawn(move || serve_conn(conn, &tx, &seen, answer));
        }
    });
    (port, rx)
}

/// Accepts POSTs and answers 204.
fn listener() -> (u16, mpsc::Receiver<serde_json::Value>) {
    let (port, rx) = listener_with(|_| 204);
    let (tx, out) = mpsc::channel();
    std::thread::spawn(move || {
        for r in rx {
            if tx.send(r.body).is_err() {
                return;
            }
        }
    });
    (port, out)
}

/// An https listener on 127.0.0.1 with a fresh self-signed certificate for `127.0.0.1`;
/// returns its port, the certificate's PEM (the CA to trust) and the received events.
fn tls_listener() -> (u16, String, mpsc::Receiver<Received>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("a self-signed certificate");
    let pem = cert.cert.pem();
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let config = Arc::new(config);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let seen = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            let (tx, seen, config) = (tx.clone(), Arc::clone(&seen), Arc::clone(&config));
            std::thread::spawn(move || {
                let Ok(tls) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                serve_conn(rustls::StreamOwned::new(tls, conn), &tx, &seen, |_| 204);
            });
        }
    });
    (port, pem, rx)
}

/// Received events until `run.finished` (bounded by 30 s).
fn until_finished(rx: &mpsc::Receiver<Received>) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(r) = rx.recv_timeout(left) else { break };
        let done = r.body["event"] == "run.finished";
        got.push(r);
        if done {
            break;
        }
    }
    got
}

#[test]
fn https_webhooks_trust_their_ca_file_and_nothing_else() {
    let (trusted, pem, trusted_rx) = tls_listener();
    let (untrusted, _, untrusted_rx) = tls_listener();
    let app = App::with_config(&format!(
        "{APP_CONFIG}webhooks:\n  - url: \"https://127.0.0.1:{trusted}/cutover\"\n    ca_file: ca.pem\n    \
         events: [run]\n  - url: \"https://127.0.0.1:{untrusted}/cutover\"\n    events: [run]\n"
    ));
    std::fs::write(app.dir.path().join("ca.pem"), &pem).unwrap();
    let server = app.start();
    let id = server.deploy("alice", "staging", &app.good[0]);
    let got = until_finished(&trusted_rx);
    let names: Vec<&str> = got.iter().filter_map(|r| r.body["event"].as_str()).collect();
    assert_eq!(
        names,
        ["run.queued", "run.started", "run.finished"],
        "over https with ca_file"
    );
    assert_eq!(got[2].body["run"]["id"].as_i64(), Some(id));
    assert_eq!(
        got[2].delivery.as_deref(),
        got[2].body["delivery"].as_str(),
        "the X-Cutover-Delivery header names the delivery"
    );
    // The same self-signed kind of certificate, but not in any trusted store: refused, so
    // nothing arrives (its tries and retries fail in the TLS handshake).
    assert!(
        untrusted_rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "an https receiver with an untrusted certificate must not get events"
    );
}

#[test]
fn failed_deliveries_are_retried_with_the_same_id_and_in_order() {
    // Every other request fails with 503: each event arrives on its second try.
    let (port, rx) = listener_with(|n| if n % 2 == 0 { 503 } else { 204 });
    let app = App::with_config(&format!(
        "{APP_CONFIG}webhooks:\n  - url: \"http://127.0.0.1:{port}/cutover\"\n    events: [run]\n    \
         secret_env: HOOK_KEY\n"
    ));
    let server = app.start_with(&[("HOOK_KEY", "s3cret-for-tests")]);
    server.deploy("alice", "staging", &app.good[0]);
    let got = until_finished(&rx);
    let names: Vec<&str> = got.iter().filter_map(|r| r.body["event"].as_str()).collect();
    assert_eq!(
        names,
        ["run.queued", "run.started", "run.finished"],
        "each after one 503"
    );
    let ids: Vec<&str> = got.iter().filter_map(|r| r.delivery.as_deref()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "one id per event: {ids:?}");
    for r in &got {
        let ts: u64 = r
            .timestamp
            .as_deref()
            .expect("X-Cutover-Timestamp")
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(ts) < 120, "a fresh timestamp: {ts} vs {now}");
        let expected = cutover_engine::webhook_timestamped_signature(b"s3cret-for-tests", ts, &r.raw);
        assert_eq!(
            r.signature.as_deref(),
            Some(expected.as_str()),
            "signed over the timestamp and the exact body"
        );
        assert_ne!(
            r.signature.as_deref(),
            Some(cutover_engine::webhook_signature(b"s3cret-for-tests", &r.raw).as_str()),
            "not over the body alone"
        );
    }
    assert!(
        !String::from_utf8_lossy(&got[0].raw).contains("s3cret"),
        "the key is never sent"
    );
}

/// Starts `cutover serve` on the app, expects it to refuse to start; returns its stderr.
fn serve_fails(app: &App) -> String {
    let out = crate::support::serve_command(app.dir.path().join("cutover.yml"), app.dir.path().join("data"))
        .env_remove("NO_SUCH_HOOK_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_signing_key_stops_the_server_naming_the_variable() {
    let app = App::with_config(&format!(
        "{APP_CONFIG}webhooks:\n  - url: \"http://127.0.0.1:9/cutover\"\n    secret_env: NO_SUCH_HOOK_KEY\n"
    ));
    let err = serve_fails(&app);
    assert!(err.contains("secret_env NO_SUCH_HOOK_KEY is not set"), "{err}");
}

#[test]
fn a_missing_ca_file_stops_the_server_and_config_check_with_its_path() {
    let app = App::with_config(&format!(
        "{APP_CONFIG}webhooks:\n  - url: \"https://127.0.0.1:9/cutover\"\n    ca_file: nowhere/ca.pem\n"
    ));
    let config = app.dir.path().join("cutover.yml");
    let out = std::process::Command::new(crate::support::BIN)
        .args(["config", "check", "-f"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nowhere/ca.pem") && err.contains("cannot read ca_file"),
        "{err}"
    );
    let err = serve_fails(&app);
    assert!(err.contains("nowhere/ca.pem"), "{err}");
}

#[test]
fn run_and_stage_events_arrive_in_order() {
    let (port, events) = listener();
    let app = App::with_config(&format!(
        "{APP_CONFIG}webhooks:\n  - url: \"http://127.0.0.1:{port}/cutover\"\n"
    ));
    let server = app.start();
    let id = server.deploy("alice", "staging", &app.good[0]);
    let mut got = Vec::new();
    while let Ok(e) = events.recv_timeout(Duration::from_secs(10)) {
        let done = e["event"] == "run.finished";
        got.push(e);
        if done {
            break;
        }
    }
    let names: Vec<String> = got
        .iter()
        .map(|e| match e["stage"]["stage"].as_str() {
            Some(stage) => format!(
                "{}:{stage}:{}",
                e["event"].as_str().unwrap(),
                e["stage"]["status"].as_str().unwrap()
            ),
            None => e["event"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(names.len(), 16, "{names:#?}");
    assert_eq!(names[0], "run.queued");
    assert_eq!(names[1], "run.started");
    assert_eq!(names[2], "stage.finished:source:succeeded");
    assert_eq!(names[4], "stage.finished:approval:skipped");
    assert_eq!(names[14], "stage.finished:post_deploy_hook:skipped");
    assert_eq!(names[15], "run.finished");
    let last = &got[15];
    assert_eq!(
        (last["run"]["state"].as_str(), last["run"]["version"].as_str()),
        (Some("succeeded"), Some(app.good[0].as_str()))
    );
    assert_eq!(
        (
            last["app"].as_str(),
            last["env"].as_str(),
            last["run"]["id"].as_i64()
        ),
        (Some("shop"), Some("staging"), Some(id))
    );
    assert_eq!(got[11]["stage"]["title"], "Deploy services");
}

#[test]
fn prometheus_metrics_count_runs_and_instances() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    let bad = server.release("alice", "staging", &app.broken);
    assert_eq!(server.wait_run(bad, &["succeeded", "failed"])["state"], "failed");
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let (status, head, body) = crate::pipeline_support::http_get(port, "127.0.0.1", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("text/plain; version=0.0.4"),
        "{head}"
    );
    for line in [
        "cutover_runs_total{env=\"staging\",kind=\"normal\",state=\"succeeded\"} 1",
        "cutover_runs_total{env=\"staging\",kind=\"normal\",state=\"failed\"} 1",
        "cutover_run_duration_seconds_count{env=\"staging\"} 2",
        // Real histograms: every run falls under +Inf, and each stage that ran has its own.
        "cutover_run_duration_seconds_bucket{env=\"staging\",le=\"+Inf\"} 2",
        "# TYPE cutover_run_duration_seconds histogram",
        "# TYPE cutover_stage_duration_seconds histogram",
        "cutover_stage_duration_seconds_count{env=\"staging\",stage=\"source\"} 2",
        "cutover_stage_duration_seconds_bucket{env=\"staging\",stage=\"deploy_services\",le=\"+Inf\"} 2",
        "cutover_runs_active 0",
        "cutover_scheduler_suspended{env=\"staging\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing from:\n{body}");
    }
    let api = format!(
        "cutover_instances{{env=\"staging\",service=\"api\",version=\"{}\"",
        &app.good[0][..12]
    );
    assert!(
        body.lines().any(|l| l.starts_with(&api) && l.ends_with(" 2")),
        "{api}… 2 missing from:\n{body}"
    );
    // The replica count in force, and the requests the router admitted since the switch.
    for _ in 0..5 {
        let got = server.via_router("api", "staging", "/health").map(|r| r.0);
        assert_eq!(got, Some(200));
    }
    let (_, _, body) = crate::pipeline_support::http_get(port, "127.0.0.1", "/metrics").unwrap();
    for line in [
        "cutover_replicas{env=\"staging\",service=\"api\"} 2",
        "cutover_replicas{env=\"prod\",service=\"worker\"} 1",
        "cutover_router_requests_total{env=\"staging\",service=\"api\"} 5",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing from:\n{body}");
    }
    // Every family's samples form one group after its TYPE line, as the format requires.
    let mut seen = Vec::new();
    for l in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let family = l
            .split(['{', ' '])
            .next()
            .unwrap()
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        if seen.last() != Some(&family) {
            assert!(
                !seen.contains(&family),
                "{family} is split into two groups:\n{body}"
            );
            seen.push(family);
        }
    }
}

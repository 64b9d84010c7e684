//! Webhooks: run and stage events arrive as JSON, in order, at a real HTTP
//! listener on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use crate::pipeline_support::{APP_CONFIG, App};

/// Accepts POSTs, answers 204, and sends each JSON body on the channel.
fn listener() -> (u16, mpsc::Receiver<serde_json::Value>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    let mut saw_request = false;
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        saw_request = true;
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
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
                    if let Ok(v) = serde_json::from_slice(&body) {
                        let _ = tx.send(v);
                    }
                    if conn
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
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
}

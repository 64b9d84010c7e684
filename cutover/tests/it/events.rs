//! `GET /api/v1/events` over plain HTTP: a token is required, a run's events arrive
//! in the order they happened, and a token limited to one environment sees nothing
//! of another.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::pipeline_support::App;
use crate::support::Server;

/// Event streams one token may hold (`MAX_EVENT_STREAMS_PER_TOKEN`).
pub(crate) const PER_TOKEN: usize = 8;

/// An open event stream: the decoded body of a chunked `text/event-stream` answer.
pub(crate) struct Stream {
    reader: BufReader<TcpStream>,
    buf: String,
}

/// Opens the stream; `Err((status, head))` when the server refuses it.
pub(crate) fn open(server: &Server, token: Option<&str>) -> Result<Stream, (u16, String)> {
    let addr = server.url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if status != 200 {
        return Err((status, head));
    }
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/event-stream"), "{head}");
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    Ok(Stream {
        reader,
        buf: String::new(),
    })
}

impl Stream {
    /// The next frame's `(event, data)`; comments (keep-alives) are skipped.
    fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                let mut kind = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if kind.is_empty() && data.is_empty() {
                    continue;
                }
                return (kind, serde_json::from_str(&data).unwrap());
            }
            // One chunk: its size in hex, the bytes, CRLF.
            let mut size = String::new();
            self.reader.read_line(&mut size).expect("the stream stays open");
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("chunk size {size:?}"));
            assert!(n > 0, "the stream ended");
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Events until `stop` accepts one (included).
    fn until(&mut self, stop: impl Fn(&str, &Value) -> bool) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let (kind, data) = self.next();
            let done = stop(&kind, &data);
            seen.push((kind, data));
            if done {
                return seen;
            }
        }
    }
}

fn mint(server: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend(args);
    server.cli_json("admin", &all)["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_event_stream_needs_a_token_and_sends_a_runs_events_in_order_and_only_what_the_token_may_see() {
    let app = App::new();
    let server = app.start();

    let (status, head) = open(&server, None).err().expect("refused without a token");
    assert_eq!(status, 401, "{head}");
    let (status, _) = open(
        &server,
        Some("cut_0000000000000000000000000000000000000000000000000000000000000000"),
    )
    .err()
    .expect("refused with an unknown token");
    assert_eq!(status, 401);

    let admin = server.token("admin");
    let mut all = open(&server, Some(&admin)).unwrap();
    assert_eq!(all.next().0, "ready");
    let staging_only = mint(
        &server,
        "staging-viewer",
        &["--role", "viewer", "--env", "staging"],
    );
    let mut narrow = open(&server, Some(&staging_only)).unwrap();
    assert_eq!(narrow.next().0, "ready");

    // A run on dev: created, running, its stages in pipeline order, finished; then dev's
    // versions changed.
    let id = server.deploy("alice", "dev", &app.good[0]);
    let events = all.until(|k, d| k == "run_finished" && d["run_id"] == id);
    let mine: Vec<&(String, Value)> = events.iter().filter(|(_, d)| d["run_id"] == id).collect();
    assert_eq!(mine[0].0, "run_created", "{mine:#?}");
    assert_eq!(mine[0].1["env"], "dev");
    assert_eq!(mine.last().unwrap().1["state"], "succeeded", "{mine:#?}");
    let started = mine
        .iter()
        .position(|(k, d)| k == "run_changed" && d["state"] == "running")
        .unwrap_or_else(|| panic!("no run_changed to running: {mine:#?}"));
    let first_stage = mine
        .iter()
        .position(|(k, _)| k == "stage_changed")
        .expect("stage events");
    assert!(started < first_stage, "running before its first stage: {mine:#?}");
    // Each stage starts before it ends, and stages start in the pipeline's order.
    let order = crate::pipeline::STAGES;
    let mut last = 0;
    for (k, d) in &mine {
        if k != "stage_changed" {
            continue;
        }
        let at = order
            .iter()
            .position(|s| d["stage"] == *s)
            .unwrap_or_else(|| panic!("unknown stage {d}"));
        assert!(at >= last, "stage {} after a later one: {mine:#?}", d["stage"]);
        last = at;
    }
    assert!(
        mine.iter().any(|(k, d)| k == "stage_changed"
            && d["stage"] == "deploy_services"
            && d["stage_status"] == "succeeded"),
        "{mine:#?}"
    );
    // No event carries a value: kind, env, run, state, stage only.
    for (_, d) in &events {
        for key in d.as_object().unwrap().keys() {
            assert!(
                ["kind", "env", "run_id", "state", "stage", "stage_status"].contains(&key.as_str()),
                "unexpected field {key} in {d}"
            );
        }
    }
    // The run wrote dev's versions (desired, built, deployed).
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "environment_changed" && d["env"] == "dev"),
        "{events:#?}"
    );

    // The staging viewer's stream: dev's events were sent before staging's, so had any
    // leaked they would come first.
    let id = server.deploy("alice", "staging", &app.good[0]);
    let seen = narrow.until(|k, d| k == "run_finished" && d["run_id"] == id);
    let leaked: Vec<_> = seen.iter().filter(|(_, d)| d["env"] != "staging").collect();
    assert!(leaked.is_empty(), "events of other environments: {leaked:#?}");
    let first = seen.iter().find(|(_, d)| d["run_id"] == id).unwrap();
    assert_eq!(first.0, "run_created", "{seen:#?}");
    assert!(
        seen.iter()
            .any(|(k, d)| k == "environment_changed" && d["env"] == "staging"),
        "{seen:#?}"
    );

    // One token cannot take every stream of the server: the ninth of the same token is
    // refused (429, retry later), another token still gets one.
    let more: Vec<Stream> = (1..PER_TOKEN)
        .map(|_| open(&server, Some(&staging_only)).unwrap())
        .collect();
    let (status, head) = open(&server, Some(&staging_only))
        .err()
        .expect("a ninth stream of one token is refused");
    assert_eq!(status, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 5"), "{head}");
    let mut other = open(&server, Some(&admin)).unwrap();
    assert_eq!(other.next().0, "ready");
    drop(more);
}

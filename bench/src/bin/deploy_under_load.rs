//! Deploys and rollbacks under load (issue 4): failures and old-version answers per switch,
//! Cutover against a naive stop-then-start deploy, in the same run (loopback only, bounded).
//!
//! 1. Cutover: a real `cutover serve` (release binary, temporary data directory) runs two
//!    replicas of the example shop's `api` in `dev` (blue-green, the default). While
//!    `--conns` keep-alive clients send `GET /version.json` through the router, it makes six
//!    switches: release v2, release v1, `rollback --fast`, `rollback`, release of the version
//!    not serving, `rollback --fast`, with `--settle` ms of plain load after each.
//! 2. Naive baseline: the same program on one fixed port without Cutover, under the same load
//!    directly; six times: kill the old process, start the other version, poll `/health` every
//!    5 ms until it answers.
//!
//! Per switch it prints the requests sent and failed in its period (from issuing the switch to
//! issuing the next), and, among requests sent after the switch took effect and answered
//! before the next switch could begin, how many were answered by another version than the one
//! switched to (must be 0). "Took effect": for Cutover, the time stamp of the run's log line
//! `traffic switched to ...`, written after the router switch returned (+1 ms for the stamp's
//! resolution); for the baseline, when the new process first answered `/health`. "Could
//! begin": the next run's start (Cutover), the next kill (baseline). Requests sent in the
//! window but still running at its end ("straddling") may get either version: not checked.
//! The version is read from the body the process answered (`"version":"<sha>"`).
//!
//! Usage: `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin
//! deploy_under_load [-- --conns 16 --settle 1000 --pause-us 1000]`.

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use cutover_bench::arg;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_bench::fixture::{
    AppRepo, Error, Server, build_shop, cutover_bin, free_port, kill, med_p90_max, start_shop, unix_micros,
    wait_health,
};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

const CONFIG: &str = r#"
app: bench
repo: repo
services:
  api:
    run: 'exec "$SHOP_BIN" api'
    health: /health
    health_timeout: 10s
    replicas: 2
    public: true
environments:
  dev: { tier: dev }
"#;
const HOST: &str = "api.dev.bench.localhost";
const MAX_REQUESTS: usize = 2_000_000;
const PHASE_LIMIT: Duration = Duration::from_secs(180);
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// A client whose request failed waits this long, then reconnects.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
const UNKNOWN: u8 = u8::MAX;

/// One request as a client saw it; times are wall-clock µs, comparable with the server's.
#[derive(Clone, Copy)]
struct Hit {
    sent: u64,
    done: u64,
    /// `None`: failed (connect, transport or non-2xx); else the index of the version answering.
    answer: Option<u8>,
}

#[derive(Clone)]
struct Shape {
    conns: usize,
    pause: Duration,
    versions: Arc<Vec<String>>,
}

/// Starts the load against `addr`; it runs until `stop`, [`PHASE_LIMIT`] or [`MAX_REQUESTS`].
fn start_load(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    shape: &Shape,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Hit>> {
    let per_conn = MAX_REQUESTS / shape.conns.max(1);
    let deadline = Instant::now() + PHASE_LIMIT;
    let tasks: Vec<_> = (0..shape.conns)
        .map(|_| {
            let (stop, shape) = (Arc::clone(stop), shape.clone());
            rt.spawn(async move { client(addr, &shape, &stop, deadline, per_conn).await })
        })
        .collect();
    rt.spawn(async move {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all.sort_by_key(|h| h.sent);
        all
    })
}

async fn client(
    addr: SocketAddr,
    shape: &Shape,
    stop: &AtomicBool,
    deadline: Instant,
    max: usize,
) -> Vec<Hit> {
    let mut hits = Vec::with_capacity(max.min(1 << 16));
    let go = |hits: &Vec<Hit>| !stop.load(Ordering::Relaxed) && Instant::now() < deadline && hits.len() < max;
    while go(&hits) {
        let sent = unix_micros();
        let conn = async {
            let stream = TcpStream::connect(addr).await.ok()?;
            let _ = stream.set_nodelay(true);
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .ok()
        };
        let Some((mut sender, conn)) = conn.await else {
            hits.push(Hit {
                sent,
                done: unix_micros(),
                answer: None,
            });
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        tokio::spawn(conn);
        while go(&hits) {
            let sent = unix_micros();
            let req = Request::get("/version.json")
                .header(http::header::HOST, HOST)
                .body(Empty::<Bytes>::new())
                .expect("static request is valid");
            let answer = async {
                sender.ready().await.ok()?;
                let resp = sender.send_request(req).await.ok()?;
                let ok = resp.status().is_success();
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                let text = String::from_utf8_lossy(&body);
                let tag = shape.versions.iter().position(|v| text.contains(v.as_str()));
                ok.then(|| tag.map_or(UNKNOWN, |i| i as u8))
            }
            .await;
            hits.push(Hit {
                sent,
                done: unix_micros(),
                answer,
            });
            if answer.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
                break; // reconnect
            }
            if !shape.pause.is_zero() {
                tokio::time::sleep(shape.pause).await;
            }
        }
    }
    hits
}

/// One switch as observed: when it was issued, when it took effect, when the next one could
/// begin at the earliest, and which version it switched to.
struct Switch {
    label: String,
    to: u8,
    issued: u64,
    effective: u64,
    next_bound: Option<u64>,
    /// How long the switch took, as the report shows it.
    took: String,
}

/// Per-switch figures.
struct Row {
    requests: usize,
    failed: usize,
    checked: usize,
    straddling: usize,
    old: usize,
    outage_ms: f64,
}

fn analyse(hits: &[Hit], switches: &[Switch], end: u64) -> Vec<Row> {
    switches
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let until = switches.get(i + 1).map_or(end, |n| n.issued);
            let requests = hits
                .iter()
                .filter(|h| h.sent >= s.issued && h.sent < until)
                .count();
            // A failure belongs to the switch in whose period it *ended*: a request in flight
            // when the next switch is issued and failing because of it counts for that one.
            let failed: Vec<&Hit> = hits
                .iter()
                .filter(|h| h.answer.is_none() && h.done >= s.issued && h.done < until)
                .collect();
            let first = failed.iter().map(|h| h.sent).min();
            let outage_ms = match (first, failed.iter().map(|h| h.done).max()) {
                (Some(first), Some(last)) => last.saturating_sub(first) as f64 / 1e3,
                _ => 0.0,
            };
            let bound = s.next_bound.unwrap_or(u64::MAX);
            let window: Vec<&Hit> = hits
                .iter()
                .filter(|h| h.sent >= s.effective && h.sent < bound)
                .collect();
            let (checked, straddling): (Vec<&Hit>, Vec<&Hit>) = window.iter().partition(|h| h.done < bound);
            let old = checked
                .iter()
                .filter(|h| h.answer.is_some_and(|a| a != s.to))
                .count();
            Row {
                requests,
                failed: failed.len(),
                checked: checked.len(),
                straddling: straddling.len(),
                old,
                outage_ms,
            }
        })
        .collect()
}

fn main() -> Result<(), Error> {
    let conns = arg("--conns", 16).clamp(1, 256) as usize;
    let settle = Duration::from_millis(arg("--settle", 1000).clamp(100, 10_000));
    let pause = Duration::from_micros(arg("--pause-us", 1000).min(100_000));
    let bin = cutover_bin()?;
    let app = AppRepo::new(CONFIG, 2)?;
    println!("deploy_under_load: building the example shop program...");
    let shop = build_shop(app.dir.path())?;
    let shape = Shape {
        conns,
        pause,
        versions: Arc::new(app.versions.clone()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "deploy_under_load: {conns} keep-alive clients, {} µs pause between requests, \
         GET /version.json, {} ms of load after each switch, at most {MAX_REQUESTS} requests \
         and {} s per phase, loopback, {} CPU(s)",
        pause.as_micros(),
        settle.as_millis(),
        PHASE_LIMIT.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let cut = {
        let mut server = Server::start(&bin, &app, &[("SHOP_BIN", &shop)])?;
        let r = cutover_phase(&server, &rt, &shape, &app.versions, settle);
        server.stop();
        r?
    };
    let naive = naive_phase(&shop, app.dir.path(), &rt, &shape, &app.versions, settle)?;

    let mut failures = [0usize; 2];
    for (k, (name, (hits, switches, end))) in [
        ("Cutover (router, blue-green)", &cut),
        ("naive stop-then-start", &naive),
    ]
    .into_iter()
    .enumerate()
    {
        let rows = analyse(hits, switches, *end);
        println!();
        println!("{name}:");
        println!(
            "{:<4}{:<16}{:>9}{:>12}{:>10}{:>8}{:>11}{:>9}{:>12}{:>8}",
            "#", "switch", "to", "took", "requests", "failed", "outage", "checked", "straddling", "old"
        );
        for (i, (s, r)) in switches.iter().zip(&rows).enumerate() {
            println!(
                "{:<4}{:<16}{:>9}{:>12}{:>10}{:>8}{:>8.1} ms{:>9}{:>12}{:>8}",
                i + 1,
                s.label,
                &shape.versions[s.to as usize][..7],
                s.took,
                r.requests,
                r.failed,
                r.outage_ms,
                r.checked,
                r.straddling,
                r.old
            );
        }
        failures[k] = rows.iter().map(|r| r.failed).sum();
    }
    println!(
        "(took: Cutover run start → end in ms, for a fast rollback (the switch itself, from its \
         log); naive: kill → healthy. requests: sent from this switch to the next; failed: \
         ended in that period; outage: first failed send → last failure; old: checked answers \
         from another version)"
    );
    println!();
    println!(
        "{:<30}{:>10}{:>9}{:>9}{:>13}{:>13}{:>9}{:>9}",
        "side by side", "requests", "req/s", "failed", "during sw.", "old answers", "p50", "p99"
    );
    for (k, (name, (hits, switches, end))) in [("Cutover", &cut), ("naive stop-then-start", &naive)]
        .into_iter()
        .enumerate()
    {
        let rows = analyse(hits, switches, *end);
        let start = hits.first().map_or(0, |h| h.sent);
        let secs = (end.saturating_sub(start)) as f64 / 1e6;
        let lat: Vec<f64> = hits
            .iter()
            .filter(|h| h.answer.is_some())
            .map(|h| (h.done - h.sent) as f64)
            .collect();
        let mut sorted = lat.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted
            .get(((sorted.len() as f64 * 0.99) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0);
        println!(
            "{name:<30}{:>10}{:>9.0}{:>9}{:>13}{:>13}{:>6.0} µs{:>6.0} µs",
            hits.len(),
            hits.len() as f64 / secs.max(1e-9),
            hits.iter().filter(|h| h.answer.is_none()).count(),
            failures[k],
            rows.iter().map(|r| r.old).sum::<usize>(),
            med_p90_max(&lat).0,
            p99
        );
    }
    println!(
        "goal: 0 failed requests during Cutover deploys and rollbacks: {} ({} failed; naive: {})",
        if failures[0] == 0 { "MET" } else { "NOT MET" },
        failures[0],
        failures[1]
    );
    Ok(())
}

type Phase = (Vec<Hit>, Vec<Switch>, u64);

fn cutover_phase(
    server: &Server,
    rt: &tokio::runtime::Runtime,
    shape: &Shape,
    versions: &[String],
    settle: Duration,
) -> Result<Phase, Error> {
    let index = |run: &Value| -> u8 {
        let v = run["version"].as_str().unwrap_or("");
        versions.iter().position(|x| x == v).map_or(UNKNOWN, |i| i as u8)
    };
    // v1 serves before the load starts.
    let first = run_cli(server, &["release", "dev", "--version", &versions[0]])?;
    expect_succeeded(server, &first)?;
    let router = SocketAddr::from(([127, 0, 0, 1], server.router_port));
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(rt, router, shape, &stop);
    let result = (|| -> Result<Vec<(Switch, Value)>, Error> {
        std::thread::sleep(settle);
        let mut done: Vec<(Switch, Value)> = Vec::new();
        let mut serving = 0usize;
        let steps: [(&str, Vec<String>); 6] = [
            (
                "release",
                vec![
                    "release".into(),
                    "dev".into(),
                    "--version".into(),
                    versions[1].clone(),
                ],
            ),
            (
                "release",
                vec![
                    "release".into(),
                    "dev".into(),
                    "--version".into(),
                    versions[0].clone(),
                ],
            ),
            (
                "rollback --fast",
                vec!["rollback".into(), "dev".into(), "--fast".into(), "--force".into()],
            ),
            ("rollback", vec!["rollback".into(), "dev".into()]),
            ("release", vec![]),
            (
                "rollback --fast",
                vec!["rollback".into(), "dev".into(), "--fast".into(), "--force".into()],
            ),
        ];
        for (label, mut args) in steps {
            // The run's kind names the switch in the report; `label` is only a fallback.
            if args.is_empty() {
                args = ["release", "dev", "--version", &versions[1 - serving]]
                    .map(String::from)
                    .to_vec();
            }
            let issued = unix_micros();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = run_cli(server, &argv)?;
            expect_succeeded(server, &run)?;
            let id = run["id"].as_i64().unwrap_or(0);
            let logs = server.logs(id)?;
            let switched = logs
                .iter()
                .find(|l| {
                    l["line"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("traffic switched to"))
                })
                .ok_or_else(|| format!("run {id} logged no `traffic switched to` line"))?;
            let at = switched["at_ms"].as_i64().unwrap_or(0) as u64;
            let total = run["ended_at_ms"].as_i64().unwrap_or(0) - run["started_at_ms"].as_i64().unwrap_or(0);
            let mut took = format!("{total} ms");
            // A fast rollback logs how long the switch itself took: "... in N ms".
            if let Some(fast) = switched["line"].as_str().and_then(|t| t.split(" in ").nth(1)) {
                took = format!("{total} ({fast})");
            }
            let to = index(&run);
            serving = usize::from(to).min(versions.len() - 1);
            if let Some(prev) = done.last_mut() {
                prev.0.next_bound = run["started_at_ms"].as_i64().map(|s| s as u64 * 1000);
            }
            let label = run["kind"].as_str().unwrap_or(label).to_owned();
            done.push((
                Switch {
                    label,
                    to,
                    issued,
                    effective: (at + 1) * 1000,
                    next_bound: None,
                    took,
                },
                run,
            ));
            std::thread::sleep(settle);
        }
        Ok(done)
    })();
    stop.store(true, Ordering::Relaxed);
    let end = unix_micros();
    let hits = rt.block_on(load)?;
    let switches = result?.into_iter().map(|(s, _)| s).collect();
    Ok((hits, switches, end))
}

/// Runs a CLI command that starts a run, waits for the run and returns its record.
fn run_cli(server: &Server, args: &[&str]) -> Result<Value, Error> {
    let started = server.cli_json(args)?;
    let id = started["id"].as_i64().ok_or("no run id in the answer")?;
    server.wait_run(id, RUN_LIMIT)
}

fn expect_succeeded(server: &Server, run: &Value) -> Result<(), Error> {
    if run["state"] == "succeeded" {
        return Ok(());
    }
    let id = run["id"].as_i64().unwrap_or(0);
    let logs = server.logs(id).unwrap_or_default();
    let lines: Vec<&str> = logs.iter().filter_map(|l| l["line"].as_str()).collect();
    Err(format!(
        "run {id} ended {}: {}\n{}",
        run["state"],
        run["error"],
        lines.join("\n")
    )
    .into())
}

fn naive_phase(
    shop: &std::path::Path,
    dir: &std::path::Path,
    rt: &tokio::runtime::Runtime,
    shape: &Shape,
    versions: &[String],
    settle: Duration,
) -> Result<Phase, Error> {
    let port = free_port()?;
    let mut current = start_shop(shop, dir, port, &versions[0])?;
    if !wait_health(port, Duration::from_millis(5), Duration::from_secs(10)) {
        kill(&mut current);
        return Err("the directly started shop api never became healthy".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(rt, SocketAddr::from(([127, 0, 0, 1], port)), shape, &stop);
    let mut switches: Vec<Switch> = Vec::new();
    let mut result = Ok(());
    std::thread::sleep(settle);
    for i in 0..6 {
        let to = (i + 1) % 2;
        let issued = unix_micros();
        let t0 = Instant::now();
        kill(&mut current);
        current = match start_shop(shop, dir, port, &versions[to]) {
            Ok(c) => c,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if !wait_health(port, Duration::from_millis(5), Duration::from_secs(10)) {
            result = Err("the restarted shop api never became healthy".into());
            break;
        }
        let effective = unix_micros();
        if let Some(prev) = switches.last_mut() {
            prev.next_bound = Some(issued);
        }
        let took = format!("{:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        switches.push(Switch {
            label: "kill + start".into(),
            to: to as u8,
            issued,
            effective,
            next_bound: None,
            took,
        });
        std::thread::sleep(settle);
    }
    stop.store(true, Ordering::Relaxed);
    let end = unix_micros();
    let hits = rt.block_on(load);
    kill(&mut current);
    result?;
    Ok((hits?, switches, end))
}

//! Control-plane restarts and data-plane upgrades under load (the data-plane issue), against
//! today's alternative in the same run: the router inside `cutover serve`, stopped and
//! started.
//!
//! A real `cutover serve` (release binary, temporary data directory) runs two replicas of the
//! example shop's `api`. `--clients` threads send `GET /health` through the router in a closed
//! loop, each request on a new connection (so a listening socket that closes shows as a
//! failure, not as a pooled connection's retry). Then, one event after another with
//! `--settle` ms of plain load between them:
//!
//! 1. Data plane apart (the default): `--cycles` × (`kill -9` of `cutover serve`, start it
//!    again, until its API answers), then `--upgrades` × `cutover upgrade --data-plane`.
//! 2. Baseline, router embedded (`--data-plane embedded --stop-on-exit`): `--cycles` ×
//!    (SIGTERM, start again, until the route answers again).
//!
//! For each event it prints the requests sent from the event's start to its end plus the
//! settle time, how many failed, and their p99 latency, beside the p99 of a steady period
//! measured first. Goal: 0 failures, p99 during an event within 2× of steady state.
//!
//! Usage: `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin
//! control_plane_restarts [-- --cycles 3 --upgrades 2 --clients 4 --settle 1000]`.

// Benchmarks start the real binary and kill it directly.
#![allow(clippy::disallowed_methods)]

use cutover_bench::arg;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_bench::fixture::{AppRepo, Error, Server, build_shop, cutover_bin, free_port, http_get};

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
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// One request: when it was sent, how long it took, whether it got a 200.
#[derive(Clone, Copy)]
struct Hit {
    sent: Instant,
    took: Duration,
    ok: bool,
}

/// The closed-loop load, recording every request.
struct Load {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<Hit>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, hits) = (stop.clone(), hits.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) && mine.len() < 2_000_000 {
                        let sent = Instant::now();
                        let ok = matches!(http_get(port, HOST, "/health"), Some((200, _)));
                        mine.push(Hit {
                            sent,
                            took: sent.elapsed(),
                            ok,
                        });
                        if !ok {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    if let Ok(mut all) = hits.lock() {
                        all.extend(mine);
                    }
                })
            })
            .collect();
        Load { stop, hits, threads }
    }

    fn finish(mut self) -> Vec<Hit> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut hits = self.hits.lock().map(|h| h.clone()).unwrap_or_default();
        hits.sort_by_key(|h| h.sent);
        hits
    }
}

/// (requests, failed, p99 ms) of the requests sent in `[from, to)`.
fn window(hits: &[Hit], from: Instant, to: Instant) -> (usize, usize, f64) {
    let mut took: Vec<Duration> = Vec::new();
    let mut failed = 0;
    for h in hits.iter().filter(|h| h.sent >= from && h.sent < to) {
        took.push(h.took);
        failed += usize::from(!h.ok);
    }
    took.sort();
    let p99 = took
        .get((took.len() * 99 / 100).min(took.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    (took.len(), failed, p99)
}

struct Event {
    name: String,
    from: Instant,
    to: Instant,
    /// How long the event itself took (restart until the API answers, the upgrade call).
    took: Duration,
}

fn start_server(
    bin: &Path,
    app: &AppRepo,
    shop: &Path,
    embedded: bool,
    router: &str,
) -> Result<Server, Error> {
    let (plane, stop) = if embedded {
        ("embedded", "1")
    } else {
        ("process", "0")
    };
    Server::start_routing(
        bin,
        app,
        &[
            ("SHOP_BIN", shop),
            ("CUTOVER_DATA_PLANE", Path::new(plane)),
            ("CUTOVER_STOP_ON_EXIT", Path::new(stop)),
        ],
        router,
    )
}

fn deploy(server: &Server, version: &str) -> Result<(), Error> {
    server.cli_json(&["param", "put", "/bench-dev/desired_version", version])?;
    let run = server.cli_json(&["release", "dev"])?;
    let id = run["id"].as_i64().ok_or("no run id")?;
    let run = server.wait_run(id, RUN_LIMIT)?;
    if run["state"] != "succeeded" {
        return Err(format!("deploying {version} failed: {run}").into());
    }
    Ok(())
}

fn wait_routed(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if matches!(http_get(port, HOST, "/health"), Some((200, _))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Runs one phase; returns the steady-state window and the events.
/// Every request, the steady window, the events.
type Phase = (Vec<Hit>, (Instant, Instant), Vec<Event>);

fn phase(bin: &Path, shop: &Path, embedded: bool) -> Result<Phase, Error> {
    let cycles = arg("--cycles", 3);
    let upgrades = if embedded { 0 } else { arg("--upgrades", 2) };
    let clients = arg("--clients", 4);
    let settle = Duration::from_millis(arg("--settle", 1000));
    let app = AppRepo::new(CONFIG, 2)?;
    let router = format!("127.0.0.1:{}", free_port()?);
    let mut server = start_server(bin, &app, shop, embedded, &router)?;
    deploy(&server, &app.versions[0])?;
    deploy(&server, &app.versions[1])?;
    let port = server.router_port;
    let load = Load::start(port, clients);
    std::thread::sleep(Duration::from_millis(500));
    let steady_from = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let steady = (steady_from, Instant::now());
    let mut events = Vec::new();
    for i in 1..=cycles {
        let from = Instant::now();
        if embedded {
            server.stop();
        } else {
            server.kill_9();
        }
        server = start_server(bin, &app, shop, embedded, &router)?;
        if embedded && !wait_routed(port, Duration::from_secs(60)) {
            return Err("the embedded router did not route again within 60 s".into());
        }
        let took = from.elapsed();
        std::thread::sleep(settle);
        events.push(Event {
            name: format!(
                "{} {i}",
                if embedded {
                    "stop + start"
                } else {
                    "kill -9 + start"
                }
            ),
            from,
            to: Instant::now(),
            took,
        });
    }
    for i in 1..=upgrades {
        let from = Instant::now();
        server.cli_json(&["upgrade", "--data-plane"])?;
        let took = from.elapsed();
        std::thread::sleep(settle);
        events.push(Event {
            name: format!("data-plane upgrade {i}"),
            from,
            to: Instant::now(),
            took,
        });
    }
    let hits = load.finish();
    if !embedded {
        // Everything, data plane included, stops with the bench.
        let _ = server.cli_json(&["stop", "--all"]);
        server.wait_exit(Duration::from_secs(30));
    }
    drop(server);
    Ok((hits, steady, events))
}

fn report(title: &str, hits: &[Hit], steady: (Instant, Instant), events: &[Event]) -> (usize, f64) {
    let (n, failed, p99) = window(hits, steady.0, steady.1);
    println!("\n{title}");
    println!(
        "  {:<24} {:>9} {:>8} {:>9} {:>10}",
        "period", "requests", "failed", "p99 ms", "event took"
    );
    println!(
        "  {:<24} {n:>9} {failed:>8} {p99:>9.2} {:>10}",
        "steady (3 s)", "-"
    );
    let mut total_failed = 0;
    let mut worst = 0.0f64;
    for e in events {
        let (n, failed, p) = window(hits, e.from, e.to);
        total_failed += failed;
        worst = worst.max(p / p99.max(0.001));
        println!(
            "  {:<24} {n:>9} {failed:>8} {p:>9.2} {:>9.0}ms",
            e.name,
            e.took.as_secs_f64() * 1000.0
        );
    }
    (total_failed, worst)
}

fn main() -> Result<(), Error> {
    let bin = cutover_bin()?;
    let dir = tempfile::tempdir()?;
    let shop = build_shop(dir.path())?;
    println!(
        "control_plane_restarts: {} clients, new connection per request, {} cycles, {} upgrades",
        arg("--clients", 4),
        arg("--cycles", 3),
        arg("--upgrades", 2)
    );
    let (hits, steady, events) = phase(&bin, &shop, false)?;
    let (failed, ratio) = report(
        "data plane apart (default): kill -9 of cutover serve, data-plane upgrades",
        &hits,
        steady,
        &events,
    );
    let (base_hits, base_steady, base_events) = phase(&bin, &shop, true)?;
    let (base_failed, _) = report(
        "baseline, router embedded in cutover serve: SIGTERM + start",
        &base_hits,
        base_steady,
        &base_events,
    );
    println!(
        "\nsummary: data plane apart {failed} failed requests across its events (worst p99 {ratio:.2}× steady); \
         embedded router {base_failed} failed across its restarts"
    );
    println!(
        "goal: 0 failures and p99 within 2× of steady state: {}",
        if failed == 0 && ratio <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

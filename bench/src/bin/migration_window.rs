//! The migration window (issue 15): a Flask + SQLite shop (`cutover/tests/fixtures/flask-shop`,
//! the end-to-end test's application) whose v2 migration renames the column v1 reads and takes
//! `--migration-ms`, released v1 -> v2 under continuous load through the router, side by side in
//! one run: plain blue-green (`migrations: switch`, the default) and `migrations: hold`.
//!
//! Per mode it prints the requests sent, the failed ones (transport error or non-200), the
//! answers of v1 given after the migration began (the application writes the time it answers
//! into every body and the migration the time it began), and the latency p50/p99/max of the
//! requests that were in flight at some moment of the migration (under `hold`, the held ones).
//! Goal: 0 failed, 0 v1 answers after the migration began, max latency at most the migration
//! time plus 200 ms.
//!
//! Usage: `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin
//! migration_window [-- --conns 8 --migration-ms 1000 --settle 500]`. Needs `python3-flask`.

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_bench::arg;
use cutover_bench::fixture::{AppRepo, Error, Server, cutover_bin, unix_micros};

const APP_PY: &str = include_str!("../../../cutover/tests/fixtures/flask-shop/app.py");
const MIGRATE_PY: &str = include_str!("../../../cutover/tests/fixtures/flask-shop/migrate.py");
const ROLLBACK_PY: &str = include_str!("../../../cutover/tests/fixtures/flask-shop/rollback.py");

const CONFIG: &str = r#"
app: bench
repo: repo
services:
  web:
    run: "python3 app.py"
    health: /health
    health_timeout: 30s
    replicas: 2
    public: true
hooks:
  install: "python3 migrate.py"
  rollback: "python3 rollback.py"
environments:
  plain: { tier: dev }
  held:  { tier: dev, migrations: hold, hold_timeout: 60s }
"#;
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// One request: wall-clock ms sent and answered, and what answered.
struct Hit {
    sent_ms: u64,
    done_ms: u64,
    ok: bool,
    /// `(version, answered at ms)` from the body.
    answer: Option<(String, u64)>,
}

struct Outcome {
    requests: usize,
    failed: usize,
    v1_after: usize,
    migration_ms: u64,
    window: Vec<u64>,
    /// The release's log lines around the migration, ms relative to its start.
    timeline: Vec<(i64, String)>,
    /// The install step as the run saw it: its hook started to finished (ms), interpreter
    /// start included.
    install_ms: u64,
}

/// One `GET path` with a 60 s bound on the answer (a held request waits as long as the
/// migration; the fixture's 5 s bound would count a slow machine's hold as a failure).
fn http_get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    cutover_bench::fixture::http_get_within(port, host, path, Duration::from_secs(60))
}

fn now_ms() -> u64 {
    unix_micros() / 1000
}

fn load(
    port: u16,
    host: String,
    conns: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Hit>>> {
    (0..conns)
        .map(|_| {
            let host = host.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut hits = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent_ms = now_ms();
                    let got = http_get(port, &host, "/");
                    let done_ms = now_ms();
                    let ok = got.as_ref().is_some_and(|(s, _)| *s == 200);
                    let answer = got.filter(|(s, _)| *s == 200).and_then(|(_, body)| {
                        let mut p = body.split_whitespace();
                        let v = p.next()?.to_owned();
                        let _name = p.next()?;
                        Some((v, p.next()?.parse().ok()?))
                    });
                    hits.push(Hit {
                        sent_ms,
                        done_ms,
                        ok,
                        answer,
                    });
                    if !ok {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                hits
            })
        })
        .collect()
}

fn release(server: &Server, env: &str, version: &str) -> Result<i64, Error> {
    let run = server.cli_json(&["release", env, "--version", version])?;
    let id = run["id"].as_i64().ok_or("no run id")?;
    let run = server.wait_run(id, RUN_LIMIT)?;
    if run["state"] != "succeeded" {
        return Err(format!("run {id} on {env}: {}", run["error"]).into());
    }
    Ok(id)
}

fn phase(
    server: &Server,
    app: &AppRepo,
    env: &str,
    conns: usize,
    settle: Duration,
) -> Result<Outcome, Error> {
    release(server, env, &app.versions[0])?;
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(
        server.router_port,
        format!("web.{env}.bench.localhost"),
        conns,
        Arc::clone(&stop),
    );
    std::thread::sleep(settle);
    let result = release(server, env, &app.versions[1]);
    std::thread::sleep(settle);
    let id = *result.as_ref().map_err(|e| e.to_string())?;
    stop.store(true, Ordering::Relaxed);
    let hits: Vec<Hit> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let dir = app.data_dir().join("envs").join(env);
    let read =
        |name: &str| -> Result<u64, Error> { Ok(std::fs::read_to_string(dir.join(name))?.trim().parse()?) };
    let (began, ended) = (read("migration-started")?, read("migration-ended")?);
    let mut window: Vec<u64> = hits
        .iter()
        .filter(|h| h.sent_ms <= ended && h.done_ms >= began)
        .map(|h| h.done_ms - h.sent_ms)
        .collect();
    window.sort_unstable();
    let timeline: Vec<(i64, String)> = server
        .logs(id)?
        .into_iter()
        .filter_map(|l| {
            let at = l["at_ms"].as_i64()?;
            let line = l["line"].as_str()?.to_owned();
            let wanted = [
                "held",
                "drained",
                "$ python3",
                "finished in",
                "switched",
                "released",
                "healthy",
            ];
            wanted
                .iter()
                .any(|w| line.contains(w))
                .then(|| (at - began as i64, line))
        })
        .collect();
    let at = |needle: &str| timeline_at(&timeline, needle);
    let install_ms = match (at("$ python3 migrate.py"), at("install hook finished")) {
        (Some(a), Some(b)) => u64::try_from(b - a).unwrap_or(0),
        _ => 0,
    };
    Ok(Outcome {
        install_ms,
        timeline,
        requests: hits.len(),
        failed: hits.iter().filter(|h| !h.ok).count(),
        v1_after: hits
            .iter()
            .filter_map(|h| h.answer.as_ref())
            .filter(|(v, at)| v == "v1" && *at >= began)
            .count(),
        migration_ms: ended - began,
        window,
    })
}

fn timeline_at(timeline: &[(i64, String)], needle: &str) -> Option<i64> {
    timeline
        .iter()
        .find(|(_, l)| l.contains(needle))
        .map(|(at, _)| *at)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<(), Error> {
    let conns = arg("--conns", 8).clamp(1, 64) as usize;
    let migration_ms: u64 = arg("--migration-ms", 1000).clamp(10, 60_000);
    let settle = Duration::from_millis(arg("--settle", 500).clamp(100, 10_000));
    let bin = cutover_bin()?;
    let app = AppRepo::new_with(CONFIG, 2, &|i| {
        vec![
            ("app.py".into(), APP_PY.into()),
            ("migrate.py".into(), MIGRATE_PY.into()),
            ("rollback.py".into(), ROLLBACK_PY.into()),
            ("VERSION".into(), format!("v{i}\n")),
        ]
    })?;
    for env in ["plain", "held"] {
        let dir = app.data_dir().join("envs").join(env);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("migration-seconds"),
            format!("{}", migration_ms as f64 / 1000.0),
        )?;
    }
    println!(
        "migration_window: Flask + SQLite shop, 2 replicas, {conns} clients (one connection per request), \
         a {migration_ms} ms migration renaming the column v1 reads, loopback, {} CPU(s)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let started = Instant::now();
    let mut server = Server::start(&bin, &app, &[])?;
    let plain = phase(&server, &app, "plain", conns, settle);
    let held = phase(&server, &app, "held", conns, settle);
    server.stop();
    let (plain, held) = (plain?, held?);
    println!(
        "{:<22} {:>8} {:>7} {:>16} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "mode", "requests", "failed", "v1 after migr.", "migr. ms", "in window", "p50 ms", "p99 ms", "max ms"
    );
    for (name, o) in [("blue-green (switch)", &plain), ("migrations: hold", &held)] {
        println!(
            "{:<22} {:>8} {:>7} {:>16} {:>10} {:>9} {:>9} {:>9} {:>9}",
            name,
            o.requests,
            o.failed,
            o.v1_after,
            o.migration_ms,
            o.window.len(),
            pct(&o.window, 0.5),
            pct(&o.window, 0.99),
            o.window.last().copied().unwrap_or(0)
        );
    }
    println!("timeline of the hold release (ms from the migration's start):");
    for (at, line) in &held.timeline {
        println!("  {at:>6}  {}", line.chars().take(100).collect::<String>());
    }
    let max = held.window.last().copied().unwrap_or(0);
    println!(
        "install step of the hold release: {} ms (hook start to end: python start + {} ms of migration)",
        held.install_ms, held.migration_ms
    );
    for (what, base) in [
        ("migration", held.migration_ms),
        ("install step", held.install_ms),
    ] {
        let goal = held.failed == 0 && held.v1_after == 0 && max <= base + 200;
        println!(
            "hold goal (0 failed, 0 v1 answers after the migration began, max {max} <= {what} + 200 ms = {} ms): {}",
            base + 200,
            if goal { "met" } else { "NOT met" }
        );
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

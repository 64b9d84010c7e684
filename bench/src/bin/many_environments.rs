//! One node, many environments (issue 12): N environments × S public services × 1 replica of
//! the example shop's `api` on the process runtime, one `cutover serve` (release binary). For
//! each N of the run (`--small`, then `--large`, side by side in one table):
//!
//! 1. **first release** of v1 to every environment at once (N `POST …/releases`), until every
//!    run has ended; meanwhile a prober sends `GET /api/v1/environments` and `GET /api/v1/runs`
//!    every 50 ms and records their latencies ("API during the mass deploy");
//! 2. **second release** of v2 everywhere, the same way; v1 stays warm, so 2·N·S instances live;
//! 3. **after**: 200 × `GET /api/v1/environments`, 100 × `GET …/status` of one environment, and
//!    2,000 requests through the router to one service;
//! 4. **shutdown**: SIGTERM, time until the server has exited.
//!
//! Prints wall times, failed runs, server RSS (`/proc/<pid>/status`) after each phase, the
//! latencies (p50/p99/max) and how each figure grows from the small N to the large one.
//! Everything stays on 127.0.0.1; every phase is bounded in time.
//!
//! Usage: `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin
//! many_environments [-- --small 10 --large 100 --services 10]`

// Benchmarks start the real binary and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use cutover_bench::arg;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_bench::fixture::{AppRepo, Error, Server, build_shop, cutover_bin, http_get};
use serde_json::Value;

/// A mass release must end within this (else the phase is reported as timed out).
const PHASE_LIMIT: Duration = Duration::from_secs(900);

fn config(envs: usize, services: usize) -> String {
    let mut c = String::from("app: bench\nrepo: repo\nservices:\n");
    for s in 1..=services {
        c.push_str(&format!(
            "  s{s}:\n    run: 'exec \"$SHOP_BIN\" api'\n    health: /health\n    \
             health_timeout: 120s\n    replicas: 1\n    public: true\n"
        ));
    }
    c.push_str("environments:\n");
    for e in 1..=envs {
        c.push_str(&format!("  e{e}: {{ tier: dev }}\n"));
    }
    c
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn json_of(body: &str) -> Option<Value> {
    let start = body.find(['{', '['])?;
    let end = body.rfind(['}', ']'])?;
    serde_json::from_str(&body[start..=end]).ok()
}

/// p50, p99, max of `ms` (milliseconds).
fn pcts(ms: &mut [f64]) -> (f64, f64, f64) {
    if ms.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), ms[ms.len() - 1])
}

fn timed(f: impl FnOnce() -> bool) -> Option<f64> {
    let t = Instant::now();
    f().then(|| t.elapsed().as_secs_f64() * 1000.0)
}

/// Releases `version` to every environment at once and waits for every run to end, while a
/// prober measures API latencies. Returns (wall seconds, failed runs, API latencies in ms).
fn mass_release(server: &Arc<Server>, envs: usize, version: &str) -> Result<(f64, usize, Vec<f64>), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let server = Arc::clone(server);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/api/v1/environments", "/api/v1/runs?limit=20"] {
                    if let Some(ms) = timed(|| server.api("GET", path, None).is_ok_and(|(s, _)| s == 200)) {
                        lat.push(ms);
                    } else {
                        lat.push(f64::INFINITY);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            lat
        })
    };
    let started = Instant::now();
    let body = format!("{{\"version\":\"{version}\"}}");
    let mut ids = Vec::new();
    for e in 1..=envs {
        let (status, answer) = server.api(
            "POST",
            &format!("/api/v1/environments/e{e}/releases"),
            Some(&body),
        )?;
        let id = json_of(&answer).and_then(|v| v["id"].as_i64());
        match (status, id) {
            (200..=299, Some(id)) => ids.push(id),
            _ => return Err(format!("release to e{e}: {status} {answer}").into()),
        }
    }
    let mut failed = 0;
    let mut pending = ids;
    while !pending.is_empty() {
        if started.elapsed() > PHASE_LIMIT {
            failed += pending.len();
            eprintln!("{} runs did not end within {PHASE_LIMIT:?}", pending.len());
            break;
        }
        let mut still = Vec::new();
        for id in pending {
            let (_, answer) = server.api("GET", &format!("/api/v1/runs/{id}"), None)?;
            match json_of(&answer).as_ref().and_then(|v| v["state"].as_str()) {
                Some("succeeded") => {}
                Some("queued" | "running" | "awaiting_approval") | None => still.push(id),
                Some(other) => {
                    eprintln!("run {id} ended {other}");
                    failed += 1;
                }
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let lat = prober.join().map_err(|_| "the prober panicked")?;
    Ok((wall, failed, lat))
}

/// The figures of one N.
#[derive(Default)]
struct Figures {
    rows: Vec<(String, f64)>,
}

impl Figures {
    fn push(&mut self, name: &str, v: f64) {
        self.rows.push((name.to_owned(), v));
    }
    fn lat(&mut self, name: &str, ms: &mut [f64]) {
        let failed = ms.iter().filter(|v| v.is_infinite()).count();
        let mut ok: Vec<f64> = ms.iter().copied().filter(|v| v.is_finite()).collect();
        let (p50, p99, max) = pcts(&mut ok);
        self.push(&format!("{name} p50 ms"), p50);
        self.push(&format!("{name} p99 ms"), p99);
        self.push(&format!("{name} max ms"), max);
        self.push(&format!("{name} failed"), failed as f64);
    }
}

fn measure(
    bin: &std::path::Path,
    shop: &std::path::Path,
    envs: usize,
    services: usize,
) -> Result<Figures, Error> {
    let app = AppRepo::new(&config(envs, services), 2)?;
    let server = Arc::new(Server::start(bin, &app, &[("SHOP_BIN", shop)])?);
    let pid = server.pid();
    let mut f = Figures::default();
    f.push("instances after 2nd release", (2 * envs * services) as f64);
    f.push("RSS idle MB", rss_mb(pid));

    let (wall, failed, mut lat) = mass_release(&server, envs, &app.versions[0])?;
    f.push("1st release wall s", wall);
    f.push("1st release failed runs", failed as f64);
    f.push("RSS after 1st MB", rss_mb(pid));
    f.lat("API during 1st", &mut lat);

    let (wall, failed, mut lat) = mass_release(&server, envs, &app.versions[1])?;
    f.push("2nd release wall s", wall);
    f.push("2nd release failed runs", failed as f64);
    f.push("RSS after 2nd MB", rss_mb(pid));
    f.lat("API during 2nd", &mut lat);

    let mut list = Vec::new();
    for _ in 0..200 {
        list.push(
            timed(|| {
                server
                    .api("GET", "/api/v1/environments", None)
                    .is_ok_and(|(s, _)| s == 200)
            })
            .unwrap_or(f64::INFINITY),
        );
    }
    f.lat("GET environments after", &mut list);
    let mut status = Vec::new();
    for _ in 0..100 {
        status.push(
            timed(|| {
                server
                    .api("GET", "/api/v1/environments/e1/status", None)
                    .is_ok_and(|(s, _)| s == 200)
            })
            .unwrap_or(f64::INFINITY),
        );
    }
    f.lat("GET e1 status after", &mut status);
    let mut router = Vec::new();
    for _ in 0..2000 {
        router.push(
            timed(|| {
                http_get(server.router_port, "s1.e1.bench.localhost", "/health")
                    .is_some_and(|(s, _)| s == 200)
            })
            .unwrap_or(f64::INFINITY),
        );
    }
    f.lat("router", &mut router);
    f.push("RSS after queries MB", rss_mb(pid));

    let mut server = Arc::try_unwrap(server).map_err(|_| "the server is still shared")?;
    let stopped = server.terminate_timed(Duration::from_secs(120));
    f.push("shutdown s", stopped.map_or(f64::INFINITY, |d| d.as_secs_f64()));
    Ok(f)
}

fn main() -> Result<(), Error> {
    let small = arg("--small", 10);
    let large = arg("--large", 100);
    let services = arg("--services", 10);
    let bin = cutover_bin()?;
    let tools = tempfile::tempdir()?;
    let shop = build_shop(tools.path())?;
    println!(
        "many_environments: S={services} public services x 1 replica, process runtime, N={small} then N={large}"
    );
    let a = measure(&bin, &shop, small, services)?;
    println!("N={small} done");
    let b = measure(&bin, &shop, large, services)?;
    println!();
    println!("| figure | N={small} | N={large} | growth |");
    println!("| --- | ---: | ---: | ---: |");
    for ((name, x), (_, y)) in a.rows.iter().zip(&b.rows) {
        let growth = if *x > 0.0 && x.is_finite() && y.is_finite() {
            format!("{:.2}x", y / x)
        } else {
            "-".to_owned()
        };
        println!("| {name} | {x:.1} | {y:.1} | {growth} |");
    }
    Ok(())
}

//! Deploys under load on each runtime, side by side in one run (issue 7): requests failed
//! while Cutover switches v1 → v2 → v1 … on the `process`, `docker` and `swarm` runtimes,
//! against two plain Docker baselines under the same load (loopback only, bounded).
//!
//! 1. Cutover, one `cutover serve` per runtime (release binary, temporary data directory,
//!    two replicas of a public `api`, blue-green): `process` runs the example shop's `api`;
//!    `docker` and `swarm` run `busybox httpd` in an image Cutover builds from the release's
//!    `Dockerfile` (`FROM cutover-base:latest`, made by `scripts/docker-setup`). While
//!    `--conns` clients send `GET /version.json` through the router, `--switches` releases
//!    alternate v2, v1, … with `--settle` ms of load after each. A build that refuses
//!    `runtime: swarm` gets the row "swarm: not supported by this build".
//! 2. Baselines, same load sent straight to a fixed port (no Cutover), same image content:
//!    stop-then-start of a container (`docker rm -f` the old one, `docker run -d -p
//!    127.0.0.1:PORT:8080` the other version, poll `/health` every 5 ms), and a plain
//!    `docker service update --image … --update-order stop-first` of a Swarm service
//!    published in host mode (the only order that works for a host-mode port on one node;
//!    "took effect" = the first answer of the new version, polled every 5 ms).
//!
//! Failures and old-version answers are defined as in `deploy_under_load` (bench/README.md,
//! `cutover_bench::switch_load`). Containers, services, images and temporary directories are
//! removed at the end, also on failure; servers are stopped with SIGTERM.
//!
//! Usage: `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin
//! runtime_deploys [-- --switches 4 --conns 16 --settle 1000 --pause-us 1000]`
//! (Docker: run `bash scripts/docker-setup` as root first).

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use cutover_bench::arg;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_bench::fixture::{
    AppRepo, Error, Server, build_shop, cutover_bin, docker, free_port, http_get, unix_micros, wait_health,
    write_files,
};
use cutover_bench::switch_load::{Phase, Shape, Switch, UNKNOWN, print_switches, start_load, summarize};
use serde_json::Value;

const MAX_REQUESTS: usize = 2_000_000;
const PHASE_LIMIT: Duration = Duration::from_secs(300);
const RUN_LIMIT: Duration = Duration::from_secs(180);
const DOCKER_LIMIT: Duration = Duration::from_secs(180);
const DOCKERFILE: &str = "FROM cutover-base:latest\nCOPY www /www\n\
                          CMD [\"busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

/// What only version `i` (1-based) of the busybox service answers on `/version.json`.
fn marker(i: usize) -> String {
    format!("bench-release-{i}")
}

/// The files of version `i` besides `VERSION`: the image's Dockerfile and its web root.
fn version_files(i: usize) -> Vec<(String, String)> {
    vec![
        ("Dockerfile".into(), DOCKERFILE.into()),
        ("www/health".into(), "ok\n".into()),
        (
            "www/version.json".into(),
            format!("{{\"version\":\"{}\"}}\n", marker(i)),
        ),
    ]
}

fn config(app: &str, runtime: &str) -> String {
    let run = match runtime {
        "process" => r#"'exec "$SHOP_BIN" api'"#,
        _ => r#""busybox httpd -f -p $PORT -h /www""#,
    };
    format!(
        "app: {app}\nrepo: repo\nservices:\n  api:\n    run: {run}\n    health: /health\n    \
         health_timeout: 30s\n    replicas: 2\n    public: true\nenvironments:\n  \
         {runtime}: {{ tier: dev, runtime: {runtime} }}\n"
    )
}

enum Outcome {
    Done(Phase),
    Unsupported(String),
    Failed(String),
}

fn main() -> Result<(), Error> {
    let switches = arg("--switches", 4).clamp(1, 20) as usize;
    let conns = arg("--conns", 16).clamp(1, 256) as usize;
    let settle = Duration::from_millis(arg("--settle", 1000).clamp(100, 10_000));
    let pause = Duration::from_micros(arg("--pause-us", 1000).min(100_000));
    let bin = cutover_bin()?;
    let app = format!("rd{}", std::process::id());
    let server_version = docker(&["version", "--format", "{{.Server.Version}}"], DOCKER_LIMIT)
        .map_err(|e| format!("Docker is not usable (run `bash scripts/docker-setup` as root): {e}"))?;
    let _cleanup = Cleanup { app: app.clone() };
    let swarm = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"], DOCKER_LIMIT)?;
    if swarm != "active" {
        println!("runtime_deploys: swarm is {swarm:?}: docker swarm init --advertise-addr 127.0.0.1");
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"], DOCKER_LIMIT)?;
    }
    let work = tempfile::Builder::new().prefix("cutover-bench-").tempdir()?;
    println!("runtime_deploys: building the example shop program and the baseline images...");
    let shop = build_shop(work.path())?;
    let image = format!("{app}-baseline");
    for i in 1..=2 {
        let ctx = work.path().join(format!("v{i}"));
        write_files(&ctx, &version_files(i))?;
        let tag = format!("{image}:v{i}");
        docker(&["build", "-q", "-t", &tag, &ctx.to_string_lossy()], DOCKER_LIMIT)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let markers = Arc::new(vec![marker(1), marker(2)]);
    let shape = |host: &str, markers: Arc<Vec<String>>| Shape {
        conns,
        pause,
        host: host.into(),
        markers,
        limit: PHASE_LIMIT,
        max_requests: MAX_REQUESTS,
    };
    println!(
        "runtime_deploys: {switches} switches per row, {conns} clients, {} µs pause between \
         requests, GET /version.json, {} ms of load after each switch, at most {MAX_REQUESTS} \
         requests and {} s per row, loopback, {} CPU(s), Docker {server_version}",
        pause.as_micros(),
        settle.as_millis(),
        PHASE_LIMIT.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let mut rows: Vec<(String, Outcome)> = Vec::new();
    for runtime in ["process", "docker", "swarm"] {
        println!("runtime_deploys: Cutover, {runtime} runtime...");
        let outcome = cutover_phase(&bin, &app, runtime, &shop, &rt, &shape, switches, settle);
        rows.push((format!("Cutover, {runtime} runtime"), outcome));
    }
    println!("runtime_deploys: baseline docker rm -f + docker run...");
    let s = shape("127.0.0.1", Arc::clone(&markers));
    let outcome = to_outcome(container_baseline(&app, &image, &rt, &s, switches, settle));
    rows.push(("docker rm -f + docker run".into(), outcome));
    println!("runtime_deploys: baseline docker service update --update-order stop-first...");
    let outcome = to_outcome(service_baseline(&app, &image, &rt, &s, switches, settle));
    rows.push(("docker service update stop-first".into(), outcome));

    for (name, outcome) in &rows {
        if let Outcome::Done(phase) = outcome {
            print_switches(name, phase);
        }
    }
    println!(
        "(took: Cutover run start → end; baselines: issued → new version healthy, and for the \
         service update → `docker service update` returned (converged). requests: sent from \
         this switch to the next; failed: ended in that period; outage: first failed send → \
         last failure; checked/straddling/old: see bench/README.md)"
    );
    println!();
    println!(
        "{:<36}{:>10}{:>8}{:>8}{:>12}{:>6}{:>13}{:>13}",
        "side by side", "requests", "req/s", "failed", "during sw.", "old", "p50", "p99"
    );
    let (mut goal, mut cutover_failed, mut errors) = (true, 0usize, Vec::new());
    for (name, outcome) in &rows {
        match outcome {
            Outcome::Done(phase) => {
                let s = summarize(phase);
                println!(
                    "{name:<36}{:>10}{:>8.0}{:>8}{:>12}{:>6}{:>10.2} ms{:>10.2} ms",
                    s.requests,
                    s.rps,
                    s.failed,
                    s.during_switches,
                    s.old,
                    s.p50_us / 1e3,
                    s.p99_us / 1e3
                );
                if name.starts_with("Cutover") {
                    cutover_failed += s.failed;
                    goal &= s.failed == 0 && s.old == 0;
                }
            }
            Outcome::Unsupported(why) => {
                println!("{name:<36}swarm: not supported by this build");
                println!("{:<36}({})", "", why.lines().last().unwrap_or(why));
            }
            Outcome::Failed(why) => {
                println!("{name:<36}FAILED: {}", why.lines().next().unwrap_or(why));
                errors.push(format!("{name}: {why}"));
                if name.starts_with("Cutover") {
                    goal = false;
                }
            }
        }
    }
    println!(
        "goal: 0 failed requests (and 0 old-version answers) on Cutover's rows: {} ({} failed)",
        if goal { "MET" } else { "NOT MET" },
        cutover_failed
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n").into())
    }
}

fn to_outcome(r: Result<Phase, Error>) -> Outcome {
    match r {
        Ok(p) => Outcome::Done(p),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn cutover_phase(
    bin: &Path,
    app: &str,
    runtime: &str,
    shop: &Path,
    rt: &tokio::runtime::Runtime,
    shape: &dyn Fn(&str, Arc<Vec<String>>) -> Shape,
    switches: usize,
    settle: Duration,
) -> Outcome {
    let repo = match AppRepo::new_with(&config(app, runtime), 2, &version_files) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut server = match Server::start(bin, &repo, &[("SHOP_BIN", shop)]) {
        Ok(s) => s,
        Err(e) => {
            let text = e.to_string();
            let refused = [
                "cannot run yet",
                "not supported",
                "unsupported",
                "unknown runtime",
            ]
            .iter()
            .any(|p| text.contains(p));
            if runtime == "swarm" && text.contains("swarm") && refused {
                return Outcome::Unsupported(text);
            }
            return Outcome::Failed(text);
        }
    };
    // The shop answers its SHA; busybox answers the marker committed with the version.
    let markers = match runtime {
        "process" => repo.versions.clone(),
        _ => vec![marker(1), marker(2)],
    };
    let host = format!("api.{runtime}.{app}.localhost");
    let result = cutover_switches(
        &server,
        rt,
        &shape(&host, Arc::new(markers)),
        &repo.versions,
        runtime,
        switches,
        settle,
    );
    server.stop();
    // What the stopped server left running (it should stop its instances on SIGTERM).
    let label = format!("label=cutover.app={app}");
    let env = format!("label=cutover.env={runtime}");
    if let Ok(left) = docker(&["ps", "-q", "--filter", &label, "--filter", &env], DOCKER_LIMIT)
        && !left.is_empty()
    {
        println!(
            "runtime_deploys: note: {} container(s) of {runtime} still running after its server stopped",
            left.lines().count()
        );
    }
    to_outcome(result)
}

fn cutover_switches(
    server: &Server,
    rt: &tokio::runtime::Runtime,
    shape: &Shape,
    versions: &[String],
    env: &str,
    switches: usize,
    settle: Duration,
) -> Result<Phase, Error> {
    let first = run_cli(server, &["release", env, "--version", &versions[0]])?;
    expect_succeeded(server, &first)?;
    let router = SocketAddr::from(([127, 0, 0, 1], server.router_port));
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(rt, router, shape, &stop);
    let result = (|| -> Result<Vec<Switch>, Error> {
        std::thread::sleep(settle);
        let mut done: Vec<Switch> = Vec::new();
        for k in 0..switches {
            let to = (k + 1) % 2;
            let issued = unix_micros();
            let run = run_cli(server, &["release", env, "--version", &versions[to]])?;
            expect_succeeded(server, &run)?;
            let id = run["id"].as_i64().unwrap_or(0);
            let switched = server.logs(id)?.into_iter().find(|l| {
                l["line"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("traffic switched to"))
            });
            let total = run["ended_at_ms"].as_i64().unwrap_or(0) - run["started_at_ms"].as_i64().unwrap_or(0);
            // Without the log line, the run's end is when the switch had certainly happened.
            let (at, took) = match switched.as_ref().and_then(|l| l["at_ms"].as_i64()) {
                Some(at) => (at, format!("{total} ms")),
                None => (
                    run["ended_at_ms"].as_i64().unwrap_or(0),
                    format!("{total} ms (no log)"),
                ),
            };
            if let Some(prev) = done.last_mut() {
                prev.next_bound = run["started_at_ms"].as_i64().map(|s| s as u64 * 1000);
            }
            done.push(Switch {
                label: format!("release ({})", run["kind"].as_str().unwrap_or("?")),
                to: if run["version"] == versions[to].as_str() {
                    to as u8
                } else {
                    UNKNOWN
                },
                issued,
                effective: (at as u64 + 1) * 1000,
                next_bound: None,
                took,
            });
            std::thread::sleep(settle);
        }
        Ok(done)
    })();
    stop.store(true, Ordering::Relaxed);
    let end = unix_micros();
    let hits = rt.block_on(load)?;
    Ok((hits, result?, end))
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

/// The same load straight at `port` while `switch(k, to)` replaces the version `switches`
/// times; `switch` returns when the new version took effect (µs) and what to show as "took".
fn baseline_phase(
    rt: &tokio::runtime::Runtime,
    shape: &Shape,
    port: u16,
    label: &str,
    switches: usize,
    settle: Duration,
    switch: &mut dyn FnMut(usize, usize) -> Result<(u64, String), Error>,
) -> Result<Phase, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(rt, SocketAddr::from(([127, 0, 0, 1], port)), shape, &stop);
    let mut done: Vec<Switch> = Vec::new();
    let mut result = Ok(());
    std::thread::sleep(settle);
    for k in 0..switches {
        let to = (k + 1) % 2;
        let issued = unix_micros();
        let (effective, took) = match switch(k, to) {
            Ok(t) => t,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if let Some(prev) = done.last_mut() {
            prev.next_bound = Some(issued);
        }
        done.push(Switch {
            label: label.to_owned(),
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
    let hits = rt.block_on(load)?;
    result?;
    Ok((hits, done, end))
}

/// Stop-then-start of a container on a fixed loopback port.
fn container_baseline(
    app: &str,
    image: &str,
    rt: &tokio::runtime::Runtime,
    shape: &Shape,
    switches: usize,
    settle: Duration,
) -> Result<Phase, Error> {
    let port = free_port()?;
    let publish = format!("127.0.0.1:{port}:8080");
    let start = |n: usize, version: usize| {
        let name = format!("{app}-base-{n}");
        let tag = format!("{image}:v{}", version + 1);
        docker(
            &["run", "-d", "--name", &name, "-p", &publish, &tag],
            DOCKER_LIMIT,
        )
    };
    start(0, 0)?;
    if !wait_health(port, Duration::from_millis(5), Duration::from_secs(30)) {
        return Err("the v1 container never answered /health".into());
    }
    let mut switch = |k: usize, to: usize| -> Result<(u64, String), Error> {
        let t0 = Instant::now();
        docker(&["rm", "-f", &format!("{app}-base-{k}")], DOCKER_LIMIT)?;
        start(k + 1, to)?;
        if !wait_health(port, Duration::from_millis(5), Duration::from_secs(30)) {
            return Err("the new container never answered /health".into());
        }
        Ok((
            unix_micros(),
            format!("{:.0} ms", t0.elapsed().as_secs_f64() * 1e3),
        ))
    };
    baseline_phase(rt, shape, port, "rm -f + run", switches, settle, &mut switch)
}

/// `docker service update --update-order stop-first` of a host-mode published service.
fn service_baseline(
    app: &str,
    image: &str,
    rt: &tokio::runtime::Runtime,
    shape: &Shape,
    switches: usize,
    settle: Duration,
) -> Result<Phase, Error> {
    let port = free_port()?;
    let name = format!("{app}-svc");
    let publish = format!("mode=host,target=8080,published={port}");
    // --init: busybox as PID 1 ignores SIGTERM; with tini the old task stops at once instead
    // of after the 10 s grace period (Cutover's containers run with an init too).
    let v1 = format!("{image}:v1");
    docker(
        &[
            "service",
            "create",
            "--quiet",
            "--name",
            &name,
            "--no-resolve-image",
            "--init",
            "--publish",
            &publish,
            "--update-order",
            "stop-first",
            &v1,
        ],
        DOCKER_LIMIT,
    )?;
    if !wait_health(port, Duration::from_millis(5), Duration::from_secs(60)) {
        return Err("the v1 service never answered /health".into());
    }
    let mut switch = |_k: usize, to: usize| -> Result<(u64, String), Error> {
        let t0 = Instant::now();
        let (name, tag) = (name.clone(), format!("{image}:v{}", to + 1));
        let update = std::thread::spawn(move || {
            let args = [
                "service",
                "update",
                "--quiet",
                "--no-resolve-image",
                "--image",
                &tag,
                "--update-order",
                "stop-first",
                &name,
            ];
            docker(&args, DOCKER_LIMIT).map_err(|e| e.to_string())
        });
        let wanted = marker(to + 1);
        // Bounded: DOCKER_LIMIT, or 30 s after the update command returned.
        let (deadline, mut finished) = (Instant::now() + DOCKER_LIMIT, None);
        let serving = loop {
            let body = http_get(port, "127.0.0.1", "/version.json");
            if body.is_some_and(|(s, b)| s == 200 && b.contains(&wanted)) {
                break Some(unix_micros());
            }
            if update.is_finished() {
                finished.get_or_insert_with(Instant::now);
            }
            let late = finished.is_some_and(|f| f.elapsed() > Duration::from_secs(30));
            if Instant::now() > deadline || late {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let serving_ms = t0.elapsed().as_secs_f64() * 1e3;
        update.join().map_err(|_| "the update thread panicked")??;
        let effective = serving.ok_or("the updated service never answered the new version")?;
        let converged_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok((effective, format!("{serving_ms:.0} / {converged_ms:.0} ms")))
    };
    baseline_phase(
        rt,
        shape,
        port,
        "service update stop-first",
        switches,
        settle,
        &mut switch,
    )
}

/// Removes everything this run created in Docker, also when it fails half-way: baseline
/// containers and service, whatever Cutover left labelled with this run's app, and images.
struct Cleanup {
    app: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let limit = Duration::from_secs(60);
        let app = &self.app;
        // Services first (the baseline's and any a swarm runtime made: all named `<app>-…`),
        // so that Swarm does not replace the task containers removed next.
        let prefix = format!("name={app}-");
        if let Ok(services) = docker(&["service", "ls", "-q", "--filter", &prefix], limit) {
            for s in services.lines() {
                let _ = docker(&["service", "rm", s], limit);
            }
        }
        let name_filter = format!("name=^{app}-");
        let label = format!("label=cutover.app={app}");
        for filter in [name_filter.as_str(), label.as_str()] {
            if let Ok(ids) = docker(&["ps", "-aq", "--filter", filter], limit) {
                for id in ids.lines() {
                    let _ = docker(&["rm", "-f", id], limit);
                }
            }
        }
        let prefix = format!("{app}-");
        if let Ok(images) = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"], limit) {
            for tag in images.lines().filter(|t| t.starts_with(&prefix)) {
                let _ = docker(&["rmi", "-f", tag], limit);
            }
        }
    }
}

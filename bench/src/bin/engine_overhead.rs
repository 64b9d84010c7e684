//! Pipeline engine overhead (issue 3): what a run costs beyond the work its stages do.
//!
//! A real `cutover serve` (release binary, temporary data directory, loopback only) deploys an
//! app whose hooks are no-ops (`true`), which has no `build` command (the release trees are
//! checked out by two warm-up runs that are not measured) and whose one public service is
//! two replicas of the example shop's `api`, which answers `/health` within milliseconds.
//! It then deploys v1, v2, v1, ... to `dev` `--runs` times (default 10, at most 100), one
//! after the other, and reads each run's record: total wall time (run start → run end), the
//! time *between* stages (run start → first stage start, one stage's end → the next one's
//! start, last stage end → run end: pure engine bookkeeping), and the time *inside* stages,
//! split into Deploy services, the three hooks and the other stages. All from the run
//! record's millisecond timestamps. Goal: < 50 ms between stages per run.
//!
//! Baseline, in the same run: the same processes started directly, without Cutover: three
//! `sh -c true`, two shop `api` replicas started and polled on `/health` every 5 ms, the
//! previous pair killed. The difference to Cutover's total is everything Cutover adds.
//!
//! Usage: `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin
//! engine_overhead [-- --runs N]`.

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use cutover_bench::arg;
use std::time::{Duration, Instant};

use cutover_bench::fixture::{
    AppRepo, Error, Server, build_shop, cutover_bin, free_port, kill, med_p90_max, ms, start_shop,
    wait_health,
};
use serde_json::Value;

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
hooks:
  pre_deploy: "true"
  install: "true"
  post_deploy: "true"
environments:
  dev: { tier: dev }
"#;

const HOOKS: [&str; 3] = ["pre_deploy_hook", "install", "post_deploy_hook"];
const GOAL_MS: i64 = 50;
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// One measured run, in milliseconds.
struct RunTimes {
    id: i64,
    version: String,
    queued: i64,
    total: i64,
    between: i64,
    inside: i64,
    deploy: i64,
    hooks: i64,
    /// (stage slug, status, duration)
    stages: Vec<(String, String, i64)>,
    /// Release command issued → ended run's record read, as the client saw it.
    client: Duration,
}

impl RunTimes {
    fn other(&self) -> i64 {
        self.inside - self.deploy - self.hooks
    }
}

fn analyse(run: &Value, client: Duration) -> Result<RunTimes, Error> {
    let field = |v: &Value, f: &str| ms(v, f).ok_or_else(|| format!("run without {f}: {run}"));
    let start = field(run, "started_at_ms")?;
    let end = field(run, "ended_at_ms")?;
    let mut stages = Vec::new();
    let (mut between, mut inside, mut deploy, mut hooks) = (0, 0, 0, 0);
    let mut last_end = start;
    for s in run["stages"].as_array().ok_or("run without stages")? {
        let slug = s["stage"].as_str().unwrap_or("?").to_owned();
        let status = s["status"].as_str().unwrap_or("?").to_owned();
        let (Some(a), Some(b)) = (ms(s, "started_at_ms"), ms(s, "ended_at_ms")) else {
            stages.push((slug, status, 0));
            continue;
        };
        between += a - last_end;
        inside += b - a;
        if slug == "deploy_services" {
            deploy += b - a;
        }
        if HOOKS.contains(&slug.as_str()) {
            hooks += b - a;
        }
        last_end = b;
        stages.push((slug, status, b - a));
    }
    between += end - last_end;
    Ok(RunTimes {
        id: run["id"].as_i64().unwrap_or(0),
        version: run["version"].as_str().unwrap_or("?").chars().take(7).collect(),
        queued: start - field(run, "created_at_ms")?,
        total: end - start,
        between,
        inside,
        deploy,
        hooks,
        stages,
        client,
    })
}

/// Releases `version` to `dev` and waits for the run to end; it must succeed.
fn deploy(server: &Server, version: &str) -> Result<(Value, Duration), Error> {
    let t0 = Instant::now();
    let started = server.cli_json(&["release", "dev", "--version", version])?;
    let id = started["id"].as_i64().ok_or("release answered no run id")?;
    let run = server.wait_run(id, RUN_LIMIT)?;
    let client = t0.elapsed();
    if run["state"] != "succeeded" {
        let logs = server.logs(id).unwrap_or_default();
        let lines: Vec<&str> = logs.iter().filter_map(|l| l["line"].as_str()).collect();
        return Err(format!(
            "run {id} ended {}: {}\n{}",
            run["state"],
            run["error"],
            lines.join("\n")
        )
        .into());
    }
    Ok((run, client))
}

fn main() -> Result<(), Error> {
    let runs = arg("--runs", 10).clamp(1, 100) as usize;
    let bin = cutover_bin()?;
    let app = AppRepo::new(CONFIG, 2)?;
    println!("engine_overhead: building the example shop program...");
    let shop = build_shop(app.dir.path())?;
    let mut server = Server::start(&bin, &app, &[("SHOP_BIN", &shop)])?;
    println!(
        "engine_overhead: {runs} runs of a no-op pipeline to `dev` (hooks `true`, no build, \
         2 replicas of the shop api), alternating v1/v2; {} CPU(s); data dir {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        app.data_dir().display()
    );
    // Warm-up, not measured: checks out both release trees ("prebuilt artifacts").
    for v in &app.versions {
        deploy(&server, v)?;
    }
    let mut rows = Vec::with_capacity(runs);
    for i in 0..runs {
        let (run, client) = deploy(&server, &app.versions[i % 2])?;
        rows.push(analyse(&run, client)?);
    }
    server.stop();
    drop(server);
    let base = baseline(&shop, app.dir.path(), runs)?;
    report(&rows, &base);
    Ok(())
}

/// The same processes without Cutover; returns each deploy's wall time.
fn baseline(shop: &std::path::Path, dir: &std::path::Path, runs: usize) -> Result<Vec<f64>, Error> {
    let hook = || -> Result<(), Error> {
        let st = std::process::Command::new("sh")
            .args(["-c", "true"])
            .current_dir(dir)
            .status()?;
        if st.success() {
            Ok(())
        } else {
            Err("sh -c true failed".into())
        }
    };
    let mut old: Vec<std::process::Child> = Vec::new();
    let mut new: Vec<std::process::Child> = Vec::new();
    let mut times = Vec::with_capacity(runs);
    let mut result = Ok(());
    for i in 0..runs + 1 {
        let t0 = Instant::now();
        let step = (|| -> Result<(), Error> {
            hook()?; // pre-deploy
            hook()?; // install
            let version = if i % 2 == 0 { "v1" } else { "v2" };
            let ports = [free_port()?, free_port()?];
            for p in ports {
                new.push(start_shop(shop, dir, p, version)?);
            }
            for p in ports {
                if !wait_health(p, Duration::from_millis(5), Duration::from_secs(10)) {
                    return Err(format!("direct shop api on port {p} never became healthy").into());
                }
            }
            hook() // post-deploy
        })();
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        for c in &mut old {
            kill(c);
        }
        old = std::mem::take(&mut new);
        if i > 0 {
            // The first one is a warm-up, as on the Cutover side.
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    for c in old.iter_mut().chain(new.iter_mut()) {
        kill(c);
    }
    result.map(|()| times)
}

fn report(rows: &[RunTimes], base: &[f64]) {
    println!();
    println!(
        "{:<5}{:>5}{:>9}{:>8}{:>8}{:>9}{:>8}{:>10}{:>8}{:>8}{:>9}",
        "run",
        "id",
        "version",
        "queued",
        "total",
        "between",
        "inside",
        "deploy_sv",
        "hooks",
        "other",
        "client"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<5}{:>5}{:>9}{:>8}{:>8}{:>9}{:>8}{:>10}{:>8}{:>8}{:>9.0}",
            i + 1,
            r.id,
            r.version,
            r.queued,
            r.total,
            r.between,
            r.inside,
            r.deploy,
            r.hooks,
            r.other(),
            r.client.as_secs_f64() * 1e3
        );
    }
    println!(
        "(ms; queued: created → started; between: outside every stage; inside = deploy_sv + \
         hooks (3) + other stages; client: release command → ended record read by the CLI)"
    );
    let col = |f: &dyn Fn(&RunTimes) -> f64| med_p90_max(&rows.iter().map(f).collect::<Vec<_>>());
    println!();
    println!("{:<44}{:>9}{:>9}{:>9}", "summary (ms)", "median", "p90", "max");
    let lines: [(&str, (f64, f64, f64)); 8] = [
        ("total (run start → end)", col(&|r| r.total as f64)),
        ("between stages = engine overhead", col(&|r| r.between as f64)),
        ("inside stages", col(&|r| r.inside as f64)),
        ("  Deploy services", col(&|r| r.deploy as f64)),
        ("  3 no-op hooks", col(&|r| r.hooks as f64)),
        ("  the 9 other stages", col(&|r| r.other() as f64)),
        ("queued (created → started)", col(&|r| r.queued as f64)),
        ("client wall time", col(&|r| r.client.as_secs_f64() * 1e3)),
    ];
    for (name, (m, p, x)) in lines {
        println!("{name:<44}{m:>9.0}{p:>9.0}{x:>9.0}");
    }
    println!();
    println!(
        "{:<26}{:<12}{:>9}{:>9}",
        "per stage (ms)", "status", "median", "max"
    );
    if let Some(first) = rows.first() {
        for (k, (slug, status, _)) in first.stages.iter().enumerate() {
            let d: Vec<f64> = rows
                .iter()
                .filter_map(|r| r.stages.get(k))
                .map(|s| s.2 as f64)
                .collect();
            let (m, _, x) = med_p90_max(&d);
            println!("{slug:<26}{status:<12}{m:>9.0}{x:>9.0}");
        }
    }
    let (bm, bp, bx) = med_p90_max(base);
    let (tm, _, _) = col(&|r| r.total as f64);
    let (dm, _, _) = col(&|r| r.deploy as f64);
    println!();
    println!("baseline, side by side (ms)                 median      p90      max");
    println!("{:<44}{bm:>9.1}{bp:>9.1}{bx:>9.1}", "direct start, no Cutover");
    let (cm, cp, cx) = col(&|r| r.total as f64);
    println!("{:<44}{cm:>9.0}{cp:>9.0}{cx:>9.0}", "Cutover run total");
    println!(
        "Cutover adds {:.0} ms per deploy to the direct start (median {tm:.0} vs {bm:.1}); \
         Deploy services is {:.0} % of the run (median {dm:.0} of {tm:.0} ms)",
        tm - bm,
        100.0 * dm / tm.max(1.0)
    );
    let over = rows.iter().filter(|r| r.between >= GOAL_MS).count();
    let (om, _, ox) = col(&|r| r.between as f64);
    println!(
        "goal: < {GOAL_MS} ms of engine overhead (time between stages) per run: {} \
         (median {om:.0} ms, max {ox:.0} ms; {over} of {} runs at or above)",
        if over == 0 { "MET" } else { "NOT MET" },
        rows.len()
    );
}

//! A public service on a multi-node swarm (issue 19): throughput through the router with its
//! replicas on 1, 2 and 3 nodes, side by side in one run, and the time from a node's death to
//! the full replica count again.
//!
//! 1. `scripts/swarm-nodes up 3`: three Docker daemons, each in a network namespace of its own
//!    on a test bridge (10.231.0.2-4), one swarm, a registry on 10.231.0.1:5001. The nodes are
//!    labelled `bench1` (node1), `bench2` (nodes 1-2) and `bench3` (all three).
//! 2. One `cutover serve` (`DOCKER_HOST` = node1, images pushed to the nodes' registry) with three
//!    public services of the same image (`busybox httpd`, static files), `--replicas` replicas
//!    each, placed by `placement: { constraints: ["node.labels.benchN==yes"] }`: `c-one` on one
//!    node, `b-two` spread over two, `a-three` over three (deployed in that order, widest
//!    first, so Swarm's fewest-tasks placement uses every node allowed). One release deploys
//!    all three; the table shows where the replicas really are.
//! 3. Throughput: the same load through the router (`127.0.0.1`, `Host:` of each service in
//!    turn): `--conns` keep-alive clients sending `GET /health` as fast as answers come, `--secs`
//!    seconds each after 1 s of warm-up; requests, failures, requests/s, p50 and p99.
//! 4. A node's death: under the same load on `a-three`, node3 is killed as a crash would
//!    (`scripts/swarm-nodes kill 3`: its dockerd, containerd and containers). Measured: the time
//!    from the kill to `three` having its full replica count healthy again on the nodes left,
//!    every replica answering through the router, and the failed requests meanwhile, by cause
//!    and by when they were sent.
//!
//! All three "nodes" share this machine's CPUs: more nodes add no capacity here, so the rows
//! show what spreading costs (the bridge, the nodes' NAT to host-mode ports), not what it buys
//! on real machines. Bounds: 240 s per run, 180 s for the replicas to come back, 2,000,000
//! requests per load. The swarm is removed at the end, also on failure.
//!
//! Usage (as root; Docker and `cutover-base:latest` from `scripts/docker-setup`,
//! `docker-registry` from `scripts/registry-setup`):
//! `cargo build --release -p cutover && cargo run --release -p cutover-bench --bin swarm_nodes
//! [-- --replicas 3 --conns 16 --secs 10]`

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_bench::fixture::{AppRepo, Error, Server, cutover_bin, http_get, workspace_root};
use cutover_bench::{arg, micros};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const REGISTRY: &str = "10.231.0.1:5001";
const NODE1: &str = "unix:///run/cutover-nodes/node1.sock";
const NODES: usize = 3;
const RUN_LIMIT: Duration = Duration::from_secs(240);
const BACK_LIMIT: Duration = Duration::from_secs(180);
const MAX_REQUESTS: usize = 2_000_000;
const RUN: &str = "exec busybox httpd -f -p $PORT -h /www";
/// (nodes allowed, service): deployed in this (alphabetical) order, widest first, so Swarm's
/// fewest-tasks placement spreads each over all the nodes it may use.
const SERVICES: [(usize, &str); 3] = [(3, "a-three"), (2, "b-two"), (1, "c-one")];
/// The service that loses a node.
const WIDE: &str = "a-three";

fn swarm_nodes(args: &[&str]) -> Result<String, Error> {
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/swarm-nodes"))
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "scripts/swarm-nodes {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the swarm when dropped.
struct Nodes;

impl Drop for Nodes {
    fn drop(&mut self) {
        if let Err(e) = swarm_nodes(&["down"]) {
            eprintln!("swarm_nodes: {e}");
        }
    }
}

fn node_docker(args: &[&str]) -> Result<String, Error> {
    let mut all = vec!["-H", NODE1];
    all.extend_from_slice(args);
    cutover_bench::fixture::docker(&all, Duration::from_secs(60))
}

/// Labels node K `benchN=yes` for every N >= K (node1 carries bench1..3, node3 only bench3).
fn label_nodes() -> Result<(), Error> {
    for id in node_docker(&["node", "ls", "-q"])?.lines() {
        let addr = node_docker(&["node", "inspect", "--format", "{{.Status.Addr}}", id])?;
        let k: usize = addr
            .rsplit('.')
            .next()
            .and_then(|o| o.parse::<usize>().ok())
            .and_then(|o| o.checked_sub(1))
            .ok_or_else(|| format!("node {id} has an address off the test bridge: {addr}"))?;
        for n in k..=NODES {
            node_docker(&["node", "update", "--label-add", &format!("bench{n}=yes"), id])?;
        }
    }
    Ok(())
}

fn config(app: &str, replicas: usize) -> String {
    let mut services = String::new();
    for (n, name) in SERVICES {
        services.push_str(&format!(
            "  {name}:\n    run: \"{RUN}\"\n    health: /health\n    health_timeout: 30s\n    \
             replicas: {replicas}\n    public: true\n    \
             placement: {{ constraints: [\"node.labels.bench{n}==yes\"] }}\n"
        ));
    }
    format!(
        "app: {app}\nrepo: repo\nregistry: {{ url: \"{REGISTRY}\" }}\nservices:\n{services}\
         environments:\n  bench: {{ tier: dev, runtime: swarm }}\n"
    )
}

fn files(_: usize) -> Vec<(String, String)> {
    vec![
        (
            "Dockerfile".into(),
            "FROM cutover-base:latest\nCOPY www /www\n".into(),
        ),
        ("www/health".into(), "ok\n".into()),
    ]
}

/// Serving instances of `service`: (address, healthy and running).
fn instances(server: &Server, service: &str) -> Result<Vec<(String, bool)>, Error> {
    let status = server.cli_json(&["status", "bench"])?;
    Ok(status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["role"] == "serving")
        .map(|i: Value| {
            (
                i["addr"].as_str().unwrap_or("").to_owned(),
                i["healthy"] == true && i["state"] == "running",
            )
        })
        .collect())
}

fn hosts_of(list: &[(String, bool)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (addr, _) in list {
        *out.entry(addr.split(':').next().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    out
}

/// What a load saw.
#[derive(Default)]
struct Seen {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// Each failure: when (since the load started) and what.
    failures: Vec<(Duration, String)>,
}

/// `conns` keep-alive clients sending `GET /health` to `router` until `stop` (or the bounds); a
/// failed request is counted, its connection dropped, and the client reconnects after 10 ms.
async fn load(
    router: SocketAddr,
    host: String,
    conns: usize,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> Seen {
    let start = Instant::now();
    let per_conn = MAX_REQUESTS / conns.max(1);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let host = host.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut sender = None;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < limit && seen.ok + seen.failed < per_conn
            {
                if sender.is_none() {
                    sender = connect(router).await;
                    if sender.is_none() {
                        seen.failed += 1;
                        seen.failures
                            .push((start.elapsed(), "connect to the router".to_owned()));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                let sent = Instant::now();
                let req = http::Request::get("/health")
                    .header(http::header::HOST, &host)
                    .body(Empty::<Bytes>::new())
                    .expect("a static request is valid");
                let answered = async {
                    s.ready().await.map_err(|e| format!("connection: {e}"))?;
                    let resp = s.send_request(req).await.map_err(|e| format!("request: {e}"))?;
                    let status = resp.status();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| format!("body: {e}"))?
                        .to_bytes();
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("{status}: {}", String::from_utf8_lossy(&body).trim()))
                    }
                };
                let answered = tokio::time::timeout(Duration::from_secs(10), answered)
                    .await
                    .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()));
                match answered {
                    Ok(()) => {
                        seen.ok += 1;
                        seen.latencies.push(sent.elapsed());
                    }
                    Err(why) => {
                        seen.failed += 1;
                        seen.failures.push((sent.duration_since(start), why));
                        sender = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            seen
        }));
    }
    let mut all = Seen::default();
    for t in tasks {
        if let Ok(mut s) = t.await {
            all.ok += s.ok;
            all.failed += s.failed;
            all.latencies.append(&mut s.latencies);
            all.failures.append(&mut s.failures);
        }
    }
    all.elapsed = start.elapsed();
    all.latencies.sort_unstable();
    all
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(router: SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(router).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Row {
    name: &'static str,
    nodes: usize,
    spread: String,
    seen: Seen,
}

fn main() -> Result<(), Error> {
    let replicas = arg("--replicas", 3usize).clamp(1, 9);
    let conns = arg("--conns", 16usize).clamp(1, 256);
    let secs = Duration::from_secs(arg("--secs", 10u64).clamp(1, 120));
    let bin = cutover_bin()?;
    println!("swarm_nodes: scripts/swarm-nodes up {NODES} (three dockerd in namespaces, one swarm)...");
    let _ = swarm_nodes(&["down"]);
    let nodes = Nodes;
    swarm_nodes(&["up", &NODES.to_string()])?;
    label_nodes()?;
    let app_name = format!("sn{}", std::process::id());
    let app = AppRepo::new_with(&config(&app_name, replicas), 1, &files)?;
    let server = Server::start(&bin, &app, &[("DOCKER_HOST", Path::new(NODE1))])?;
    println!("swarm_nodes: deploying one, two and three ({replicas} replicas each)...");
    let started = server.cli_json(&["release", "bench", "--version", &app.versions[0]])?;
    let id = started["id"].as_i64().ok_or("no run id in the answer")?;
    let run = server.wait_run(id, RUN_LIMIT)?;
    if run["state"] != "succeeded" {
        return Err(format!("the release did not succeed: {run}").into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let router = SocketAddr::from(([127, 0, 0, 1], server.router_port));
    let host = |s: &str| format!("{s}.bench.{app_name}.localhost");

    let mut rows = Vec::new();
    for (allowed, name) in SERVICES.iter().rev().copied() {
        let spread = hosts_of(&instances(&server, name)?);
        let n = spread.len();
        let warm = Arc::new(AtomicBool::new(false));
        rt.block_on(load(router, host(name), conns, warm, Duration::from_secs(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = rt.block_on(load(router, host(name), conns, stop, secs));
        println!(
            "  {name:<8} on {n} node(s) of {allowed} allowed {spread:?}: {} ok, {} failed, {:.0} req/s",
            seen.ok,
            seen.failed,
            seen.ok as f64 / seen.elapsed.as_secs_f64()
        );
        rows.push(Row {
            name,
            nodes: n,
            spread: spread
                .iter()
                .map(|(h, c)| format!("{h}:{c}"))
                .collect::<Vec<_>>()
                .join(" "),
            seen,
        });
    }

    // node3 dies under load on the widest service.
    let before = instances(&server, WIDE)?;
    let victim = "10.231.0.4";
    let lost = before
        .iter()
        .filter(|(a, _)| a.starts_with(&format!("{victim}:")))
        .count();
    let stop = Arc::new(AtomicBool::new(false));
    let running = rt.spawn(load(router, host(WIDE), conns, Arc::clone(&stop), RUN_LIMIT));
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    let load_started = killed - Duration::from_secs(1);
    swarm_nodes(&["kill", "3"])?;
    let back = loop {
        let now = instances(&server, WIDE)?;
        let good = now
            .iter()
            .filter(|(a, healthy)| *healthy && !a.starts_with(&format!("{victim}:")))
            .count();
        if good >= replicas {
            let answering = (0..replicas * 4)
                .filter(|_| {
                    http_get(server.router_port, &host(WIDE), "/health").is_some_and(|(s, _)| s == 200)
                })
                .count();
            if answering == replicas * 4 {
                break Some(killed.elapsed());
            }
        }
        if killed.elapsed() > BACK_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let during = rt.block_on(running)?;
    let after = hosts_of(&instances(&server, WIDE)?);

    println!();
    println!(
        "swarm_nodes: {replicas} replicas per service, {conns} keep-alive clients, {} s per row, \
         GET /health through the router (busybox httpd upstreams)",
        secs.as_secs()
    );
    println!(
        "{:<8} {:>5}  {:<34} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "service", "nodes", "replicas per node", "requests", "failed", "req/s", "p50", "p99"
    );
    let base = rows
        .first()
        .map_or(1.0, |r| r.seen.ok as f64 / r.seen.elapsed.as_secs_f64().max(1e-9));
    for r in &rows {
        let rps = r.seen.ok as f64 / r.seen.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<8} {:>5}  {:<34} {:>9} {:>7} {:>9.0} {:>9} {:>9}   {:.2}x of 1 node",
            r.name,
            r.nodes,
            r.spread,
            r.seen.ok + r.seen.failed,
            r.seen.failed,
            rps,
            micros(pct(&r.seen.latencies, 0.5)),
            micros(pct(&r.seen.latencies, 0.99)),
            rps / base
        );
    }
    println!();
    match back {
        Some(t) => println!(
            "node3 ({victim}, {lost} of {replicas} replicas of {WIDE}) killed under load: {replicas} healthy \
             replicas answering through the router again after {:.1} s, now {after:?}; {} of {} \
             requests failed meanwhile",
            t.as_secs_f64(),
            during.failed,
            during.ok + during.failed
        ),
        None => println!(
            "node3 ({victim}) killed under load: the replicas were NOT back within {} s (now {after:?}); \
             {} of {} requests failed",
            BACK_LIMIT.as_secs(),
            during.failed,
            during.ok + during.failed
        ),
    }
    // The failures by cause and by time since the kill.
    let mut causes: BTreeMap<String, (usize, Duration, Duration)> = BTreeMap::new();
    for (at, why) in &during.failures {
        let since = (load_started + *at).saturating_duration_since(killed);
        let short: String = why.chars().take(90).collect();
        let e = causes.entry(short).or_insert((0, since, since));
        e.0 += 1;
        e.1 = e.1.min(since);
        e.2 = e.2.max(since);
    }
    for (why, (n, first, last)) in &causes {
        println!(
            "  {n:>5} x {why}  (sent {:.2} s .. {:.2} s after the kill)",
            first.as_secs_f64(),
            last.as_secs_f64()
        );
    }
    drop(server);
    drop(nodes);
    Ok(())
}

//! A public service on a real multi-node swarm, made by the test itself:
//! `scripts/swarm-nodes up 3` (three Docker daemons, each in a network
//! namespace of its own on a test bridge, 10.231.0.2-4, one swarm, a
//! registry on 10.231.0.1:5001), Cutover's docker client pointed at node1
//! (`DOCKER_HOST`), images pushed to the nodes' registry.
//!
//! One test, in order: 4 replicas land on at least 2 nodes and every one
//! answers through the router and through a mirror router in node2's
//! namespace (driven over its signed TCP control channel); v1 -> v2 under
//! continuous load with no failed request and no v1 answer after the switch;
//! a non-public service's `placement:` changed alone moves its task at the
//! next release; the main router killed loses nothing through the mirror; the
//! mirror killed and restarted empty gets the current table, and refuses a
//! forged request; a worker drained, then a node killed under load (its
//! daemon, containerd and containers): the failed requests are counted and
//! printed, the replicas come back to 4 on the other nodes and every one
//! answers through the router again. The swarm is removed when the test ends,
//! passes or fails (a guard running `scripts/swarm-nodes down`), and before it
//! starts (leftovers of a killed run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::pipeline_support::header;
use crate::support::{BIN, Server, git};

const NODES: usize = 3;
const REGISTRY: &str = "10.231.0.1:5001";
const NODE1: &str = "unix:///run/cutover-nodes/node1.sock";
/// Where the second router (a data plane in node2's namespace) listens.
const MIRROR: &str = "10.231.0.3:18080";

/// Where the mirror takes its control requests (over TCP, signed).
const MIRROR_CONTROL: &str = "10.231.0.3:17070";
/// The secret both sides sign with (under the nodes' root, removed with them).
const MIRROR_SECRET: &str = "/var/lib/cutover-nodes/mirror.secret";

/// A `cutover data-plane` in node2's network namespace, driven over TCP, killed when dropped.
struct Mirror(std::process::Child);

impl Mirror {
    fn start(dir: &Path) -> Mirror {
        std::fs::create_dir_all(dir).unwrap();
        if !Path::new(MIRROR_SECRET).exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(MIRROR_SECRET)
                .unwrap();
            writeln!(f, "{}", "7f".repeat(32)).unwrap();
        }
        let child = std::process::Command::new("nsenter")
            .arg("--net=/var/run/netns/cutover-node2")
            .arg(BIN)
            .args([
                "data-plane",
                "--control-tcp",
                MIRROR_CONTROL,
                "--control-secret-file",
            ])
            .arg(MIRROR_SECRET)
            .arg("--data-dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("nsenter starts a data plane in node2's namespace");
        let mirror = Mirror(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("dataplane/control.sock").exists() {
            assert!(Instant::now() < deadline, "the mirror data plane did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        mirror
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swarm-nodes")
}

fn swarm_nodes(args: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs scripts/swarm-nodes")
}

/// The nodes, removed when dropped (also when the test panics).
struct Nodes;

impl Nodes {
    fn up() -> Nodes {
        let _ = swarm_nodes(&["down"]);
        let guard = Nodes;
        let out = swarm_nodes(&["up", &NODES.to_string()]);
        assert!(
            out.status.success(),
            "scripts/swarm-nodes up {NODES} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let out = swarm_nodes(&["down"]);
        if !out.status.success() {
            eprintln!(
                "scripts/swarm-nodes down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

const RUN: &str = "echo $CUTOVER_INSTANCE > /www/whoami; exec busybox httpd -f -p $PORT -h /www";
const WORKER: &str = "exec sleep 100000";

fn repo_with_two_versions(dir: &Path) -> Vec<String> {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("www")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("Dockerfile"),
        "FROM cutover-base:latest\nCOPY www /www\n",
    )
    .unwrap();
    let mut versions = Vec::new();
    for i in 1..=3 {
        std::fs::write(repo.join("www/health"), "ok\n").unwrap();
        std::fs::write(repo.join("www/index.html"), format!("release {i}\n")).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("release {i}")]);
        versions.push(git(&repo, &["rev-parse", "HEAD"]));
    }
    versions
}

/// The api instances of `cutover status`, as (id, node, addr, healthy, version).
fn api_instances(server: &Server, env: &str) -> Vec<Value> {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .map(|s| s["instances"].as_array().unwrap().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["role"] == "serving")
        .collect()
}

/// One HTTP/1.1 GET to a router at `addr` (loopback, or a test node's address).
fn get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Distinct instance names answering `/whoami` through the router at `addr` in `tries` requests.
fn who_answers(addr: SocketAddr, host: &str, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .filter_map(|_| get(addr, host, "/whoami"))
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, b)| b.trim().to_owned())
        .collect()
}

/// (sent, version answered, router index).
type Seen = Vec<(Instant, Option<String>, usize)>;

/// Replicas per node address.
fn per_host(instances: &[Value]) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for i in instances {
        let h = i["addr"].as_str().unwrap().split(':').next().unwrap().to_owned();
        *out.entry(h).or_default() += 1;
    }
    out
}

/// Waits (120 s at most) until 4 replicas are healthy, none at `gone`, and every one
/// answers through the router; returns the time since `since`.
fn back_to_four(server: &Server, env: &str, host: &str, gone: &str, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = api_instances(server, env);
        let good = now
            .iter()
            .filter(|i| {
                i["healthy"] == true
                    && i["state"] == "running"
                    && !i["addr"].as_str().unwrap_or("").starts_with(&format!("{gone}:"))
            })
            .count();
        if good == 4 && who_answers(local(server.router_port), host, 24).len() == 4 {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not come back to 4 within 120 s: {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The failed requests of a load run, as times after `since`.
fn failed_after(seen: &Seen, since: Instant) -> Vec<Duration> {
    seen.iter()
        .filter(|(_, v, _)| v.is_none())
        .map(|(t, _, _)| t.saturating_duration_since(since))
        .collect()
}

/// Four clients sending GET /health through the routers at `routers` (in turn) until `stop`.
fn load(routers: &[SocketAddr], host: &str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Seen>> {
    (0..4)
        .map(|i| {
            let stop = stop.clone();
            let host = host.to_owned();
            let router = i % routers.len();
            let addr = routers[router];
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(150);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && seen.len() < 50_000 {
                    let sent = Instant::now();
                    let v = get(addr, &host, "/health")
                        .filter(|(s, _, _)| *s == 200)
                        .and_then(|(_, h, _)| header(&h, "x-cutover-version"));
                    seen.push((sent, v, router));
                }
                seen
            })
        })
        .collect()
}

#[test]
fn a_public_service_spans_the_nodes_of_a_swarm_and_survives_losing_one() {
    let _nodes = Nodes::up();
    let dir = tempfile::tempdir().unwrap();
    let versions = repo_with_two_versions(dir.path());
    let (v1, v2) = (&versions[0], &versions[1]);
    let env = format!("n{}", std::process::id());
    // `worker`, a non-public service, starts on a worker node; a change of its `placement:`
    // alone moves it to the manager at the next release.
    let config = |role: &str| {
        format!(
            "app: shop\nrepo: repo\nregistry: {{ url: \"{REGISTRY}\" }}\nservices:\n  api:\n    run: \"{RUN}\"\n    \
             health: /health\n    health_timeout: 20s\n    replicas: 4\n    public: true\n  \
             worker:\n    run: \"{WORKER}\"\n    placement: {{ constraints: [\"node.role=={role}\"] }}\n\
             environments:\n  {env}: {{ tier: dev, runtime: swarm }}\n"
        )
    };
    std::fs::write(dir.path().join("cutover.yml"), config("worker")).unwrap();
    // Under the nodes' root, so `scripts/swarm-nodes down` also ends it after a killed run.
    let mirror_dir = Path::new("/var/lib/cutover-nodes/router2");
    let mirror = Mirror::start(mirror_dir);
    let mirrors = format!("tcp://{MIRROR_CONTROL}={MIRROR}");
    let server = Server::start_with(
        &dir.path().join("cutover.yml"),
        &dir.path().join("data"),
        &[
            ("DOCKER_HOST", NODE1),
            ("CUTOVER_DATA_PLANE_MIRRORS", &mirrors),
            ("CUTOVER_DATA_PLANE_MIRROR_SECRET_FILE", MIRROR_SECRET),
        ],
    );
    let host = format!("api.{env}.shop.localhost");
    let port = server.router_port;

    // v1: 4 replicas on at least 2 nodes, each answering through the router.
    let id = server.release("alice", &env, v1);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let instances = api_instances(&server, &env);
    assert_eq!(instances.len(), 4, "{instances:#?}");
    let nodes: BTreeSet<&str> = instances.iter().filter_map(|i| i["node"].as_str()).collect();
    let hosts: BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| i["addr"].as_str()?.split(':').next())
        .collect();
    assert!(
        nodes.len() >= 2 && hosts.len() >= 2,
        "the replicas are spread: {instances:#?}"
    );
    assert!(
        hosts.iter().all(|h| h.starts_with("10.231.0.")),
        "reached at their nodes' addresses: {hosts:?}"
    );
    let answering = who_answers(local(port), &host, 40);
    assert_eq!(
        answering.len(),
        4,
        "every replica answers through the router: {answering:?}"
    );
    let answering = who_answers(MIRROR.parse().unwrap(), &host, 40);
    assert_eq!(
        answering.len(),
        4,
        "every replica answers through the mirror router in node2's namespace: {answering:?}"
    );

    // v2 under continuous load through both routers: no failure, no v1 after the first v2.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&[local(port), MIRROR.parse().unwrap()], &host, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let id = server.release("alice", &env, v2);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen: Seen = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let failures = seen.iter().filter(|(_, v, _)| v.is_none()).count();
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed during v1 -> v2",
        seen.len()
    );
    for (router, name) in ["the main router", "the mirror router"].iter().enumerate() {
        let first_v2 = seen
            .iter()
            .filter(|(_, v, r)| *r == router && v.as_deref() == Some(v2.as_str()))
            .map(|(t, _, _)| *t)
            .min()
            .expect("v2 answered");
        let late_v1 = seen
            .iter()
            .filter(|(t, v, r)| {
                *r == router && *t > first_v2 + Duration::from_millis(5) && v.as_deref() == Some(v1.as_str())
            })
            .count();
        assert_eq!(
            late_v1, 0,
            "v1 answered through {name} after v2 began serving there"
        );
    }

    // A change of `placement:` alone (worker nodes -> the manager), reloaded and released again
    // with the same version, updates the worker's Swarm service: its task moves.
    let worker_nodes = || {
        let docker = |args: &[&str]| {
            let out = std::process::Command::new("docker")
                .args(["-H", NODE1])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let name = format!("shop-{env}-worker");
        let constraints = docker(&[
            "service",
            "inspect",
            &name,
            "--format",
            "{{json .Spec.TaskTemplate.Placement.Constraints}}",
        ]);
        let running = docker(&[
            "service",
            "ps",
            &name,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.ID}}",
        ]);
        let nodes: BTreeSet<String> = running
            .lines()
            .map(|task| docker(&["inspect", "--format", "{{.NodeID}}", task]))
            .collect();
        let manager = docker(&["node", "ls", "--filter", "role=manager", "-q"]);
        (constraints, nodes, manager)
    };
    let (constraints, nodes, manager) = worker_nodes();
    assert!(constraints.contains("node.role==worker"), "{constraints}");
    assert!(
        !nodes.contains(&manager),
        "the worker starts on a worker node: {nodes:?}"
    );
    std::fs::write(dir.path().join("cutover.yml"), config("manager")).unwrap();
    let reload = server.cli("admin", &["config", "reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let id = server.release("alice", &env, v2);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let logs = server.logs(id);
    assert!(
        logs.contains("placement of shop-"),
        "the worker was moved: {logs}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (constraints, nodes, manager) = worker_nodes();
        if constraints.contains("node.role==manager") && nodes.len() == 1 && nodes.contains(&manager) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not move to the manager: {constraints} {nodes:?} (manager {manager})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Losing the main router (its data plane killed) loses no request through the mirror.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&[MIRROR.parse().unwrap()], &host, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let pid = std::fs::read_to_string(dir.path().join("data/dataplane/pid")).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill the main data plane {pid}");
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let seen: Seen = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let lost = seen.iter().filter(|(_, v, _)| v.is_none()).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} requests through the mirror failed",
        seen.len()
    );
    // The control plane starts a new main data plane and pushes the routes again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while who_answers(local(port), &host, 8).is_empty() {
        assert!(Instant::now() < deadline, "the main router did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The mirror dies and comes back on an empty data directory: the control plane gives it
    // the current table over TCP within a few seconds, without a deploy.
    drop(mirror);
    let mirror = Mirror::start(Path::new("/var/lib/cutover-nodes/router2b"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answering = who_answers(MIRROR.parse().unwrap(), &host, 24);
        if answering.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted mirror was not re-synced: {answering:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, head, _) = get(MIRROR.parse().unwrap(), &host, "/health").unwrap();
    assert_eq!(
        (status, header(&head, "x-cutover-version").as_deref()),
        (200, Some(v2.as_str())),
        "the restarted mirror serves the current version"
    );
    // Without the secret, its control port changes nothing.
    let mut s = TcpStream::connect(MIRROR_CONTROL).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let forged = serde_json::json!({
        "ts": now_ms,
        "nonce": "0".repeat(32),
        "mac": "00".repeat(32),
        "request": "{\"op\":\"remove\",\"app\":\"shop\",\"env\":\"x\",\"service\":\"api\"}",
    });
    writeln!(s, "{forged}").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"refused\""), "{answer}");
    drop(mirror);

    // A worker node with replicas is drained under load (`docker node update
    // --availability drain`), then made active again (its replicas stay where they went).
    let instances = api_instances(&server, &env);
    let (drained, node) = instances
        .iter()
        .map(|i| {
            let h = i["addr"].as_str().unwrap().split(':').next().unwrap().to_owned();
            let id = i["node"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
            (h, id)
        })
        .find(|(h, _)| h != "10.231.0.2")
        .expect("a replica on a worker node");
    let on_it = per_host(&instances)[&drained];
    let docker_node = |availability: &str| {
        let out = std::process::Command::new("docker")
            .args([
                "-H",
                NODE1,
                "node",
                "update",
                "--availability",
                availability,
                &node,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&[local(port)], &host, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let drained_at = Instant::now();
    docker_node("drain");
    let moved = back_to_four(&server, &env, &host, &drained, drained_at);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: Seen = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed = failed_after(&seen, drained_at);
    eprintln!(
        "node {drained} ({on_it} of 4 replicas) drained under load: {} of {} requests failed \
         (sent {failed:?} after the drain), 4 healthy replicas answering again after {moved:?}",
        failed.len(),
        seen.len(),
    );
    docker_node("active");

    // A worker node with replicas dies under load.
    let instances = api_instances(&server, &env);
    let per_host = per_host(&instances);
    // The worker with the most replicas (3 of 4 when Swarm put them so).
    let victim = per_host
        .iter()
        .filter(|(h, _)| h.as_str() != "10.231.0.2")
        .max_by_key(|(_, n)| **n)
        .map(|(h, _)| h.clone())
        .expect("a replica on a worker node");
    let index: usize = victim.rsplit('.').next().unwrap().parse::<usize>().unwrap() - 1;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&[local(port)], &host, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    let out = swarm_nodes(&["kill", &index.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Back to 4 healthy replicas, none on the dead node, every one answering.
    let restored = back_to_four(&server, &env, &host, &victim, killed_at);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: Seen = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed = failed_after(&seen, killed_at);
    eprintln!(
        "node {index} ({victim}, {} of 4 replicas) killed under load: {} of {} requests failed \
         (sent {:?} after the kill), 4 healthy replicas answering again after {restored:?}",
        per_host[&victim],
        failed.len(),
        seen.len(),
        failed
    );
    assert!(
        seen.iter()
            .any(|(t, v, _)| *t > killed_at + restored && v.as_deref() == Some(v2.as_str())),
        "the service answers after the node's loss"
    );
    let after = api_instances(&server, &env);
    let nodes: BTreeSet<&str> = after.iter().filter_map(|i| i["node"].as_str()).collect();
    assert!(
        nodes.len() >= 2,
        "the replicas spread over the 2 nodes left: {after:#?}"
    );

    // The worker left cannot reach the registry: a v3 (in no node yet) fails its rollout
    // with that node and the pull's error, and v2 keeps serving.
    let v3 = &versions[2];
    let blocked = (2..=NODES + 1)
        .map(|k| format!("10.231.0.{}", k + 1))
        .find(|h| *h != victim && h != "10.231.0.2")
        .unwrap();
    let blocked_index = blocked.rsplit('.').next().unwrap().parse::<usize>().unwrap() - 1;
    let ns = format!("cutover-node{blocked_index}");
    let status = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "iptables",
            "-I",
            "OUTPUT",
            "-d",
            "10.231.0.1",
        ])
        .args([
            "-p",
            "tcp",
            "--dport",
            "5001",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "blocking the registry from {ns}");
    let id = server.release("alice", &env, v3);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    let logs = server.logs(id);
    assert_eq!(
        (run["state"].as_str(), run["failed_stage"].as_str()),
        (Some("failed"), Some("deploy_services")),
        "{logs}"
    );
    let error = format!("{run}\n{logs}");
    assert!(
        error.contains(&format!("({blocked})")) && error.contains(REGISTRY),
        "the failure names the node and the registry's answer: {error}"
    );
    eprintln!("a node that cannot pull: {}", run["error"]);
    assert_eq!(server.api_version(&env).as_deref(), Some(v2.as_str()));
    drop(server);
}

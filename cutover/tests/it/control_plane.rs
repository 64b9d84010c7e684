//! Production keeps serving whatever happens to the control plane (issue: data plane apart).
//!
//! One environment (`dev`: two public `api` replicas of the example shop, a worker) serves v2
//! with v1 warm, under continuous load through the router (a new connection per request, so a
//! closed listening socket shows as a failure). Then, one after another: SIGTERM and restart
//! of `cutover serve`; `kill -9` and restart while idle, in the middle of Install and in the
//! middle of Deploy services; the binary replaced on disk by another build and the server
//! restarted from it; the data plane upgraded to that binary. Across all of it: zero failed
//! requests, the same instance pids before and after, the warm release still there for
//! `rollback --fast`, and the next release succeeds. Last, `kill -9` of the data plane: the
//! control plane notices, starts a new one and restores the routes within seconds, and says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pipeline_support::{App, header, http_get};
use crate::support::{BIN, Server, git, reap_data_dir};

/// Requests through the router in a loop from a few threads, each on a new connection.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// The first failures, for the assertion message.
    samples: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, host: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, samples) = (stop.clone(), ok.clone(), failed.clone(), samples.clone());
                let host = host.to_owned();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match http_get(port, &host, "/health") {
                            Some((200, _, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut s = samples.lock().unwrap();
                                if s.len() < 5 {
                                    s.push(format!(
                                        "{:?}",
                                        other.map(|(st, h, _)| (st, header(&h, "x-cutover-version")))
                                    ));
                                }
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            samples,
            threads,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Asserts that no request failed since the start, naming the event just passed.
    fn assert_clean(&self, event: &str) {
        let (ok, failed) = self.counts();
        assert_eq!(
            failed,
            0,
            "{failed} of {} requests failed (through: {event}); first: {:?}",
            ok + failed,
            self.samples.lock().unwrap()
        );
        assert!(ok > 0, "the load made no request ({event})");
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.counts()
    }
}

/// Kills what the test's servers leave, whatever happens.
struct Reap(PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        reap_data_dir(&self.0);
    }
}

fn start(app: &App, bin: &Path) -> Server {
    let shop = crate::example_shop::release().join("bin/shop");
    let mut server = Server::start_bin(
        bin,
        &app.dir.path().join("cutover.yml"),
        &app.dir.path().join("data"),
        &[
            ("SHOP_BIN", shop.to_str().unwrap()),
            // The default of a real installation: SIGTERM leaves production serving.
            ("CUTOVER_STOP_ON_EXIT", "0"),
        ],
        &[],
    );
    // This test reaps at its end, not each time a server goes.
    server.data_dir = None;
    server
}

/// The pids of the environment's instances, by role ("serving" or "warm").
fn pids(server: &Server, env: &str, role: &str) -> BTreeSet<u64> {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .filter(|i| i["role"] == role)
        .filter_map(|i| i["pid"].as_u64())
        .collect()
}

/// Waits (reconciliation runs in the background after a start) until the environment's
/// instances of `role` are exactly `expected`, then asserts it.
fn expect_pids(server: &Server, role: &str, expected: &BTreeSet<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = pids(server, "dev", role);
    while &now != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = pids(server, "dev", role);
    }
    assert_eq!(
        &now, expected,
        "the {role} instances (pids) are the same processes as before"
    );
}

fn kill_9(server: &mut Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every instance of the environment is supervised by `server`, adopted from an earlier one
/// (on Swarm, only the public replicas are Cutover's instances: the workers are Swarm's own
/// tasks).
fn assert_adopted_by(server: &Server, env: &str, runtime: &str) {
    wait_for(
        "reconciliation to claim every instance",
        Duration::from_secs(30),
        || {
            let status = server.cli_json("x", &["status", env]);
            status["services"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| !s["instances"].as_array().unwrap().is_empty())
        },
    );
    let status = server.cli_json("x", &["status", env]);
    let pid = u64::from(server.child.id());
    let swarm_workers = |svc: &Value| svc["public"] == false && runtime == "swarm";
    for svc in status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !swarm_workers(s))
    {
        for i in svc["instances"].as_array().unwrap() {
            let owner: &Value = &i["owner"];
            assert_eq!(
                (owner["pid"].as_u64(), owner["adopted"].as_bool()),
                (Some(pid), Some(true)),
                "{i}"
            );
        }
    }
}

#[test]
fn production_keeps_serving_through_restarts_crashes_and_upgrades_of_cutover() {
    let app = App::new();
    let _reap = Reap(app.dir.path().join("data"));
    // Servers run from a copy of the binary that the test can replace, as an upgrade does.
    let bin_dir = app.dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join("cutover");
    std::fs::copy(BIN, &bin).unwrap();

    let server = start(&app, &bin);
    server.deploy("alice", "dev", &app.good[0]);
    server.deploy("alice", "dev", &app.good[1]);
    let serving = pids(&server, "dev", "serving");
    let warm = pids(&server, "dev", "warm");
    assert_eq!(
        (serving.len(), warm.len()),
        (3, 2),
        "2 api + 1 worker serving, 2 api warm"
    );
    let load = Load::start(server.router_port, "api.dev.shop.localhost", 4);
    std::thread::sleep(Duration::from_millis(300));

    // 1. SIGTERM and restart: nothing is stopped, everything is adopted.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let mut server = start(&app, &bin);
    expect_pids(&server, "serving", &serving);
    expect_pids(&server, "warm", &warm);
    assert_adopted_by(&server, "dev", "process");
    load.assert_clean("SIGTERM and restart");

    // 2. kill -9 while idle, and restart.
    kill_9(&mut server);
    let mut server = start(&app, &bin);
    expect_pids(&server, "serving", &serving);
    expect_pids(&server, "warm", &warm);
    load.assert_clean("kill -9 while idle");

    // 3. kill -9 in the middle of Install (the migration hook is held).
    app.hold("dev", "hold-install");
    let held = server.release("alice", "dev", &app.good[2]);
    server.wait_stage(held, "install");
    kill_9(&mut server);
    app.release_hold("dev", "hold-install");
    let mut server = start(&app, &bin);
    let run = server.wait_run(held, &["interrupted"]);
    assert_eq!(run["failed_stage"], "install", "{run:#}");
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[1].as_str()));
    expect_pids(&server, "serving", &serving);
    load.assert_clean("kill -9 in Install");

    // 4. kill -9 in the middle of Deploy services: a version whose api runs but never
    //    answers, so the stage waits out its health timeout (3 s).
    let repo = app.dir.path().join("repo");
    std::fs::write(
        repo.join("run.sh"),
        "case \"$1\" in\n  api) exec sleep 600 ;;\n  worker) exec sleep 3600 ;;\nesac\n",
    )
    .unwrap();
    git(&repo, &["commit", "-qam", "a version that never answers"]);
    let silent = git(&repo, &["rev-parse", "HEAD"]);
    let deploying = server.release("alice", "dev", &silent);
    server.wait_stage(deploying, "deploy_services");
    std::thread::sleep(Duration::from_millis(1500));
    kill_9(&mut server);
    let server = start(&app, &bin);
    let run = server.wait_run(deploying, &["interrupted"]);
    assert_eq!(run["failed_stage"], "deploy_services", "{run:#}");
    expect_pids(&server, "serving", &serving);
    expect_pids(&server, "warm", &warm);
    load.assert_clean("kill -9 in Deploy services");

    // 5. The binary is replaced by another build (a new file at the same path) and the server
    //    restarted from it; then the data plane is upgraded to it.
    let plane_before = server.cli_json("x", &["system"])["data_plane"]["pid"]
        .as_u64()
        .unwrap();
    let next = bin_dir.join("cutover.next");
    std::fs::copy(BIN, &next).unwrap();
    std::fs::rename(&next, &bin).unwrap();
    assert!(server.terminate().success());
    let server = start(&app, &bin);
    expect_pids(&server, "serving", &serving);
    let upgraded = server.cli_json("admin", &["upgrade", "--data-plane"]);
    let plane_after = upgraded["data_plane"]["pid"].as_u64().unwrap();
    assert_ne!(plane_after, plane_before, "{upgraded}");
    assert_eq!(
        upgraded["data_plane"]["took_over_from"].as_u64(),
        Some(plane_before)
    );
    // It drains what it admitted, then exits.
    wait_for("the old data plane to exit", Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{plane_before}")).exists()
            || std::fs::read_to_string(format!("/proc/{plane_before}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    std::thread::sleep(Duration::from_millis(500));
    load.assert_clean("binary replaced, restart, data plane upgrade");

    // The warm release still rolls back in one switch, and the next release succeeds.
    let fast = server.cli_json("alice", &["rollback", "dev", "--fast", "--force", "--wait"]);
    assert_eq!(fast["state"], "succeeded", "{fast:#}");
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[0].as_str()));
    let id = server.release("alice", "dev", &app.good[2]);
    assert_eq!(
        server.wait_run(id, &["succeeded", "failed"])["state"],
        "succeeded",
        "{}",
        server.logs(id)
    );
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[2].as_str()));
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);

    // 6. kill -9 of the data plane: the control plane notices, starts a new one and routes
    //    again within seconds, without touching an instance; the outage is reported.
    let serving = pids(&server, "dev", "serving");
    let plane = server.cli_json("x", &["system"])["data_plane"]["pid"]
        .as_u64()
        .unwrap();
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &plane.to_string()])
        .status()
        .unwrap();
    wait_for(
        "routing again after the data plane died",
        Duration::from_secs(10),
        || server.api_version("dev").as_deref() == Some(app.good[2].as_str()),
    );
    let outage = killed.elapsed();
    assert!(outage < Duration::from_secs(6), "the outage lasted {outage:?}");
    // The new data plane routes from its saved table before the control plane has pushed the
    // routes again and counted the restart: wait for that too.
    wait_for("the restart to be reported", Duration::from_secs(5), || {
        server.cli_json("x", &["system"])["data_plane"]["restarts"] == 1
    });
    let system = server.cli_json("x", &["system"]);
    assert_ne!(system["data_plane"]["pid"].as_u64(), Some(plane), "{system:#}");
    expect_pids(&server, "serving", &serving);
    let api_port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_, _, metrics) = http_get(api_port, "127.0.0.1", "/metrics").unwrap();
    assert!(
        metrics.contains("cutover_data_plane_restarts_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cutover_data_plane_up 1"), "{metrics}");

    // Stopping everything stays possible and explicit.
    let stopped = server.cli_json("admin", &["stop", "--all"]);
    assert_eq!(stopped["stopping"], "everything");
    let mut server = server;
    wait_for("the server to exit", Duration::from_secs(30), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    for pid in serving {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "instance pid {pid} still runs after stop --all"
        );
    }
}

/// Removes the containers of one test environment, also when the test fails.
pub(crate) struct ContainerCleanup(pub(crate) String);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let label = format!("label=cutover.env={}", self.0);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// The instance ids of one environment by role, from `cutover status`.
fn ids(server: &Server, env: &str, role: &str) -> BTreeSet<String> {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .filter(|i| i["role"] == role)
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect()
}

fn expect_ids(server: &Server, env: &str, role: &str, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = ids(server, env, role);
    while &now != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = ids(server, env, role);
    }
    assert_eq!(&now, expected, "the {role} containers are the same as before");
}

fn restarts_keep_containers_serving(runtime: &str) {
    let fx = crate::runtimes::fixture(runtime);
    let env = fx.env.clone();
    let _containers = ContainerCleanup(env.clone());
    let _services = (runtime == "swarm").then(|| crate::runtimes::SwarmCleanup(env.clone()));
    let _reap = Reap(fx.dir.path().join("data"));
    let shop = crate::example_shop::release().join("bin/shop");
    let start = || {
        let mut server = Server::start_with(
            &fx.dir.path().join("cutover.yml"),
            &fx.dir.path().join("data"),
            &[
                ("SHOP_BIN", shop.to_str().unwrap()),
                ("CUTOVER_STOP_ON_EXIT", "0"),
            ],
        );
        server.data_dir = None;
        server
    };
    let server = start();
    for v in &fx.versions {
        let id = server.release("alice", &env, v);
        let run = server.wait_run(id, &["succeeded", "failed"]);
        assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    }
    let serving = ids(&server, &env, "serving");
    let warm = ids(&server, &env, "warm");
    assert!(!serving.is_empty() && !warm.is_empty(), "{serving:?} {warm:?}");
    let load = Load::start(server.router_port, &format!("api.{env}.shop.localhost"), 4);
    std::thread::sleep(Duration::from_millis(300));

    assert!(server.terminate().success());
    let mut server = start();
    expect_ids(&server, &env, "serving", &serving);
    expect_ids(&server, &env, "warm", &warm);
    assert_adopted_by(&server, &env, runtime);
    load.assert_clean(&format!("SIGTERM and restart on {runtime}"));

    kill_9(&mut server);
    let server = start();
    expect_ids(&server, &env, "serving", &serving);
    expect_ids(&server, &env, "warm", &warm);
    load.assert_clean(&format!("kill -9 and restart on {runtime}"));

    let fast = server.cli_json("alice", &["rollback", &env, "--fast", "--force", "--wait"]);
    assert_eq!(fast["state"], "succeeded", "{fast:#}");
    assert_eq!(server.api_version(&env).as_deref(), Some(fx.versions[0].as_str()));
    let (ok, failed) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed on {runtime}",
        ok + failed
    );

    assert_eq!(
        server.cli_json("admin", &["stop", "--all"])["stopping"],
        "everything"
    );
    let mut server = server;
    wait_for("the server to exit", Duration::from_secs(40), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    // Swarm removes a removed service's containers in the background.
    let label = format!("label=cutover.env={env}");
    wait_for(
        "stop --all to leave no container running",
        Duration::from_secs(30),
        || {
            let left = std::process::Command::new("docker")
                .args(["ps", "-q", "--filter", &label])
                .output()
                .unwrap();
            String::from_utf8_lossy(&left.stdout).trim().is_empty()
        },
    );
}

#[test]
fn restarts_of_cutover_keep_docker_containers_serving_and_adopted() {
    restarts_keep_containers_serving("docker");
}

#[test]
fn restarts_of_cutover_keep_swarm_services_serving_and_adopted() {
    restarts_keep_containers_serving("swarm");
}

//! One deploy scenario, run on every runtime: v1; v2 under continuous load
//! with zero failed requests and no v1 answer after the switch; a v3 that
//! never becomes healthy never serves; a fast rollback. Status must show the
//! version each instance really runs (from the process, or the image tag).
//!
//! The service is `busybox httpd` serving a `www/` directory on Docker (the
//! image is built `FROM cutover-base:latest`, which `scripts/docker-setup`
//! makes without any registry) and the example shop's program on the process
//! runtime; the broken version lacks `www/health` and its `run.sh` exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::pipeline_support::{header, http_get};
use crate::support::{Server, git};

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) versions: Vec<String>,
    broken: String,
    /// Unique per run: Swarm service names (`<app>-<env>-<service>`) are
    /// global to the engine, shared by every test and every earlier run.
    pub(crate) env: String,
}

/// Removes the Swarm services and containers of one test environment, also
/// when the test fails (Swarm keeps non-public services running by design
/// when Cutover stops).
pub(crate) struct SwarmCleanup(pub(crate) String);

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        let label = format!("label=cutover.env={}", self.0);
        let out = std::process::Command::new("docker")
            .args(["service", "ls", "-q", "--filter", &label])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("service")
                    .arg("rm")
                    .args(&ids)
                    .output();
            }
        }
    }
}

const DOCKERFILE: &str = "FROM cutover-base:latest\nCOPY www /www\n";
const RUN_OK: &str = "exec \"$SHOP_BIN\" api\n";
const RUN_BROKEN: &str = "echo 'this version cannot start' >&2\nexit 3\n";

pub(crate) fn fixture(runtime: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let env = crate::support::unique_env("t", dir.path());
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("www")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("Dockerfile"), DOCKERFILE).unwrap();
    let mut versions = Vec::new();
    for i in 1..=2 {
        std::fs::write(repo.join("www/health"), "ok\n").unwrap();
        std::fs::write(repo.join("www/index.html"), format!("release {i}\n")).unwrap();
        std::fs::write(repo.join("run.sh"), RUN_OK).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("release {i}")]);
        versions.push(git(&repo, &["rev-parse", "HEAD"]));
    }
    std::fs::remove_file(repo.join("www/health")).unwrap();
    std::fs::write(repo.join("run.sh"), RUN_BROKEN).unwrap();
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &["commit", "-q", "-m", "a version that never becomes healthy"],
    );
    let broken = git(&repo, &["rev-parse", "HEAD"]);
    let (run, worker) = match runtime {
        "process" => (
            "sh run.sh",
            "echo up >> $CUTOVER_ENV_DIR/workers; exec sleep 3600",
        ),
        _ => (
            "busybox httpd -f -p $PORT -h /www",
            "echo up >> $CUTOVER_ENV_DIR/workers; exec sleep 3600",
        ),
    };
    let config = format!(
        "app: shop\nrepo: repo\nservices:\n  api:\n    run: \"{run}\"\n    health: /health\n    health_timeout: 5s\n    \
         replicas: 2\n    public: true\n  worker:\n    run: \"{worker}\"\n    replicas: 2\n\
         task_service: worker\nhooks:\n  install: \"echo migrating to $CUTOVER_VERSION in $CUTOVER_HOOK; test -d /www && echo in-a-container || echo on-the-host; echo $CUTOVER_VERSION > $CUTOVER_ENV_DIR/migrated\"\n\
         environments:\n  {env}: {{ tier: dev, runtime: {runtime} }}\n"
    );
    std::fs::write(dir.path().join("cutover.yml"), config).unwrap();
    Fixture {
        dir,
        versions,
        broken,
        env,
    }
}

fn scenario(runtime: &str, version_source: &str) {
    let fx = fixture(runtime);
    let env = fx.env.clone();
    let host = format!("api.{env}.shop.localhost");
    let _cleanup = (runtime == "swarm").then(|| SwarmCleanup(env.clone()));
    let shop = crate::example_shop::release().join("bin/shop");
    let server = Server::start_with(
        &fx.dir.path().join("cutover.yml"),
        &fx.dir.path().join("data"),
        &[("SHOP_BIN", shop.to_str().unwrap())],
    );
    let (v1, v2) = (&fx.versions[0], &fx.versions[1]);

    // v1.
    let id = server.release("alice", &env, v1);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    assert_eq!(server.api_version(&env).as_deref(), Some(v1.as_str()));
    // The install hook ran (on Docker and Swarm: in a one-off container of the worker's image).
    let logs = server.logs(id);
    assert!(logs.contains(&format!("migrating to {v1} in install")), "{logs}");
    let place = if runtime == "process" {
        "on-the-host"
    } else {
        "in-a-container"
    };
    assert!(logs.contains(place), "the hook ran {place}: {logs}");
    // CUTOVER_ENV_DIR is the same directory for hooks and instances on every runtime (on
    // Docker and Swarm bind-mounted at the host's path).
    let env_dir = fx.dir.path().join("data").join("envs").join(&env);
    let migrated = std::fs::read_to_string(env_dir.join("migrated")).unwrap_or_default();
    assert_eq!(migrated.trim(), v1, "the install hook wrote into CUTOVER_ENV_DIR");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(env_dir.join("workers"))
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "both workers write into CUTOVER_ENV_DIR"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = server.cli_json("x", &["status", &env]);
    let instances = status["services"][0]["instances"].as_array().unwrap().clone();
    assert_eq!(instances.len(), 2, "{status:#}");
    for i in &instances {
        assert_eq!(
            (i["version"].as_str(), i["version_source"].as_str()),
            (Some(v1.as_str()), Some(version_source)),
            "{i}"
        );
    }

    // v2 under continuous load.
    let port = server.router_port;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let host = host.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(90);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && seen.len() < 20_000 {
                    let sent = Instant::now();
                    let v = http_get(port, &host, "/health")
                        .filter(|(s, _, _)| *s == 200)
                        .and_then(|(_, h, _)| header(&h, "x-cutover-version"));
                    seen.push((sent, v));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let id = server.release("alice", &env, v2);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(Instant, Option<String>)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let failures = seen.iter().filter(|(_, v)| v.is_none()).count();
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed on {runtime}",
        seen.len()
    );
    let first_v2 = seen
        .iter()
        .filter(|(_, v)| v.as_deref() == Some(v2.as_str()))
        .map(|(t, _)| *t)
        .min()
        .unwrap();
    let late_v1 = seen
        .iter()
        .filter(|(t, v)| *t > first_v2 + Duration::from_millis(5) && v.as_deref() == Some(v1.as_str()))
        .count();
    assert_eq!(late_v1, 0, "v1 answered after v2 began serving on {runtime}");

    // Non-public services (on Swarm: updated by Swarm itself) run v2 too.
    let status = server.cli_json("x", &["status", &env]);
    let worker = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "worker")
        .unwrap();
    let running: Vec<&serde_json::Value> = worker["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["version"].is_string())
        .collect();
    assert_eq!(running.len(), 2, "two worker instances: {worker:#}");
    assert!(running.iter().all(|i| i["version"] == v2.as_str()), "{worker:#}");

    // A v3 that never becomes healthy never serves.
    let id = server.release("alice", &env, &fx.broken);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(
        (run["state"].as_str(), run["failed_stage"].as_str()),
        (Some("failed"), Some("deploy_services"))
    );
    assert_eq!(server.api_version(&env).as_deref(), Some(v2.as_str()));
    let status = server.cli_json("x", &["status", &env]);
    for svc in status["services"].as_array().unwrap() {
        for i in svc["instances"].as_array().unwrap() {
            assert_ne!(
                i["version"], fx.broken,
                "no instance of the broken version is left: {i}"
            );
        }
    }

    // Fast rollback to the warm v1.
    let id = server.cli_json("alice", &["rollback", &env, "--fast", "--force"])["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        server.wait_run(id, &["succeeded", "failed"])["state"],
        "succeeded",
        "{}",
        server.logs(id)
    );
    assert_eq!(server.api_version(&env).as_deref(), Some(v1.as_str()));
    let status = server.cli_json("x", &["status", &env]);
    let serving: Vec<&serde_json::Value> = status["services"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["role"] == "serving")
        .collect();
    assert_eq!(serving.len(), 2);
    assert!(serving.iter().all(|i| i["version"] == v1.as_str()), "{status:#}");
    let worker = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "worker")
        .unwrap();
    let running: Vec<&serde_json::Value> = worker["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["version"].is_string())
        .collect();
    assert!(
        !running.is_empty() && running.iter().all(|i| i["version"] == v1.as_str()),
        "workers back on v1: {worker:#}"
    );

    // Scaling: the public service to 3 (instances, or one-replica Swarm services), the
    // workers to 1 (on Swarm: its own update changes the replica count).
    for (service, n) in [("api", 3), ("worker", 1)] {
        let answer = server.cli_json("alice", &["scale", &env, service, &n.to_string()]);
        assert_eq!(answer["applied"], true, "{answer:#}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = server.cli_json("x", &["status", &env]);
            let svc = status["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == service)
                .unwrap()
                .clone();
            let live = svc["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["version"] == v1.as_str() && i["role"] != "warm")
                .count();
            if live == n && svc["replicas"] == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service} scaled to {n} on {runtime}: {svc:#}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert_eq!(server.api_version(&env).as_deref(), Some(v1.as_str()));
}

#[test]
fn the_deploy_scenario_on_the_process_runtime() {
    scenario("process", "cwd");
}

#[test]
fn the_deploy_scenario_on_docker() {
    scenario("docker", "imagetag");
}

#[test]
fn the_deploy_scenario_on_swarm() {
    scenario("swarm", "imagetag");
}

/// Every Swarm service of one environment (by Cutover's label), by name.
pub(crate) fn swarm_services(env: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["service", "ls", "--format", "{{.Name}}", "--filter"])
        .arg(format!("label=cutover.env={env}"))
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn deleting_an_integration_environment_on_swarm_removes_its_swarm_services() {
    let fx = fixture("swarm");
    // The fixture's environment becomes an integration template on Swarm.
    let config_path = fx.dir.path().join("cutover.yml");
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        &format!("{}: {{ tier: dev, runtime: swarm }}", fx.env),
        &format!("{}: {{ tier: integration, runtime: swarm }}", fx.env),
    );
    assert!(config.contains("tier: integration"), "{config}");
    std::fs::write(&config_path, config).unwrap();
    let shop = crate::example_shop::release().join("bin/shop");
    let server = Server::start_with(
        &config_path,
        &fx.dir.path().join("data"),
        &[("SHOP_BIN", shop.to_str().unwrap())],
    );
    // (The branch head is the fixture's broken version: deploy a good one.)
    let created = server.cli_json("alice", &["env", "create", &fx.env, "--branch", "main"]);
    let env = created["environment"]["name"].as_str().unwrap().to_owned();
    let _cleanup = SwarmCleanup(env.clone());
    let run = server.release("alice", &env, &fx.versions[0]);
    let state = server.wait_run(run, &["succeeded", "failed"]);
    assert_eq!(state["state"], "succeeded", "{}", server.logs(run));
    let services = swarm_services(&env);
    assert!(
        services.iter().any(|s| s.ends_with("-worker")),
        "the workers run as a Swarm service: {services:?}"
    );

    server.cli_json("alice", &["env", "delete", &env]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !swarm_services(&env).is_empty() {
        assert!(
            Instant::now() < deadline,
            "Swarm services left behind: {:?}",
            swarm_services(&env)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

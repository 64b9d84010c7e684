//! A service without `run:` on docker and swarm runs its image's own command (the
//! Dockerfile's CMD), listening on the service's `port:` (public: one container or
//! one-replica Swarm service each; non-public: on Swarm a converged service); the same file on the process
//! runtime is refused at start, naming the service's position and both fixes.
//!
//! The image serves with `busybox httpd` on 8081, not the runtime's default container port
//! (8080): only `port: 8081` tells Cutover where to reach it, so the test also shows that
//! key reaching the container's published port.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::runtimes::SwarmCleanup;
use crate::support::{BIN, Server, git};

const DOCKERFILE: &str = "FROM cutover-base:latest\nCOPY www /www\n\
                          CMD [\"busybox\", \"httpd\", \"-f\", \"-p\", \"8081\", \"-h\", \"/www\"]\n";

/// A repository with one version of a Dockerfile-only service and its `cutover.yml` for one
/// environment on `runtime`: (directory, environment, version).
fn fixture(runtime: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    // Unique per run: Swarm service names are global to the engine.
    let env = crate::support::unique_env("img", dir.path());
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("www")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(repo.join("www/health"), "ok\n").unwrap();
    std::fs::write(repo.join("www/index.html"), "from the image's CMD\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "an image that knows how to serve"]);
    let version = git(&repo, &["rev-parse", "HEAD"]);
    let config = format!(
        "app: shop\nrepo: repo\nservices:\n  api:\n    port: 8081\n    health: /health\n    \
         health_timeout: 30s\n    public: true\n  worker: {{}}\n\
         environments:\n  {env}: {{ tier: dev, runtime: {runtime} }}\n"
    );
    std::fs::write(dir.path().join("cutover.yml"), config).unwrap();
    (dir, env, version)
}

fn serves_without_run(runtime: &str) {
    let (dir, env, version) = fixture(runtime);
    let _cleanup = (runtime == "swarm").then(|| SwarmCleanup(env.clone()));
    let server = Server::start(&dir.path().join("cutover.yml"), &dir.path().join("data"));
    server.deploy("alice", &env, &version);
    assert_eq!(server.api_version(&env).as_deref(), Some(version.as_str()));
    let (status, _, body) = server.via_router("api", &env, "/index.html").expect("an answer");
    assert_eq!((status, body.trim()), (200, "from the image's CMD"));
    // Both services (on Swarm the worker is a converged service) run the deployed image.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.cli_json("x", &["status", &env]);
        let names: Vec<&str> = status["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["version"] == version.as_str() && i["version_source"] == "imagetag")
            })
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        if names.contains(&"api") && names.contains(&"worker") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "api and worker run {version}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_service_without_run_serves_with_its_image_command_on_docker() {
    serves_without_run("docker");
}

#[test]
fn a_service_without_run_serves_with_its_image_command_on_swarm() {
    serves_without_run("swarm");
}

#[test]
fn a_service_without_run_is_refused_on_the_process_runtime() {
    let (dir, _, _) = fixture("process");
    let out = Command::new(BIN)
        .args(["config", "check", "-f"])
        .arg(dir.path().join("cutover.yml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("cutover.yml:4:3: services.api: has no `run` command"),
        "{stderr}"
    );
    assert!(
        stderr.contains("add `run:`") && stderr.contains("runtime docker/swarm"),
        "{stderr}"
    );
}

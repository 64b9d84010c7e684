//! The optional push to a registry (`registry: { url: … }`): the Build
//! stage pushes `<registry>/<app>-<env>-<service>:<sha>` after building, a
//! re-release of the same SHA skips the push because the registry already
//! lists the tag, and an unreachable registry fails the Build stage with a
//! message that says how to start one.
//!
//! Needs Docker (`scripts/docker-setup`) and the local registry on
//! 127.0.0.1:5000 (`scripts/registry-setup`, both run by `scripts/test` as
//! root). Environment names are unique per run: image names and registry
//! repositories are global to the machine and outlive the test.

use crate::pipeline_support::http_get;
use crate::support::{Server, git};

const REGISTRY: &str = "127.0.0.1:5000";
const DOCKERFILE: &str = "FROM cutover-base:latest\nCOPY www /www\n";

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub version: String,
    pub env: String,
}

/// A one-service application on the docker runtime that pushes to `registry`.
pub(crate) fn fixture(registry: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let env = crate::support::unique_env("r", dir.path());
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("www")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(repo.join("www/health"), "ok\n").unwrap();
    std::fs::write(repo.join("www/index.html"), format!("pushed by {env}\n")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "release 1"]);
    let version = git(&repo, &["rev-parse", "HEAD"]);
    let config = format!(
        "app: shop\nrepo: repo\nregistry: {{ url: \"{registry}\" }}\nservices:\n  api:\n    \
         run: \"busybox httpd -f -p $PORT -h /www\"\n    health: /health\n    health_timeout: 5s\n    \
         public: true\nenvironments:\n  {env}: {{ tier: dev, runtime: docker }}\n"
    );
    std::fs::write(dir.path().join("cutover.yml"), config).unwrap();
    Fixture { dir, version, env }
}

pub(crate) fn start(fx: &Fixture) -> Server {
    Server::start(&fx.dir.path().join("cutover.yml"), &fx.dir.path().join("data"))
}

/// Gives the fixture's `registry:` (at `addr`) the account `user` whose password is the secret
/// `registry-password`, starts the server and stores `password` in that secret.
pub(crate) fn start_with_account(fx: &Fixture, addr: &str, user: &str, password: &str) -> Server {
    let config = fx.dir.path().join("cutover.yml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("registry: {{ url: \"{addr}\" }}"),
        &format!("registry: {{ url: \"{addr}\", username: {user}, password_secret: registry-password }}"),
    );
    std::fs::write(&config, text).unwrap();
    let server = start(fx);
    let put = server.cli(
        "admin",
        &["param", "put", "/shop/secrets/registry-password", password],
    );
    assert!(put.status.success(), "{}", crate::support::stderr(&put));
    server
}

/// The image a release of `fx` pushes to `registry` (`<registry>/shop-<env>-api:<sha>`), and a
/// guard removing it and its local tag from dockerd when the test ends.
pub(crate) fn pushed_image(fx: &Fixture, registry: &str) -> (String, ImageCleanup) {
    let name = format!("shop-{}-api", fx.env);
    let pushed = format!("{registry}/{name}:{}", fx.version);
    let cleanup = ImageCleanup(vec![pushed.clone(), format!("{name}:{}", fx.version)]);
    (pushed, cleanup)
}

/// Releases `version` on `env` and waits for the run's end: the run and its logs.
pub(crate) fn release_and_wait(server: &Server, env: &str, version: &str) -> (serde_json::Value, String) {
    let id = server.release("alice", env, version);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    (run, server.logs(id))
}

/// Fails (not skips) when the test registry is not running.
fn require_registry() {
    let answer = http_get(5000, REGISTRY, "/v2/");
    assert!(
        matches!(answer, Some((200, _, _))),
        "no registry answers http://{REGISTRY}/v2/ ({answer:?}): run `sudo scripts/registry-setup` \
         (scripts/test does it when run as root)"
    );
}

/// The tags the registry lists for `repo` (none when it does not know it).
fn registry_tags(repo: &str) -> Vec<String> {
    match http_get(5000, REGISTRY, &format!("/v2/{repo}/tags/list")) {
        Some((200, _, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Removes the test's local images (built and registry-tagged), also on failure.
pub(crate) struct ImageCleanup(pub Vec<String>);

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", "--no-prune", image])
                .output();
        }
    }
}

#[test]
fn the_build_stage_pushes_each_image_once() {
    require_registry();
    let fx = fixture(REGISTRY);
    let name = format!("shop-{}-api", fx.env);
    let v = &fx.version;
    let pushed = format!("{REGISTRY}/{name}:{v}");
    let _images = ImageCleanup(vec![pushed.clone(), format!("{name}:{v}")]);
    let server = start(&fx);

    let id = server.release("alice", &fx.env, v);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    let logs = server.logs(id);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(logs.contains(&format!("pushed {pushed}")), "{logs}");
    assert!(
        registry_tags(&name).contains(v),
        "the registry lists {v} for {name}: {:?}",
        registry_tags(&name)
    );
    assert_eq!(server.api_version(&fx.env).as_deref(), Some(v.as_str()));

    // The same SHA again: the image exists and the registry has the tag.
    let id = server.release("alice", &fx.env, v);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    let logs = server.logs(id);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(
        logs.contains(&format!("{pushed}: the registry has this tag, push skipped")),
        "{logs}"
    );
    assert!(!logs.contains(&format!("pushed {pushed}")), "{logs}");
}

#[test]
fn an_unreachable_registry_fails_the_build_stage() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let fx = fixture("127.0.0.1:1");
    let name = format!("shop-{}-api", fx.env);
    let _images = ImageCleanup(vec![
        format!("127.0.0.1:1/{name}:{}", fx.version),
        format!("{name}:{}", fx.version),
    ]);
    let server = start(&fx);
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(
        (run["state"].as_str(), run["failed_stage"].as_str()),
        (Some("failed"), Some("build")),
        "{logs}"
    );
    for needle in [
        "refused to push 127.0.0.1:1/",
        "not reachable",
        "registry.url",
        "scripts/registry-setup",
    ] {
        assert!(logs.contains(needle), "{needle:?} missing: {logs}");
    }
    // Nothing was deployed.
    assert_eq!(server.api_version(&fx.env), None);
}

/// Debian's docker-registry with htpasswd authentication on a free loopback port, for one
/// test (killed when dropped).
pub(crate) struct AuthRegistry {
    pub addr: String,
    /// The registry's access log (level info: one line a request, with the user).
    pub log: std::path::PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    pub fn start(user: &str, password: &str) -> AuthRegistry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = std::process::Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd runs (Debian: apache2-utils; scripts/test installs it)");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog: {{ level: info, formatter: json }}\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: cutover-test\n    path: {}\n",
                dir.path().join("data").display(),
                dir.path().join("htpasswd").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry runs (scripts/registry-setup installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !matches!(http_get(port, &addr, "/v2/"), Some((401, _, _))) {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry on {addr} did not answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        AuthRegistry {
            addr,
            log,
            child,
            _dir: dir,
        }
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_registry_with_htpasswd_takes_a_push_with_credentials_and_refuses_one_without() {
    let registry = AuthRegistry::start("pusher", "pw-7c6b5a");
    // Without credentials: the Build stage fails and says how to give some.
    let fx = fixture(&registry.addr);
    let (pushed, _images) = pushed_image(&fx, &registry.addr);
    let name = format!("shop-{}-api", fx.env);
    let server = start(&fx);
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["failed_stage"], "build", "{logs}");
    assert!(
        logs.contains("refused an anonymous push") && logs.contains("password_secret"),
        "{logs}"
    );
    server.terminate();

    // With `username` and `password_secret`: pushed, and the registry lists the tag.
    let server = start_with_account(&fx, &registry.addr, "pusher", "pw-7c6b5a");
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(logs.contains(&format!("pushed {pushed}")), "{logs}");
    assert!(!logs.contains("pw-7c6b5a"), "{logs}");

    let auth = crate::git_hosts::base64(b"pusher:pw-7c6b5a");
    let addr = &registry.addr;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /v2/{name}/tags/list HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(&fx.version), "{answer}");
}

//! A deployable test application: a git repository whose `api` service is the
//! example shop's real binary (`SHOP_BIN`, inherited from the server's
//! environment), a non-public worker, an install hook and a job. Versions are
//! commits; a "broken" commit's service never becomes healthy and a
//! "bad-install" commit's install hook fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, git};

pub const APP_CONFIG: &str = r#"
app: shop
repo: repo
services:
  api:
    run: "sh run.sh api"
    health: /health
    health_timeout: 3s
    replicas: 2
    public: true
  worker:
    run: "sh run.sh worker"
hooks:
  pre_deploy: "sh hooks/pre_deploy.sh"
  install: "sh hooks/install.sh"
  destructive_install: "echo resetting data for $CUTOVER_ENV"
scheduler:
  suspend_timeout: 20s
  jobs:
    report: { schedule: "0 0 1 1 *", timezone: Pacific/Auckland, run: "sh hooks/job.sh" }
environments:
  dev:     { tier: dev }
  staging: { tier: stage, branch: main }
  # These tests release prod directly; `requires:` (default: staging) is tested in approvals.rs.
  prod:    { tier: prod, branch: main, requires: [] }
"#;

const RUN_OK: &str = "case \"$1\" in\n  api) exec \"$SHOP_BIN\" api ;;\n  worker) exec sleep 3600 ;;\nesac\n";
const RUN_BROKEN: &str = "echo 'this version cannot start' >&2\nexit 3\n";
/// Waits while `hold-install` exists, so a test can hold a run inside Install.
const INSTALL_OK: &str = "echo \"migrating to $CUTOVER_VERSION\"\n\
    while [ -e \"$CUTOVER_ENV_DIR/hold-install\" ]; do sleep 0.1; done\n\
    echo \"$CUTOVER_VERSION\" >> \"$CUTOVER_ENV_DIR/installs\"\n";
const INSTALL_BAD: &str = "echo 'migration 7 failed' >&2\nexit 4\n";
/// Sleeps while the marker file exists, so a test can hold a run in this stage.
const PRE_DEPLOY: &str =
    "echo \"pre-deploy of $CUTOVER_VERSION\"\nwhile [ -e \"$CUTOVER_ENV_DIR/hold\" ]; do sleep 0.1; done\n";
/// A job that runs until its marker file goes away, recording its version.
const JOB: &str = "echo \"job of $CUTOVER_VERSION\" >> \"$CUTOVER_ENV_DIR/jobs\"\nwhile [ -e \"$CUTOVER_ENV_DIR/job-hold\" ]; do sleep 0.1; done\n";

pub struct App {
    pub dir: tempfile::TempDir,
    /// Healthy versions on main, oldest first.
    pub good: Vec<String>,
    /// On main: its service never becomes healthy.
    pub broken: String,
    /// On main: its install hook fails.
    pub bad_install: String,
}

fn write(repo: &std::path::Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn commit(repo: &std::path::Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

impl App {
    pub fn new() -> App {
        App::with_config(APP_CONFIG)
    }

    /// The same repository with another cutover.yml.
    pub fn with_config(config: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        let base = [
            ("run.sh", RUN_OK),
            ("hooks/install.sh", INSTALL_OK),
            ("hooks/pre_deploy.sh", PRE_DEPLOY),
            ("hooks/job.sh", JOB),
        ];
        let mut good = Vec::new();
        for i in 1..=3 {
            write(&repo, &base);
            write(&repo, &[("VERSION", &format!("{i}\n"))]);
            good.push(commit(&repo, &format!("release {i}")));
        }
        write(&repo, &[("run.sh", RUN_BROKEN)]);
        let broken = commit(&repo, "a version that cannot start");
        write(&repo, &[("run.sh", RUN_OK), ("hooks/install.sh", INSTALL_BAD)]);
        let bad_install = commit(&repo, "a version whose migration fails");
        write(&repo, &base);
        commit(&repo, "back to good");
        std::fs::write(dir.path().join("cutover.yml"), config).unwrap();
        App {
            dir,
            good,
            broken,
            bad_install,
        }
    }

    pub fn start(&self) -> Server {
        self.start_with(&[])
    }

    /// As `start`, with extra environment variables for the server.
    pub fn start_with(&self, env: &[(&str, &str)]) -> Server {
        let shop = crate::example_shop::release().join("bin/shop");
        let mut all = vec![("SHOP_BIN", shop.to_str().unwrap())];
        all.extend_from_slice(env);
        Server::start_with(
            &self.dir.path().join("cutover.yml"),
            &self.dir.path().join("data"),
            &all,
        )
    }

    pub fn env_dir(&self, env: &str) -> PathBuf {
        let dir = self.dir.path().join("data").join("envs").join(env);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Creates a marker file that holds hooks (`hold`, `hold-install`, `job-hold`).
    pub fn hold(&self, env: &str, marker: &str) {
        std::fs::write(self.env_dir(env).join(marker), "").unwrap();
    }

    pub fn release_hold(&self, env: &str, marker: &str) {
        let _ = std::fs::remove_file(self.env_dir(env).join(marker));
    }
}

impl Server {
    /// Releases `version` to `env` as `actor` and returns the run id.
    pub fn release(&self, actor: &str, env: &str, version: &str) -> i64 {
        let run = self.cli_json(actor, &["release", env, "--version", version]);
        run["id"].as_i64().expect("a run id")
    }

    /// Releases `version` to `env` and waits until the run succeeded (with
    /// its log in the failure message otherwise); returns the run id.
    pub fn deploy(&self, actor: &str, env: &str, version: &str) -> i64 {
        let id = self.release(actor, env, version);
        let run = self.wait_run(id, &["succeeded", "failed", "cancelled", "interrupted"]);
        assert_eq!(run["state"], "succeeded", "run {id} on {env}: {}", self.logs(id));
        id
    }

    /// Polls until the run's current stage is `stage` (bounded).
    pub fn wait_stage(&self, id: i64, stage: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.cli_json("x", &["run", &id.to_string()]);
            if run["current_stage"] == stage && run["state"] != "queued" {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never reached {stage}: {run:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls a run until it is in one of `states` (bounded).
    pub fn wait_run(&self, id: i64, states: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.cli_json("x", &["run", &id.to_string()]);
            let state = run["state"].as_str().unwrap_or("").to_owned();
            if states.contains(&state.as_str()) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} still {state} after 60 s, wanted {states:?}: {run:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET through the router with the Host of `service.env.shop.localhost`.
    pub fn via_router(&self, service: &str, env: &str, path: &str) -> Option<(u16, String, String)> {
        http_get(self.router_port, &format!("{service}.{env}.shop.localhost"), path)
    }

    /// Which version the router's answer for `env`'s api came from.
    pub fn api_version(&self, env: &str) -> Option<String> {
        let (status, headers, _) = self.via_router("api", env, "/health")?;
        (status == 200)
            .then(|| header(&headers, "x-cutover-version"))
            .flatten()
    }

    /// Stage statuses of a run, in order, as (slug, status).
    pub fn stages(run: &Value) -> Vec<(String, String)> {
        run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["stage"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub fn logs(&self, id: i64) -> String {
        let out = self.cli("x", &["logs", &id.to_string()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// One HTTP/1.1 GET on 127.0.0.1 with `Connection: close`: (status, head, body).
pub fn http_get(port: u16, host: &str, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
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

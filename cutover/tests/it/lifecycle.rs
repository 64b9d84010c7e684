//! Environment lifecycle end to end: integration environments created per
//! branch and deleted, TTL expiry of integration and prod-like
//! environments, and auto-deploy of new commits on dev — real server, real
//! repository, real processes behind the real router.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pipeline_support::App;
use crate::support::{Server, fails_with, git, stdout};

const CONFIG: &str = r#"
app: shop
repo: repo
services:
  api:
    run: "sh run.sh api"
    health: /health
    health_timeout: 5s
    public: true
  worker:
    run: "sh run.sh worker"
hooks:
  install: "sh hooks/install.sh"
environments:
  dev:      { tier: dev, branch: develop, auto_deploy: true }
  prod:     { tier: prod, branch: main, approval: false }
  loadtest: { tier: prod-like, like: prod, ttl: 6s }
  review:   { tier: integration, max_active: 2 }
  short:    { tier: integration, ttl: 4s }
"#;

/// Starts the server with the reaper and the watcher looking every second.
fn start(app: &App) -> Server {
    let shop = crate::example_shop::release().join("bin/shop");
    Server::start_with(
        &app.dir.path().join("cutover.yml"),
        &app.dir.path().join("data"),
        &[
            ("SHOP_BIN", shop.to_str().unwrap()),
            ("CUTOVER_REAP_INTERVAL", "1s"),
            ("CUTOVER_AUTO_DEPLOY_INTERVAL", "1s"),
        ],
    )
}

fn repo(app: &App) -> std::path::PathBuf {
    app.dir.path().join("repo")
}

/// Polls `check` every 200 ms until it gives Some, at most `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn env_names(server: &Server) -> Vec<String> {
    server
        .cli_json("x", &["env", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The pids of every instance the runtime reports for `env`.
fn pids(server: &Server, env: &str) -> Vec<u32> {
    let status = server.cli_json("x", &["status", env]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')))
        .unwrap_or(false)
}

fn runs(server: &Server, env: &str) -> Vec<Value> {
    server.cli_json("x", &["runs", env]).as_array().unwrap().clone()
}

#[test]
fn integration_environments_are_created_per_branch_deployed_limited_restored_and_deleted() {
    let app = App::with_config(CONFIG);
    let repo = repo(&app);
    git(&repo, &["branch", "feature/Login", &app.good[1]]);
    git(&repo, &["branch", "feature/a", &app.good[0]]);
    git(&repo, &["branch", "feature/b", &app.good[0]]);
    git(&repo, &["branch", "develop", &app.good[0]]);
    let server = start(&app);

    // An unknown branch is refused, naming the repository.
    let out = server.cli("alice", &["env", "create", "review", "--branch", "nope"]);
    fails_with(&out, &["\"nope\" does not exist", repo.to_str().unwrap()]);
    // Only integration templates make environments.
    let out = server.cli("alice", &["env", "create", "prod", "--branch", "main"]);
    fails_with(&out, &["not an integration template", "review, short"]);
    // The template itself is not deployable.
    let out = server.cli("alice", &["release", "review", "--version", "main"]);
    fails_with(&out, &["integration template", "cutover env create review"]);

    let created = server.cli_json(
        "alice",
        &["env", "create", "review", "--branch", "feature/Login", "--deploy"],
    );
    let name = created["environment"]["name"].as_str().unwrap().to_owned();
    assert_eq!(name, "review-feature-login");
    assert_eq!(created["environment"]["kind"], "integration");
    assert_eq!(created["environment"]["template"], "review");
    assert_eq!(created["environment"]["branch"], "feature/Login");
    assert_eq!(created["environment"]["created_by"], "alice");
    let id = created["run"]["id"].as_i64().expect("--deploy started a run");
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    assert_eq!(run["version"], app.good[1]);
    assert_eq!(server.api_version(&name).as_deref(), Some(app.good[1].as_str()));
    // The same branch twice is refused, naming the existing environment.
    let out = server.cli("bob", &["env", "create", "review", "--branch", "feature/Login"]);
    fails_with(
        &out,
        &["already has the integration environment review-feature-login"],
    );

    // max_active: 2.
    server.cli_json("alice", &["env", "create", "review", "--branch", "feature/a"]);
    let out = server.cli("alice", &["env", "create", "review", "--branch", "feature/b"]);
    fails_with(
        &out,
        &[
            "at most 2",
            "review-feature-login (feature/Login)",
            "review-feature-a",
            "cutover env delete",
        ],
    );
    let list = stdout(&server.cli("x", &["env", "list"]));
    assert!(list.contains("KIND") && list.contains("EXPIRES"), "{list}");
    assert!(
        list.lines().any(|l| l.starts_with("review-feature-login")
            && l.contains("integration")
            && l.contains("feature/Login")),
        "{list}"
    );

    // A restart keeps the instance and brings it back to what it ran.
    let before = pids(&server, &name);
    assert!(!before.is_empty());
    assert!(server.terminate().success());
    let server = start(&app);
    assert!(env_names(&server).contains(&name));
    let back = wait_for(30, "instance serves again after restart", || {
        server.api_version(&name)
    });
    assert_eq!(back, app.good[1]);
    let pids_now = pids(&server, &name);
    assert!(!pids_now.is_empty());
    assert!(pids_now.iter().all(|p| alive(*p)));

    // Static environments cannot be deleted.
    let out = server.cli("alice", &["env", "delete", "prod"]);
    fails_with(&out, &["declared in cutover.yml"]);

    // Delete: processes really gone, no route, history kept.
    let deleted = server.cli_json("alice", &["env", "delete", &name]);
    assert_eq!(deleted["state"], "deleted");
    assert_eq!(deleted["ended_by"], "alice");
    for pid in &pids_now {
        wait_for(10, &format!("instance process {pid} to die"), || {
            (!alive(*pid)).then_some(())
        });
    }
    assert_eq!(server.api_version(&name), None);
    assert!(!env_names(&server).contains(&name));
    let old = server.cli_json("x", &["run", &id.to_string()]);
    assert_eq!(old["state"], "succeeded", "run history is kept");
    let audit = stdout(&server.cli("x", &["audit", "-o", "json"]));
    assert!(
        audit.contains("env.create") && audit.contains("env.delete"),
        "{audit}"
    );
    // A slot is free again.
    server.cli_json("alice", &["env", "create", "review", "--branch", "feature/b"]);
    // And it stays deleted across a restart.
    assert!(server.terminate().success());
    let server = start(&app);
    let names = env_names(&server);
    assert!(!names.contains(&name), "{names:?}");
    assert!(names.contains(&"review-feature-b".to_owned()), "{names:?}");
}

#[test]
fn integration_and_prod_like_environments_expire_after_their_ttl() {
    let app = App::with_config(CONFIG);
    let repo = repo(&app);
    git(&repo, &["branch", "feature/ttl", &app.good[2]]);
    git(&repo, &["branch", "develop", &app.good[0]]);
    let server = start(&app);

    // Integration, ttl 4s after its last deploy: removed by the reaper.
    let created = server.cli_json(
        "alice",
        &["env", "create", "short", "--branch", "feature/ttl", "--deploy"],
    );
    let name = created["environment"]["name"].as_str().unwrap().to_owned();
    assert!(created["environment"]["expires_at_ms"].as_i64().is_some());
    let id = created["run"]["id"].as_i64().unwrap();
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let running = pids(&server, &name);
    wait_for(30, "the integration environment to expire", || {
        (!env_names(&server).contains(&name)).then_some(())
    });
    for pid in &running {
        wait_for(10, &format!("process {pid} to die"), || {
            (!alive(*pid)).then_some(())
        });
    }
    assert_eq!(server.api_version(&name), None);

    // Prod-like, ttl 6s after activation: torn down, shown expired, and a
    // later release activates it again.
    let id = server.deploy("alice", "loadtest", "main");
    let show = server.cli_json("x", &["env", "show", "loadtest"]);
    assert_eq!(show["kind"], "static");
    let expired = wait_for(40, "the prod-like environment to expire", || {
        let show = server.cli_json("x", &["env", "show", "loadtest"]);
        show["expired_at_ms"].as_i64().map(|_| show)
    });
    assert_eq!(expired["state"], "expired");
    assert_eq!(expired["expires_at_ms"], Value::Null);
    // The deployed version stays on record; nothing runs any more.
    let main = git(&repo, &["rev-parse", "main"]);
    assert_eq!(expired["last_deployed_version"], main.as_str());
    let status = server.cli_json("x", &["status", "loadtest"]);
    assert!(status["expired_at_ms"].as_i64().is_some(), "{status:#}");
    assert!(pids(&server, "loadtest").is_empty(), "{status:#}");
    assert_eq!(server.api_version("loadtest"), None);
    let table = stdout(&server.cli("x", &["env", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("loadtest") && l.contains("expired at")),
        "{table}"
    );
    let audit = stdout(&server.cli("x", &["audit", "-o", "json"]));
    assert!(audit.contains("env.expire"), "{audit}");
    assert_eq!(
        server.cli_json("x", &["run", &id.to_string()])["state"],
        "succeeded",
        "history is kept"
    );

    // Not brought back by a restart while expired.
    assert!(server.terminate().success());
    let server = start(&app);
    std::thread::sleep(Duration::from_secs(2));
    assert!(pids(&server, "loadtest").is_empty());

    // A new release re-activates it.
    server.deploy("alice", "loadtest", "main");
    let show = server.cli_json("x", &["env", "show", "loadtest"]);
    assert_eq!(show["state"], "active", "{show:#}");
    assert_eq!(show["expired_at_ms"], Value::Null);
}

#[test]
fn auto_deploy_follows_the_branch_and_does_not_retry_a_failed_commit() {
    let app = App::with_config(CONFIG);
    let repo = repo(&app);
    git(&repo, &["checkout", "-q", "-b", "develop", &app.good[0]]);
    let server = start(&app);

    // The branch head is deployed by itself, as Cutover.
    let first = wait_for(30, "an auto-deploy run on dev", || {
        runs(&server, "dev").into_iter().next()
    });
    assert_eq!(first["requested_by"], "cutover");
    assert!(
        first["reason"].as_str().unwrap().contains("auto-deploy of")
            && first["reason"].as_str().unwrap().contains("develop"),
        "{first:#}"
    );
    let run = server.wait_run(first["id"].as_i64().unwrap(), &["succeeded", "failed"]);
    assert_eq!(
        run["state"],
        "succeeded",
        "{}",
        server.logs(first["id"].as_i64().unwrap())
    );
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[0].as_str()));

    // A commit whose service cannot start: one run, it fails, no retry.
    std::fs::write(
        repo.join("run.sh"),
        "echo 'this version cannot start' >&2\nexit 3\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "broken"]);
    let broken = git(&repo, &["rev-parse", "HEAD"]);
    let failed = wait_for(30, "an auto-deploy run of the broken commit", || {
        runs(&server, "dev")
            .into_iter()
            .find(|r| r["target_version"] == broken.as_str())
    });
    let failed = server.wait_run(failed["id"].as_i64().unwrap(), &["succeeded", "failed"]);
    assert_eq!(failed["state"], "failed");
    std::thread::sleep(Duration::from_secs(4)); // four watcher passes
    let tries = runs(&server, "dev")
        .into_iter()
        .filter(|r| r["target_version"] == broken.as_str())
        .count();
    assert_eq!(tries, 1, "a failed commit is not retried");
    assert_eq!(server.api_version("dev").as_deref(), Some(app.good[0].as_str()));

    // The next commit is deployed.
    std::fs::write(
        repo.join("run.sh"),
        "case \"$1\" in\n  api) exec \"$SHOP_BIN\" api ;;\n  worker) exec sleep 3600 ;;\nesac\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "fixed"]);
    let fixed = git(&repo, &["rev-parse", "HEAD"]);
    let next = wait_for(30, "an auto-deploy run of the fix", || {
        runs(&server, "dev")
            .into_iter()
            .find(|r| r["target_version"] == fixed.as_str())
    });
    let next = server.wait_run(next["id"].as_i64().unwrap(), &["succeeded", "failed"]);
    assert_eq!(next["state"], "succeeded");
    assert_eq!(server.api_version("dev").as_deref(), Some(fixed.as_str()));
    let audit = stdout(&server.cli("x", &["audit", "-o", "json"]));
    assert!(
        audit.contains("env.auto_deploy") && audit.contains(&format!("auto-deploy of {}", &fixed[..12])),
        "{audit}"
    );
}

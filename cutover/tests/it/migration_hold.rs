//! The migration-safe switch with a real web framework (issue: migration windows, items 1, 2 and
//! 4): a Flask + SQLite shop (`tests/fixtures/flask-shop`) whose v2 migration renames the column
//! v1 reads, released v1 -> v2 under continuous load through the router.
//!
//! * `migrations: hold`: 0 failed requests and 0 answers from v1 after the migration began;
//! * the default (`switch`): the same release shows failures (so the first part can fail);
//! * a hold past `hold_timeout` answers 503 with `Retry-After` and the maintenance page;
//! * a rollback run executes the rollback hook and v1 reads its column again;
//! * maintenance mode answers 503 + `Retry-After` + the page, survives a `kill -9` of the data
//!   plane, is audited, and its parameter is not writable with `param put`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pipeline_support::{header, http_get};
use crate::support::{Server, git};

const APP_PY: &str = include_str!("../fixtures/flask-shop/app.py");
const MIGRATE_PY: &str = include_str!("../fixtures/flask-shop/migrate.py");
const ROLLBACK_PY: &str = include_str!("../fixtures/flask-shop/rollback.py");

const CONFIG: &str = r#"
app: shop
repo: repo
services:
  web:
    run: "python3 app.py"
    health: /health
    health_timeout: 30s
    public: true
hooks:
  install: "python3 migrate.py"
  rollback: "python3 rollback.py"
environments:
  held:  { tier: dev, migrations: hold, hold_timeout: 20s }
  plain: { tier: dev }
  slow:  { tier: dev, migrations: hold, hold_timeout: 1s, maintenance_page: page.html }
  early: { tier: dev, migrations: hold-before-start, hold_timeout: 30s }
  strict: { tier: dev, migrations: hold, hold_timeout: 4s, on_hold_timeout: fail }
  long:  { tier: dev, migrations: hold, hold_timeout: 60s }
  live:  { tier: prod, requires: [] }
"#;

const PAGE: &str = "<html><body>The shop is being upgraded</body></html>\n";

struct Shop {
    dir: tempfile::TempDir,
    v1: String,
    v2: String,
}

fn shop() -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut versions = Vec::new();
    for v in ["v1", "v2"] {
        for (name, text) in [
            ("app.py", APP_PY),
            ("migrate.py", MIGRATE_PY),
            ("rollback.py", ROLLBACK_PY),
            ("VERSION", &format!("{v}\n")),
        ] {
            std::fs::write(repo.join(name), text).unwrap();
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("shop {v}")]);
        versions.push(git(&repo, &["rev-parse", "HEAD"]));
    }
    std::fs::write(dir.path().join("cutover.yml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("page.html"), PAGE).unwrap();
    Shop {
        dir,
        v2: versions.pop().unwrap(),
        v1: versions.pop().unwrap(),
    }
}

impl Shop {
    fn start(&self) -> Server {
        self.start_args(&[])
    }
    fn start_args(&self, args: &[&str]) -> Server {
        Server::start_with_args(
            &self.dir.path().join("cutover.yml"),
            &self.dir.path().join("data"),
            &[],
            args,
        )
    }
    fn env_dir(&self, env: &str) -> std::path::PathBuf {
        let d = self.dir.path().join("data").join("envs").join(env);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One answer seen by the load: when it was sent (unix ms), its status, its body, `Retry-After`.
#[derive(Debug, Clone)]
struct Seen {
    sent_ms: u64,
    took_ms: u64,
    status: u16,
    body: String,
    retry_after: Option<String>,
}

impl Seen {
    /// `(version, answered at)` of an application answer.
    fn app_answer(&self) -> Option<(&str, u64)> {
        let mut parts = self.body.split_whitespace();
        let version = parts.next()?;
        let _name = parts.next()?;
        let at = parts.next()?.parse().ok()?;
        (self.status == 200).then_some((version, at))
    }
}

/// Continuous load on `web.<env>.shop.localhost` from a few threads until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Seen>>>,
}

impl Load {
    fn start(port: u16, env: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let host = format!("web.{env}.shop.localhost");
        let threads = (0..4)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let host = host.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent_ms = now_ms();
                        let t = Instant::now();
                        let answer = http_get(port, &host, "/");
                        let took_ms = t.elapsed().as_millis() as u64;
                        seen.push(match answer {
                            Some((status, head, body)) => Seen {
                                sent_ms,
                                took_ms,
                                status,
                                body,
                                retry_after: header(&head, "retry-after"),
                            },
                            None => Seen {
                                sent_ms,
                                took_ms,
                                status: 0,
                                body: String::new(),
                                retry_after: None,
                            },
                        });
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    }
}

fn migration_started(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("migration-started"))
        .expect("v2's migration ran and wrote when it began")
        .trim()
        .parse()
        .unwrap()
}

/// Releases v1, then v2 under load; returns what the load saw and when the migration began.
fn release_under_load(server: &Server, shop: &Shop, env: &str) -> (Vec<Seen>, u64, i64) {
    server.deploy("alice", env, &shop.v1);
    let load = Load::start(server.router_port, env);
    std::thread::sleep(Duration::from_millis(300));
    let id = server.deploy("alice", env, &shop.v2);
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.finish();
    (seen, migration_started(&shop.env_dir(env)), id)
}

fn summary(seen: &[Seen]) -> String {
    let mut failures: Vec<_> = seen
        .iter()
        .filter(|s| s.status != 200)
        .map(|s| format!("{} {}", s.status, s.body.trim()))
        .collect();
    failures.truncate(5);
    format!("{} requests; first failures: {failures:?}", seen.len())
}

#[test]
fn flask_shop_migration_under_hold_fails_no_request_and_old_code_never_meets_the_new_schema() {
    let shop = shop();
    let server = shop.start();

    // migrations: hold — 0 failed, 0 answers of v1 after the migration began.
    let (seen, began, id) = release_under_load(&server, &shop, "held");
    let failed = seen.iter().filter(|s| s.status != 200).count();
    let v1_after = seen
        .iter()
        .filter_map(Seen::app_answer)
        .filter(|(v, at)| *v == "v1" && *at >= began)
        .count();
    let v2 = seen
        .iter()
        .filter_map(Seen::app_answer)
        .filter(|(v, _)| *v == "v2")
        .count();
    // Requests in flight when the migration began were held through it, then answered by v2.
    let held = seen
        .iter()
        .filter(|s| s.sent_ms < began && s.sent_ms + s.took_ms > began)
        .map(|s| s.took_ms)
        .max()
        .unwrap_or(0);
    assert_eq!(failed, 0, "hold: {}\n{}", summary(&seen), server.logs(id));
    assert_eq!(v1_after, 0, "hold: v1 answered after the migration began");
    assert!(v2 > 0, "the load reached v2: {}", summary(&seen));
    assert!(
        held >= 500,
        "requests in flight when the 1 s migration began waited for it (longest {held} ms)"
    );
    let logs = server.logs(id);
    let at = |needle: &str| {
        logs.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {logs}"))
    };
    assert!(at("healthy at") < at("held at the router"), "{logs}");
    assert!(at("held at the router") < at("$ python3 migrate.py"), "{logs}");
    assert!(at("$ python3 migrate.py") < at("traffic switched to"), "{logs}");

    // The default: the same release fails requests (v1 meets the renamed column).
    let (seen, began, _) = release_under_load(&server, &shop, "plain");
    let failed = seen.iter().filter(|s| s.status != 200).count();
    assert!(failed > 0, "switch mode shows the window: {}", summary(&seen));
    let v1_after = seen
        .iter()
        .filter_map(Seen::app_answer)
        .filter(|(v, at)| *v == "v1" && *at >= began)
        .count();
    assert!(v1_after + failed > 0);

    // Fast rollback to the warm v1 would meet the renamed column: refused unless forced.
    let fast = server.cli("alice", &["rollback", "plain", "--fast", "--wait"]);
    crate::support::fails_with(
        &fast,
        &["refusing a fast rollback", "ran an install step", "--force"],
    );
    let forced = server.cli_json("alice", &["rollback", "plain", "--fast", "--force", "--wait"]);
    assert_eq!(forced["state"], "succeeded", "{forced:#}");
    let audit = server.cli_json("x", &["audit", "-n", "20"]);
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollback.fast")
        .unwrap_or_else(|| panic!("no rollback.fast in {audit:#}"));
    assert_eq!(entry["detail"]["force"], true, "{entry:#}");

    // hold-before-start: the new version starts only after the migration; nothing fails.
    let (seen, _, id) = release_under_load(&server, &shop, "early");
    let failed = seen.iter().filter(|s| s.status != 200).count();
    assert_eq!(
        failed,
        0,
        "hold-before-start: {}\n{}",
        summary(&seen),
        server.logs(id)
    );
    let logs = server.logs(id);
    let at = |needle: &str| {
        logs.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {logs}"))
    };
    assert!(at("$ python3 migrate.py") < at("healthy at"), "{logs}");

    // A rollback run executes the rollback hook: v1 reads its column again.
    let back = server.cli_json("alice", &["rollback", "held", "--to", &shop.v1, "--wait"]);
    assert_eq!(back["state"], "succeeded", "{back:#}");
    let (status, _, body) = http_get(server.router_port, "web.held.shop.localhost", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v1 Ada "), "{body}");
    let logs = server.logs(back["id"].as_i64().unwrap());
    assert!(
        logs.contains("renamed customers.full_name back to name"),
        "{logs}"
    );
}

#[test]
fn a_hold_past_its_bound_answers_503_with_retry_after_and_the_maintenance_page() {
    let shop = shop();
    let server = shop.start();
    std::fs::write(shop.env_dir("slow").join("migration-seconds"), "3").unwrap();
    let (seen, _, id) = release_under_load(&server, &shop, "slow");
    let closed: Vec<_> = seen.iter().filter(|s| s.status == 503).collect();
    assert!(
        !closed.is_empty(),
        "a 3 s migration under a 1 s hold: {}",
        summary(&seen)
    );
    for s in &closed {
        assert_eq!(s.retry_after.as_deref(), Some("5"), "{s:?}");
        assert_eq!(s.body, PAGE, "the configured maintenance_page");
    }
    assert!(
        seen.iter().all(|s| s.status == 200 || s.status == 503),
        "{}",
        summary(&seen)
    );
    // on_hold_timeout: continue (the default): the run went on and v2 serves.
    let (status, _, body) = http_get(server.router_port, "web.slow.shop.localhost", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v2 Ada "), "{body}");
    assert!(server.logs(id).contains("past its bound"));
}

#[test]
fn maintenance_mode_answers_503_survives_a_data_plane_kill_and_is_audited() {
    let shop = shop();
    let server = shop.start();
    server.deploy("alice", "plain", &shop.v1);
    let get = || http_get(server.router_port, "web.plain.shop.localhost", "/").unwrap();
    assert_eq!(get().0, 200);

    let page = shop.dir.path().join("down.html");
    std::fs::write(&page, "<p>down for a bit</p>\n").unwrap();
    let on = server.cli_json(
        "alice",
        &["maintenance", "on", "plain", "--page", page.to_str().unwrap()],
    );
    assert_eq!(on["on"], true, "{on:#}");
    let (status, head, body) = get();
    assert_eq!(status, 503);
    assert_eq!(header(&head, "retry-after").as_deref(), Some("120"));
    assert_eq!(body, "<p>down for a bit</p>\n");
    // Another environment is not affected.
    assert_eq!(
        http_get(server.router_port, "web.held.shop.localhost", "/").map(|a| a.0),
        Some(404)
    );

    // A data plane killed and restarted by the watcher keeps it.
    let pid: u32 = std::fs::read_to_string(shop.dir.path().join("data/dataplane/pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(a) = http_get(server.router_port, "web.plain.shop.localhost", "/") {
            break a;
        }
        assert!(Instant::now() < deadline, "the data plane came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        answer.0, 503,
        "maintenance survives a data-plane restart: {answer:?}"
    );

    let status = server.cli_json("x", &["maintenance", "status", "plain"]);
    assert_eq!(status["on"], true);
    assert_eq!(server.cli_json("x", &["status", "plain"])["maintenance"], true);
    let shown = crate::support::stdout(&server.cli("x", &["status", "plain"]));
    assert!(shown.contains("maintenance mode"), "{shown}");
    assert_eq!(status["updated_by"], "alice");
    // Only the maintenance command writes it.
    let put = server.cli(
        "alice",
        &["param", "put", "/shop-plain/maintenance", "{\"on\":false}"],
    );
    assert!(!put.status.success());

    // Who may: a deployer on a non-production environment, an approver on production.
    let dora = crate::security::mint(&server, "dora", &["--role", "deployer"]);
    let ann = crate::security::mint(&server, "ann", &["--role", "approver"]);
    let put = |token: &str, env: &str| {
        let path = format!("/api/v1/environments/{env}/maintenance");
        crate::security::raw(&server, "PUT", &path, Some(token), r#"{"on":false}"#).0
    };
    assert_eq!(
        put(&dora, "live"),
        403,
        "a deployer may not take production offline"
    );
    assert_eq!(put(&ann, "live"), 200);
    assert_eq!(put(&dora, "held"), 200);

    let off = server.cli_json("alice", &["maintenance", "off", "plain"]);
    assert_eq!(off["on"], false);
    let (status, _, body) = get();
    assert_eq!(status, 200, "{body}");
    let audit = server.cli_json("x", &["audit", "-n", "20"]);
    let actions: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"maintenance.on") && actions.contains(&"maintenance.off"),
        "{actions:?}"
    );
}

/// What the router answers for `web.<env>.shop.localhost/` within `limit` (it must answer).
fn answer(server: &Server, env: &str, limit: Duration) -> (u16, String) {
    let started = Instant::now();
    let (status, _, body) =
        http_get(server.router_port, &format!("web.{env}.shop.localhost"), "/").expect("the router answers");
    assert!(
        started.elapsed() < limit,
        "answered after {:?}",
        started.elapsed()
    );
    (status, body)
}

#[test]
fn no_hold_is_left_behind_by_a_failed_run_a_bound_with_fail_or_a_killed_server() {
    let shop = shop();
    let server = shop.start();

    // A migration that fails: the run fails, the hold is released, v1 serves again at once.
    server.deploy("alice", "held", &shop.v1);
    std::fs::write(shop.env_dir("held").join("migration-seconds"), "not a number").unwrap();
    let id = server.release("alice", "held", &shop.v2);
    let run = server.wait_run(id, &["succeeded", "failed", "cancelled", "interrupted"]);
    assert_eq!(run["state"], "failed", "{}", server.logs(id));
    assert!(server.logs(id).contains("held requests released"));
    let (status, body) = answer(&server, "held", Duration::from_secs(2));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v1 Ada "), "{body}");

    // on_hold_timeout: fail — a 30 s migration under a 4 s bound is stopped before its rename;
    // the run fails and v1 serves on its own schema.
    server.deploy("alice", "strict", &shop.v1);
    std::fs::write(shop.env_dir("strict").join("migration-seconds"), "30").unwrap();
    let started = Instant::now();
    let id = server.release("alice", "strict", &shop.v2);
    let run = server.wait_run(id, &["succeeded", "failed", "cancelled", "interrupted"]);
    assert_eq!(run["state"], "failed", "{}", server.logs(id));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at the bound, not after the migration"
    );
    assert!(
        run["error"].as_str().unwrap_or("").contains("hold_timeout"),
        "{run:#}"
    );
    let (status, body) = answer(&server, "strict", Duration::from_secs(2));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("v1 Ada "),
        "the migration was stopped before the rename: {body}"
    );
    assert!(!shop.env_dir("strict").join("migration-ended").exists());

    // A server killed during a hold: the next one releases it at start.
    server.deploy("alice", "long", &shop.v1);
    std::fs::write(shop.env_dir("long").join("migration-seconds"), "30").unwrap();
    let id = server.release("alice", "long", &shop.v2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shop.env_dir("long").join("migration-started").exists() {
        assert!(
            Instant::now() < deadline,
            "the migration began: {}",
            server.logs(id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut dead = server;
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    // The data plane lives on and holds (bounded by 60 s): a request now would wait. The next
    // server finds it (and its port) and releases the hold at start.
    let server = shop.start();
    assert_eq!(server.router_port, dead.router_port);
    let (status, body) = answer(&server, "long", Duration::from_secs(5));
    assert_eq!(status, 200, "the restarted server released the hold: {body}");
    assert!(body.starts_with("v1 Ada "), "{body}");
}

#[test]
fn the_hold_works_with_the_router_embedded_in_the_server() {
    let shop = shop();
    let server = shop.start_args(&["--data-plane", "embedded"]);
    let (seen, began, id) = release_under_load(&server, &shop, "held");
    let failed = seen.iter().filter(|s| s.status != 200).count();
    let v1_after = seen
        .iter()
        .filter_map(Seen::app_answer)
        .filter(|(v, at)| *v == "v1" && *at >= began)
        .count();
    assert_eq!(failed, 0, "embedded: {}\n{}", summary(&seen), server.logs(id));
    assert_eq!(v1_after, 0);
    assert!(server.logs(id).contains("held at the router"));
}

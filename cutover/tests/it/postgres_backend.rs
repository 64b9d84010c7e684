//! `cutover serve --database-url postgres://…`: the whole pipeline on
//! PostgreSQL, state kept across restarts, and one leader per database.
//! Needs the server from `scripts/postgres-setup`.

use std::process::Command;

use crate::pipeline_support::App;
use crate::support::{BIN, Server, fails_with};

const ADMIN_URL: &str = "postgres://cutover:cutover@127.0.0.1:5432/cutover_test";

/// A fresh schema for one test, dropped at the end.
struct Schema(String);

impl Schema {
    fn new() -> Schema {
        let name = format!("e2e_{}_{}", std::process::id(), rand_suffix());
        psql(&format!("CREATE SCHEMA {name}"));
        Schema(name)
    }

    fn url(&self) -> String {
        format!("{ADMIN_URL}?options[search_path]={}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                ADMIN_URL,
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ])
            .output();
    }
}

fn rand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{t:08x}")
}

fn psql(sql: &str) {
    let out = Command::new("psql").args([ADMIN_URL, "-qc", sql]).output().expect(
        "psql runs (Debian's postgresql-client); run `sudo scripts/postgres-setup` to install and start PostgreSQL",
    );
    assert!(
        out.status.success(),
        "`{sql}` failed — is PostgreSQL running? run `sudo scripts/postgres-setup`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_pipeline_runs_on_postgres_and_a_second_server_cannot_lead_the_same_database() {
    let schema = Schema::new();
    let url = schema.url();
    let app = App::new();
    let shop = crate::example_shop::release().join("bin/shop");
    let start = |data: &str| {
        Server::start_with_args(
            &app.dir.path().join("cutover.yml"),
            &app.dir.path().join(data),
            &[("SHOP_BIN", shop.to_str().unwrap())],
            &["--database-url", &url],
        )
    };
    let server = start("data");
    let id = server.deploy("alice", "staging", &app.good[0]);
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[0].as_str())
    );

    // A second server on the same database is refused and changes nothing.
    let out = crate::support::serve_command(
        app.dir.path().join("cutover.yml"),
        app.dir.path().join("other-data"),
    )
    .args(["--database-url", &url])
    .output()
    .unwrap();
    fails_with(&out, &["already leads", "run every pipeline twice"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(":cutover@"),
        "no password in messages"
    );

    // State lives in the database: a restart finds the run and serves the version again.
    assert!(server.terminate().success());
    let server = start("data");
    let runs = server.cli_json("x", &["runs", "staging"]);
    assert_eq!(runs[0]["id"], id);
    assert_eq!(runs[0]["state"], "succeeded");
    let history = server.cli_json("x", &["param", "history", "/shop-staging/last_deployed_version"]);
    assert_eq!(history[0]["value"], app.good[0]);
}

#[test]
fn a_standby_takes_over_when_the_leader_dies() {
    use std::process::Stdio;
    use std::time::Duration;

    let schema = Schema::new();
    let url = schema.url();
    let app = App::new();
    let shop = crate::example_shop::release().join("bin/shop");
    let config = app.dir.path().join("cutover.yml");
    let mut leader = Server::start_with_args(
        &config,
        &app.dir.path().join("leader-data"),
        &[("SHOP_BIN", shop.to_str().unwrap())],
        &["--database-url", &url],
    );
    let id = leader.deploy("alice", "staging", &app.good[0]);
    // A leader killed outright leaves its instances running; a standby with its own data
    // directory (as on another machine) does not see them (one on the same data directory adopts
    // them: see below). The test stops their process groups itself when it ends, pass or fail.
    let _leftovers = KillGroupsOnDrop(instance_pids(&leader.cli_json("alice", &["status", "staging"])));
    // Tokens live in the database: the standby accepts the leader's.
    let admin_token = leader.admin_token.clone();

    // The standby (its own data directory, as on another machine) waits without serving.
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
            "--standby",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(app.dir.path().join("standby-data"))
        .args(["--database-url", &url])
        .env("SHOP_BIN", &shop)
        .env("RUST_LOG", "warn")
        .env("CUTOVER_STOP_ON_EXIT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.starts_with("cutover: standby, waiting"), "{first}");
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "a standby does not serve while the leader lives"
    );

    // The leader dies; the standby takes over and brings staging back.
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    drop(leader);
    let (router_port, api) = takeover_addresses(&rx);
    let standby = Server::adopt(child, api, router_port, admin_token);
    let runs = standby.cli_json("x", &["runs", "staging"]);
    assert_eq!(
        (runs[0]["id"].as_i64(), runs[0]["state"].as_str()),
        (Some(id), Some("succeeded"))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while standby.api_version("staging").as_deref() != Some(app.good[0].as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never served staging's deployed version"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    standby.deploy("bob", "staging", &app.good[1]);
}

/// Every instance pid in a `cutover status` answer (each leads its own process group).
fn instance_pids(status: &serde_json::Value) -> Vec<u32> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["instances"].as_array().into_iter().flatten())
        .filter_map(|i| i["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect()
}

/// SIGKILLs these process groups when dropped.
struct KillGroupsOnDrop(Vec<u32>);

impl Drop for KillGroupsOnDrop {
    fn drop(&mut self) {
        for pgid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
    }
}

/// Kills what servers of a data directory left running when the test ends.
struct ReapOnDrop(std::path::PathBuf);

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        crate::support::reap_data_dir(&self.0);
    }
}

#[test]
fn a_standby_on_the_same_host_and_data_directory_adopts_what_the_dead_leader_left() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let schema = Schema::new();
    let url = schema.url();
    let app = App::new();
    let shop = crate::example_shop::release().join("bin/shop");
    let config = app.dir.path().join("cutover.yml");
    let data = app.dir.path().join("data");
    let _reap = ReapOnDrop(data.clone());
    let mut leader = Server::start_with_args(
        &config,
        &data,
        &[
            ("SHOP_BIN", shop.to_str().unwrap()),
            ("CUTOVER_STOP_ON_EXIT", "0"),
        ],
        &["--database-url", &url],
    );
    leader.data_dir = None;
    leader.deploy("alice", "staging", &app.good[0]);
    let mut before = instance_pids(&leader.cli_json("alice", &["status", "staging"]));
    before.sort_unstable();
    let admin_token = leader.admin_token.clone();

    // The standby on the same host and data directory waits for the directory, without serving.
    let mut child = crate::support::serve_command(&config, &data)
        .args(["--standby", "--database-url", &url])
        .env("SHOP_BIN", &shop)
        .env("RUST_LOG", "warn")
        .env("CUTOVER_STOP_ON_EXIT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        first.starts_with("cutover: standby, waiting for the server that uses the data directory"),
        "{first}"
    );
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "a standby does not serve while the leader lives"
    );

    // The leader dies: the standby takes the directory and the database over and adopts the
    // leader's instances instead of leaving them unowned.
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let (router_port, api) = takeover_addresses(&rx);
    let standby = Server::adopt(child, api, router_port, admin_token);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = Vec::new();
    while now != before {
        assert!(
            Instant::now() < deadline,
            "the standby adopts the leader's instances: {now:?} vs {before:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        now = instance_pids(&standby.cli_json("x", &["status", "staging"]));
        now.sort_unstable();
    }
    assert_eq!(
        standby.api_version("staging").as_deref(),
        Some(app.good[0].as_str())
    );
    let status = standby.cli_json("x", &["status", "staging"]);
    let owners: Vec<bool> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .map(|i| i["owner"]["adopted"] == true)
        .collect();
    assert!(owners.iter().all(|a| *a), "{status:#}");
    standby.deploy("bob", "staging", &app.good[1]);
    assert_eq!(
        standby.api_version("staging").as_deref(),
        Some(app.good[1].as_str())
    );
}

/// Every line a spawned server prints on stdout, as it comes.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The router port and API URL a standby prints once it takes over.
fn takeover_addresses(rx: &std::sync::mpsc::Receiver<String>) -> (u16, String) {
    let (mut router_port, mut api) = (0u16, String::new());
    while api.is_empty() {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the standby takes over");
        if let Some(a) = line.strip_prefix("cutover: router on http://") {
            router_port = a.rsplit(':').next().unwrap().parse().unwrap();
        }
        if let Some(a) = line.strip_prefix("cutover: listening on ") {
            api = a.to_owned();
        }
    }
    (router_port, api)
}

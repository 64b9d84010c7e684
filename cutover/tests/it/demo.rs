//! `cutover demo` without a terminal: the example shop is built, dev and
//! staging deployed, production left waiting for approval, the storefront
//! answers through the router, and SIGTERM stops every process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pipeline_support::{header, http_get};
use crate::support::BIN;

#[test]
fn the_demo_deploys_the_shop_and_leaves_production_waiting_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    // The newcomer's home: the demo saves the admin token there for the CLI.
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut router_port, mut api, mut printed) = (0u16, String::new(), Vec::new());
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo keeps talking");
        if let Some(a) = line.strip_prefix("cutover: router on http://") {
            router_port = a.rsplit(':').next().unwrap().parse().unwrap();
        }
        if let Some(a) = line.strip_prefix("cutover: listening on ") {
            api = a.to_owned();
        }
        let done = line.contains("rollback staging --fast");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    assert!(text.contains("is waiting for approval"), "{text}");
    assert!(text.contains("cutover approve"), "{text}");
    let admin = std::fs::read_to_string(dir.path().join("state/admin.token")).unwrap();
    assert!(
        text.contains(&format!("/#token={}", admin.trim())),
        "the dashboard URL signs in: {text}"
    );

    let (status, head, body) = http_get(router_port, "storefront.staging.shop.localhost", "/").unwrap();
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(body.contains("Shop storefront"), "{body}");
    let version = header(&head, "x-cutover-version").unwrap();
    assert!(
        body.contains(&version[..12]),
        "the page shows the version the router says: {body}"
    );

    // A plain CLI call works with no login step: the demo saved the admin
    // token for its URL. As admin (not the demo's own token) it may approve.
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["-o", "json"])
            .env("CUTOVER_URL", &api)
            .env_remove("CUTOVER_TOKEN")
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap()
    };
    let out = cli(&["runs", "prod"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["state"], "awaiting_approval");
    assert_eq!(runs[0]["requested_by"], "demo");
    let me: serde_json::Value = serde_json::from_slice(&cli(&["whoami"]).stdout).unwrap();
    assert_eq!(me["name"], "admin");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        http_get(router_port, "storefront.staging.shop.localhost", "/").is_none(),
        "the router stopped"
    );
    // No service process of the demo survives it.
    let root = dir.path().to_str().unwrap().to_owned();
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with(&root))
        .collect();
    assert!(
        survivors.is_empty(),
        "processes left in the demo's releases: {survivors:?}"
    );
}

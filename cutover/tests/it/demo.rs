//! `cutover demo` without a terminal: the example shop is built, dev and
//! staging deployed, production left waiting for approval, the storefront
//! answers through the router, and SIGTERM stops every process; run again on
//! the same directory, it resumes what the user did instead of redeploying.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::pipeline_support::{header, http_get};
use crate::support::BIN;

/// One `cutover demo` process, read until it printed its next steps.
struct Demo {
    child: Child,
    router_port: u16,
    api: String,
    /// Everything it printed up to its last next step.
    printed: String,
    _lines: Receiver<String>,
}

impl Demo {
    fn start(dir: &Path, home: &Path) -> Demo {
        let mut child = Command::new(BIN)
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--router-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .env("XDG_CONFIG_HOME", home)
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
                .unwrap_or_else(|_| panic!("the demo keeps talking; so far:\n{}", printed.join("\n")));
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
        Demo {
            child,
            router_port,
            api,
            printed: printed.join("\n"),
            _lines: rx,
        }
    }

    /// A CLI call with no login step (the demo saved the admin token for its URL), `-o json`.
    fn cli(&self, home: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["-o", "json"])
            .env("CUTOVER_URL", &self.api)
            .env_remove("CUTOVER_TOKEN")
            .env("XDG_CONFIG_HOME", home)
            .output()
            .unwrap()
    }

    fn json(&self, home: &Path, args: &[&str]) -> serde_json::Value {
        let out = self.cli(home, args);
        assert!(
            out.status.success(),
            "cutover {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The version the router says the storefront of `env` runs.
    fn serving(&self, env: &str) -> String {
        let host = format!("storefront.{env}.shop.localhost");
        let (status, head, body) = http_get(self.router_port, &host, "/").unwrap();
        assert_eq!(status, 200, "{env}: {head}\n{body}");
        header(&head, "x-cutover-version").unwrap()
    }

    /// SIGTERM, as Ctrl-C: the demo ends cleanly and its router with it.
    fn stop(mut self) {
        self.terminate();
        assert!(
            http_get(self.router_port, "storefront.staging.shop.localhost", "/").is_none(),
            "the router stopped"
        );
    }

    fn terminate(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the demo did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
    }
}

/// A failed test stops its demo too (SIGTERM, then SIGKILL after 30 s), so no server outlives it.
impl Drop for Demo {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_demo_deploys_the_shop_and_leaves_production_waiting_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    // The newcomer's home: the demo saves the admin token there for the CLI.
    let home = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), home.path());
    let text = &demo.printed;
    assert!(!text.contains("resuming"), "a first run: {text}");
    assert!(text.contains("is waiting for approval"), "{text}");
    assert!(text.contains("cutover approve"), "{text}");
    let admin = std::fs::read_to_string(dir.path().join("state/admin.token")).unwrap();
    assert!(
        text.contains(&format!("/#token={}", admin.trim())),
        "the dashboard URL signs in: {text}"
    );

    let (status, head, body) = http_get(demo.router_port, "storefront.staging.shop.localhost", "/").unwrap();
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(body.contains("Shop storefront"), "{body}");
    let version = header(&head, "x-cutover-version").unwrap();
    assert!(
        body.contains(&version[..12]),
        "the page shows the version the router says: {body}"
    );

    // A plain CLI call works with no login step: the demo saved the admin
    // token for its URL. As admin (not the demo's own token) it may approve.
    let runs = demo.json(home.path(), &["runs", "prod"]);
    assert_eq!(runs[0]["state"], "awaiting_approval");
    assert_eq!(runs[0]["requested_by"], "demo");
    let me = demo.json(home.path(), &["whoami"]);
    assert_eq!(me["name"], "admin");

    demo.stop();
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

#[test]
fn running_the_demo_again_resumes_what_the_user_did() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), home.path());
    // Dev and staging deliberately run different versions; the user releases
    // staging's to dev.
    let (dev_pinned, staging) = (demo.serving("dev"), demo.serving("staging"));
    assert_ne!(dev_pinned, staging);
    let out = demo.cli(
        home.path(),
        &["release", "dev", "--version", &staging[..12], "--wait"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(demo.serving("dev"), staging);
    let runs = demo.json(home.path(), &["runs", "prod"]);
    assert_eq!(runs[0]["state"], "awaiting_approval");
    let first_request = runs[0]["id"].as_i64().unwrap();
    demo.stop();

    // Again: nothing is redeployed, dev comes back on the user's release.
    let demo = Demo::start(dir.path(), home.path());
    let text = &demo.printed;
    assert!(!text.contains("demo: deploying"), "nothing is redeployed: {text}");
    assert!(text.contains("demo: resuming the state in"), "{text}");
    assert!(
        text.contains(&format!("demo: dev resumes on {}", &staging[..12])),
        "it says what it resumed: {text}"
    );
    assert!(
        text.contains(&format!("demo: staging resumes on {}", &staging[..12])),
        "{text}"
    );
    assert_eq!(demo.serving("dev"), staging, "dev runs the user's release");
    assert_eq!(demo.serving("staging"), staging);
    let env = demo.json(home.path(), &["env", "show", "dev"]);
    assert_eq!(env["last_deployed_version"], staging.as_str(), "{env}");
    // The stop ended the demo's own production request: it is requested again.
    let runs = demo.json(home.path(), &["runs", "prod"]);
    assert_eq!(runs[1]["id"], first_request, "{runs}");
    assert_ne!(runs[1]["state"], "awaiting_approval", "{runs}");
    assert_eq!(runs[0]["state"], "awaiting_approval", "{runs}");
    assert_eq!(runs[0]["requested_by"], "demo", "{runs}");
    let second_request = runs[0]["id"].as_i64().unwrap();
    assert!(second_request > first_request);
    assert!(
        text.contains(&format!("cutover approve {second_request}")),
        "{text}"
    );

    // The user rejects it: a third run respects that and says how to ask again.
    let out = demo.cli(
        home.path(),
        &["reject", &second_request.to_string(), "-m", "not today"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    demo.stop();
    let demo = Demo::start(dir.path(), home.path());
    let text = &demo.printed;
    let runs = demo.json(home.path(), &["runs", "prod"]);
    assert_eq!(runs[0]["id"], second_request, "not requested again: {runs}");
    assert_eq!(runs[0]["state"], "failed", "{runs}");
    assert!(
        runs[0]["error"].as_str().unwrap().contains("rejected by admin"),
        "{runs}"
    );
    assert!(!text.contains("cutover approve"), "{text}");
    assert!(text.contains("cutover release prod --version"), "{text}");
    assert_eq!(demo.serving("dev"), staging);
    demo.stop();
}

//! More live instances than the server has blocking threads: a release still completes and the
//! server still stops within its bound (issue: ~500 instances used to hang the whole server,
//! because every instance's log writer held one of tokio's 512 blocking threads for its life).
//! The pool is lowered to 4 threads (`CUTOVER_BLOCKING_THREADS`), so a dozen instances are
//! already "more than the pool".

use std::process::Command;
use std::time::{Duration, Instant};

use crate::pipeline_support::App;

const CONFIG: &str = r#"
app: shop
repo: repo
services:
  api:
    run: "sh run.sh api"
    health: /health
    health_timeout: 20s
    replicas: 6
    public: true
  worker:
    run: "sh run.sh worker"
hooks:
  install: "sh hooks/install.sh"
environments:
  dev: { tier: dev }
"#;

/// Pids of every instance of `env` in `cutover status` (serving and warm).
fn instance_pids(status: &serde_json::Value) -> Vec<u32> {
    let mut pids = Vec::new();
    for svc in status["services"].as_array().unwrap() {
        for inst in svc["instances"].as_array().unwrap() {
            if let Some(pid) = inst["pid"].as_u64() {
                pids.push(pid as u32);
            }
        }
    }
    pids
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

#[test]
fn more_instances_than_blocking_threads_release_and_stop_within_the_bound() {
    // Without the fix the server hangs; every test CLI call gives up after
    // CUTOVER_REQUEST_TIMEOUT (support.rs), so the test fails rather than hangs.
    let app = App::with_config(CONFIG);
    let mut server = app.start_with(&[("CUTOVER_BLOCKING_THREADS", "4")]);
    server.deploy("admin", "dev", &app.good[0]);
    // 7 live instances now; the second release keeps v1's api warm, so 13 live, and its Source
    // (git), checkout and build need the blocking pool while they run.
    server.deploy("admin", "dev", &app.good[1]);
    let status = server.cli_json("admin", &["status", "dev"]);
    let pids = instance_pids(&status);
    assert!(
        pids.len() >= 13,
        "expected 6 serving + 6 warm api instances and a worker: {status:#}"
    );
    let (code, _, body) = server
        .via_router("api", "dev", "/health")
        .expect("the router answers");
    assert_eq!(code, 200, "{body}");
    // A third release while all of them live: still no hang.
    server.deploy("admin", "dev", &app.good[2]);

    let status = server.cli_json("admin", &["status", "dev"]);
    let pids = instance_pids(&status);
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let limit = Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < limit,
            "the server did not stop within {limit:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "server exit: {exit}");
    let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "instances still running after shutdown: {left:?}"
    );
}

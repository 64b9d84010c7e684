//! Shared fixtures: a runtime in a temporary state dir, a release dir named
//! after a SHA, the test app, a minimal HTTP GET.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cutover_core::{AppName, EnvName, ServiceName, Version};
use cutover_runtime::{
    BackoffPolicy, HealthSettings, InstanceSpec, ProcessRuntime, RuntimeConfig, StateFile, os,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SHA: &str = "3f9a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c";

pub fn testapp() -> &'static str {
    env!("CARGO_BIN_EXE_cutover-testapp")
}

/// `exec '<testapp>'`, optionally with `VAR=value` assignments before it.
pub fn run_testapp(prefix: &str) -> String {
    format!("{prefix} exec '{}'", testapp())
}

pub struct Fixture {
    pub rt: ProcessRuntime,
    /// Declared before `dir`, so it still finds the state files when it is dropped.
    _reaper: Reaper,
    pub dir: tempfile::TempDir,
    pub release: PathBuf,
}

/// Kills, when the fixture goes (also on panic), every instance its state directory still
/// records: a runtime that is dropped leaves its instances running (for the next server),
/// so a test that ends without `stop`/`shutdown` would leave them behind. A recorded pid
/// whose start time differs (reused, or a test's fake) is left alone.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<StateFile>(&bytes) else {
                continue;
            };
            let ours = state.proc_start_time.is_some()
                && os::proc_stat(state.pid).is_some_and(|s| Some(s.start_time) == state.proc_start_time);
            if ours {
                let _ = os::signal_group(state.pgid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Fixture {
    pub fn new(stop_grace: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let release = dir.path().join("data/releases/shop").join(SHA);
        std::fs::create_dir_all(release.join("web")).expect("release dir");
        let mut config = RuntimeConfig::new(dir.path().join("state"));
        config.stop_grace = stop_grace;
        config.health_interval = Duration::from_millis(100);
        config.backoff = BackoffPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(30),
        };
        let reaper = Reaper(config.instances_dir());
        let rt = ProcessRuntime::new(config).expect("runtime");
        Self {
            rt,
            _reaper: reaper,
            dir,
            release,
        }
    }

    pub fn spec(&self, run: String, replica: u32) -> InstanceSpec {
        InstanceSpec {
            app: AppName::parse("shop").unwrap(),
            env: EnvName::parse("staging").unwrap(),
            service: ServiceName::parse("web").unwrap(),
            version: version(),
            release_dir: self.release.clone(),
            run,
            env_vars: vec![("CUTOVER_RUN_ID".into(), "42".into())],
            replica,
            health_path: None,
            placement: Default::default(),
        }
    }
}

pub fn version() -> Version {
    Version::parse(SHA).unwrap()
}

pub fn quick_health() -> HealthSettings {
    HealthSettings {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(10),
    }
}

/// `GET path` → (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs process groups when dropped (also when the test panics): instances outlive
/// their runtime now, so a test that leaves one to a "next server" must end it itself.
pub struct KillOnDrop(std::sync::Mutex<Vec<u32>>);

impl KillOnDrop {
    pub fn new(pgids: impl IntoIterator<Item = u32>) -> Self {
        Self(std::sync::Mutex::new(pgids.into_iter().collect()))
    }

    /// Also kills `pgid` at the end (a restarted instance's new group).
    pub fn add(&self, pgid: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pgid in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = os::signal_group(*pgid, rustix::process::Signal::KILL);
        }
    }
}

//! A real Cutover to benchmark: the release `cutover` binary, a git repository whose commits
//! are the versions, the example shop program as the service, and a `cutover serve` on free
//! loopback ports with a temporary data directory. Everything is driven the way a user drives
//! it: through the binary and its HTTP API (`CUTOVER_URL`).
//!
//! The server child is stopped (SIGTERM, then SIGKILL after 15 s) when [`Server`] is dropped,
//! so a benchmark that fails half-way leaves no process behind; the temporary directories go
//! with their [`tempfile::TempDir`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Boxed error with a message; benchmarks report and stop.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The workspace root (the parent of `bench/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

/// `$CUTOVER_BIN`, else `target/release/cutover` of this workspace, which must exist
/// (`cargo build --release -p cutover`).
pub fn cutover_bin() -> Result<PathBuf, Error> {
    let bin = std::env::var_os("CUTOVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/cutover"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p cutover` first (or set CUTOVER_BIN)",
            bin.display()
        )
        .into())
    }
}

/// Compiles the example shop (`examples/shop/src/shop.rs`, std only) into `dir/shop`.
pub fn build_shop(dir: &Path) -> Result<PathBuf, Error> {
    let out = dir.join("shop");
    let src = workspace_root().join("examples/shop/src/shop.rs");
    let status = Command::new("rustc")
        .args(["-O", "--edition", "2021", "-o"])
        .arg(&out)
        .arg(&src)
        .status()?;
    if !status.success() {
        return Err(format!("rustc {} failed: {status}", src.display()).into());
    }
    Ok(out)
}

/// Runs git to build the fixture repository (Cutover itself never runs git).
pub fn git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("git")
        .args(["-c", "user.name=Bench", "-c", "user.email=bench@example.com"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("git {args:?}: {err}").into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A temporary directory holding `cutover.yml`, a git repository `repo/` with one commit
/// per version (only `VERSION` differs) and, later, the server's `data/`.
pub struct AppRepo {
    pub dir: tempfile::TempDir,
    /// Full SHAs, oldest first.
    pub versions: Vec<String>,
}

impl AppRepo {
    pub fn new(config: &str, versions: usize) -> Result<AppRepo, Error> {
        AppRepo::new_with(config, versions, &|_| Vec::new())
    }

    /// Like [`AppRepo::new`], and commit `i` (1-based) also holds `files(i)`: (path relative
    /// to the repository, content) pairs, parent directories created as needed.
    pub fn new_with(
        config: &str,
        versions: usize,
        files: &dyn Fn(usize) -> Vec<(String, String)>,
    ) -> Result<AppRepo, Error> {
        let dir = tempfile::Builder::new().prefix("cutover-bench-").tempdir()?;
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo)?;
        git(&repo, &["init", "-q", "-b", "main"])?;
        let mut shas = Vec::new();
        for i in 1..=versions {
            std::fs::write(repo.join("VERSION"), format!("{i}\n"))?;
            write_files(&repo, &files(i))?;
            git(&repo, &["add", "-A"])?;
            git(&repo, &["commit", "-q", "-m", &format!("release {i}")])?;
            shas.push(git(&repo, &["rev-parse", "HEAD"])?);
        }
        std::fs::write(dir.path().join("cutover.yml"), config)?;
        Ok(AppRepo { dir, versions: shas })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cutover.yml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Writes (relative path, content) pairs under `dir`, creating parent directories.
pub fn write_files(dir: &Path, files: &[(String, String)]) -> Result<(), Error> {
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    Ok(())
}

/// A running `cutover serve`.
pub struct Server {
    child: Child,
    bin: PathBuf,
    /// The API, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub router_port: u16,
    /// The admin API token the server wrote to `<data dir>/admin.token`.
    token: String,
    /// XDG_CONFIG_HOME of the server and the CLI: the bench's own, so the
    /// server's first start does not write into the user's credentials file.
    config_home: PathBuf,
}

impl Server {
    /// Starts `cutover serve` on free loopback ports; `env` is inherited by instances and hooks.
    pub fn start(bin: &Path, app: &AppRepo, env: &[(&str, &Path)]) -> Result<Server, Error> {
        Server::start_routing(bin, app, env, "127.0.0.1:0")
    }

    /// Like [`Server::start`], with the router on `router` (a fixed port survives restarts).
    pub fn start_routing(
        bin: &Path,
        app: &AppRepo,
        env: &[(&str, &Path)],
        router: &str,
    ) -> Result<Server, Error> {
        let config_home = app.dir.path().join("config-home");
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--router-listen", router, "--config"])
            .arg(app.config())
            .arg("--data-dir")
            .arg(app.data_dir())
            .env("RUST_LOG", "warn")
            .env("CUTOVER_STOP_ON_EXIT", "1")
            .env("XDG_CONFIG_HOME", &config_home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // The server's stderr is passed through, and its last lines kept for the error when
        // the server does not start (e.g. a configuration this build refuses).
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (err_done_tx, err_done) = std::sync::mpsc::channel::<()>();
        {
            let tail = std::sync::Arc::clone(&tail);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 40 {
                            t.remove(0);
                        }
                        t.push(line);
                    }
                }
                drop(err_done_tx);
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut router = 0u16;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("cutover: router on http://") {
                    router = url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                }
                if let Some(url) = line.strip_prefix("cutover: listening on ") {
                    let _ = tx.send((url.to_owned(), router));
                }
            }
        });
        let mut server = Server {
            child,
            bin: bin.to_owned(),
            url: String::new(),
            router_port: 0,
            token: String::new(),
            config_home,
        };
        let Ok((url, router_port)) = rx.recv_timeout(Duration::from_secs(30)) else {
            // Exited (stdout closed) or silent: give its stderr a moment to arrive.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(server.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = match server.child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                _ => "did not print its addresses within 30 s".to_owned(),
            };
            let _ = err_done.recv_timeout(Duration::from_secs(1));
            let tail = tail.lock().map(|t| t.join("\n")).unwrap_or_default();
            return Err(format!("cutover serve {status}: {tail}").into());
        };
        server.url = url;
        server.router_port = router_port;
        let token_file = app.data_dir().join("admin.token");
        server.token = std::fs::read_to_string(&token_file)
            .map_err(|e| format!("cannot read the admin token {}: {e}", token_file.display()))?
            .trim()
            .to_owned();
        Ok(server)
    }

    /// Runs the CLI with `-o json` and parses its answer.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, Error> {
        let out = Command::new(&self.bin)
            .args(args)
            .args(["-o", "json"])
            .env("CUTOVER_URL", &self.url)
            .env("CUTOVER_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("cutover {args:?} failed: {err}").into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits (bounded by `limit`) until run `id` has ended and returns its record. Follows the
    /// run's log (`cutover logs ID --follow`, one idle CLI process) instead of polling, so the
    /// wait does not compete with the engine for CPU.
    pub fn wait_run(&self, id: i64, limit: Duration) -> Result<Value, Error> {
        let mut follow = Command::new(&self.bin)
            .args(["logs", &id.to_string(), "--follow", "-o", "json"])
            .env("CUTOVER_URL", &self.url)
            .env("CUTOVER_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + limit;
        while follow.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = follow.kill();
                let _ = follow.wait();
                return Err(format!("run {id} did not end within {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The stream ends when the run ends; read the record (poll briefly in case the
        // follower ended for another reason).
        loop {
            let run = self.cli_json(&["run", &id.to_string()])?;
            let state = run["state"].as_str().unwrap_or("");
            if !matches!(state, "queued" | "running" | "awaiting_approval") {
                return Ok(run);
            }
            if Instant::now() > deadline {
                return Err(format!("run {id} still {state} after {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (for its RSS and its exit).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and returns how long the server took to exit, or `None` if it had not
    /// exited within `limit` (it is then killed).
    pub fn terminate_timed(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// One API call as the admin over a fresh loopback connection: `(status, body)`.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), Error> {
        use std::io::{Read, Write};
        let addr: std::net::SocketAddr = self
            .url
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| format!("API address {}: {e}", self.url))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("no status")?;
        // Chunked answers keep their chunk sizes; callers parse JSON from the first `[`/`{`.
        Ok((status, rest.to_owned()))
    }

    /// The run's log lines (`at_ms`, `stage`, `line`).
    pub fn logs(&self, id: i64) -> Result<Vec<Value>, Error> {
        let v = self.cli_json(&["logs", &id.to_string()])?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// SIGKILL, as a crash would, and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most `limit`) for the server to exit on its own; true when it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, then SIGKILL if the server has not exited within 15 s.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wall-clock microseconds since the Unix epoch: comparable with the server's `*_at_ms`.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A field of a JSON record as integer milliseconds.
pub fn ms(v: &Value, field: &str) -> Option<i64> {
    v[field].as_i64()
}

/// Median, 90th percentile and maximum of `values` (nearest rank), or zeros when empty.
pub fn med_p90_max(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.9), v[v.len() - 1])
}

/// One `GET path` on `127.0.0.1:port` with `Connection: close` (5 s bound): the status code
/// and the body, or `None` when the connection or the answer failed.
pub fn http_get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    http_get_within(port, host, path, Duration::from_secs(5))
}

/// [`http_get`] waiting at most `read` for the answer (connecting stays bounded by 5 s).
pub fn http_get_within(port: u16, host: &str, path: &str, read: Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(read)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Polls `GET /health` every `every` until it answers 200 (true) or `limit` passes (false).
pub fn wait_health(port: u16, every: Duration, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if http_get(port, "127.0.0.1", "/health").is_some_and(|(s, _)| s == 200) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts one replica of the shop `api` directly (no Cutover) on `port`, answering `version`.
pub fn start_shop(shop: &Path, dir: &Path, port: u16, version: &str) -> Result<Child, Error> {
    Ok(Command::new(shop)
        .arg("api")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("CUTOVER_VERSION", version)
        .env("CUTOVER_ENV_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Kills a directly started process (SIGKILL) and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the `docker` CLI (bounded by `limit`: killed after it) and returns its trimmed
/// stdout, or an error with its stderr when it fails.
pub fn docker(args: &[&str], limit: Duration) -> Result<String, Error> {
    use std::io::Read;
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker (is the CLI installed?): {e}"))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            kill(&mut child);
            return Err(format!("docker {args:?} did not finish within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        return Err(format!("docker {args:?} failed ({status}): {}", err.trim()).into());
    }
    Ok(out.trim().to_owned())
}

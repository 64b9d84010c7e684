//! Test fixtures: a git repository with history, a config file, a running
//! server, and a way to run the CLI against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cutover");

/// Runs git for fixture building only (Cutover itself never runs git).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test Author",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// Commits on main, oldest first.
    pub main: Vec<String>,
    /// A commit on `develop` only.
    pub develop_only: String,
}

pub const CONFIG: &str = r#"
app: shop
repo: repo
services:
  yves:
    run: "bin/yves --port $PORT"
    health: /health
    replicas: 2
    public: true
  zed:
    run: "bin/zed --port $PORT"
environments:
  dev:     { tier: dev, branch: develop }
  staging: { tier: stage, branch: main }
  # These tests release prod directly; `requires:` (default: staging) is tested in approvals.rs.
  prod:    { tier: prod, branch: main, requires: [] }
"#;

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        let mut main = Vec::new();
        for i in 1..=3 {
            std::fs::write(repo.join("VERSION"), format!("{i}\n")).unwrap();
            git(&repo, &["add", "."]);
            git(&repo, &["commit", "-q", "-m", &format!("release {i}")]);
            main.push(git(&repo, &["rev-parse", "HEAD"]));
        }
        git(&repo, &["tag", "v1.0", &main[0]]);
        git(&repo, &["checkout", "-q", "-b", "develop"]);
        std::fs::write(repo.join("FEATURE"), "wip\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "work in progress"]);
        let develop_only = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["checkout", "-q", "main"]);
        std::fs::write(dir.path().join("cutover.yml"), CONFIG).unwrap();
        Fixture {
            dir,
            main,
            develop_only,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cutover.yml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn start(&self) -> Server {
        Server::start(&self.config(), &self.data_dir())
    }
}

/// `cutover serve` on free loopback ports (API and router) for `config` and `data_dir`, to add
/// arguments and variables to and run.
pub fn serve_command(config: impl AsRef<Path>, data_dir: impl AsRef<Path>) -> Command {
    serve_command_of(Path::new(BIN), config, data_dir)
}

/// As [`serve_command`], with the `cutover` binary at `bin` (a copy a test can replace).
pub fn serve_command_of(bin: &Path, config: impl AsRef<Path>, data_dir: impl AsRef<Path>) -> Command {
    let mut command = Command::new(bin);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config.as_ref())
        .arg("--data-dir")
        .arg(data_dir.as_ref())
        // A test's SIGTERM stops everything, as it did before the data plane was split off;
        // the tests of that split start servers without it.
        .env("CUTOVER_STOP_ON_EXIT", "1");
    command
}

/// Kills what a server of `data_dir` left running once no server holds the directory any more
/// (a test killed it with SIGKILL): the data plane and every instance and task group recorded
/// in the runtime's state files. A server that still runs there is left alone.
pub fn reap_data_dir(data_dir: &Path) {
    let Ok(lock) = std::fs::OpenOptions::new()
        .write(true)
        .open(data_dir.join("server.lock"))
    else {
        return;
    };
    if lock.try_lock().is_err() {
        return;
    }
    let mut groups = Vec::new();
    for dir in ["runtime/instances", "runtime/tasks"] {
        for entry in std::fs::read_dir(data_dir.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(pgid) = v["pgid"].as_u64().or_else(|| v["pid"].as_u64()) {
                groups.push(format!("-{pgid}"));
            }
        }
    }
    let plane = std::fs::read_to_string(data_dir.join("dataplane/pid")).unwrap_or_default();
    let plane = plane.trim();
    let is_cutover = std::fs::read(format!("/proc/{plane}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("data-plane"));
    if !plane.is_empty() && is_cutover {
        groups.push(plane.to_owned());
    }
    if !groups.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(&groups)
            .stderr(Stdio::null())
            .status();
    }
}

/// The API URL and router port a starting `cutover serve` prints on its (piped) stdout; the
/// rest of its stdout is drained in the background.
pub fn addresses(child: &mut Child) -> (String, u16) {
    let stdout = child.stdout.take().expect("the server's stdout is piped");
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
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server prints its address")
}

pub struct Server {
    pub child: Child,
    /// The API, e.g. http://127.0.0.1:41234
    pub url: String,
    /// The router's port on 127.0.0.1.
    pub router_port: u16,
    /// The secret of the `admin` token (from `<data-dir>/admin.token`).
    pub admin_token: String,
    /// XDG_CONFIG_HOME and HOME of the server and of every CLI call, so no
    /// test reads or writes the real user's credentials file.
    pub home: tempfile::TempDir,
    /// Tokens minted per actor name by `token()`.
    pub tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Its data directory: what it leaves running is reaped when it is dropped dead and no
    /// other server took the directory over (see [`reap_data_dir`]).
    pub data_dir: Option<PathBuf>,
}

impl Server {
    pub fn start(config: &Path, data_dir: &Path) -> Server {
        Server::start_with(config, data_dir, &[])
    }

    /// Starts `cutover serve` on free ports with extra environment variables
    /// (inherited by instances and hooks).
    pub fn start_with(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with_args(config, data_dir, env, &[])
    }

    /// As `start_with`, with extra `cutover serve` arguments.
    pub fn start_with_args(config: &Path, data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::start_bin(Path::new(BIN), config, data_dir, env, args)
    }

    /// As `start_with_args`, running the `cutover` binary at `bin`.
    pub fn start_bin(
        bin: &Path,
        config: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let home = tempfile::tempdir().unwrap();
        let mut child = serve_command_of(bin, config, data_dir)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CUTOVER_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env("XDG_CONFIG_HOME", home.path())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cutover serve starts");
        let (url, router_port) = addresses(&mut child);
        // Written before the server listens, on the first start of its store.
        let admin_token = std::fs::read_to_string(data_dir.join("admin.token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default();
        let mut server = Server::adopt(child, url, router_port, admin_token);
        server.data_dir = Some(data_dir.to_owned());
        server
    }

    /// A server started by hand, acting with `admin_token`.
    pub fn adopt(child: Child, url: String, router_port: u16, admin_token: String) -> Server {
        Server {
            child,
            url,
            router_port,
            admin_token,
            home: tempfile::tempdir().unwrap(),
            tokens: Default::default(),
            data_dir: None,
        }
    }

    /// The secret of a token named `actor` with admin on every environment,
    /// minted through the admin token once per server (`admin` is the admin
    /// token itself). Different names are different people: four-eyes holds.
    pub fn token(&self, actor: &str) -> String {
        if actor == "admin" {
            assert!(!self.admin_token.is_empty(), "this server wrote no admin.token");
            return self.admin_token.clone();
        }
        let mut tokens = self.tokens.lock().unwrap();
        if let Some(t) = tokens.get(actor) {
            return t.clone();
        }
        let admin = self.token("admin");
        let create = || {
            self.command_with_token(&admin)
                .args(["token", "create", actor, "--role", "admin", "-o", "json"])
                .output()
                .expect("cutover runs")
        };
        let mut out = create();
        if stderr(&out).contains("already exists") {
            // Minted by an earlier server on the same store, whose secret is gone.
            let revoked = self
                .command_with_token(&admin)
                .args(["token", "revoke", actor])
                .output()
                .expect("cutover runs");
            assert!(revoked.status.success(), "{}", stderr(&revoked));
            out = create();
        }
        let issued = json(&out);
        let secret = issued["secret"].as_str().expect("a secret").to_owned();
        tokens.insert(actor.to_owned(), secret.clone());
        secret
    }

    /// The CLI against this server with a given token and an empty home.
    pub fn command_with_token(&self, token: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("CUTOVER_URL", &self.url)
            .env("CUTOVER_TOKEN", token)
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("HOME", self.home.path())
            // A stuck server fails the test within 2 minutes instead of hanging it.
            .env("CUTOVER_REQUEST_TIMEOUT", "120")
            .env_remove("CUTOVER_ACTOR");
        cmd
    }

    /// The CLI against this server as `actor` (see `token`), ready for args.
    pub fn command(&self, actor: &str) -> Command {
        self.command_with_token(&self.token(actor))
    }

    /// Runs the CLI against this server as `actor`.
    pub fn cli(&self, actor: &str, args: &[&str]) -> Output {
        self.command(actor).args(args).output().expect("cutover runs")
    }

    /// Runs the CLI with no token at all (and no credentials file).
    pub fn cli_anonymous(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("CUTOVER_URL", &self.url)
            .env_remove("CUTOVER_TOKEN")
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("HOME", self.home.path())
            .output()
            .expect("cutover runs")
    }

    /// Runs the CLI with `-o json` and parses its answer, asserting success.
    pub fn cli_json(&self, actor: &str, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        json(&self.cli(actor, &all))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// SIGTERM first, so the server stops its instances; SIGKILL only if it hangs; then what a
    /// killed server left running is reaped.
    fn drop(&mut self) {
        self.stop_child();
        if let Some(dir) = &self.data_dir {
            reap_data_dir(dir);
        }
    }
}

impl Server {
    fn stop_child(&mut self) {
        if let Ok(None) = self.child.try_wait() {
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
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Asserts the command failed with exit code 1 and its stderr mentions every needle.
pub fn fails_with(o: &Output, needles: &[&str]) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1; stdout: {} stderr: {}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// An environment name unique to this test run and `dir` (Docker and Swarm names are global to
/// the engine): `<prefix><pid>-<dir name>`, lower case, with `-` for anything else.
pub fn unique_env(prefix: &str, dir: &Path) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        dir.file_name().unwrap().to_string_lossy().to_lowercase()
    )
    .chars()
    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
    .collect()
}

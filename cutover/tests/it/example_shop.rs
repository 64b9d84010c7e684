//! The example application, `examples/shop`: built the way its `build.sh` builds it, then its
//! migrations, its scheduler job, and a storefront that reads the API through a router-style
//! `*.localhost` URL, as Cutover's environment contract (`examples/shop/README.md`) describes.
//!
//! Self-contained (std, `tempfile`, `serde_json`): the program is compiled once per test binary
//! into `CARGO_TARGET_TMPDIR`, in a directory named after a hash of the example's files, so an
//! unchanged example is not recompiled on the next run and a changed one always is. Every test
//! gets its own `CUTOVER_ENV_DIR`; servers listen on free loopback ports and are killed by a
//! guard when the test ends, also when it fails.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const API_SHA: &str = "1111111111111111111111111111111111111111";
const STOREFRONT_SHA: &str = "2222222222222222222222222222222222222222";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

/// The example's files that make a release, relative to its directory (build output and the
/// database of runs by hand are left out), sorted.
fn release_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().to_owned();
        if rel == Path::new("bin") || rel == Path::new(".shop-data") {
            continue;
        }
        if path.is_dir() {
            release_files(root, &path, out);
        } else {
            out.push(rel);
        }
    }
    out.sort();
}

/// A release directory of the example with `bin/shop` built by `sh build.sh`, shared by all
/// tests of this binary.
pub(crate) fn release() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let src = example_dir();
        let mut files = Vec::new();
        release_files(&src, &src, &mut files);
        let mut hasher = DefaultHasher::new();
        for rel in &files {
            rel.hash(&mut hasher);
            fs::read(src.join(rel)).unwrap().hash(&mut hasher);
        }
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("example-shop-{:016x}", hasher.finish()));
        if !dir.exists() {
            // Copy into a private directory, then rename: a concurrent test run never sees
            // half a copy.
            let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
            for rel in &files {
                fs::create_dir_all(tmp.join(rel).parent().unwrap()).unwrap();
                fs::copy(src.join(rel), tmp.join(rel)).unwrap();
            }
            if fs::rename(&tmp, &dir).is_err() {
                fs::remove_dir_all(&tmp).unwrap(); // another run got there first
            }
        }
        let out = Command::new("sh")
            .arg("build.sh")
            .current_dir(&dir)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "build.sh failed:\n{}", text(&out.stderr));
        assert!(dir.join("bin/shop").is_file());
        dir
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bin/shop <args>` in the release directory with exactly the given environment.
fn shop(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(release().join("bin/shop"));
    cmd.args(args)
        .current_dir(release())
        .env_clear()
        .envs(env.iter().copied());
    cmd
}

fn run_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out: Output = shop(args, env).output().unwrap();
    assert!(
        out.status.success(),
        "shop {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A server child process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(role: &str, env_dir: &Path, env: &[(&str, &str)]) -> Server {
        // A free port: bind port 0, note the port, let it go again.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = env_dir.join(format!("{role}-{port}.log"));
        let port_text = port.to_string();
        let mut vars = vec![
            ("PORT", port_text.as_str()),
            ("CUTOVER_ENV_DIR", env_dir.to_str().unwrap()),
        ];
        vars.extend_from_slice(env);
        let child = shop(&[role], &vars)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(port, "localhost", "/health").map(|a| a.status) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{role} did not get healthy:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn get(&self, path: &str) -> Answer {
        get(self.port, "localhost", path).unwrap_or_else(|| panic!("GET {path} failed:\n{}", self.log()))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 `GET` with `Connection: close`; `None` when the connection fails.
fn get(port: u16, host: &str, path: &str) -> Option<Answer> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` as it is and reads the answer until the server closes the connection.
fn exchange(port: u16, request: &str) -> Option<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = text(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

#[test]
fn build_sh_builds_once_per_release_directory() {
    let binary = release().join("bin/shop");
    let built = fs::metadata(&binary).unwrap().modified().unwrap();
    let out = Command::new("sh")
        .arg("build.sh")
        .current_dir(release())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::metadata(&binary).unwrap().modified().unwrap(),
        built,
        "build.sh rebuilt bin/shop"
    );
    // Anything else is a usage error.
    assert_eq!(shop(&["nonsense"], &[]).output().unwrap().status.code(), Some(2));
}

#[test]
fn migrations_apply_once_and_reset_reloads_demo_data() {
    let env = tempfile::tempdir().unwrap();
    let vars = [
        ("CUTOVER_ENV_DIR", env.path().to_str().unwrap()),
        ("CUTOVER_VERSION", API_SHA),
    ];
    let db = env.path().join("db");

    let first = run_ok(&["migrate"], &vars);
    assert!(first.contains("applied migration 001_products"), "{first}");
    assert!(first.contains("applied migration 002_more_products"), "{first}");
    assert_eq!(
        fs::read_to_string(db.join("applied.txt")).unwrap(),
        "001_products\n002_more_products\n"
    );
    let products = fs::read_to_string(db.join("products.txt")).unwrap();
    assert!(
        products.contains("mug-classic 1390 Classic mug"),
        "002 updates the price of 001: {products}"
    );

    let second = run_ok(&["migrate"], &vars);
    assert!(
        !second.contains("applied migration"),
        "a second run applies nothing: {second}"
    );
    assert!(second.contains("0 migration(s) applied now"), "{second}");
    assert_eq!(fs::read_to_string(db.join("products.txt")).unwrap(), products);

    // Data written between deployments survives a normal install and not a destructive one.
    fs::write(db.join("orders.txt"), "web-1 tee-blue 1 someone\n").unwrap();
    run_ok(&["migrate"], &vars);
    assert!(
        fs::read_to_string(db.join("orders.txt"))
            .unwrap()
            .contains("web-1")
    );
    let reset = run_ok(&["migrate", "--reset"], &vars);
    assert!(reset.contains("reset: wiped"), "{reset}");
    assert!(reset.contains("applied migration 001_products"), "{reset}");
    let orders = fs::read_to_string(db.join("orders.txt")).unwrap();
    assert!(
        !orders.contains("web-1") && orders.contains("demo-1001"),
        "{orders}"
    );
    assert_eq!(fs::read_to_string(db.join("products.txt")).unwrap(), products);
}

#[test]
fn storefront_shows_its_own_and_the_api_version_through_a_localhost_url() {
    let env = tempfile::tempdir().unwrap();
    let env_dir = env.path().to_str().unwrap();
    run_ok(&["migrate"], &[("CUTOVER_ENV_DIR", env_dir)]);
    let api = Server::start("api", env.path(), &[("CUTOVER_VERSION", API_SHA)]);
    // As Cutover would set it: the router URL of the environment's api service. Nothing
    // resolves that name; the storefront must connect to 127.0.0.1 and send it as `Host`.
    let api_url = format!("http://api.test.shop.localhost:{}", api.port);
    let storefront = Server::start(
        "storefront",
        env.path(),
        &[
            ("CUTOVER_VERSION", STOREFRONT_SHA),
            ("CUTOVER_SERVICE_URL_API", &api_url),
        ],
    );

    let page = storefront.get("/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Shop storefront — version 222222222222"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("storefront 222222222222 · api 111111111111"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Classic mug"),
        "the API's products are listed: {}",
        page.body
    );
    assert_eq!(page.header("x-app-version"), Some(STOREFRONT_SHA));

    let info = storefront.get("/version.json");
    assert_eq!(info.status, 200);
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["service"], "storefront");
    assert_eq!(info["version"], STOREFRONT_SHA);
    assert_eq!(info["api_version"], API_SHA, "{info}");

    let products = api.get("/api/products");
    assert_eq!(products.header("x-app-version"), Some(API_SHA));
    let products: serde_json::Value = serde_json::from_str(&products.body).unwrap();
    assert_eq!(products["version"], API_SHA);
    assert_eq!(products["products"].as_array().unwrap().len(), 5, "{products}");

    for server in [&api, &storefront] {
        let health = server.get("/health");
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    }
    // One log line per request, the storefront's calls included.
    assert!(api.log().contains("api GET /api/products 200"), "{}", api.log());
    assert!(
        storefront.log().contains("storefront GET / 200"),
        "{}",
        storefront.log()
    );

    // A bad request gets a 400 and the server keeps serving.
    let bad = exchange(api.port, "NONSENSE\r\n\r\n").expect("an answer");
    assert_eq!(bad.status, 400);
    assert_eq!(api.get("/health").status, 200);
    assert_eq!(api.get("/nope").status, 404);

    // Without the API the page still renders and says so.
    drop(api);
    let page = storefront.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("api unavailable"), "{}", page.body);
}

#[test]
fn sync_index_job_appends_to_jobs_log() {
    let env = tempfile::tempdir().unwrap();
    let vars = [
        ("CUTOVER_ENV_DIR", env.path().to_str().unwrap()),
        ("CUTOVER_VERSION", API_SHA),
    ];
    run_ok(&["migrate"], &vars);
    run_ok(&["job", "sync-index"], &vars);
    run_ok(&["job", "sync-index"], &vars);
    let log = fs::read_to_string(env.path().join("jobs.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in lines {
        assert!(
            line.ends_with(&format!("sync-index version={API_SHA} products=5")),
            "{line}"
        );
        assert!(
            line.starts_with("20") && line.as_bytes()[19] == b'Z',
            "a UTC timestamp first: {line}"
        );
    }
    let unknown = shop(&["job", "nope"], &vars).output().unwrap();
    assert!(!unknown.status.success());
}

#[test]
fn storefront_connects_to_loopback_and_sends_the_router_host() {
    // A stand-in for the router: answers one request the way the api would, and hands back
    // what it received.
    let router = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = router.local_addr().unwrap().port();
    let received = std::thread::spawn(move || {
        let (mut conn, _) = router.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let body = "cap-black 2200 Black cap\n";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nX-App-Version: {API_SHA}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
        text(&head)
    });
    let env = tempfile::tempdir().unwrap();
    let url = format!("http://API.Test.shop.localhost:{port}");
    let storefront = Server::start(
        "storefront",
        env.path(),
        &[
            ("CUTOVER_VERSION", STOREFRONT_SHA),
            ("CUTOVER_SERVICE_URL_API", &url),
        ],
    );
    let page = storefront.get("/");
    // Checked before joining: had the storefront not called, the stand-in would still wait.
    assert!(page.body.contains("Black cap"), "{}", page.body);
    assert!(page.body.contains("api 111111111111"), "{}", page.body);
    let request = received.join().unwrap();
    assert!(request.starts_with("GET /api/products HTTP/1."), "{request}");
    assert!(
        request.contains(&format!("Host: API.Test.shop.localhost:{port}\r\n")),
        "{request}"
    );
}

//! Regression probes of issue 11's findings 3, 6 and 7 against the real server: decoded
//! queries decide authorization, lists and the configuration show only what a token may
//! see, hostile clients are cut off (dripping headers, idle connections, guessed tokens,
//! persistently), and oversized values get a 4xx naming the limit, never a 500.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Fixture, Server, serve_command};

/// One raw HTTP/1.1 request with `Connection: close`: (status, head, body).
pub fn raw(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // An event stream does not end: its head is the answer.
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        raw.extend_from_slice(&buf[..n]);
        let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        if n == 0 || head.contains("\r\n\r\n") && head.contains("content-type: text/event-stream") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Mints a token through the admin token; returns its secret.
pub fn mint(server: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend(args);
    let issued = server.cli_json("admin", &all);
    issued["secret"].as_str().unwrap().to_owned()
}

/// `cutover serve` with `env`, its stderr (the log) appended to `log`; waits until it listens.
fn start_logged(config: &Path, data: &Path, env: &[(&str, &str)], log: &Path) -> Server {
    std::fs::create_dir_all(data).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut child = serve_command(config, data)
        .env("RUST_LOG", "info")
        .env("XDG_CONFIG_HOME", home.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    while url.is_empty() {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the server exited; see {}",
            log.display()
        );
        if let Some(u) = line.trim().strip_prefix("cutover: listening on ") {
            url = u.to_owned();
        }
    }
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in out.lines() {});
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    Server::adopt(child, url, 0, admin)
}

#[test]
fn an_encoded_query_key_cannot_widen_what_a_viewer_sees() {
    let fx = Fixture::new();
    let server = fx.start();
    let viewer = mint(&server, "devview", &["--role", "viewer", "--env", "dev"]);
    server.cli_json("admin", &["release", "staging", "--version", &fx.main[0]]);
    server.cli_json("admin", &["release", "dev", "--version", &fx.develop_only]);
    for query in ["%65nv=staging", "env=staging", "e%6Ev=st%61ging", "env=%73taging"] {
        let (status, _, body) = raw(
            &server,
            "GET",
            &format!("/api/v1/runs?{query}"),
            Some(&viewer),
            "",
        );
        assert_eq!(
            status, 403,
            "?{query}: a viewer of dev must not list staging's runs: {body}"
        );
        assert!(body.contains("environment \\\"staging"), "{body}");
    }
    // A key given twice (once encoded): whichever value the handler would use, the policy
    // decided on it.
    let (status, _, body) = raw(
        &server,
        "GET",
        "/api/v1/runs?env=dev&%65nv=staging",
        Some(&viewer),
        "",
    );
    assert!(status == 400 || status == 403, "{status} {body}");
    let (status, _, body) = raw(&server, "GET", "/api/v1/runs", Some(&viewer), "");
    assert_eq!(status, 200, "{body}");
    let runs: Value = serde_json::from_str(&body).unwrap();
    let envs: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["env"].as_str().unwrap())
        .collect();
    assert!(!envs.is_empty() && envs.iter().all(|e| *e == "dev"), "{envs:?}");
    // The same for the parameter list's prefix.
    server.cli_json("admin", &["param", "put", "/shop-staging/env/COLOR", "red"]);
    let (status, _, body) = raw(
        &server,
        "GET",
        "/api/v1/params?pr%65fix=%2Fshop-staging",
        Some(&viewer),
        "",
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = raw(&server, "GET", "/api/v1/params?prefix=/", Some(&viewer), "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("shop-staging"), "{body}");
    // Path parameters too: the policy sees them decoded, as the handler does.
    for path in [
        "/api/v1/params/shop-st%61ging/env/COLOR",
        "/api/v1/history/shop-st%61ging/env/COLOR",
        "/api/v1/environments/st%61ging/status",
    ] {
        let (status, _, body) = raw(&server, "GET", path, Some(&viewer), "");
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, _, body) = raw(&server, "GET", "/api/v1/environments/d%65v", Some(&viewer), "");
    assert_eq!(
        status, 200,
        "an encoded name of the viewer's own environment works: {body}"
    );
}

#[test]
fn the_configuration_shows_visible_environments_and_webhook_urls_without_credentials() {
    let fx = Fixture::new();
    let config = format!(
        "{}webhooks:\n  - {{ url: \"http://bot:hunter22@127.0.0.1:9/hooks/T0001/XyZ123abcDEF456ghiJKL789?token=qwerty123&team=ops\" }}\n",
        crate::support::CONFIG
    );
    std::fs::write(fx.config(), config).unwrap();
    let server = fx.start();
    let viewer = mint(&server, "devview", &["--role", "viewer", "--env", "dev"]);
    for token in [viewer.as_str(), server.admin_token.as_str()] {
        let (status, _, body) = raw(&server, "GET", "/api/v1/config", Some(token), "");
        assert_eq!(status, 200, "{body}");
        for secret in ["hunter22", "qwerty123", "XyZ123abcDEF456ghiJKL789", "bot:"] {
            assert!(!body.contains(secret), "/config shows {secret:?}: {body}");
        }
        let v: Value = serde_json::from_str(&body).unwrap();
        let url = v["webhooks"][0]["url"].as_str().unwrap();
        assert_eq!(
            url,
            "http://****@127.0.0.1:9/hooks/T0001/****?token=****&team=****"
        );
    }
    let (_, _, body) = raw(&server, "GET", "/api/v1/config", Some(&viewer), "");
    let v: Value = serde_json::from_str(&body).unwrap();
    let envs: Vec<&String> = v["environments"].as_object().unwrap().keys().collect();
    assert_eq!(envs, ["dev"], "a viewer of dev sees only dev's configuration");
}

/// Reads until the server closes the connection; the time it took, or None if it stayed
/// open for `bound` while `drip` kept writing.
fn closed_within(
    stream: &mut TcpStream,
    bound: Duration,
    mut drip: impl FnMut(&mut TcpStream) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < bound {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
        if !drip(stream) {
            return Some(start.elapsed());
        }
    }
    None
}

#[test]
fn a_client_dripping_headers_or_idling_is_disconnected() {
    let fx = Fixture::new();
    let log = fx.dir.path().join("server.log");
    let server = start_logged(
        &fx.config(),
        &fx.data_dir(),
        &[("CUTOVER_API_HEADER_TIMEOUT_SECS", "2")],
        &log,
    );
    let addr = server.url.trim_start_matches("http://").to_owned();

    // One header line per second: never a whole request.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut last = Instant::now();
    let mut n = 0;
    let took = closed_within(&mut s, Duration::from_secs(12), |s| {
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            n += 1;
            return s.write_all(format!("X-Drip-{n}: 1\r\n").as_bytes()).is_ok();
        }
        true
    });
    let took = took.expect("a connection dripping one header line a second stayed open for 12 s");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");

    // An idle connection (nothing sent at all), and an idle kept-alive one after a request.
    let mut idle = TcpStream::connect(&addr).unwrap();
    let took =
        closed_within(&mut idle, Duration::from_secs(12), |_| true).expect("an idle connection stayed open");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let took = closed_within(&mut kept, Duration::from_secs(12), |_| true)
        .expect("a kept-alive connection stayed open");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A body that never arrives is answered (4xx), not held.
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "PUT /api/v1/params/shop-dev/env/X HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"va",
        server.admin_token
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 64];
    let n = slow.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");

    // The server still serves.
    assert_eq!(raw(&server, "GET", "/api/v1/health", None, "").0, 200);
}

#[test]
fn guessed_tokens_are_limited_per_source_logged_without_the_token_and_the_limit_survives_a_restart() {
    let fx = Fixture::new();
    let log = fx.dir.path().join("server.log");
    let env = [
        ("CUTOVER_AUTH_MAX_FAILURES", "5"),
        ("CUTOVER_AUTH_LOCKOUT_SECS", "600"),
    ];
    let server = start_logged(&fx.config(), &fx.data_dir(), &env, &log);
    let admin = server.admin_token.clone();
    assert_eq!(raw(&server, "GET", "/api/v1/whoami", Some(&admin), "").0, 200);
    let guess = |i: usize| format!("cut_{:064x}", 0xdead_beef_u64 + i as u64);
    for i in 0..5 {
        let (status, _, body) = raw(&server, "GET", "/api/v1/environments", Some(&guess(i)), "");
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    let (status, head, body) = raw(&server, "GET", "/api/v1/environments", Some(&guess(5)), "");
    assert_eq!(status, 429, "the sixth guess: {body}");
    let retry: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_owned())
        })
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    assert!(body.contains("too many failed authentications"), "{body}");
    // Locked out: even a valid token from this source waits, and so does a flood.
    assert_eq!(raw(&server, "GET", "/api/v1/whoami", Some(&admin), "").0, 429);
    let started = Instant::now();
    for i in 0..200 {
        assert_eq!(
            raw(&server, "GET", "/api/v1/whoami", Some(&guess(100 + i)), "").0,
            429
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Open routes stay open.
    assert_eq!(raw(&server, "GET", "/api/v1/health", None, "").0, 200);
    assert!(server.terminate().success());

    let server = start_logged(&fx.config(), &fx.data_dir(), &env, &log);
    let (status, _, body) = raw(&server, "GET", "/api/v1/whoami", Some(&admin), "");
    assert_eq!(status, 429, "the lockout survives a restart: {body}");
    drop(server);

    let logged = std::fs::read_to_string(&log).unwrap();
    let failures: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("failed authentication") && !l.contains("too many"))
        .collect();
    assert!(failures.len() >= 5, "each failed attempt is logged: {logged}");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("127.0.0.1") && l.contains("/api/v1/environments")),
        "with its source and route: {failures:#?}"
    );
    for i in 0..5 {
        let g = guess(i);
        assert!(!logged.contains(&g[4..]), "the log shows a guessed token");
    }
    assert!(!logged.contains(&admin[4..]), "the log shows the admin token");
}

#[test]
fn oversized_values_get_a_4xx_naming_the_limit() {
    let fx = Fixture::new();
    let server = fx.start();
    let admin = server.admin_token.clone();
    let long = "a".repeat(256);
    let probes = [
        (
            "POST",
            "/api/v1/environments/dev/rollback".to_owned(),
            format!("{{\"to\": \"{long}\"}}"),
        ),
        (
            "POST",
            "/api/v1/environments/dev/releases".to_owned(),
            format!("{{\"version\": \"{long}\"}}"),
        ),
        (
            "POST",
            "/api/v1/environments/dev/releases".to_owned(),
            format!("{{\"version\": \"{}\"}}", "b/".repeat(100) + "c"),
        ),
        (
            "PUT",
            "/api/v1/params/shop-dev/desired_version".to_owned(),
            format!("{{\"value\": \"{long}\"}}"),
        ),
        (
            "POST",
            "/api/v1/environments".to_owned(),
            format!("{{\"template\": \"dev\", \"branch\": \"{long}\"}}"),
        ),
        (
            "POST",
            "/api/v1/tokens".to_owned(),
            format!("{{\"name\": \"{long}\", \"grants\": {{\"default\": \"viewer\"}}}}"),
        ),
        ("POST", format!("/api/v1/tokens/{long}/revoke"), String::new()),
        (
            "GET",
            format!("/api/v1/params/shop-dev/{}", "k".repeat(600)),
            String::new(),
        ),
        (
            "GET",
            format!("/api/v1/environments/{long}/status"),
            String::new(),
        ),
        ("GET", "/api/v1/runs?limit=4294967295".to_owned(), String::new()),
        ("GET", "/api/v1/audit?limit=4294967295".to_owned(), String::new()),
        (
            "POST",
            "/api/v1/runs/1/approve".to_owned(),
            format!("{{\"comment\": \"{}\"}}", "c".repeat(5000)),
        ),
    ];
    server.cli_json("admin", &["release", "dev", "--version", &fx.develop_only]);
    for (method, path, body) in &probes {
        let (status, _, text) = raw(&server, method, path, Some(&admin), body);
        assert!(
            (400..500).contains(&status),
            "{method} {}: {status} {text}",
            &path[..path.len().min(80)]
        );
        assert!(!text.contains("too long (os error"), "{text}");
    }
    let (_, _, text) = raw(
        &server,
        "POST",
        "/api/v1/environments/dev/rollback",
        Some(&admin),
        &probes[0].2,
    );
    assert!(text.contains("at most 200"), "{text}");

    // A 1.9 MB setting is refused when it is written, naming the limit.
    let huge = format!("{{\"value\": \"{}\"}}", "x".repeat(1_900_000));
    let (status, _, text) = raw(
        &server,
        "PUT",
        "/api/v1/params/shop-dev/env/HUGE",
        Some(&admin),
        &huge,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("at most 65536 bytes"), "{text}");
    // So is the setting that takes the environment's settings over their total budget.
    let chunk = format!("{{\"value\": \"{}\"}}", "y".repeat(65_000));
    let mut refused = None;
    for i in 0..20 {
        let (status, _, text) = raw(
            &server,
            "PUT",
            &format!("/api/v1/params/shop-dev/env/PART_{i}"),
            Some(&admin),
            &chunk,
        );
        if status != 200 {
            refused = Some((i, status, text));
            break;
        }
    }
    let (i, status, text) = refused.expect("twenty 65 kB settings were all accepted");
    assert_eq!((i, status), (16, 400), "{text}");
    assert!(text.contains("at most 1048576 bytes"), "{text}");
    // Other environments keep their own budget.
    let (status, _, text) = raw(
        &server,
        "PUT",
        "/api/v1/params/shop-staging/env/PART_0",
        Some(&admin),
        &chunk,
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn head_answers_like_get_without_a_body() {
    let fx = Fixture::new();
    let server = fx.start();
    let viewer = mint(&server, "devview", &["--role", "viewer", "--env", "dev"]);
    for (path, token) in [
        ("/api/v1/health", None),
        ("/api/v1/openapi.json", None),
        ("/api/v1/environments", Some(viewer.as_str())),
        ("/api/v1/environments/dev/status", Some(viewer.as_str())),
        ("/api/v1/whoami", Some(viewer.as_str())),
    ] {
        let (get, get_head, get_body) = raw(&server, "GET", path, token, "");
        let (head, head_head, head_body) = raw(&server, "HEAD", path, token, "");
        assert_eq!(get, 200, "GET {path}: {get_body}");
        assert_eq!(head, 200, "HEAD {path}: {head_head}");
        assert!(head_body.is_empty(), "HEAD {path} has a body: {head_body}");
        let ct = |h: &str| {
            h.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-type"))
                .map(str::to_owned)
        };
        assert_eq!(ct(&get_head), ct(&head_head), "{path}");
    }
    // HEAD is refused exactly where GET is.
    assert_eq!(
        raw(
            &server,
            "HEAD",
            "/api/v1/environments/staging/status",
            Some(&viewer),
            ""
        )
        .0,
        403
    );
    assert_eq!(raw(&server, "HEAD", "/api/v1/environments", None, "").0, 401);
}

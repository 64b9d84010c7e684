//! Token authentication and per-environment roles, end to end: the real
//! server and CLI, raw HTTP where the CLI would hide what is sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{BIN, Fixture, Server, fails_with, json, stderr, stdout};

/// One HTTP/1.1 request to the server's API; (status, body).
fn http(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Bodies are small and not chunked in practice; strip a chunk frame if any.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split("\r\n").nth(1).unwrap_or("").to_owned()
    } else {
        body.to_owned()
    };
    (status, body)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Mints a token through the admin CLI; returns its secret.
fn mint(server: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend(args);
    let issued = server.cli_json("admin", &all);
    assert_eq!(issued["token"]["name"], name);
    issued["secret"].as_str().unwrap().to_owned()
}

fn with_token(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    server.command_with_token(token).args(args).output().unwrap()
}

#[test]
fn without_a_token_the_api_answers_401_saying_how_to_get_one() {
    let fx = Fixture::new();
    let server = fx.start();
    let (status, body) = http(&server, "GET", "/api/v1/environments", &[], "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("cutover token create"), "{body}");
    assert!(body.contains("admin.token"), "{body}");
    let (status, body) = http(
        &server,
        "GET",
        "/api/v1/environments",
        &[("Authorization", "Bearer cut_nope")],
        "",
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no such token"), "{body}");

    // Health and metrics stay open for load balancers and scrapers.
    assert_eq!(http(&server, "GET", "/api/v1/health", &[], "").0, 200);
    assert_eq!(http(&server, "GET", "/metrics", &[], "").0, 200);

    let out = server.cli_anonymous(&["env", "list"]);
    fails_with(
        &out,
        &["no API token for", "cutover login --server", "admin.token"],
    );
    let out = server
        .command_with_token("cut_0000")
        .args(["env", "list"])
        .output()
        .unwrap();
    fails_with(&out, &["refused the token", "no such token"]);
}

#[test]
fn roles_are_checked_per_environment() {
    let fx = Fixture::new();
    let server = fx.start();
    let viewer = mint(&server, "vic", &["--role", "viewer"]);
    let dev_deployer = mint(&server, "dana", &["--role", "deployer", "--env", "dev"]);

    let out = with_token(
        &server,
        &viewer,
        &["release", "dev", "--version", &fx.develop_only],
    );
    fails_with(
        &out,
        &["needs the role deployer", "\"dev\"", "holds viewer there"],
    );
    assert_eq!(
        json(&with_token(&server, &viewer, &["env", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let out = with_token(
        &server,
        &dev_deployer,
        &["release", "prod", "--version", &fx.main[0]],
    );
    fails_with(
        &out,
        &["needs the role deployer", "\"prod\"", "holds no role there"],
    );
    let out = with_token(&server, &dev_deployer, &["promote", "dev", "prod"]);
    fails_with(&out, &["needs the role deployer", "\"prod\""]);
    let run = json(&with_token(
        &server,
        &dev_deployer,
        &["release", "dev", "--version", &fx.develop_only, "-o", "json"],
    ));
    assert_eq!(run["requested_by"], "dana", "the actor is the token's name");
    let envs = json(&with_token(
        &server,
        &dev_deployer,
        &["env", "list", "-o", "json"],
    ));
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev"], "lists show only what the token may see");
    let runs = json(&with_token(&server, &dev_deployer, &["runs", "-o", "json"]));
    assert!(
        runs.as_array().unwrap().iter().all(|r| r["env"] == "dev"),
        "{runs}"
    );
    fails_with(
        &with_token(&server, &dev_deployer, &["audit"]),
        &["needs the role viewer on every environment"],
    );
    fails_with(
        &with_token(&server, &dev_deployer, &["token", "list"]),
        &["needs the role admin"],
    );
    fails_with(
        &with_token(&server, &dev_deployer, &["status", "staging"]),
        &["needs the role viewer", "\"staging\""],
    );
    // Parameters: the environment's own with deployer; outside every prefix, admin.
    let put = json(&with_token(
        &server,
        &dev_deployer,
        &["param", "put", "/shop-dev/env/COLOR", "blue", "-o", "json"],
    ));
    assert_eq!(put["actor"], "dana");
    fails_with(
        &with_token(
            &server,
            &dev_deployer,
            &["param", "put", "/shop-prod/env/COLOR", "red"],
        ),
        &["needs the role deployer", "\"prod\""],
    );
    let everywhere = mint(&server, "eve", &["--role", "deployer"]);
    fails_with(
        &with_token(&server, &everywhere, &["param", "put", "/shared/colour", "red"]),
        &[
            "needs the role admin on every environment",
            "outside every environment",
        ],
    );
    server.cli_json("admin", &["param", "put", "/shared/colour", "red"]);
    let listed = json(&with_token(
        &server,
        &dev_deployer,
        &["param", "list", "/", "-o", "json"],
    ));
    let keys: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"/shop-dev/env/COLOR") && keys.contains(&"/shared/colour"),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.starts_with("/shop-prod")), "{keys:?}");
}

#[test]
fn an_approver_approves_someone_elses_prod_run_but_never_their_own() {
    let fx = Fixture::new();
    let server = fx.start();
    let paula = mint(&server, "paula", &["--role", "deployer"]);
    let ann = mint(&server, "ann", &["--role", "approver", "--env", "prod"]);
    // Ann's own production run: she may not decide it.
    let own = json(&with_token(
        &server,
        &ann,
        &["release", "prod", "--version", &fx.main[1], "-o", "json"],
    ));
    let own_id = own["id"].as_i64().unwrap();
    server.wait_run(own_id, &["awaiting_approval"]);
    fails_with(
        &with_token(&server, &ann, &["approve", &own_id.to_string()]),
        &["four-eyes"],
    );
    fails_with(
        &with_token(&server, &paula, &["approve", &own_id.to_string()]),
        &["needs the role approver", "holds deployer there"],
    );
    // Paula's run, queued behind it, comes up once Ann cancels hers; Ann approves it.
    let run = json(&with_token(
        &server,
        &paula,
        &["release", "prod", "--version", &fx.main[0], "-o", "json"],
    ));
    let id = run["id"].as_i64().unwrap();
    with_token(&server, &ann, &["cancel", &own_id.to_string()]);
    server.wait_run(id, &["awaiting_approval"]);
    let approved = json(&with_token(
        &server,
        &ann,
        &["approve", &id.to_string(), "-m", "ok", "-o", "json"],
    ));
    assert_eq!(approved["approvals"][0]["actor"], "ann");
}

#[test]
fn revoked_and_expired_tokens_are_refused_and_secrets_are_never_shown_again() {
    let fx = Fixture::new();
    let data = fx.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    // The server's log, at debug level, to look for secrets in it.
    let log_path = fx.dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut child = crate::support::serve_command(fx.config(), &data)
        .env("RUST_LOG", "debug")
        .env("XDG_CONFIG_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    let mut printed = String::new();
    while url.is_empty() {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "server exited"
        );
        printed.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("cutover: listening on ") {
            url = u.to_owned();
        }
    }
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let server = Server::adopt(child, url, 0, admin.clone());

    let short = mint(&server, "short", &["--role", "viewer", "--expires", "1s"]);
    let gone = mint(&server, "gone", &["--role", "viewer"]);
    assert!(with_token(&server, &short, &["whoami"]).status.success());
    assert!(with_token(&server, &gone, &["whoami"]).status.success());
    server.cli_json("admin", &["token", "revoke", "gone"]);
    fails_with(
        &with_token(&server, &gone, &["whoami"]),
        &["token \"gone\" was revoked"],
    );
    std::thread::sleep(Duration::from_millis(1200));
    fails_with(
        &with_token(&server, &short, &["env", "list"]),
        &["token \"short\" expired"],
    );

    let list = stdout(&server.cli("admin", &["token", "list"]));
    assert!(
        list.contains("revoked by admin") && list.contains("expired"),
        "{list}"
    );
    let list_json = stdout(&server.cli("admin", &["token", "list", "-o", "json"]));
    let audit = stdout(&server.cli("admin", &["audit", "-o", "json"]));
    let entries: Value = serde_json::from_str(&audit).unwrap();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"token.create") && actions.contains(&"token.revoke"),
        "{actions:?}"
    );
    drop(server);
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logged.contains("admin.token"),
        "the log names the admin token file: {logged}"
    );
    for secret in [&admin, &short, &gone] {
        let hex = &secret["cut_".len()..];
        for (what, text) in [
            ("token list", &list_json),
            ("audit log", &audit),
            ("server log", &logged),
            ("server stdout", &printed),
        ] {
            assert!(!text.contains(hex), "a secret appears in the {what}");
        }
    }
}

#[test]
fn the_actor_comes_from_the_token_not_from_a_header() {
    let fx = Fixture::new();
    let server = fx.start();
    let alice = server.token("alice");
    let body = format!("{{\"value\": \"{}\"}}", fx.main[0]);
    let auth = bearer(&alice);
    let (status, text) = http(
        &server,
        "PUT",
        "/api/v1/params/shop-staging/desired_version",
        &[("Authorization", &auth), ("X-Cutover-Actor", "mallory")],
        &body,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("name of the API token"), "{text}");
    let (status, text) = http(
        &server,
        "PUT",
        "/api/v1/params/shop-staging/desired_version",
        &[("Authorization", &auth), ("X-Cutover-Actor", "alice")],
        &body,
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"actor\":\"alice\""), "{text}");
    fails_with(
        &server.cli("alice", &["--as", "bob", "env", "list"]),
        &["--as bob is gone", "token"],
    );
}

/// Stops a server once it serves (so its SIGTERM handler is in place).
fn stop(server: Server) {
    assert_eq!(http(&server, "GET", "/api/v1/health", &[], "").0, 200);
    assert!(server.terminate().success());
}

#[test]
fn the_first_start_writes_one_admin_token_and_a_reset_replaces_it() {
    let fx = Fixture::new();
    let server = fx.start();
    let file = fx.data_dir().join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token is private");
    let first = server.admin_token.clone();
    assert!(first.starts_with("cut_") && first.len() == 68, "{first}");
    stop(server);

    let server = fx.start();
    assert_eq!(server.admin_token, first, "a restart keeps the admin token");
    let tokens = server.cli_json("admin", &["token", "list"]);
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
    assert_eq!(tokens[0]["name"], "admin");
    assert_eq!(tokens[0]["grants"]["default"], "admin");
    stop(server);

    std::fs::remove_file(&file).unwrap();
    let server = fx.start();
    assert!(!file.exists(), "tokens exist: no second admin token is minted");
    stop(server);

    let server = Server::start_with_args(&fx.config(), &fx.data_dir(), &[], &["--reset-admin-token"]);
    let second = server.admin_token.clone();
    assert!(second.starts_with("cut_") && second != first);
    fails_with(&with_token(&server, &first, &["whoami"]), &["was revoked"]);
    let tokens = server.cli_json("admin", &["token", "list"]);
    let live: Vec<&Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["revoked_at_ms"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "{tokens}");
}

#[test]
fn login_saves_the_token_for_plain_cli_calls() {
    let fx = Fixture::new();
    let server = fx.start();
    let carol = mint(&server, "carol", &["--role", "viewer"]);
    let login = |token: &str| {
        let mut child = Command::new(BIN)
            .args(["login", "--server", &server.url])
            .env_remove("CUTOVER_TOKEN")
            .env("XDG_CONFIG_HOME", server.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("cut_wrong");
    fails_with(&out, &["refused the token"]);
    let creds = server.home.path().join("cutover/credentials.json");
    assert!(!creds.exists(), "a refused token is not saved");

    let out = login(&carol);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("as carol"), "{}", stdout(&out));
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let me = json(&server.cli_anonymous(&["whoami", "-o", "json"]));
    assert_eq!(me["name"], "carol");
    let envs = json(&server.cli_anonymous(&["env", "list", "-o", "json"]));
    assert_eq!(envs.as_array().unwrap().len(), 3);
}

//! A remote `repo:`: Cutover mirrors it under the data directory and fetches with gix from
//! a real smart-HTTP server (token from the parameter store) and a real sshd (deploy key
//! from the parameter store); a host that stops answering fails Source within
//! `source.fetch_timeout`.

use std::time::{Duration, Instant};

use crate::git_hosts::{GitHttp, GitSsh, host_repo};
use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::{fails_with, git, stderr};

const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn remote_config(url: &str, source: &str) -> String {
    format!(
        "{}source:\n{source}",
        APP_CONFIG.replace("repo: repo", &format!("repo: \"{url}\""))
    )
}

#[test]
fn releases_from_a_smart_http_host_with_a_token_and_a_silent_host_fails_source_in_time() {
    let app = App::new();
    let hosted = app.dir.path().join("hosted");
    std::fs::create_dir(&hosted).unwrap();
    host_repo(&app.dir.path().join("repo"), &hosted.join("app.git"));
    let http = GitHttp::start(&hosted, Some(("deploy", TOKEN)));
    let url = format!("http://127.0.0.1:{}/app.git", http.port);
    std::fs::write(
        app.dir.path().join("cutover.yml"),
        remote_config(
            &url,
            "  token_secret: git-token\n  token_user: deploy\n  fetch_timeout: 3s\n",
        ),
    )
    .unwrap();
    // The work tree is gone from the config's point of view: only the host has the commits.
    let server = app.start();

    // No token yet: the fetch says which secret to set.
    fails_with(
        &server.cli("admin", &["fetch"]),
        &["/shop/secrets/git-token", "not set"],
    );
    // A wrong token: the host's refusal, no token in the message.
    let put = server.cli(
        "admin",
        &["param", "put", "/shop/secrets/git-token", "wrong-token-123"],
    );
    assert!(put.status.success(), "{}", stderr(&put));
    let refused = server.cli("admin", &["fetch"]);
    fails_with(&refused, &[&url]);
    assert!(
        !stderr(&refused).contains("wrong-token-123"),
        "{}",
        stderr(&refused)
    );
    let put = server.cli("admin", &["param", "put", "/shop/secrets/git-token", TOKEN]);
    assert!(put.status.success(), "{}", stderr(&put));
    let fetched = server.cli_json("admin", &["fetch"]);
    assert!(fetched["refs"].as_u64().unwrap() >= 1, "{fetched}");

    // By branch (dev follows none: `main` resolves in the mirror) and by short SHA.
    let by_branch = server.deploy("admin", "dev", "main");
    assert!(
        server.logs(by_branch).contains(&format!("fetching {url}")),
        "{}",
        server.logs(by_branch)
    );
    let short = &app.good[1][..8];
    let by_sha = server.deploy("admin", "staging", short);
    let run = server.cli_json("admin", &["run", &by_sha.to_string()]);
    assert_eq!(run["target_version"], app.good[1].as_str(), "{run:#}");

    // A commit pushed to the host shows in `versions` (fetched first) and releases.
    let work = app.dir.path().join("repo");
    std::fs::write(work.join("VERSION"), "pushed\n").unwrap();
    git(&work, &["commit", "-q", "-am", "pushed to the host"]);
    let pushed = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &["push", "-q", hosted.join("app.git").to_str().unwrap(), "main"],
    );
    let versions = server.cli_json("admin", &["versions", "staging"]);
    assert_eq!(versions["commits"][0]["version"], pushed.as_str(), "{versions:#}");

    // The host stops answering: the request still resolves from the mirror, and Source
    // fails within the timeout, saying so.
    http.go_silent();
    let started = Instant::now();
    let id = server.release("admin", "dev", &app.good[0]);
    let run = server.wait_run(id, &["succeeded", "failed", "cancelled", "interrupted"]);
    assert_eq!(run["state"], "failed", "{run:#}");
    let logs = server.logs(id);
    assert!(
        logs.contains("did not finish within 3s") && logs.contains("source.fetch_timeout"),
        "{logs}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn releases_from_an_ssh_host_with_a_deploy_key_from_the_parameter_store() {
    let app = App::new();
    let hosted = app.dir.path().join("hosted");
    std::fs::create_dir(&hosted).unwrap();
    let bare = hosted.join("app.git");
    host_repo(&app.dir.path().join("repo"), &bare);
    let sshd = GitSsh::start();
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, bare.display());
    std::fs::write(
        app.dir.path().join("cutover.yml"),
        remote_config(&url, "  ssh_key_secret: deploy-key\n  fetch_timeout: 20s\n"),
    )
    .unwrap();
    let server = app.start();
    let put = server
        .command("admin")
        .args(["param", "put", "/shop/secrets/deploy-key", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(sshd.private_key.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(put.status.success(), "{}", stderr(&put));

    let by_branch = server.deploy("admin", "dev", "main");
    let logs = server.logs(by_branch);
    assert!(logs.contains("fetched:"), "{logs}");
    let short = &app.good[2][..9];
    let by_sha = server.deploy("admin", "staging", short);
    let run = server.cli_json("admin", &["run", &by_sha.to_string()]);
    assert_eq!(run["target_version"], app.good[2].as_str(), "{run:#}");
    // The key file written for the fetch is gone; the host key was learned.
    let source = app.dir.path().join("data").join("source");
    let left: Vec<_> = std::fs::read_dir(&source)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(source.join("known_hosts").is_file());
}

/// POSTs a push delivery with `headers` to `/api/v1/hooks/git` (no token); status and body.
fn push_hook(server: &crate::support::Server, headers: &[(&str, String)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "POST /api/v1/hooks/git HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_signed_push_webhook_deploys_the_pushed_commit_at_once_and_bad_or_replayed_ones_do_not() {
    const SECRET: &str = "hook-secret-5a4b3c";
    let app = App::new();
    let hosted = app.dir.path().join("hosted");
    std::fs::create_dir(&hosted).unwrap();
    let bare = hosted.join("app.git");
    host_repo(&app.dir.path().join("repo"), &bare);
    let http = GitHttp::start(&hosted, None);
    let url = format!("http://127.0.0.1:{}/app.git", http.port);
    let config = remote_config(&url, "  webhook_secret: git-hook\n  fetch_timeout: 10s\n").replace(
        "dev:     { tier: dev }",
        "dev:     { tier: dev, branch: main, auto_deploy: true }",
    );
    std::fs::write(app.dir.path().join("cutover.yml"), config).unwrap();
    // Polling every hour: only the webhook can bring the pushed commit in time.
    let server = app.start_with(&[("CUTOVER_AUTO_DEPLOY_INTERVAL", "1h")]);
    let put = server.cli("admin", &["param", "put", "/shop/secrets/git-hook", SECRET]);
    assert!(put.status.success(), "{}", stderr(&put));

    let work = app.dir.path().join("repo");
    std::fs::write(work.join("VERSION"), "from the webhook\n").unwrap();
    git(&work, &["commit", "-q", "-am", "pushed, then announced"]);
    let pushed = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);

    let body = r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
    let github = |sig: String, delivery: &str| {
        vec![
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-Hub-Signature-256", sig),
        ]
    };
    // A wrong signature: 401, audited, nothing fetched.
    let (status, text) = push_hook(
        &server,
        &github(format!("sha256={}", hmac_hex("wrong", &[body.as_bytes()])), "d-0"),
        body,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("X-Hub-Signature-256 does not match"), "{text}");
    let audit = server.cli_json("admin", &["audit"]);
    assert!(audit.to_string().contains("source.hook.refused"), "{audit}");
    // GitLab's form with a wrong token, and the generic form with an old timestamp: 401.
    let gitlab = vec![
        ("X-Gitlab-Token", "nope".to_owned()),
        ("X-Gitlab-Event-UUID", "g-1".to_owned()),
    ];
    assert_eq!(push_hook(&server, &gitlab, body).0, 401);
    let old = "1000000000";
    let generic = vec![
        ("X-Cutover-Timestamp", old.to_owned()),
        (
            "X-Cutover-Signature",
            format!(
                "sha256={}",
                hmac_hex(SECRET, &[old.as_bytes(), b".", body.as_bytes()])
            ),
        ),
    ];
    let (status, text) = push_hook(&server, &generic, body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("more than 300s"), "{text}");

    // The signed delivery: fetched and deployed without waiting for a poll.
    let good = github(format!("sha256={}", hmac_hex(SECRET, &[body.as_bytes()])), "d-1");
    let started = Instant::now();
    let (status, text) = push_hook(&server, &good, body);
    assert_eq!(status, 202, "{text}");
    let outcome: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(outcome["result"], "accepted", "{outcome}");
    assert_eq!(outcome["environments"], serde_json::json!(["dev"]), "{outcome}");
    let run_id = loop {
        let runs = server.cli_json("admin", &["runs", "dev"]);
        let found = runs
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["target_version"] == pushed.as_str())
            .and_then(|r| r["id"].as_i64());
        if let Some(id) = found {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no run for {pushed}: {runs:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let run = server.wait_run(run_id, &["succeeded", "failed", "cancelled", "interrupted"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(run_id));

    // The same delivery again: ignored.
    let (status, text) = push_hook(&server, &good, body);
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("\"replayed\""), "{text}");
    // A push to a branch no auto-deploy environment follows: verified, nothing to do.
    let other = r#"{"ref":"refs/heads/feature"}"#;
    let (status, text) = push_hook(
        &server,
        &github(format!("sha256={}", hmac_hex(SECRET, &[other.as_bytes()])), "d-2"),
        other,
    );
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("not_watched"), "{text}");
}

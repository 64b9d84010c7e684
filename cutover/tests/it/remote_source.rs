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

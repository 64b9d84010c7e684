//! The docker runtime's build context: `.dockerignore` is applied and the tar is
//! streamed to the engine, so a release with a huge ignored file builds without
//! sending it, and a big context is sent without the server's memory growing by it.

use crate::registry::ImageCleanup;
use crate::support::{Server, git};

/// The server's peak resident memory (`VmHWM`), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_dockerignored_200_mb_file_is_not_sent_and_a_128_mb_context_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let env = crate::support::unique_env("c", dir.path());
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("www")).unwrap();
    std::fs::create_dir_all(repo.join("cache")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("Dockerfile"), "FROM cutover-base:latest\nCOPY . /app\n").unwrap();
    std::fs::write(
        repo.join(".dockerignore"),
        "# build output and notes stay out\ncache\n**/*.md\n!www/KEEP.md\n",
    )
    .unwrap();
    std::fs::write(repo.join("www/health"), "ok\n").unwrap();
    std::fs::write(repo.join("www/notes.md"), "internal\n").unwrap();
    std::fs::write(repo.join("www/KEEP.md"), "kept\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "release 1"]);
    let version = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(
        dir.path().join("cutover.yml"),
        format!(
            "app: shop\nrepo: repo\nservices:\n  api:\n    run: \"busybox httpd -f -p $PORT -h /app/www\"\n    \
             health: /health\n    health_timeout: 5s\n    public: true\nenvironments:\n  {env}: {{ tier: dev, runtime: docker }}\n"
        ),
    )
    .unwrap();
    let image = format!("shop-{env}-api:{version}");
    let _images = ImageCleanup(vec![image.clone()]);
    let server = Server::start(&dir.path().join("cutover.yml"), &dir.path().join("data"));
    // The release directory as the checkout leaves it, plus what a build tool might leave
    // there: a 200 MB file in the ignored directory and a 128 MB one that is sent (both
    // sparse: no disk used). Put there directly: a 200 MB blob in git would measure the
    // checkout, not the build.
    let release = dir.path().join("data/releases/shop").join(&version);
    std::fs::create_dir_all(release.join("www")).unwrap();
    std::fs::create_dir_all(release.join("cache")).unwrap();
    for file in [
        "Dockerfile",
        ".dockerignore",
        "www/health",
        "www/notes.md",
        "www/KEEP.md",
    ] {
        std::fs::copy(repo.join(file), release.join(file)).unwrap();
    }
    std::fs::File::create(release.join("cache/huge.bin"))
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    std::fs::File::create(release.join("www/stream.bin"))
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    let pid = server.child.id();
    let before = peak_kib(pid);

    let id = server.release("alice", &env, &version);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    let logs = server.logs(id);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(logs.contains(".dockerignore: 3 patterns"), "{logs}");
    assert_eq!(server.api_version(&env).as_deref(), Some(version.as_str()));
    let grown = peak_kib(pid).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the server's peak memory grew by {grown} KiB during a build that sent 128 MB and ignored 200 MB"
    );
    // The context (hence the image) has the tree without what is ignored.
    let sent: u64 = logs
        .lines()
        .find_map(|l| l.split("build context: ").nth(1))
        .and_then(|rest| rest.split(" KiB").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no context size in {logs}"));
    assert!(
        (128 * 1024..129 * 1024).contains(&sent),
        "{sent} KiB of context sent, expected 128 MB and a little: {logs}"
    );
    eprintln!("build context: {sent} KiB sent, the server's peak memory grew by {grown} KiB");
    let listing = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "find", &image, "/app"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for present in [
        "/app/www/health",
        "/app/www/KEEP.md",
        "/app/www/stream.bin",
        "/app/Dockerfile",
    ] {
        assert!(
            listing.lines().any(|l| l == present),
            "{present} missing: {listing}"
        );
    }
    for absent in ["/app/cache", "/app/www/notes.md"] {
        assert!(
            !listing.lines().any(|l| l.starts_with(absent)),
            "{absent} in the image: {listing}"
        );
    }
}

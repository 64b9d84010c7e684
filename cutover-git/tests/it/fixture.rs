//! Builds throw-away repositories with the `git` binary, isolated from the
//! machine's configuration, with fixed dates so every SHA is reproducible.

use std::path::{Path, PathBuf};
use std::process::Command;

use cutover_git::{Repo, Version};
use tempfile::TempDir;

pub struct Fixture {
    pub dir: TempDir,
}

impl Fixture {
    /// An empty repository on branch `main`.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir repo");
        let f = Fixture { dir };
        f.git(&["init", "-q", "-b", "main"]);
        f
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn open(&self) -> Repo {
        Repo::open(&self.path()).expect("open fixture")
    }

    /// Runs git in the repository and returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_at(&self.path(), args, 1_700_000_000)
    }

    pub fn git_at(&self, cwd: &Path, args: &[&str], time: i64) -> String {
        let date = format!("@{time} +0000");
        let out = Command::new("git")
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(["-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.com"])
            .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write");
    }

    /// Stages everything and commits at `time`; returns the new SHA.
    pub fn commit(&self, message: &str, time: i64) -> Version {
        self.git(&["add", "-A"]);
        self.git_at(
            &self.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
            time,
        );
        self.head()
    }

    pub fn head(&self) -> Version {
        Version::parse(&self.git(&["rev-parse", "HEAD"])).expect("sha")
    }
}

/// The shared history used by most tests:
///
/// ```text
/// main:    c1 (v1) -- c2 (v2, annotated) -- c3
///                        \
/// feature:                f1 -- f2
/// ```
pub struct Sample {
    pub f: Fixture,
    pub c1: Version,
    pub c2: Version,
    pub c3: Version,
    pub f1: Version,
    pub f2: Version,
}

pub fn sample() -> Sample {
    let f = Fixture::new();
    f.write("README.md", "# shop\n");
    f.write("bin/run.sh", "#!/bin/sh\necho hi\n");
    f.write("config/app.yml", "port: 1\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = f.path().join("bin/run.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("README.md", f.path().join("LINK.md")).expect("symlink");
    }
    let c1 = f.commit("first commit\n\nwith a body", 1_000);
    f.git(&["tag", "v1"]);
    f.write("config/app.yml", "port: 2\n");
    let c2 = f.commit("second commit", 2_000);
    f.git_at(&f.path(), &["tag", "-a", "v2", "-m", "release 2"], 2_000);
    f.git(&["checkout", "-q", "-b", "feature"]);
    f.write("feature.txt", "f1\n");
    let f1 = f.commit("feature one", 3_000);
    f.write("feature.txt", "f2\n");
    let f2 = f.commit("feature two", 4_000);
    f.git(&["checkout", "-q", "main"]);
    f.write("README.md", "# shop 3\n");
    let c3 = f.commit("third commit", 3_500);
    Sample {
        f,
        c1,
        c2,
        c3,
        f1,
        f2,
    }
}

//! Remote repositories: Cutover's own bare mirror of a repository on a git host, kept
//! current by fetching with gix's blocking network client.
//!
//! The mirror is a bare repository whose `refs/heads/*` and `refs/tags/*` are the
//! remote's (forced, like `git clone --mirror` without the other namespaces), so every
//! other part of this crate (resolve, history, checkout) reads it like a local repository.
//!
//! Transports: `https://` and `http://` through gix's reqwest client (rustls, the ring
//! provider Cutover already uses, so no second TLS stack and no C build), `ssh://` and
//! scp-like `user@host:path` through the `ssh` program gix spawns (a wrapper script
//! that only adds `-F <generated config>`: key file, known-hosts file, batch mode,
//! timeouts), and `git://`. `file://` and local paths are refused here: a local
//! repository is opened in place, never mirrored.
//!
//! Credentials never reach a command line or a log: an https token goes to gix through
//! its credentials callback (never into the URL); an ssh key is named in the generated
//! ssh config file (an inline key from the parameter store is first written to a 0600
//! file that is deleted after the fetch). Error text is passed through [`redact`] so a
//! secret echoed by a host does not travel further.
//!
//! Rejected: shelling out to `git fetch` (the crate's rule: no git binary), libgit2
//! (C build, its own TLS), curl (a second TLS stack through libcurl's build), and
//! `core.sshCommand` (gix runs it through a shell, and the key path comes from a user).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{GitError, Repo};

/// The refs a mirror keeps, forced: a rewritten branch on the host is rewritten here.
const REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// How Cutover authenticates to the git host.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous (a public repository, or a key in the server user's ssh agent config).
    #[default]
    None,
    /// HTTP basic authentication with a token as the password (GitHub, GitLab and Gitea
    /// accept any user name with a token; GitLab documents `oauth2`).
    Token { username: String, token: String },
    /// An ssh private key in a file (mode 0600 expected by ssh).
    SshKeyFile(PathBuf),
    /// An ssh private key's text (from the parameter store), written to a 0600 file for
    /// the fetch only.
    SshKey(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token { username, .. } => write!(f, "Token {{ username: {username:?}, token: **** }}"),
            Self::SshKeyFile(p) => write!(f, "SshKeyFile({})", p.display()),
            Self::SshKey(_) => f.write_str("SshKey(****)"),
        }
    }
}

/// What to fetch from where.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The remote URL as written in `repo:` (checked by [`check_remote_url`]).
    pub url: String,
    pub credentials: Credentials,
    /// Bound on connecting and on each HTTP request (ssh: connect timeout and keep-alive
    /// probes). The caller bounds the whole fetch too.
    pub timeout: Duration,
    /// A private directory (0700) for the ssh config, the known-hosts file and key files.
    pub work_dir: PathBuf,
}

/// What a fetch changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FetchOutcome {
    /// Refs the remote advertised that the mirror keeps.
    pub refs: usize,
    /// Refs whose target changed (created, moved, forced).
    pub updated: usize,
}

/// Checks that `url` is a remote Cutover can mirror: `https`, `http`, `ssh` (or scp-like)
/// or `git`, with a host, without a password in it, without a user or host that ssh
/// would read as an option.
pub fn check_remote_url(url: &str) -> Result<(), GitError> {
    let bad = |why: &str| GitError::BadRemote {
        url: redact_url(url),
        why: why.to_owned(),
    };
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).map_err(|e| bad(&e.to_string()))?;
    use gix::url::Scheme;
    match parsed.scheme {
        Scheme::Https | Scheme::Http | Scheme::Ssh | Scheme::Git => {}
        other => {
            return Err(bad(&format!(
                "the scheme {other} is not supported; use https://, ssh://, user@host:path or git://"
            )));
        }
    }
    let Some(host) = parsed.host() else {
        return Err(bad("it names no host"));
    };
    if host.starts_with('-') || parsed.user().is_some_and(|u| u.starts_with('-')) {
        return Err(bad("a user or host may not start with '-'"));
    }
    if parsed.password().is_some() {
        return Err(bad(
            "it contains a password; put the token in the parameter store and name it in \
             `source: { token_secret: … }` instead",
        ));
    }
    Ok(())
}

/// `url` with any `user:password@` reduced to `user@`, for messages.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.find('@')) {
        (Some((scheme, rest)), Some(_)) => match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') && !userinfo.contains('/') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:****@{host}")
            }
            _ => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `text` with every occurrence of each secret replaced by `****`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "****");
    }
    out
}

/// The whole chain of an error, one cause after another.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let s = cause.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = cause.source();
    }
    out
}

impl Repo {
    /// Opens the bare mirror at `path`, creating an empty one (mode 0700 parent) if the
    /// directory does not exist yet.
    pub fn open_or_init_mirror(path: &Path) -> Result<Repo, GitError> {
        if !path.join("HEAD").exists() {
            if let Some(parent) = path.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|source| GitError::Io {
                        action: "create the directory of the repository mirror",
                        path: parent.to_owned(),
                        source,
                    })?;
            }
            gix::init_bare(path).map_err(|source| GitError::Repository {
                action: "create the repository mirror".into(),
                repo: path.to_owned(),
                source,
            })?;
        }
        Repo::open(path)
    }

    /// Fetches the remote's branches and tags into this (mirror) repository. Blocking;
    /// `interrupt` set to true makes gix stop at its next check.
    pub fn fetch(&self, opts: &FetchOptions, interrupt: &AtomicBool) -> Result<FetchOutcome, GitError> {
        check_remote_url(&opts.url)?;
        let secrets: Vec<String> = match &opts.credentials {
            Credentials::Token { token, .. } => vec![token.clone()],
            Credentials::SshKey(key) => key.lines().map(str::to_owned).filter(|l| l.len() > 16).collect(),
            _ => Vec::new(),
        };
        let failed = |action: &str, e: &(dyn std::error::Error + 'static)| {
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            GitError::Fetch {
                url: redact_url(&opts.url),
                action: action.to_owned(),
                message: redact(&chain(e), &refs),
            }
        };
        let mut repo = self.local();
        // Kept alive until the fetch ends: the ssh wrapper, its config and a key file.
        let _ssh = if is_ssh(&opts.url) {
            let ssh = SshSetup::write(opts)?;
            let mut cfg = repo.config_snapshot_mut();
            cfg.set_value(
                &gix::config::tree::gitoxide::Ssh::COMMAND_WITHOUT_SHELL_FALLBACK,
                ssh.wrapper.to_string_lossy().as_ref(),
            )
            .map_err(|e| failed("configure ssh", &e))?;
            cfg.set_value(&gix::config::tree::Ssh::VARIANT, "ssh")
                .map_err(|e| failed("configure ssh", &e))?;
            cfg.commit().map_err(|e| failed("configure ssh", &e))?;
            Some(ssh)
        } else {
            None
        };
        let remote = repo
            .remote_at(opts.url.as_str())
            .and_then(|r| r.with_refspecs(REFSPECS, gix::remote::Direction::Fetch))
            .map_err(|e| failed("set up the remote", &e))?;
        let mut conn = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| failed("connect", &e))?;
        if is_http(&opts.url) {
            crate::remote::install_tls_provider();
            let timeout = opts.timeout;
            let reqwest_opts = gix::protocol::transport::client::blocking_io::http::reqwest::Options {
                configure_client: Some(Box::new(move |b| Ok(b.timeout(timeout)))),
                configure_request: None,
            };
            let http = gix::protocol::transport::client::blocking_io::http::Options {
                connect_timeout: Some(opts.timeout),
                user_agent: Some(format!("git/cutover-{}", env!("CARGO_PKG_VERSION"))),
                backend: Some(Arc::new(Mutex::new(reqwest_opts))),
                ..Default::default()
            };
            conn = conn.with_transport_options(Box::new(http));
        }
        if matches!(opts.credentials, Credentials::Token { .. })
            && opts.url.starts_with("http://")
            && !is_loopback_url(&opts.url)
        {
            return Err(GitError::BadRemote {
                url: redact_url(&opts.url),
                why: "a token is sent over plain http:// to loopback hosts only; use https://".into(),
            });
        }
        let conn = match &opts.credentials {
            Credentials::Token { username, token } => {
                let (username, token) = (username.clone(), token.clone());
                conn.with_credentials(move |action| match action {
                    gix::credentials::helper::Action::Get(ctx) => {
                        Ok(Some(gix::credentials::protocol::Outcome {
                            identity: gix::sec::identity::Account {
                                username: username.clone(),
                                password: token.clone(),
                                oauth_refresh_token: None,
                            },
                            next: ctx.into(),
                        }))
                    }
                    _ => Ok(None),
                })
            }
            // No helper: gix's default would ask the user's credential helpers and prompt.
            _ => conn.with_credentials(|_| Ok(None)),
        };
        let outcome = conn
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| failed("list the remote's refs", &e))?
            .receive(gix::progress::Discard, interrupt)
            .map_err(|e| failed("fetch", &e))?;
        let updated = match &outcome.status {
            gix::remote::fetch::Status::NoPackReceived { update_refs, .. }
            | gix::remote::fetch::Status::Change { update_refs, .. } => update_refs
                .updates
                .iter()
                .filter(|u| !matches!(u.mode, gix::remote::fetch::refs::update::Mode::NoChangeNeeded))
                .count(),
        };
        Ok(FetchOutcome {
            refs: outcome.ref_map.mappings.len(),
            updated,
        })
    }
}

/// `http://127.0.0.1…`, `http://localhost…` or `http://[::1]…`.
fn is_loopback_url(url: &str) -> bool {
    gix::url::parse(gix::bstr::BStr::new(url))
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

fn is_ssh(url: &str) -> bool {
    url.starts_with("ssh://")
        || url.starts_with("git+ssh://")
        || url.starts_with("ssh+git://")
        || !url.contains("://")
}

/// Installs rustls's ring provider once (reqwest is built without one).
pub(crate) fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first (by cutover-engine's http client); use it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The files one ssh fetch uses, removed when dropped (the known-hosts file stays).
struct SshSetup {
    /// Removed (with the key file in it) when the fetch ends.
    _dir: tempfile::TempDir,
    wrapper: PathBuf,
}

impl SshSetup {
    fn write(opts: &FetchOptions) -> Result<SshSetup, GitError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| GitError::Io { action, path, source }
        };
        let _ = std::fs::create_dir_all(&opts.work_dir);
        let _ = std::fs::set_permissions(&opts.work_dir, std::fs::Permissions::from_mode(0o700));
        let dir = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(&opts.work_dir)
            .map_err(io("create a directory for the ssh settings", &opts.work_dir))?;
        let write = |path: &Path, text: &str, mode: u32| -> Result<(), GitError> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
                .map_err(io("write an ssh settings file", path))?;
            f.write_all(text.as_bytes())
                .map_err(io("write an ssh settings file", path))
        };
        let key = match &opts.credentials {
            Credentials::SshKeyFile(p) => Some(p.clone()),
            Credentials::SshKey(text) => {
                let p = dir.path().join("key");
                let mut text = text.trim_end().to_owned();
                text.push('\n');
                write(&p, &text, 0o600)?;
                Some(p)
            }
            _ => None,
        };
        let secs = opts.timeout.as_secs().max(1);
        let mut config = String::new();
        config.push_str("Host *\n");
        config.push_str("  BatchMode yes\n");
        config.push_str("  StrictHostKeyChecking accept-new\n");
        config.push_str(&format!(
            "  UserKnownHostsFile {}\n",
            ssh_quote(&opts.work_dir.join("known_hosts"))
        ));
        config.push_str(&format!("  ConnectTimeout {secs}\n"));
        config.push_str(&format!("  ServerAliveInterval {}\n", secs.div_ceil(3).max(1)));
        config.push_str("  ServerAliveCountMax 3\n");
        config.push_str("  PasswordAuthentication no\n");
        config.push_str("  KbdInteractiveAuthentication no\n");
        if let Some(key) = key {
            config.push_str(&format!(
                "  IdentityFile {}\n  IdentitiesOnly yes\n",
                ssh_quote(&key)
            ));
        }
        let config_path = dir.path().join("config");
        write(&config_path, &config, 0o600)?;
        let wrapper = dir.path().join("ssh");
        write(
            &wrapper,
            &format!("#!/bin/sh\nexec ssh -F {} \"$@\"\n", sh_quote(&config_path)),
            0o700,
        )?;
        Ok(SshSetup { _dir: dir, wrapper })
    }
}

/// A path in ssh_config syntax (double quotes; ssh has no escape for a `"` inside).
fn ssh_quote(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('"', ""))
}

/// A path as one single-quoted sh word.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_checked() {
        for ok in [
            "https://git.example.com/org/app.git",
            "http://127.0.0.1:8080/app.git",
            "ssh://git@git.example.com:2222/org/app.git",
            "git@github.com:org/app.git",
            "git://git.example.com/app.git",
        ] {
            check_remote_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "file:///srv/app.git",
            "https://user:hunter22@git.example.com/app.git",
            "ssh://-oProxyCommand=x/app.git",
        ] {
            let err = check_remote_url(bad).expect_err(bad).to_string();
            assert!(!err.contains("hunter22"), "{err}");
        }
    }

    #[test]
    fn plain_http_is_loopback_only() {
        assert!(is_loopback_url("http://127.0.0.1:8080/a.git"));
        assert!(is_loopback_url("http://localhost/a.git"));
        assert!(is_loopback_url("http://[::1]:80/a.git"));
        assert!(!is_loopback_url("http://git.example.com/a.git"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example/a.git"));
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("auth tok-1234 failed", &["tok-1234"]), "auth **** failed");
        assert_eq!(redact_url("https://u:pw@h/x.git"), "https://u:****@h/x.git");
        let dbg = format!(
            "{:?}",
            Credentials::Token {
                username: "x".into(),
                token: "secret-token".into()
            }
        );
        assert!(!dbg.contains("secret-token"), "{dbg}");
    }

    #[test]
    fn quoting_keeps_one_word() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), "'/a b/it'\\''s'");
    }
}

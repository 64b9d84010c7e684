//! Registry credentials from Docker's own client configuration, for a
//! `registry:` without `username`: what `docker login <host>` saved.
//!
//! The file is `$DOCKER_CONFIG/config.json` when `DOCKER_CONFIG` is set, else
//! `$HOME/.docker/config.json` (the docker CLI's rule). For the registry's
//! `host[:port]`:
//!
//! 1. `credHelpers.<host>`, else `credsStore`, names a credential helper:
//!    `docker-credential-<name> get` runs with the host on stdin (no shell,
//!    the name checked to be `[A-Za-z0-9._-]+`, 10 s at most) and its JSON
//!    `Username`/`Secret` is the account; "credentials not found" is no account;
//! 2. else `auths.<host>` (the key compared without a scheme and path, as the CLI
//!    does): `auth` (base64 of `user:password`) or `username` + `password`. An
//!    `identitytoken` (OAuth refresh token) is not supported and says so.
//!
//! No file, or no entry for the host: anonymous, as before. Rejected: the docker
//! CLI's `docker login` from Cutover (it would write the file and needs the CLI).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::DockerError;

/// A registry account: user name and password (or token). Its Debug hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAccount {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAccount({:?}, ****)", self.username)
    }
}

/// Where the docker CLI keeps its configuration, from `DOCKER_CONFIG` and `HOME`.
pub fn docker_config_file(
    docker_config: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    match docker_config.filter(|d| !d.is_empty()) {
        Some(dir) => Some(Path::new(dir).join("config.json")),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".docker").join("config.json")),
    }
}

/// The account `docker login` saved for `host` (`host[:port]`) in this process's
/// docker configuration ([`docker_config_file`] of its environment).
pub async fn docker_login_account(host: &str) -> Result<Option<RegistryAccount>, DockerError> {
    let Some(file) = docker_config_file(
        std::env::var_os("DOCKER_CONFIG").as_deref(),
        std::env::var_os("HOME").as_deref(),
    ) else {
        return Ok(None);
    };
    account_in(&file, host, Path::new("")).await
}

/// What the source of credentials for a host is.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Helper(String),
    Account(RegistryAccount),
    None,
}

/// The account for `host` in the configuration `file`; helpers are looked up in
/// `helper_dir` when it is not empty (tests), else on `PATH`.
pub(crate) async fn account_in(
    file: &Path,
    host: &str,
    helper_dir: &Path,
) -> Result<Option<RegistryAccount>, DockerError> {
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DockerError::DockerConfig {
                path: file.to_owned(),
                problem: "cannot be read".to_owned(),
                source: Some(source),
            });
        }
    };
    let bad = |problem: String| DockerError::DockerConfig {
        path: file.to_owned(),
        problem,
        source: None,
    };
    match source_for(&text, host).map_err(bad)? {
        Source::None => Ok(None),
        Source::Account(account) => Ok(Some(account)),
        Source::Helper(name) => run_helper(&name, host, helper_dir).await,
    }
}

/// Reads the configuration's entry for `host`.
fn source_for(text: &[u8], host: &str) -> Result<Source, String> {
    let config: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("is not valid JSON ({e})"))?;
    let helper = config["credHelpers"][host]
        .as_str()
        .or_else(|| config["credsStore"].as_str())
        .filter(|n| !n.is_empty());
    if let Some(name) = helper {
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(format!(
                "names the credential helper {name:?}, which is not a helper name ([A-Za-z0-9._-]); fix \
                 credsStore/credHelpers or set registry.username and registry.password_secret"
            ));
        }
        return Ok(Source::Helper(name.to_owned()));
    }
    let Some(auths) = config["auths"].as_object() else {
        return Ok(Source::None);
    };
    let Some(entry) = auths
        .iter()
        .find(|(key, _)| normalized(key) == host)
        .map(|(_, v)| v)
    else {
        return Ok(Source::None);
    };
    if let Some(encoded) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| {
                format!("has an auths.{host}.auth that is not base64; run `docker login {host}` again")
            })?;
        let raw =
            String::from_utf8(raw).map_err(|_| format!("has an auths.{host}.auth that is not UTF-8 text"))?;
        let (username, password) = raw
            .split_once(':')
            .ok_or_else(|| format!("has an auths.{host}.auth without a ':' between user and password"))?;
        return Ok(Source::Account(RegistryAccount {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    if let (Some(username), Some(password)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(Source::Account(RegistryAccount {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    if entry["identitytoken"].is_string() {
        return Err(format!(
            "holds an identity token (OAuth) for {host}, which Cutover does not support; set \
             registry.username and registry.password_secret instead"
        ));
    }
    Ok(Source::None)
}

/// An `auths` key as the docker CLI compares it: no scheme, nothing after the host.
fn normalized(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// `docker-credential-<name> get`, the host on stdin.
async fn run_helper(
    name: &str,
    host: &str,
    helper_dir: &Path,
) -> Result<Option<RegistryAccount>, DockerError> {
    let program = format!("docker-credential-{name}");
    let path = if helper_dir.as_os_str().is_empty() {
        PathBuf::from(&program)
    } else {
        helper_dir.join(&program)
    };
    let failed = |problem: String| DockerError::CredentialHelper {
        helper: program.clone(),
        host: host.to_owned(),
        problem,
    };
    let mut child = tokio::process::Command::new(&path)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failed(format!(
                "could not be started ({e}); install it on this machine, or remove credsStore/credHelpers \
                 from the docker configuration and set registry.username and registry.password_secret"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        stdin
            .write_all(host.as_bytes())
            .await
            .map_err(|e| failed(format!("did not read the host from stdin ({e})")))?;
    }
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| failed("did not answer within 10 s".to_owned()))?
        .map_err(|e| failed(format!("failed ({e})")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let said = format!(
            "{} {}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let said: String = said.trim().chars().take(200).collect();
        return Err(failed(format!("exited with {} ({said})", output.status)));
    }
    let answer: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|_| failed("answered something that is not JSON with Username and Secret".to_owned()))?;
    match (answer["Username"].as_str(), answer["Secret"].as_str()) {
        (Some(username), Some(password)) if !password.is_empty() => Ok(Some(RegistryAccount {
            username: username.to_owned(),
            password: password.to_owned(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(user: &str, password: &str) -> Source {
        Source::Account(RegistryAccount {
            username: user.to_owned(),
            password: password.to_owned(),
        })
    }

    #[test]
    fn the_file_is_found_as_the_docker_cli_finds_it() {
        use std::ffi::OsStr;
        assert_eq!(
            docker_config_file(Some(OsStr::new("/etc/dc")), Some(OsStr::new("/home/u"))),
            Some(PathBuf::from("/etc/dc/config.json"))
        );
        assert_eq!(
            docker_config_file(Some(OsStr::new("")), Some(OsStr::new("/home/u"))),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(docker_config_file(None, None), None);
    }

    #[test]
    fn auths_give_the_account_of_the_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:pa:ss");
        let text = format!(
            r#"{{"auths": {{"https://reg.example.com/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "u", "password": "p"}},
                "other.example.com": {{"auth": "{auth}"}}}}}}"#
        );
        // The password may hold ':'; only the first one separates.
        assert_eq!(
            source_for(text.as_bytes(), "reg.example.com"),
            Ok(account("ci", "pa:ss"))
        );
        assert_eq!(
            source_for(text.as_bytes(), "127.0.0.1:5000"),
            Ok(account("u", "p"))
        );
        assert_eq!(source_for(text.as_bytes(), "127.0.0.1:5001"), Ok(Source::None));
        assert_eq!(source_for(b"{}", "reg.example.com"), Ok(Source::None));
    }

    #[test]
    fn helpers_are_named_and_bad_entries_say_what_to_fix() {
        let text = br#"{"credsStore": "pass", "credHelpers": {"gcr.io": "gcloud"}, "auths": {"gcr.io": {}}}"#;
        assert_eq!(
            source_for(text, "gcr.io"),
            Ok(Source::Helper("gcloud".to_owned()))
        );
        assert_eq!(
            source_for(text, "reg.example.com"),
            Ok(Source::Helper("pass".to_owned()))
        );
        let err = source_for(br#"{"credsStore": "../../bin/sh"}"#, "x").unwrap_err();
        assert!(err.contains("not a helper name"), "{err}");
        let err = source_for(br#"{"auths": {"x": {"auth": "%%%"}}}"#, "x").unwrap_err();
        assert!(
            err.contains("not base64") && err.contains("docker login x"),
            "{err}"
        );
        let err = source_for(br#"{"auths": {"x": {"identitytoken": "t"}}}"#, "x").unwrap_err();
        assert!(
            err.contains("identity token") && err.contains("registry.username"),
            "{err}"
        );
        assert!(
            source_for(b"not json", "x")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[tokio::test]
    async fn a_credential_helper_gets_the_host_on_stdin() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // The helper answers for the host it reads, and "not found" for others.
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r host\n\
             if [ \"$host\" = reg.example.com ]; then\n\
             printf '{\"ServerURL\":\"%s\",\"Username\":\"helped\",\"Secret\":\"s3cret\"}' \"$host\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"credsStore": "fake"}"#).unwrap();
        let found = account_in(&config, "reg.example.com", dir.path()).await.unwrap();
        assert_eq!(
            found,
            Some(RegistryAccount {
                username: "helped".to_owned(),
                password: "s3cret".to_owned()
            })
        );
        assert_eq!(
            account_in(&config, "other.example.com", dir.path())
                .await
                .unwrap(),
            None
        );
        std::fs::write(&config, r#"{"credsStore": "missing"}"#).unwrap();
        let err = account_in(&config, "reg.example.com", dir.path())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("docker-credential-missing"), "{err}");
        // No file: no account.
        assert_eq!(
            account_in(&dir.path().join("none.json"), "x", dir.path())
                .await
                .unwrap(),
            None
        );
    }
}

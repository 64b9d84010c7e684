//! A remote `repo:`: where its mirror lives and when it is fetched.
//!
//! The mirror is `<data-dir>/source/<app>-<12 hex of SHA-256(url)>.git`: derived from
//! the validated app name and a hash, never from the URL's text, so no URL can name a
//! path; a changed URL gets a fresh mirror rather than mixing two remotes' refs.
//!
//! Fetches happen (one at a time per server, `fetch_lock`) before a typed version is
//! resolved (best effort: a host that is down must not block a rollback to a SHA the
//! mirror has), in Source (a failure fails the run), before `versions` and each
//! auto-deploy pass (best effort), and on demand (`cutover fetch`, audited). Each is
//! bounded by `source.fetch_timeout`: the blocking fetch gets the timeout for its
//! connections and requests, and the async caller stops waiting after it and sets the
//! fetch's interrupt flag. The blocking thread keeps the lock until it really ends, so a
//! late fetch never writes into the mirror next to a new one.
//!
//! Credentials are platform secrets `/<app>/secrets/<name>` (encrypted like every
//! secret; only an admin may write a key outside an environment's prefix), read for the
//! fetch only.
//!
//! Rejected: fetching in the git crate with the engine's tokio HTTP client (gix's
//! transport is blocking; a second implementation of the smart protocol is not worth it),
//! and failing a release request when the host is down (the mirror still knows every
//! commit it fetched before).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cutover_core::Actor;
use cutover_core::config::{Config, RepoSource};
use cutover_git::{Credentials, FetchOptions, FetchOutcome};
use cutover_store::ParamKey;
use serde_json::json;
use sha2::Digest;

use crate::{Engine, EngineError};

/// Where the mirror of a remote `repo:` lives, or `None` for a local repository.
pub fn mirror_path(data_dir: &Path, config: &Config) -> Option<PathBuf> {
    let RepoSource::Url { url } = &config.repo else {
        return None;
    };
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Some(data_dir.join("source").join(format!("{}-{hex}.git", config.app)))
}

/// The per-server fetch lock.
#[derive(Default)]
pub(crate) struct FetchLock(Arc<tokio::sync::Mutex<()>>);

impl Engine {
    /// The remote URL of `repo:`, if it is one.
    pub fn remote_url(&self) -> Option<String> {
        match &self.config().repo {
            RepoSource::Url { url } => Some(url.clone()),
            RepoSource::Path { .. } => None,
        }
    }

    /// The credentials `source:` names, read from the parameter store.
    async fn source_credentials(&self, url: &str) -> Result<Credentials, EngineError> {
        let config = self.config();
        let s = &config.source;
        let secret = |name: &str| -> Result<ParamKey, EngineError> {
            Ok(ParamKey::parse(&format!("/{}/secrets/{name}", config.app))?)
        };
        let read = |key: ParamKey, field: &'static str| async move {
            self.secret_value(&key).await?.ok_or_else(|| {
                EngineError::Refused(format!(
                    "source.{field} names {key}, which is not set; set it (an admin) with \
                     `cutover param put {key} VALUE`"
                ))
            })
        };
        let ssh = !url.starts_with("https://") && !url.starts_with("http://") && !url.starts_with("git://");
        Ok(match (ssh, &s.token_secret, &s.ssh_key_file, &s.ssh_key_secret) {
            (false, Some(name), _, _) => Credentials::Token {
                username: s.token_user.clone(),
                token: read(secret(name)?, "token_secret").await?,
            },
            (true, _, Some(file), _) => Credentials::SshKeyFile(file.clone()),
            (true, _, _, Some(name)) => Credentials::SshKey(read(secret(name)?, "ssh_key_secret").await?),
            _ => Credentials::None,
        })
    }

    /// Fetches the remote `repo:` into the mirror; `Ok(None)` for a local repository.
    /// `why` goes to the server log.
    pub async fn fetch_source(&self, why: &str) -> Result<Option<FetchOutcome>, EngineError> {
        let Some(url) = self.remote_url() else {
            return Ok(None);
        };
        let timeout = self.config().source.fetch_timeout;
        let credentials = self.source_credentials(&url).await?;
        let repo = self.repo().clone();
        let work_dir = repo
            .path()
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.data_dir().join("source"));
        let opts = FetchOptions {
            url: url.clone(),
            credentials,
            timeout,
            work_dir,
        };
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = interrupt.clone();
        let lock = self.inner.fetch_lock.0.clone();
        let started = std::time::Instant::now();
        let work = async move {
            let guard = lock.lock_owned().await;
            tokio::task::spawn_blocking(move || {
                let _guard = guard;
                repo.fetch(&opts, &flag)
            })
            .await
        };
        let fetched = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(EngineError::Internal(format!("fetch task failed: {e}"))),
            Err(_) => {
                interrupt.store(true, Ordering::Relaxed);
                let message = format!(
                    "fetching {url} did not finish within {}s (source.fetch_timeout): the git host does not \
                     answer or is too slow; check that it is up and reachable from this server, or raise \
                     source.fetch_timeout in cutover.yml",
                    timeout.as_secs_f64()
                );
                tracing::warn!(why, "{message}");
                return Err(EngineError::Conflict(message));
            }
        };
        match fetched {
            Ok(outcome) => {
                tracing::info!(
                    why,
                    refs = outcome.refs,
                    updated = outcome.updated,
                    ms = started.elapsed().as_millis() as u64,
                    "fetched {url}"
                );
                Ok(Some(outcome))
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(why, "{message}");
                Err(EngineError::Conflict(message))
            }
        }
    }

    /// A fetch whose failure is only logged: the mirror still has what it fetched before.
    pub(crate) async fn fetch_source_best_effort(&self, why: &str) {
        if let Err(e) = self.fetch_source(why).await {
            tracing::warn!(why, error = %e.chain(), "fetch failed; using the commits fetched before");
        }
    }

    /// `cutover fetch`: fetches now, audited.
    pub async fn fetch_on_demand(&self, actor: &Actor) -> Result<FetchOutcome, EngineError> {
        let Some(url) = self.remote_url() else {
            return Err(EngineError::Refused(
                "repo: in cutover.yml is a local repository, which Cutover reads in place; there is nothing \
                 to fetch"
                    .into(),
            ));
        };
        let result = self.fetch_source("cutover fetch").await;
        let detail = match &result {
            Ok(Some(o)) => json!({ "url": url, "refs": o.refs, "updated": o.updated }),
            Ok(None) => json!({ "url": url }),
            Err(e) => json!({ "url": url, "error": e.to_string() }),
        };
        self.audit(actor, "source.fetch", "source", detail).await;
        result?.ok_or_else(|| EngineError::Internal("fetch of a remote returned nothing".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_path_is_not_made_of_the_url() {
        let text = "app: shop\nrepo: \"https://h/../../etc/x.git\"\nservices: { web: { run: x } }\n\
                    environments: { dev: { tier: dev } }\n";
        let cfg = cutover_core::config::parse(text, Path::new("/srv/cutover.yml")).expect("config");
        let p = mirror_path(Path::new("/data"), &cfg).expect("a URL");
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(p.starts_with("/data/source"), "{}", p.display());
        assert!(name.starts_with("shop-") && name.ends_with(".git") && name.len() == "shop-".len() + 12 + 4);
    }
}

//! Push webhooks from the git host (`POST /api/v1/hooks/git`): a push to a branch an
//! auto-deploy environment watches fetches the remote at once and runs the auto-deploy
//! check for those environments, instead of waiting for the next poll (which stays as the
//! fallback for a lost delivery).
//!
//! Authentication is the delivery's signature with the secret `/<app>/secrets/<name>`
//! (`source.webhook_secret`), in one of three forms:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`, delivery id
//!   `X-GitHub-Delivery`;
//! - GitLab: `X-Gitlab-Token: <secret>`, delivery id `X-Gitlab-Event-UUID`;
//! - generic: `X-Cutover-Timestamp: <unix seconds>` and
//!   `X-Cutover-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, delivery
//!   id `X-Cutover-Delivery` (else the signature); a timestamp more than five minutes
//!   away is refused, so a captured delivery cannot be replayed later.
//!
//! Every comparison is constant-time. A delivery id seen in the last day is ignored (the
//! memory is bounded; it is not persisted: a GitHub replay after a restart only triggers a
//! fetch and an auto-deploy check of the branch head, which are idempotent). A refused
//! delivery is logged and audited (with the provider and the reason, never the body).
//!
//! Rejected: a bearer token for the host (hosts sign, they do not hold API tokens), and
//! deploying the SHA named in the body (the body is only a hint to fetch; what is deployed is
//! what the fetch brought, resolved like every auto-deploy).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_core::Actor;
use cutover_core::config::Tier;
use cutover_store::ParamKey;
use serde_json::json;

use crate::pipeline::SYSTEM_ACTOR;
use crate::{Engine, EngineError};

/// The most a push body may weigh (GitHub's pushes of many commits stay far below).
pub const HOOK_BODY_LIMIT: usize = 1024 * 1024;
/// How far a generic delivery's timestamp may be from now.
const MAX_SKEW: Duration = Duration::from_secs(300);
/// How long a delivery id is remembered.
const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The most delivery ids remembered.
const REPLAY_MAX: usize = 10_000;

/// The headers of a delivery that matter, as the server read them.
#[derive(Debug, Default, Clone)]
pub struct HookHeaders {
    pub github_signature: Option<String>,
    pub github_delivery: Option<String>,
    pub github_event: Option<String>,
    pub gitlab_token: Option<String>,
    pub gitlab_delivery: Option<String>,
    pub cutover_signature: Option<String>,
    pub cutover_timestamp: Option<String>,
    pub cutover_delivery: Option<String>,
}

/// What a delivery led to.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HookOutcome {
    /// `github`, `gitlab` or `generic`.
    pub provider: String,
    /// The pushed branch, if the body named one.
    pub branch: Option<String>,
    /// `accepted` (a fetch and auto-deploy check started for `environments`), `not_watched`
    /// (no auto-deploy environment follows the branch), `replayed` (the delivery id was seen
    /// before), `ignored` (not a push).
    pub result: String,
    pub environments: Vec<String>,
}

/// A refused delivery: the reason, for the 401 answer and the audit log.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Delivery ids seen recently.
#[derive(Default)]
pub(crate) struct Deliveries(Mutex<HashMap<String, Instant>>);

impl Deliveries {
    /// Records `id`; false if it was seen within the window.
    fn first_time(&self, id: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < REPLAY_WINDOW);
        if seen.contains_key(id) {
            return false;
        }
        if seen.len() >= REPLAY_MAX
            && let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
        {
            seen.remove(&oldest);
        }
        seen.insert(id.to_owned(), now);
        true
    }
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex.into_bytes()
}

/// Equal bytes, in time that depends on the lengths only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a delivery's signature against `secret`; returns the provider and the delivery id.
fn verify(
    h: &HookHeaders,
    secret: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(&'static str, String), String> {
    let key = secret.as_bytes();
    if let Some(sig) = &h.github_signature {
        let expected = [b"sha256=".as_slice(), &hmac_hex(key, &[body])].concat();
        if !ct_eq(sig.trim().as_bytes(), &expected) {
            return Err("X-Hub-Signature-256 does not match the body signed with the webhook secret".into());
        }
        let id = h.github_delivery.clone().unwrap_or_else(|| sig.clone());
        return Ok(("github", id));
    }
    if let Some(token) = &h.gitlab_token {
        if !ct_eq(token.as_bytes(), key) {
            return Err("X-Gitlab-Token is not the webhook secret".into());
        }
        // Without a delivery id a GitLab delivery cannot be told from a replay: refuse it.
        let Some(id) = h.gitlab_delivery.clone() else {
            return Err("a GitLab delivery without X-Gitlab-Event-UUID cannot be checked for replays".into());
        };
        return Ok(("gitlab", id));
    }
    if let Some(sig) = &h.cutover_signature {
        let ts = h
            .cutover_timestamp
            .as_deref()
            .ok_or("X-Cutover-Signature without X-Cutover-Timestamp")?;
        let at: i64 = ts
            .trim()
            .parse()
            .map_err(|_| "X-Cutover-Timestamp is not a number of seconds since the Unix epoch")?;
        let expected = [
            b"sha256=".as_slice(),
            &hmac_hex(key, &[ts.trim().as_bytes(), b".", body]),
        ]
        .concat();
        if !ct_eq(sig.trim().as_bytes(), &expected) {
            return Err(
                "X-Cutover-Signature does not match \"<timestamp>.<body>\" signed with the webhook secret"
                    .into(),
            );
        }
        if now_unix.abs_diff(at) > MAX_SKEW.as_secs() {
            return Err(format!(
                "X-Cutover-Timestamp {at} is more than {}s away from this server's clock (a replay, or a skewed clock)",
                MAX_SKEW.as_secs()
            ));
        }
        let id = h.cutover_delivery.clone().unwrap_or_else(|| sig.clone());
        return Ok(("generic", id));
    }
    Err(
        "no signature: expected X-Hub-Signature-256 (GitHub), X-Gitlab-Token (GitLab) or \
         X-Cutover-Signature with X-Cutover-Timestamp"
            .into(),
    )
}

/// The pushed branch of a GitHub, GitLab or generic push body (`ref: refs/heads/<b>`, or
/// `branch: <b>` in the generic form).
fn pushed_branch(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(r) = v["ref"].as_str() {
        return r.strip_prefix("refs/heads/").map(str::to_owned);
    }
    v["branch"].as_str().map(str::to_owned)
}

impl Engine {
    /// Handles one push delivery (see the module doc).
    pub async fn git_hook(&self, headers: &HookHeaders, body: &[u8]) -> Result<HookOutcome, HookError> {
        let config = self.config();
        let system = Actor::parse(SYSTEM_ACTOR).unwrap_or_else(|e| panic!("system actor: {e}"));
        let refuse = |reason: String| async move {
            tracing::warn!(reason, "git push webhook refused");
            let system = Actor::parse(SYSTEM_ACTOR).unwrap_or_else(|e| panic!("system actor: {e}"));
            self.audit(
                &system,
                "source.hook.refused",
                "source",
                json!({ "reason": reason }),
            )
            .await;
            HookError::Unauthorized(format!("push webhook refused: {reason}"))
        };
        let Some(name) = &config.source.webhook_secret else {
            return Err(refuse(
                "no webhook secret is configured; set source.webhook_secret in cutover.yml".into(),
            )
            .await);
        };
        let key = ParamKey::parse(&format!("/{}/secrets/{name}", config.app)).map_err(EngineError::from)?;
        let Some(secret) = self.secret_value(&key).await? else {
            return Err(refuse(format!("the webhook secret {key} is not set")).await);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (provider, delivery) = match verify(headers, &secret, body, now) {
            Ok(v) => v,
            Err(reason) => return Err(refuse(reason).await),
        };
        let branch = pushed_branch(body);
        let mut outcome = HookOutcome {
            provider: provider.to_owned(),
            branch: branch.clone(),
            result: String::new(),
            environments: Vec::new(),
        };
        if !self
            .inner
            .deliveries
            .first_time(&format!("{provider}:{delivery}"))
        {
            tracing::info!(provider, delivery, "git push webhook replayed: ignored");
            outcome.result = "replayed".into();
            return Ok(outcome);
        }
        if headers.github_event.as_deref().is_some_and(|e| e != "push") {
            outcome.result = "ignored".into();
            return Ok(outcome);
        }
        let watched: Vec<(cutover_core::EnvName, String)> = config
            .environments
            .iter()
            .filter(|(_, e)| e.auto_deploy && matches!(e.tier, Tier::Dev | Tier::Integration))
            .filter_map(|(n, e)| e.branch.clone().map(|b| (n.clone(), b)))
            .filter(|(_, b)| branch.as_deref() == Some(b.as_str()))
            .collect();
        outcome.environments = watched.iter().map(|(n, _)| n.to_string()).collect();
        if watched.is_empty() {
            outcome.result = "not_watched".into();
            return Ok(outcome);
        }
        outcome.result = "accepted".into();
        self.audit(
            &system,
            "source.hook",
            "source",
            json!({ "provider": provider, "delivery": delivery, "branch": branch, "environments": outcome.environments }),
        )
        .await;
        let engine = self.clone();
        tokio::spawn(async move {
            engine.fetch_source_best_effort("push webhook").await;
            for (env, branch) in watched {
                if let Err(e) = engine.watch_env(&env, &branch).await {
                    tracing::warn!(env = %env, branch, error = %e.chain(), "auto-deploy after a push webhook failed");
                }
            }
        });
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(sig: &str) -> HookHeaders {
        HookHeaders {
            github_signature: Some(sig.into()),
            github_delivery: Some("d-1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn github_signatures_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = format!(
            "sha256={}",
            String::from_utf8(hmac_hex(b"s3cret", &[body])).unwrap()
        );
        assert_eq!(
            verify(&github(&good), "s3cret", body, 0).unwrap(),
            ("github", "d-1".into())
        );
        assert!(verify(&github(&good), "other", body, 0).is_err());
        assert!(verify(&github(&good), "s3cret", b"{}", 0).is_err());
        assert!(verify(&HookHeaders::default(), "s3cret", body, 0).is_err());
    }

    #[test]
    fn generic_signatures_carry_a_fresh_timestamp() {
        let body = br#"{"branch":"main"}"#;
        let h = |ts: &str| HookHeaders {
            cutover_timestamp: Some(ts.into()),
            cutover_signature: Some(format!(
                "sha256={}",
                String::from_utf8(hmac_hex(b"k", &[ts.as_bytes(), b".", body])).unwrap()
            )),
            ..Default::default()
        };
        assert!(verify(&h("1000"), "k", body, 1100).is_ok());
        let err = verify(&h("1000"), "k", body, 1000 + 301).unwrap_err();
        assert!(err.contains("more than 300s"), "{err}");
        assert_eq!(pushed_branch(body).as_deref(), Some("main"));
        assert_eq!(pushed_branch(br#"{"ref":"refs/tags/v1"}"#), None);
    }

    #[test]
    fn deliveries_are_seen_once() {
        let d = Deliveries::default();
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }
}

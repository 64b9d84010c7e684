//! Stage 5, "Configure message broker": applies the `rabbitmq:` section of
//! `cutover.yml` (vhosts, users, permissions) through the RabbitMQ
//! management HTTP API.
//!
//! Idempotent: every object is read first (`GET /api/vhosts/{v}`,
//! `/api/users/{u}`, `/api/permissions/{v}/{u}`) and only differences are
//! written (`PUT` of the same paths); each decision is one log line
//! ("created vhost /shop-eu", "permissions of shop on /shop-eu unchanged").
//! Nothing is ever deleted: a vhost or user removed from `cutover.yml` stays
//! on the broker, since deleting a vhost drops its queues and their messages.
//!
//! Secrets. `password_secret: rabbit_shop` names the parameter
//! `/<app>-<env>/secrets/rabbit_shop` of the environment being deployed
//! (`cutover param put /shop-prod/secrets/rabbit_shop '<password>'`). The
//! management API is called as `admin_user` (default `guest`) with the
//! password in `/<app>-<env>/secrets/<admin_password_secret>`, or `guest`
//! when `admin_password_secret` is unset (RabbitMQ's default administrator,
//! which may log in from loopback only). Every secret is read before anything
//! is changed, so a missing one fails the stage with nothing half-applied;
//! the error names the key and the command that sets it. Passwords never
//! appear in a log line or error.
//!
//! Passwords are compared, not re-sent every run: the API returns the
//! user's `password_hash`, by default `base64(salt(4 bytes) ++
//! sha256(salt ++ password))` (`rabbit_password_hashing_sha256`, or sha512),
//! which is verified locally. Rejected: remembering a hash of the last
//! applied password in the parameter store, which misses a password changed
//! on the broker by hand and adds a pipeline-owned key; and re-sending the
//! password every run, which makes "nothing changed" impossible to report.
//! A hash in another format (md5 of old brokers) is re-sent, and said so.
//!
//! Plain `http://` only: the workspace builds reqwest without TLS, so an
//! `https://` URL is refused with an explanation rather than failing deep
//! in the client. System proxies are ignored (the broker is on loopback or
//! a private network; a proxy in between would only see credentials).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use cutover_core::EnvName;
use cutover_core::config::RabbitMq;
use cutover_store::ParamKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::Engine;
use crate::pipeline::executor::{StageError, StageOutcome};
use crate::pipeline::logs::StageLog;

const DEFAULT_ADMIN: &str = "guest";
const DEFAULT_ADMIN_PASSWORD: &str = "guest";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies `rabbit` to the broker for `env`; `Done("n changes")` or
/// `Done("nothing changed")`.
pub(crate) async fn apply(
    engine: &Engine,
    env: &EnvName,
    rabbit: &RabbitMq,
    log: &StageLog,
) -> Result<StageOutcome, StageError> {
    if rabbit.url.starts_with("https://") {
        return Err(StageError::Failed(format!(
            "rabbitmq.url is {}, but this Cutover speaks plain http only (it is built without TLS); \
             use the broker's http management listener, e.g. http://127.0.0.1:15672",
            rabbit.url
        )));
    }
    let secrets = Secrets::read(engine, env, rabbit).await?;
    let api = Api::new(rabbit, &secrets)?;
    log.line(format!(
        "RabbitMQ management API {} as {}",
        rabbit.url, api.admin_user
    ))
    .await;
    let mut changes = 0usize;

    for vhost in &rabbit.vhosts {
        let path = format!("/api/vhosts/{}", enc(&vhost.name));
        if api.get(&path).await?.is_some() {
            log.line(format!("vhost {} exists", vhost.name)).await;
        } else {
            api.put(&path, &json!({})).await?;
            log.line(format!("created vhost {}", vhost.name)).await;
            changes += 1;
        }
    }

    for (user, password) in &secrets.users {
        let path = format!("/api/users/{}", enc(user));
        let (tags, verdict) = match api.get(&path).await? {
            None => (String::new(), "created user"),
            Some(found) => match password_matches(&found, password) {
                Some(true) => {
                    log.line(format!("user {user} unchanged")).await;
                    continue;
                }
                Some(false) => (tags_of(&found), "changed the password of user"),
                None => (
                    tags_of(&found),
                    "set the password of user (its stored hash cannot be compared)",
                ),
            },
        };
        let body = json!({ "password": password, "tags": tags });
        api.put(&path, &body).await?;
        log.line(format!("{verdict} {user}")).await;
        changes += 1;
    }

    for vhost in &rabbit.vhosts {
        for user in &vhost.users {
            let path = format!("/api/permissions/{}/{}", enc(&vhost.name), enc(&user.name));
            let wanted = [
                ("configure", &user.configure),
                ("write", &user.write),
                ("read", &user.read),
            ];
            let current = api.get(&path).await?;
            let differences: Vec<String> = match &current {
                None => wanted.iter().map(|(k, v)| format!("{k} \"{v}\"")).collect(),
                Some(found) => wanted
                    .iter()
                    .filter_map(|(k, v)| {
                        let now = found[*k].as_str().unwrap_or_default();
                        (now != v.as_str()).then(|| format!("{k} \"{now}\" -> \"{v}\""))
                    })
                    .collect(),
            };
            let on = format!("{} on {}", user.name, vhost.name);
            if differences.is_empty() {
                log.line(format!("permissions of {on} unchanged")).await;
                continue;
            }
            let body = json!({ "configure": user.configure, "write": user.write, "read": user.read });
            api.put(&path, &body).await?;
            let verb = if current.is_none() { "set" } else { "changed" };
            log.line(format!("{verb} permissions of {on}: {}", differences.join(", ")))
                .await;
            changes += 1;
        }
    }

    Ok(StageOutcome::Done(Some(match changes {
        0 => "nothing changed".to_owned(),
        1 => "1 change".to_owned(),
        n => format!("{n} changes"),
    })))
}

/// Every password this stage needs, read before anything is changed.
struct Secrets {
    admin_user: String,
    admin_password: String,
    /// Where the admin password came from, for authentication errors.
    admin_source: String,
    /// User name -> password, each user once (users are global in RabbitMQ).
    users: BTreeMap<String, String>,
}

impl Secrets {
    async fn read(engine: &Engine, env: &EnvName, rabbit: &RabbitMq) -> Result<Secrets, StageError> {
        let prefix = format!("{}/secrets", engine.config().param_prefix(env));
        let mut missing: Vec<String> = Vec::new();
        let mut lookup = async |name: &str, what: &str| -> Result<Option<String>, StageError> {
            let raw = format!("{prefix}/{name}");
            let key = ParamKey::parse(&raw).map_err(|e| {
                StageError::Failed(format!("secret {name:?} ({what}) is not a usable key: {e}"))
            })?;
            match engine.secret_value(&key).await? {
                Some(v) => Ok(Some(v)),
                None => {
                    missing.push(format!("{raw} ({what}): cutover param put {raw} '<password>'"));
                    Ok(None)
                }
            }
        };

        let admin_user = rabbit
            .admin_user
            .clone()
            .unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
        let admin_source = match &rabbit.admin_password_secret {
            None => "the default password guest (rabbitmq.admin_password_secret is unset)".to_owned(),
            Some(name) => format!("the password in {prefix}/{name}"),
        };
        let admin_password = match &rabbit.admin_password_secret {
            None => Some(DEFAULT_ADMIN_PASSWORD.to_owned()),
            Some(name) => {
                let what = format!("password of the management user {admin_user}");
                lookup(name, &what).await?
            }
        };
        let mut users = BTreeMap::new();
        let mut secret_of: BTreeMap<&str, &str> = BTreeMap::new();
        for user in rabbit.vhosts.iter().flat_map(|v| &v.users) {
            match secret_of.insert(&user.name, &user.password_secret) {
                Some(other) if other != user.password_secret => {
                    return Err(StageError::Failed(format!(
                        "RabbitMQ user {} is declared with two password secrets ({other} and {}); \
                         a user has one password across vhosts: use the same password_secret everywhere",
                        user.name, user.password_secret
                    )));
                }
                Some(_) => continue,
                None => {}
            }
            let what = format!("password of RabbitMQ user {}", user.name);
            if let Some(p) = lookup(&user.password_secret, &what).await? {
                users.insert(user.name.clone(), p);
            }
        }
        if !missing.is_empty() {
            return Err(StageError::Failed(format!(
                "missing secret{}; nothing was changed on the broker. Set {}:\n  {}",
                if missing.len() == 1 { "" } else { "s" },
                if missing.len() == 1 { "it" } else { "them" },
                missing.join("\n  ")
            )));
        }
        Ok(Secrets {
            admin_user,
            admin_password: admin_password.unwrap_or_default(),
            admin_source,
            users,
        })
    }
}

/// The management API, as the admin user.
struct Api {
    client: reqwest::Client,
    base: String,
    admin_user: String,
    admin_password: String,
    /// Names the admin password's origin in authentication errors.
    admin_source: String,
}

impl Api {
    fn new(rabbit: &RabbitMq, secrets: &Secrets) -> Result<Api, StageError> {
        let client = crate::http::client_builder(&rabbit.url)
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| StageError::Failed(format!("cannot create the HTTP client: {e}")))?;
        Ok(Api {
            client,
            base: rabbit.url.trim_end_matches('/').to_owned(),
            admin_user: secrets.admin_user.clone(),
            admin_password: secrets.admin_password.clone(),
            admin_source: secrets.admin_source.clone(),
        })
    }

    /// The object at `path`, or `None` when the broker answers 404.
    async fn get(&self, path: &str) -> Result<Option<Value>, StageError> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        match status {
            s if s.is_success() => serde_json::from_str(&body).map(Some).map_err(|e| {
                StageError::Failed(format!(
                    "GET {}{path} answered {s} with something that is not JSON ({e}); \
                     is rabbitmq.url the management API (usually port 15672)?",
                    self.base
                ))
            }),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused("GET", path, s)),
        }
    }

    /// PUTs `body`.
    async fn put(&self, path: &str, body: &Value) -> Result<(), StageError> {
        let (status, _) = self.call(Method::PUT, path, Some(body)).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.refused("PUT", path, status))
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), StageError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .basic_auth(&self.admin_user, Some(&self.admin_password));
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| {
            StageError::Failed(format!(
                "cannot reach the RabbitMQ management API ({method} {url}): {}; is the broker running \
                 with the management plugin (rabbitmq-plugins enable rabbitmq_management)? \
                 For a local test broker run scripts/rabbitmq-setup as root",
                chain(&e.without_url())
            ))
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        Ok((status, text))
    }

    /// The error of a refused call: the status and what it usually means, never the answer's
    /// body (a broker or anything posing as one may echo the request: passwords, the admin's
    /// Basic credentials).
    fn refused(&self, method: &str, path: &str, status: StatusCode) -> StageError {
        let reason = match status {
            s if s.is_redirection() => "the management API redirected the request; Cutover follows no redirect to \
                 another host or port (it would re-send passwords there): set rabbitmq.url to the management API \
                 itself"
                .to_owned(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "the management API refused user {} with {}. Check rabbitmq.admin_user and \
                 rabbitmq.admin_password_secret in cutover.yml (the user needs the administrator tag; \
                 guest may log in from loopback only)",
                self.admin_user, self.admin_source
            ),
            StatusCode::BAD_REQUEST => "the broker refused the request as invalid (its answer is not shown, since it \
                 may repeat the request's passwords); check the names and permission patterns of rabbitmq: in \
                 cutover.yml, and the broker's own log"
                .to_owned(),
            s if s.is_server_error() => "the broker failed; see its own log".to_owned(),
            _ => "unexpected answer (not shown, since it may repeat the request's passwords); see the broker's log"
                .to_owned(),
        };
        StageError::Failed(format!(
            "{method} {}{path} failed with {status}: {reason}",
            self.base
        ))
    }
}

/// Whether `password` is the one behind the user's `password_hash`;
/// `None` when the hash cannot be checked here (unknown algorithm, no hash).
fn password_matches(user: &Value, password: &str) -> Option<bool> {
    let hash = user["password_hash"].as_str().filter(|h| !h.is_empty())?;
    let raw = base64::engine::general_purpose::STANDARD.decode(hash).ok()?;
    if raw.len() <= 4 {
        return None;
    }
    let (salt, digest) = raw.split_at(4);
    let algorithm = user["hashing_algorithm"]
        .as_str()
        .unwrap_or("rabbit_password_hashing_sha256");
    let computed: Vec<u8> = match algorithm {
        "rabbit_password_hashing_sha256" => Sha256::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize()
            .to_vec(),
        "rabbit_password_hashing_sha512" => Sha512::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize()
            .to_vec(),
        _ => return None,
    };
    Some(computed == digest)
}

/// A user's tags as the PUT takes them (comma-separated); newer brokers
/// return a list, older ones a string. Kept, so a password change does not
/// strip a user's tags.
fn tags_of(user: &Value) -> String {
    match &user["tags"] {
        Value::Array(tags) => tags
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// Percent-encodes one path segment (vhost names start with `/`).
fn enc(segment: &str) -> String {
    crate::http::encode_segment(segment)
}

/// An error with its causes ("connection refused" is a source, not the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{enc, password_matches, tags_of};

    #[test]
    fn a_rabbitmq_sha256_hash_is_verified_locally() {
        // `guest` as a RabbitMQ 3.10 broker stored it.
        let user = json!({
            "password_hash": "oxyqqTeKjMtieSLIrUPCLOreUoY7lpynG3C+n2x4em72eIIg",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
        });
        assert_eq!(password_matches(&user, "guest"), Some(true));
        assert_eq!(password_matches(&user, "guesT"), Some(false));
        let md5 =
            json!({ "password_hash": "oxyqqTeKjMti", "hashing_algorithm": "rabbit_password_hashing_md5" });
        assert_eq!(password_matches(&md5, "guest"), None);
        assert_eq!(password_matches(&json!({ "password_hash": "" }), "x"), None);
    }

    #[test]
    fn vhost_names_are_one_path_segment_and_tags_survive() {
        assert_eq!(enc("/shop-eu"), "%2Fshop-eu");
        assert_eq!(enc("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(
            tags_of(&json!({ "tags": ["administrator", "monitoring"] })),
            "administrator,monitoring"
        );
        assert_eq!(tags_of(&json!({ "tags": "management" })), "management");
    }
}

//! API tokens: minting, authenticating, listing and revoking, and the first
//! start's admin token.
//!
//! A secret is `cut_` followed by 64 hex digits (32 bytes from the OS's
//! random source). Only its SHA-256 (hex) is stored, and a request's token is
//! found by hashing what it sent and looking the hash up: nothing compares a
//! secret with a stored one, so there is no comparison to time. A 256-bit
//! random secret needs no slow hash (argon2 is for human passwords).
//!
//! The token's name is the principal: the actor recorded for every change
//! made with it. Creating and revoking tokens is audited (name, grants,
//! expiry; never the secret or its hash).
//!
//! Rejected: JWTs or other self-contained tokens (revocation would need a
//! deny list anyway, and the store is consulted on every request already)
//! and showing a secret again later (it is not stored).

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use cutover_core::{Actor, EnvName, Grants, Role};
use cutover_store::{NewToken, TokenRecord};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Engine, EngineError, SYSTEM_ACTOR, now_ms};

/// The prefix of every secret; lets people (and secret scanners) recognise one.
pub const SECRET_PREFIX: &str = "cut_";

/// The name of the token made on first start.
pub const BOOTSTRAP_NAME: &str = "admin";

/// Who a request comes from, once its token checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// The token's name: the actor of the changes made with it.
    pub name: Actor,
    pub grants: Grants,
    pub expires_at_ms: Option<i64>,
}

/// Why a token was not accepted. Each message says how to get a working one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this server knows no such token (a mistyped or foreign token, or one from another server)")]
    Unknown,
    #[error("token {name:?} expired")]
    Expired { name: String },
    #[error("token {name:?} was revoked")]
    Revoked { name: String },
    #[error("the token could not be checked")]
    Store(String),
}

/// What `token_create` is asked to make.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub name: String,
    pub grants: Grants,
    /// Seconds from now; None: it never expires.
    pub expires_in_secs: Option<u64>,
}

/// A new token with its secret, which exists nowhere else: show it once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub token: TokenRecord,
    pub secret: String,
}

/// SHA-256 of a secret, lowercase hex: what the store keeps and looks up.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn new_secret() -> String {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    format!("{SECRET_PREFIX}{}", hex(&raw))
}

impl Engine {
    /// The principal behind a bearer secret, if the token is known, live and
    /// not expired.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, AuthError> {
        let secret = secret.trim();
        if !secret.starts_with(SECRET_PREFIX) {
            return Err(AuthError::Unknown);
        }
        let token = self
            .store()
            .token_find(&hash_secret(secret))
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?
            .ok_or(AuthError::Unknown)?;
        if token.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked { name: token.name });
        }
        if !token.is_live(now_ms()) {
            return Err(AuthError::Expired { name: token.name });
        }
        let name = Actor::parse(&token.name).map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(Principal {
            name,
            grants: token.grants,
            expires_at_ms: token.expires_at_ms,
        })
    }

    /// Mints a token; the answer holds the secret, which is not kept.
    pub async fn token_create(&self, req: TokenRequest, actor: &Actor) -> Result<IssuedToken, EngineError> {
        let name = Actor::parse(&req.name)?;
        if name.as_str() == SYSTEM_ACTOR {
            return Err(EngineError::Refused(format!(
                "the name {SYSTEM_ACTOR:?} is reserved for Cutover's own changes; choose another token name"
            )));
        }
        if req.grants.is_empty() {
            return Err(EngineError::Refused(
                "a token needs a role: e.g. --role viewer (every environment) or --role deployer --env dev"
                    .into(),
            ));
        }
        for env in req.grants.envs.keys() {
            self.env_name(env.as_str())?;
        }
        let expires_at_ms = match req.expires_in_secs {
            Some(0) => {
                return Err(EngineError::Refused(
                    "an expiry must be in the future, e.g. --expires 30d".into(),
                ));
            }
            Some(s) => {
                Some(now_ms().saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)))
            }
            None => None,
        };
        let secret = new_secret();
        let token = self
            .store()
            .token_create(NewToken {
                name: name.to_string(),
                secret_hash: hash_secret(&secret),
                grants: req.grants,
                created_by: actor.to_string(),
                expires_at_ms,
            })
            .await?;
        self.audit(
            actor,
            "token.create",
            &format!("token/{}", token.name),
            json!({ "grants": token.grants, "expires_at_ms": token.expires_at_ms }),
        )
        .await;
        Ok(IssuedToken { token, secret })
    }

    /// Every token, revoked ones included, oldest first (no secrets, no hashes).
    pub async fn token_list(&self) -> Result<Vec<TokenRecord>, EngineError> {
        Ok(self.store().token_list().await?)
    }

    /// Revokes the live token `name`; requests with it fail from now on.
    pub async fn token_revoke(&self, name: &str, actor: &Actor) -> Result<TokenRecord, EngineError> {
        let name = Actor::parse(name)?;
        let token = self.store().token_revoke(name.as_str(), actor.as_str()).await?;
        self.audit(actor, "token.revoke", &format!("token/{}", token.name), json!({}))
            .await;
        Ok(token)
    }

    /// On first start: mints the `admin` token (admin on every environment)
    /// if the store holds no token at all. None when it does (also when
    /// another server on the same database made one first).
    pub async fn token_bootstrap(&self) -> Result<Option<IssuedToken>, EngineError> {
        let secret = new_secret();
        let made = self
            .store()
            .token_bootstrap(NewToken {
                name: BOOTSTRAP_NAME.to_owned(),
                secret_hash: hash_secret(&secret),
                grants: Grants::everywhere(Role::Admin),
                created_by: SYSTEM_ACTOR.to_owned(),
                expires_at_ms: None,
            })
            .await?;
        let Some(token) = made else { return Ok(None) };
        self.audit(
            &system_actor(),
            "token.create",
            &format!("token/{}", token.name),
            json!({ "grants": token.grants, "bootstrap": true }),
        )
        .await;
        Ok(Some(IssuedToken { token, secret }))
    }

    /// `cutover serve --reset-admin-token`: revokes the live `admin` token, if
    /// any, and mints a new one. For whoever runs the server and lost the
    /// admin token file (they hold the database and its key anyway).
    pub async fn token_reset_admin(&self) -> Result<IssuedToken, EngineError> {
        let system = system_actor();
        match self.store().token_revoke(BOOTSTRAP_NAME, SYSTEM_ACTOR).await {
            Ok(old) => {
                self.audit(
                    &system,
                    "token.revoke",
                    &format!("token/{}", old.name),
                    json!({ "reset": true }),
                )
                .await;
            }
            Err(cutover_store::StoreError::TokenNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let secret = new_secret();
        let token = self
            .store()
            .token_create(NewToken {
                name: BOOTSTRAP_NAME.to_owned(),
                secret_hash: hash_secret(&secret),
                grants: Grants::everywhere(Role::Admin),
                created_by: SYSTEM_ACTOR.to_owned(),
                expires_at_ms: None,
            })
            .await?;
        self.audit(
            &system,
            "token.create",
            &format!("token/{}", token.name),
            json!({ "grants": token.grants, "reset": true }),
        )
        .await;
        Ok(IssuedToken { token, secret })
    }

    /// The environment whose parameter prefix (`/<app>-<env>`) holds `key`.
    pub fn env_of_key(&self, key: &str) -> Option<EnvName> {
        let key = key.trim_end_matches('/');
        self.config().environments.keys().find_map(|env| {
            let prefix = self.config().param_prefix(env);
            let inside = key == prefix
                || key
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            inside.then(|| env.clone())
        })
    }

    /// The environment of a scheduler job run, for access checks.
    pub async fn job_run_env(&self, id: i64) -> Result<String, EngineError> {
        self.store()
            .job_run_get(id)
            .await?
            .map(|r| r.env)
            .ok_or(EngineError::Store(cutover_store::StoreError::JobRunNotFound {
                id,
            }))
    }

    /// The environment of a pipeline run, for access checks.
    pub async fn run_env(&self, id: i64) -> Result<String, EngineError> {
        self.store()
            .run_get(id)
            .await?
            .map(|r| r.env)
            .ok_or(EngineError::RunNotFound { id })
    }
}

fn system_actor() -> Actor {
    Actor::parse(SYSTEM_ACTOR).unwrap_or_else(|e| panic!("the system actor name must be valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_hex_and_hash_to_sha256_hex() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("cut_") && a.len() == 4 + 64, "{a}");
        assert!(
            a[4..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // SHA-256("abc"), the FIPS 180-2 example.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}

//! Maintenance mode per environment: the router answers every request to the environment's
//! public services with `503`, `Retry-After` and a page, until it is turned off.
//!
//! The state is `/<app>-<env>/maintenance` in the parameter store (JSON `{"on": bool, "page":
//! "..."}`; history for free), written by [`Engine::maintenance_set`] only (`param put` refuses
//! it), audited as `maintenance.on` / `maintenance.off`, and put into force as a gate of the data
//! plane, which persists it in `routes.json`: a data-plane restart or upgrade keeps it, and a
//! control plane starting sets every environment's gate from the store again
//! ([`Engine::sync_gates`]). The page is sent by the client (the CLI reads `--page FILE`
//! itself; the server never opens a path a request names), at most [`MAX_PAGE`] bytes; without
//! one the environment's `maintenance_page`, else a built-in page, is used.
//!
//! Rejected: a flag in the engine's memory only (a restart would silently end maintenance) and
//! stopping the instances (maintenance is often what lets people look at the running version).

use cutover_core::{Actor, EnvName};
use cutover_router::Gate;
use cutover_store::ParamKey;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Engine, EngineError};

/// The largest maintenance page.
pub const MAX_PAGE: usize = 64 * 1024;
/// `Retry-After` of a maintenance answer.
const MAINTENANCE_RETRY_AFTER_SECS: u32 = 120;

/// Maintenance mode of one environment as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Maintenance {
    pub env: String,
    pub on: bool,
    /// Bytes of the page answered (0 when off).
    pub page_bytes: usize,
    /// Who changed it last (`None` if it never was).
    pub updated_by: Option<String>,
    pub updated_at_ms: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    on: bool,
    #[serde(default)]
    page: String,
}

impl Engine {
    fn maintenance_key(&self, env: &EnvName) -> Result<ParamKey, EngineError> {
        Ok(ParamKey::parse(&format!(
            "{}/maintenance",
            self.config().param_prefix(env)
        ))?)
    }

    /// Whether `key` is an environment's maintenance state, which only
    /// [`Engine::maintenance_set`] writes.
    pub(crate) fn is_maintenance_key(&self, key: &ParamKey) -> bool {
        let config = self.config();
        config
            .environments
            .keys()
            .any(|env| self.maintenance_key(env).is_ok_and(|k| k == *key))
    }

    async fn maintenance_stored(&self, env: &EnvName) -> Option<(Stored, String, i64)> {
        let key = self.maintenance_key(env).ok()?;
        match self.store().param_get(&key).await {
            Ok(Some(p)) => Some((
                serde_json::from_str(&p.value).unwrap_or_default(),
                p.actor,
                p.at_ms,
            )),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(env = %env, error = %e, "cannot read the maintenance state");
                None
            }
        }
    }

    /// Whether maintenance mode is on for `env`.
    pub(crate) async fn maintenance_on(&self, env: &EnvName) -> bool {
        self.maintenance_stored(env).await.is_some_and(|(s, ..)| s.on)
    }

    /// The gate maintenance mode wants on `env` (`None` when it is off).
    pub(crate) async fn maintenance_gate(&self, env: &EnvName) -> Option<Gate> {
        let (stored, ..) = self.maintenance_stored(env).await?;
        stored.on.then(|| {
            let page = if stored.page.is_empty() {
                self.configured_page(env)
            } else {
                stored.page
            };
            Gate::maintenance(MAINTENANCE_RETRY_AFTER_SECS, page)
        })
    }

    /// Maintenance mode of `env`.
    pub async fn maintenance_status(&self, env: &str) -> Result<Maintenance, EngineError> {
        let env = self.env_name(env)?;
        Ok(match self.maintenance_stored(&env).await {
            Some((s, by, at)) => Maintenance {
                env: env.to_string(),
                on: s.on,
                page_bytes: if s.on {
                    if s.page.is_empty() {
                        self.configured_page(&env).len()
                    } else {
                        s.page.len()
                    }
                } else {
                    0
                },
                updated_by: Some(by),
                updated_at_ms: Some(at),
            },
            None => Maintenance {
                env: env.to_string(),
                on: false,
                page_bytes: 0,
                updated_by: None,
                updated_at_ms: None,
            },
        })
    }

    /// Turns maintenance mode of `env` on (with `page`, else the configured one) or off; audited
    /// as `maintenance.on` / `maintenance.off`. The data plane answers accordingly when this
    /// returns. A run holding the environment's requests keeps its hold until it releases it,
    /// and then puts this state in force.
    pub async fn maintenance_set(
        &self,
        env: &str,
        on: bool,
        page: Option<String>,
        actor: &Actor,
    ) -> Result<Maintenance, EngineError> {
        let env = self.env_name(env)?;
        let page = page.unwrap_or_default();
        if !on && !page.is_empty() {
            return Err(EngineError::Refused(
                "a page only goes with turning maintenance on; drop --page to turn it off".into(),
            ));
        }
        if page.len() > MAX_PAGE {
            return Err(EngineError::Refused(format!(
                "the maintenance page is {} bytes; at most {MAX_PAGE} (64 KiB) are accepted: shrink it or link to assets",
                page.len()
            )));
        }
        let key = self.maintenance_key(&env)?;
        let value = serde_json::to_string(&Stored {
            on,
            page: page.clone(),
        })
        .map_err(|e| EngineError::Internal(format!("cannot serialise the maintenance state: {e}")))?;
        let written = self.store().param_put(&key, &value, actor.as_str(), None).await?;
        let action = if on { "maintenance.on" } else { "maintenance.off" };
        self.audit(
            actor,
            action,
            key.as_str(),
            json!({ "env": env.as_str(), "page_bytes": page.len(), "version": written.version }),
        )
        .await;
        let held = self
            .data_plane()
            .gates()
            .await
            .unwrap_or_default()
            .into_iter()
            .any(|(a, e, g)| {
                a == self.config().app.as_str()
                    && e == env.as_str()
                    && g.mode == cutover_router::GateMode::Hold
            });
        if !held {
            let gate = self.maintenance_gate(&env).await;
            self.data_plane()
                .set_gate(self.config().app.as_str(), env.as_str(), gate)
                .await
                .map_err(EngineError::Internal)?;
        }
        self.maintenance_status(env.as_str()).await
    }
}

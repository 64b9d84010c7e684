//! Scale changes (SPEC §4): how many replicas of one service an environment runs.
//!
//! `dev` and `integration` environments scale on request: the change applies at once. On the
//! fixed-size tiers (`stage`, `prod-like`, `prod`) a scale change is a *change request* that
//! someone else approves (four-eyes, like a production run); on `prod` with `autoscale:` the
//! count must stay within `min..max`. Every change, applied or requested, is one record under
//! `/<app>/scale-requests/<id>` in the parameter store (history and both backends for free),
//! and the count in force is `/<app>-<env>/replicas/<service>`, which only this module writes:
//! every later deploy, rollback and restart starts that many.
//!
//! Applying holds the environment's gate (no run executes meanwhile) and replaces the
//! service's instances blue-green: the new set starts and becomes healthy, the route switches
//! atomically, the old set drains and stops; other services are not touched. Rejected: a run
//! kind of its own (a queued scale would supersede a queued release, or be superseded by one)
//! and adding or removing single instances in place (a failed start half-way would leave a
//! count nobody asked for).

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_core::config::Tier;
use cutover_core::{Actor, EnvName, ServiceName, Stage, Version};
use cutover_store::ParamKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::pipeline::logs::StageLog;
use crate::{Engine, EngineError, WellKnownKey};

/// The most replicas one service may be given.
pub const MAX_REPLICAS: u32 = 32;
/// How long a scale change waits for a run that is executing on the environment.
const GATE_WAIT: Duration = Duration::from_secs(60);

/// Where a scale change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleState {
    /// Waiting for someone else's approval (fixed-size tiers).
    Pending,
    /// Approved; being applied.
    Approved,
    /// The new count runs.
    Applied,
    Rejected,
    /// Applying failed; the previous instances still serve.
    Failed,
}

impl std::fmt::Display for ScaleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// One scale change: requested, then applied, rejected or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScaleRequest {
    pub id: i64,
    pub env: String,
    pub service: String,
    /// The count in force when it was requested.
    pub from: u32,
    pub to: u32,
    pub state: ScaleState,
    pub requested_by: String,
    pub requested_at_ms: i64,
    pub comment: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<i64>,
    pub decision_comment: Option<String>,
    /// Why applying it failed (the service kept its previous instances).
    pub error: Option<String>,
}

/// What a scale call did: the request as it stands, and the log of applying it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScaleAnswer {
    pub request: ScaleRequest,
    /// Whether the new count runs now (false: waiting for approval, or rejected).
    pub applied: bool,
    pub log: Vec<String>,
}

impl Engine {
    /// `/<app>-<env>/replicas/<service>`.
    fn replicas_key(&self, env: &EnvName, service: &ServiceName) -> ParamKey {
        let raw = format!("{}/replicas/{service}", self.config().param_prefix(env));
        ParamKey::parse(&raw).unwrap_or_else(|e| panic!("replicas key {raw} must be valid: {e}"))
    }

    /// Whether `key` is one of the replica counts only scale changes write.
    pub(crate) fn is_replicas_key(&self, key: &ParamKey) -> bool {
        let config = self.config();
        config.environments.keys().any(|env| {
            ParamKey::parse(&format!("{}/replicas", config.param_prefix(env))).is_ok_and(|p| key.is_under(&p))
        })
    }

    fn requests_prefix(&self) -> String {
        format!("/{}/scale-requests", self.config().app)
    }

    /// Every service's replica count in `env` under what serves it: a scale change's, else the
    /// definition's.
    pub(crate) async fn replica_counts(&self, env: &EnvName) -> BTreeMap<ServiceName, u32> {
        self.replica_counts_for(env, &self.app(env)).await
    }

    /// Every service's replica count in `env` under `def` (a version about to be deployed): a
    /// scale change's (which wins over the file's default), else the definition's.
    pub(crate) async fn replica_counts_for(
        &self,
        env: &EnvName,
        def: &cutover_core::config::AppDefinition,
    ) -> BTreeMap<ServiceName, u32> {
        let config = self.config();
        let mut counts: BTreeMap<ServiceName, u32> = match config.environments.get(env) {
            Some(env_cfg) => def
                .services
                .iter()
                .map(|(name, svc)| (name.clone(), env_cfg.replicas_of(name, svc)))
                .collect(),
            None => BTreeMap::new(),
        };
        let prefix = format!("{}/replicas/", config.param_prefix(env));
        match self.store().param_list(&prefix).await {
            Ok(set) => {
                for p in set {
                    let service = p.key.trim_start_matches(&prefix);
                    if let (Ok(name), Ok(n)) = (ServiceName::parse(service), p.value.parse::<u32>())
                        && let Some(slot) = counts.get_mut(&name)
                    {
                        *slot = n;
                    }
                }
            }
            Err(e) => {
                tracing::error!(env = %env, error = %e, "cannot read replica counts; using cutover.yml's")
            }
        }
        counts
    }

    /// Asks for `replicas` of `service` in `env`: applied at once on dev and integration
    /// environments, otherwise recorded as a change request for someone else to approve.
    pub async fn scale(
        &self,
        env: &str,
        service: &str,
        replicas: u32,
        comment: Option<String>,
        actor: &Actor,
    ) -> Result<ScaleAnswer, EngineError> {
        let env = self.env_name(env)?;
        let config = self.config();
        let def = self.app(&env);
        let service = ServiceName::parse(service)?;
        if !def.services.contains_key(&service) {
            let known: Vec<&str> = def.services.keys().map(|s| s.as_str()).collect();
            return Err(EngineError::Refused(format!(
                "unknown service {service:?}; {} has: {}",
                config.app,
                known.join(", ")
            )));
        }
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(EngineError::Refused(format!(
                "replicas must be between 1 and {MAX_REPLICAS}, not {replicas}"
            )));
        }
        let env_cfg = config
            .environments
            .get(&env)
            .ok_or_else(|| EngineError::Refused(format!("{env} was just removed")))?;
        // The tiers the autoscaler manages keep their counts within its bounds.
        let autoscaled = matches!(env_cfg.tier, Tier::Prod | Tier::ProdLike);
        if let Some(a) = env_cfg.autoscale.as_ref().filter(|_| autoscaled)
            && !(a.min..=a.max).contains(&replicas)
        {
            return Err(EngineError::Refused(format!(
                "{env} scales between autoscale.min {} and autoscale.max {} (cutover.yml); {replicas} is outside",
                a.min, a.max
            )));
        }
        let from = self.replica_counts(&env).await[&service];
        if from == replicas {
            return Err(EngineError::Refused(format!(
                "{service} in {env} already runs {replicas} replicas"
            )));
        }
        if self.serving_version(&env).is_none() {
            return Err(EngineError::Refused(format!(
                "nothing is deployed in {env} yet; deploy it first (cutover release {env}), then scale"
            )));
        }
        let needs_approval = matches!(env_cfg.tier, Tier::Stage | Tier::ProdLike | Tier::Prod);
        let request = self
            .new_request(&env, &service, from, replicas, comment, actor)
            .await?;
        self.audit(
            actor,
            "scale.request",
            &format!("scale/{}", request.id),
            json!({ "env": env, "service": service, "from": from, "to": replicas }),
        )
        .await;
        if needs_approval {
            let id = request.id;
            return Ok(ScaleAnswer {
                request,
                applied: false,
                log: vec![format!(
                    "{env} is a fixed-size {} environment: scale request {id} waits for approval by someone else \
                     (cutover scale approve {id})",
                    env_cfg.tier
                )],
            });
        }
        self.apply(request, actor).await
    }

    /// The autoscaler's change: recorded like a person's, applied without approval (it stays
    /// within the `min..max` that cutover.yml allows).
    pub(crate) async fn autoscale_to(
        &self,
        env: &EnvName,
        service: &ServiceName,
        from: u32,
        to: u32,
        why: String,
        actor: &Actor,
    ) -> Result<ScaleAnswer, EngineError> {
        let request = self.new_request(env, service, from, to, Some(why), actor).await?;
        self.apply(request, actor).await
    }

    /// Scale changes, newest first; `env` filters.
    pub async fn scale_requests(&self, env: Option<&str>) -> Result<Vec<ScaleRequest>, EngineError> {
        let env = env.map(|e| self.env_name(e)).transpose()?;
        let mut out: Vec<ScaleRequest> = self
            .store()
            .param_list(&format!("{}/", self.requests_prefix()))
            .await?
            .into_iter()
            .filter_map(|p| serde_json::from_str::<ScaleRequest>(&p.value).ok())
            .filter(|r| env.as_ref().is_none_or(|e| r.env == e.as_str()))
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.id));
        Ok(out)
    }

    /// Approves (and applies) or rejects a pending scale request. Nobody decides their own.
    pub async fn scale_decide(
        &self,
        id: i64,
        actor: &Actor,
        approve: bool,
        comment: Option<String>,
    ) -> Result<ScaleAnswer, EngineError> {
        let key = self.request_key(id)?;
        let stored = self.store().param_get(&key).await?.ok_or_else(|| {
            EngineError::Refused(format!(
                "scale request {id} does not exist; `cutover scale requests` lists them"
            ))
        })?;
        let mut request: ScaleRequest = serde_json::from_str(&stored.value)
            .map_err(|e| EngineError::Internal(format!("scale request {id} is unreadable: {e}")))?;
        if request.state != ScaleState::Pending {
            return Err(EngineError::Conflict(format!(
                "scale request {id} is {} already (by {}); nothing to decide",
                request.state,
                request.decided_by.as_deref().unwrap_or(&request.requested_by)
            )));
        }
        if request.requested_by == actor.as_str() {
            return Err(EngineError::Refused(format!(
                "you requested scale change {id}; someone else must approve or reject it (four-eyes)"
            )));
        }
        if !approve && comment.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(EngineError::Refused(
                "a rejection needs a reason: add --comment \"why\" so the requester knows what to fix".into(),
            ));
        }
        request.decided_by = Some(actor.to_string());
        request.decided_at_ms = Some(crate::now_ms());
        request.decision_comment = comment;
        request.state = if approve {
            ScaleState::Approved
        } else {
            ScaleState::Rejected
        };
        // Compare-and-set: a concurrent decision loses with the version it saw.
        self.store()
            .param_put(
                &key,
                &serde_json::to_string(&request).unwrap_or_default(),
                actor.as_str(),
                Some(stored.version),
            )
            .await?;
        self.audit(
            actor,
            if approve { "scale.approve" } else { "scale.reject" },
            &format!("scale/{id}"),
            json!({ "env": request.env, "service": request.service, "to": request.to }),
        )
        .await;
        if !approve {
            return Ok(ScaleAnswer {
                request,
                applied: false,
                log: vec![],
            });
        }
        self.apply(request, actor).await
    }

    /// The environment of scale request `id`, for access checks.
    pub async fn scale_request_env(&self, id: i64) -> Result<String, EngineError> {
        let stored = self.store().param_get(&self.request_key(id)?).await?;
        stored
            .and_then(|p| serde_json::from_str::<ScaleRequest>(&p.value).ok())
            .map(|r| r.env)
            .ok_or_else(|| {
                EngineError::Refused(format!(
                    "scale request {id} does not exist; `cutover scale requests` lists them"
                ))
            })
    }

    fn request_key(&self, id: i64) -> Result<ParamKey, EngineError> {
        Ok(ParamKey::parse(&format!("{}/{id}", self.requests_prefix()))?)
    }

    async fn new_request(
        &self,
        env: &EnvName,
        service: &ServiceName,
        from: u32,
        to: u32,
        comment: Option<String>,
        actor: &Actor,
    ) -> Result<ScaleRequest, EngineError> {
        // Ids count up; creating with compare-and-set "must not exist" makes two concurrent
        // requests take different ids.
        for _ in 0..10 {
            let id = self.scale_requests(None).await?.first().map_or(1, |r| r.id + 1);
            let request = ScaleRequest {
                id,
                env: env.to_string(),
                service: service.to_string(),
                from,
                to,
                state: ScaleState::Pending,
                requested_by: actor.to_string(),
                requested_at_ms: crate::now_ms(),
                comment: comment.clone(),
                decided_by: None,
                decided_at_ms: None,
                decision_comment: None,
                error: None,
            };
            let written = self
                .store()
                .param_put(
                    &self.request_key(id)?,
                    &serde_json::to_string(&request).unwrap_or_default(),
                    actor.as_str(),
                    Some(0),
                )
                .await;
            match written {
                Ok(_) => return Ok(request),
                Err(cutover_store::StoreError::VersionMismatch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Conflict(
            "too many scale requests at once; try again".into(),
        ))
    }

    /// Puts a request into force: records the count, replaces the service's instances, and
    /// records the outcome on the request. A failure restores the previous count.
    async fn apply(&self, mut request: ScaleRequest, actor: &Actor) -> Result<ScaleAnswer, EngineError> {
        let env = self.env_name(&request.env)?;
        let service = ServiceName::parse(&request.service)?;
        let (log, lines) = StageLog::capturing(self.store().clone(), Stage::DeployServices);
        let log = log.masked_with(self.log_masker(&env).await);
        let gate = self.env_gate(&env);
        let held = tokio::time::timeout(GATE_WAIT, gate.lock()).await;
        let result = match held {
            Err(_) => Err(format!(
                "a run kept {env} busy for {}s; the change was not applied (try again when it ends)",
                GATE_WAIT.as_secs()
            )),
            Ok(_held) => self.rescale(&env, &service, request.to, actor, &log).await,
        };
        let captured = lines.lock().map(|l| l.clone()).unwrap_or_default();
        match &result {
            Ok(()) => request.state = ScaleState::Applied,
            Err(e) => {
                request.state = ScaleState::Failed;
                request.error = Some(e.clone());
            }
        }
        let key = self.request_key(request.id)?;
        self.store()
            .param_put(
                &key,
                &serde_json::to_string(&request).unwrap_or_default(),
                actor.as_str(),
                None,
            )
            .await?;
        self.audit(
            actor,
            "scale.apply",
            &format!("scale/{}", request.id),
            json!({ "env": env, "service": service, "to": request.to, "state": request.state }),
        )
        .await;
        match result {
            Ok(()) => Ok(ScaleAnswer {
                request,
                applied: true,
                log: captured,
            }),
            Err(e) => Err(EngineError::Conflict(format!(
                "scaling {service} in {env} to {} failed, its previous instances still serve: {e}\n{}",
                request.to,
                captured.join("\n")
            ))),
        }
    }

    /// Records the new count, then replaces `service`'s instances with that many of the
    /// serving version; on failure puts the previous count back.
    async fn rescale(
        &self,
        env: &EnvName,
        service: &ServiceName,
        to: u32,
        actor: &Actor,
        log: &StageLog,
    ) -> Result<(), String> {
        let version = self
            .well_known(env, WellKnownKey::LastDeployedVersion)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|v| Version::parse(&v).ok())
            .ok_or_else(|| format!("nothing is deployed in {env}"))?;
        let key = self.replicas_key(env, service);
        let previous = self.replica_counts(env).await[service];
        // Persist first: a crash after this point restarts with the new count.
        self.store()
            .param_put(&key, &to.to_string(), actor.as_str(), None)
            .await
            .map_err(|e| e.to_string())?;
        let cancel = CancellationToken::new();
        let vars = self.instance_env_for(env, &version).await;
        let outcome = async {
            let dir = self
                .prepare_release(env, &version, log, &cancel, &vars)
                .await
                .map_err(stage_error)?;
            let def = self.app(env);
            let l = crate::deploy::Launch {
                env,
                version: &version,
                release_dir: &dir,
                env_vars: &vars,
                log,
                cancel: &cancel,
                def: &def,
            };
            self.replace_service(&l, service, to).await.map_err(stage_error)
        }
        .await;
        if let Err(e) = &outcome {
            log.line(format!("{service}: {e}; back to {previous} replicas"))
                .await;
            if let Err(e) = self
                .store()
                .param_put(&key, &previous.to_string(), actor.as_str(), None)
                .await
            {
                tracing::error!(env = %env, error = %e, "cannot restore the replica count");
            }
        }
        outcome
    }
}

fn stage_error(e: crate::pipeline::executor::StageError) -> String {
    match e {
        crate::pipeline::executor::StageError::Failed(m) => m,
        crate::pipeline::executor::StageError::Cancelled => "cancelled".into(),
    }
}

//! What really runs: per service, each instance's version as read from the
//! runtime (the running process, not the database), health, restarts and
//! uptime; and reconciliation at start, which brings every environment back
//! to its `last_deployed_version` after the server restarted.

use cutover_core::{EnvName, Stage, Version};
use cutover_router::RouteKey;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::logs::StageLog;
use crate::{Engine, EngineError, WellKnownKey};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvStatus {
    pub env: EnvName,
    pub desired_version: Option<String>,
    pub last_deployed_version: Option<String>,
    /// The version the router sends traffic to.
    pub serving_version: Option<String>,
    /// The previous release kept running without traffic, for a fast rollback.
    pub warm_version: Option<String>,
    pub services: Vec<ServiceStatus>,
    /// Kind, expiry (`expires_at_ms`) and, after a ttl ran out, `expired_at_ms`.
    #[serde(flatten)]
    pub lifecycle: crate::LifecycleView,
    /// What keeps this environment's processes from Cutover's own state: on
    /// the process runtime `landlock ABI 7`, `run_as user X` or `none: kernel
    /// lacks landlock`; on docker and swarm `container: only CUTOVER_ENV_DIR
    /// mounted`.
    pub protection: String,
    /// Maintenance mode: the router answers 503 with a page (`cutover maintenance`).
    pub maintenance: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    pub public: bool,
    /// Router URL (public services), e.g. http://storefront.staging.shop.localhost:7080/
    pub url: Option<String>,
    /// The fixed router port's URL, when the environment sets `ports:` for this service.
    pub port_url: Option<String>,
    /// The replica count in force: a scale change's, else cutover.yml's.
    pub replicas: u32,
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    pub id: String,
    /// "serving", "warm" or "other".
    pub role: &'static str,
    /// Read from the running process; null when no process is alive.
    pub version: Option<String>,
    pub version_source: String,
    pub pid: Option<u32>,
    pub port: u16,
    pub healthy: Option<bool>,
    pub restarts: u32,
    pub uptime_s: u64,
    pub state: String,
    /// Who supervises it: the pid of the `cutover serve` process, since when (unix ms: its start
    /// or its adoption), and whether it was adopted from an earlier server.
    pub owner: InstanceOwnerView,
    /// The machine it runs on where the runtime spans several (Swarm: `<hostname>/<node id>`);
    /// absent on the process and docker runtimes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Where the router reaches it (`<node address>:<port>` on a multi-node swarm).
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceOwnerView {
    pub pid: u32,
    pub since_ms: u64,
    pub adopted: bool,
}

impl Engine {
    /// `http://<service>.<env>.<app>.localhost:<router port>/`, once the router listens.
    pub fn service_url(&self, env: &EnvName, service: &str) -> Option<String> {
        let port = self.router_port()?;
        let key = RouteKey::new(self.config().app.as_str(), env.as_str(), service).ok()?;
        Some(format!("http://{}:{port}/", self.data_plane().host_of(&key)))
    }

    /// `CUTOVER_SERVICE_URL_<SERVICE>` for every public service of `env`.
    pub(crate) fn service_urls(
        &self,
        env: &EnvName,
        def: &cutover_core::config::AppDefinition,
    ) -> Vec<(String, String)> {
        def.services
            .iter()
            .filter(|(_, s)| s.public)
            .filter_map(|(name, _)| {
                let url = self.service_url(env, name.as_str())?;
                let var = format!(
                    "CUTOVER_SERVICE_URL_{}",
                    name.as_str().to_ascii_uppercase().replace('-', "_")
                );
                Some((var, url.trim_end_matches('/').to_owned()))
            })
            .collect()
    }

    /// The environment of instances started outside a run (reconcile, fast rollback).
    pub(crate) async fn instance_env_for(&self, env: &EnvName, version: &Version) -> Vec<(String, String)> {
        let config = self.config();
        let cfg = &config.environments[env];
        let mut vars = Vec::new();
        let prefix = format!("{}/env", self.config().param_prefix(env));
        if let Ok(params) = self.store().param_list(&prefix).await {
            for p in params {
                let name = p.key.rsplit('/').next().unwrap_or_default().to_owned();
                match cutover_core::settings::refused_setting_name(&name) {
                    None => match self.setting_value(&p.value) {
                        Ok(value) => vars.push((name, value)),
                        Err(e) => {
                            tracing::error!(key = %p.key, error = %e, "a setting cannot be decrypted; left out")
                        }
                    },
                    Some(why) => {
                        tracing::error!(key = %p.key, "setting not passed to {env}'s instances: {why}")
                    }
                }
            }
        }
        vars.extend([
            ("CUTOVER_APP".to_owned(), self.config().app.to_string()),
            ("CUTOVER_ENV".to_owned(), env.to_string()),
            ("CUTOVER_TIER".to_owned(), cfg.tier.to_string()),
            (
                "CUTOVER_ENV_DIR".to_owned(),
                self.env_dir(env).display().to_string(),
            ),
            (
                "CUTOVER_FLAGS_FILE".to_owned(),
                self.ensure_flags_file(env).await.display().to_string(),
            ),
            (
                "CUTOVER_RELEASE_DIR".to_owned(),
                self.release_dir(version).display().to_string(),
            ),
        ]);
        vars.extend(self.service_urls(env, &self.def_for(env, version)));
        vars
    }

    pub async fn status(&self, env: &str) -> Result<EnvStatus, EngineError> {
        let env = self.env_name(env)?;
        let deployed = self.env_services(&env);
        let runtime = self.runtime_for(&env);
        let mut all = runtime
            .status_of(&self.config().app, &env)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if let Some(swarm) = self.swarm_for(&env) {
            // Non-public services on Swarm: Swarm's own tasks.
            let tasks = swarm
                .converged_status(&self.config().app, &env)
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            all.extend(tasks);
        }
        let now = crate::now_ms().max(0) as u64;
        let mut services = Vec::new();
        let counts = self.replica_counts(&env).await;
        // The serving release's services, and the warm release's (a service the new version
        // dropped still runs warm until the next release).
        let mut known = deployed
            .warm_def
            .as_ref()
            .map(|d| d.services.clone())
            .unwrap_or_default();
        known.extend(self.app(&env).services.clone());
        // A fresh probe of every live instance, all at once: the answer waits for the slowest
        // probe (1 s at most), not for their sum.
        let probes = all.iter().filter_map(|st| {
            let path = known.get(&st.service)?.health.clone()?;
            st.pid?;
            let runtime = runtime.clone();
            let id = st.id.clone();
            Some(async move {
                let _ = runtime.probe(&id, &path, std::time::Duration::from_secs(1)).await;
            })
        });
        futures::future::join_all(probes).await;
        for (name, svc) in &known {
            let mut instances = Vec::new();
            for st in all.iter().filter(|s| s.env == env && &s.service == name) {
                let fresh = runtime.instance(&st.id).await.unwrap_or_else(|_| st.clone());
                let role = if deployed
                    .current
                    .get(name)
                    .is_some_and(|s| s.instances.iter().any(|(i, _)| *i == st.id))
                {
                    "serving"
                } else if deployed
                    .warm
                    .get(name)
                    .is_some_and(|s| s.instances.iter().any(|(i, _)| *i == st.id))
                {
                    "warm"
                } else if !svc.public && self.swarm_for(&env).is_some() {
                    "serving"
                } else {
                    "other"
                };
                instances.push(InstanceView {
                    id: fresh.id.as_str().to_owned(),
                    role,
                    version: fresh.version.as_ref().map(|v| v.to_string()),
                    version_source: format!("{:?}", fresh.version_source).to_lowercase(),
                    pid: fresh.pid,
                    port: fresh.port,
                    healthy: fresh.healthy,
                    restarts: fresh.restarts,
                    uptime_s: now.saturating_sub(fresh.started_at) / 1000,
                    state: format!("{:?}", fresh.state).to_lowercase(),
                    owner: InstanceOwnerView {
                        pid: fresh.owner.pid,
                        since_ms: fresh.owner.since,
                        adopted: fresh.owner.adopted,
                    },
                    node: fresh.node.clone(),
                    addr: fresh.addr.to_string(),
                });
            }
            let rank = |r: &str| match r {
                "serving" => 0,
                "warm" => 1,
                _ => 2,
            };
            instances.sort_by(|a, b| rank(a.role).cmp(&rank(b.role)).then_with(|| a.id.cmp(&b.id)));
            services.push(ServiceStatus {
                name: name.to_string(),
                public: svc.public,
                url: if svc.public {
                    self.service_url(&env, name.as_str())
                } else {
                    None
                },
                port_url: self
                    .config()
                    .environments
                    .get(&env)
                    .and_then(|e| e.ports.get(name))
                    .map(|p| format!("http://127.0.0.1:{p}/")),
                replicas: counts.get(name).copied().unwrap_or_default(),
                instances,
            });
        }
        Ok(EnvStatus {
            desired_version: self.well_known(&env, WellKnownKey::DesiredVersion).await?,
            last_deployed_version: self.visible_deployed(
                &env,
                self.well_known(&env, WellKnownKey::LastDeployedVersion).await?,
            ),
            lifecycle: self.lifecycle_view(&env),
            protection: match self.config().environments[&env].runtime {
                cutover_core::config::RuntimeKind::Process => self.protection().to_owned(),
                _ => "container: only CUTOVER_ENV_DIR mounted".to_owned(),
            },
            serving_version: deployed.version.map(|v| v.to_string()),
            warm_version: deployed.warm_version.map(|v| v.to_string()),
            maintenance: self.maintenance_on(&env).await,
            env,
            services,
        })
    }

    /// Brings `env` back to its last deployed version after a server start:
    /// prepares the release if needed, starts every service, routes traffic,
    /// and resumes a scheduler a pipeline left suspended.
    pub(crate) async fn reconcile_env(&self, env: &EnvName) {
        let log = StageLog::system(self.store().clone(), Stage::DeployServices)
            .masked_with(self.log_masker(env).await);
        if let Err(e) = self.scheduler_recover(env).await {
            tracing::error!(env = %env, error = %e, "cannot recover the scheduler state");
        }
        let left = self.leftovers(env).await;
        let deployed = match self.well_known(env, WellKnownKey::LastDeployedVersion).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.stop_leftovers(env, &left).await;
                return;
            }
            Err(e) => {
                tracing::error!(env = %env, error = %e, "cannot read last_deployed_version; not reconciling");
                return;
            }
        };
        let Ok(version) = Version::parse(&deployed) else {
            self.stop_leftovers(env, &left).await;
            return;
        };
        tracing::info!(env = %env, version = %version, "reconciling to the last deployed version");
        let cancel = CancellationToken::new();
        let vars = self.instance_env_for(env, &version).await;
        let result = async {
            // The definition the version was deployed with: its commit's (read again after a
            // restart; a commit does not change).
            let def = match self.definition_at(&version).await {
                Ok((def, _)) => def,
                Err(e) => {
                    tracing::error!(env = %env, version = %version, error = %e, "the deployed version's definition cannot be read; using the server's");
                    self.base_definition()
                }
            };
            let dir = self.prepare_release(env, &version, &log, &cancel, &vars).await?;
            let mut slot = None;
            let l = crate::deploy::Launch {
                env,
                version: &version,
                release_dir: &dir,
                env_vars: &vars,
                log: &log,
                cancel: &cancel,
                def: &def,
            };
            if left.is_empty() {
                self.roll_out(&l, &mut slot).await
            } else {
                self.adopt_env(&l, left).await
            }
        }
        .await;
        match result {
            Ok(summary) => {
                tracing::info!(env = %env, version = %version, "environment serves its last deployed version: {summary}")
            }
            Err(e) => {
                tracing::error!(env = %env, version = %version, error = ?e, "could not bring the environment back")
            }
        }
    }
}

impl Engine {
    /// The last `lines` log lines of one instance of `env`.
    pub async fn instance_log_tail(
        &self,
        env: &str,
        id: &str,
        lines: usize,
    ) -> Result<Vec<String>, EngineError> {
        let env = self.env_name(env)?;
        let id = cutover_runtime::InstanceId::parse(id)
            .ok_or_else(|| EngineError::Refused(format!("{id:?} is not an instance id")))?;
        let tail = self
            .runtime_for(&env)
            .log_tail(&id, lines)
            .await
            .map_err(|e| EngineError::Refused(e.to_string()))?;
        // Masked as served: the instance may print its environment (see `masking`).
        let masker = self.log_masker(&env).await;
        Ok(tail.into_iter().map(|l| masker.mask_owned(l)).collect())
    }

    /// The audit log, newest first.
    pub async fn audit_log(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<cutover_store::AuditEntry>, EngineError> {
        Ok(self.store().audit_list(limit.clamp(1, 500), before).await?)
    }
}

impl Engine {
    /// Live log lines of every running instance of a service, as they are
    /// written. Each receiver ends when its instance stops. The lines are raw: whoever serves
    /// them masks each with the masker returned beside them.
    pub async fn follow_service(&self, env: &str, service: &str) -> Result<ServiceFollow, EngineError> {
        let status = self.status(env).await?;
        let env = status.env.clone();
        let svc = status
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| {
                let known: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
                EngineError::Refused(format!(
                    "unknown service {service:?}; services are: {}",
                    known.join(", ")
                ))
            })?;
        let mut out = Vec::new();
        for inst in &svc.instances {
            let Some(id) = cutover_runtime::InstanceId::parse(&inst.id) else {
                continue;
            };
            if let Ok(rx) = self.runtime_for(&env).follow_logs(&id).await {
                out.push((inst.id.clone(), rx));
            }
        }
        Ok(ServiceFollow {
            masker: self.log_masker(&env).await,
            receivers: out,
        })
    }
}

/// What [`Engine::follow_service`] returns.
pub struct ServiceFollow {
    /// Masks each line before it is shown.
    pub masker: std::sync::Arc<crate::masking::Masker>,
    /// (instance id, its live lines).
    pub receivers: Vec<(String, tokio::sync::broadcast::Receiver<cutover_runtime::LogLine>)>,
}

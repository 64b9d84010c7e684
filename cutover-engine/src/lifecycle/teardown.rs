//! Removing an environment: `cutover env delete` and the reaper's expiry.
//! The end is recorded first (lifecycle record: deleted or expired), then
//! routes are removed, instances and scheduler jobs stopped and, for an
//! integration environment, its directory and unshared releases removed.
//! Runs, parameters and the audit log are kept.

use std::sync::Arc;

use cutover_core::{Actor, EnvName, RunState, Version};
use cutover_runtime::Runtime;
use serde_json::json;

use super::{EnvKind, FORCE_WAIT, LifeState, LifecycleRecord};
use crate::{Engine, EngineError, now_ms};

impl Engine {
    /// Deletes an integration environment: stops its services and
    /// scheduler, removes its routes, its directory and the releases no
    /// other environment uses; keeps its runs, parameters and audit.
    pub async fn env_delete(
        &self,
        name: &str,
        force: bool,
        actor: &Actor,
    ) -> Result<LifecycleRecord, EngineError> {
        let env = self.env_name(name)?;
        let rec = match self.record(&env) {
            Some(r) if r.is_live_instance() => r,
            _ => {
                let tier = self.config().environments[&env].tier;
                return Err(EngineError::Refused(format!(
                    "{env} is declared in cutover.yml (tier {tier}); only integration environments made with \
                     `cutover env create` can be deleted — remove it from cutover.yml instead"
                )));
            }
        };
        let active = self.active_runs(&env).await?;
        if !active.is_empty() && !force {
            let ids: Vec<String> = active.iter().map(|r| r.id.to_string()).collect();
            return Err(EngineError::Conflict(format!(
                "run {} is active on {env}; wait for it, cancel it (cutover cancel {}), or delete with --force \
                 to cancel it first",
                ids.join(", "),
                ids[0]
            )));
        }
        for run in &active {
            // It may end by itself meanwhile; that is fine.
            let _ = self.cancel(run.id, actor).await;
        }
        let gate = self.env_gate(&env);
        let _held = tokio::time::timeout(FORCE_WAIT, gate.lock()).await.map_err(|_| {
            EngineError::Conflict(format!(
                "the run on {env} did not end within {}s of being cancelled; try again",
                FORCE_WAIT.as_secs()
            ))
        })?;
        for run in self.store().runs_unfinished().await? {
            if run.env == env.as_str() && run.state == RunState::Queued {
                let _ = self.cancel(run.id, actor).await;
            }
        }
        let rec = self
            .end_environment(&env, rec, LifeState::Deleted, actor, "env.delete")
            .await?;
        Ok(rec)
    }

    /// Runs of `env` that are executing (not queued).
    pub(crate) async fn active_runs(
        &self,
        env: &EnvName,
    ) -> Result<Vec<cutover_store::RunRecord>, EngineError> {
        Ok(self
            .store()
            .runs_unfinished()
            .await?
            .into_iter()
            .filter(|r| r.env == env.as_str() && r.state.is_active())
            .collect())
    }

    /// Records the end (deleted or expired), then tears down. Call with the
    /// environment's gate held.
    pub(super) async fn end_environment(
        &self,
        env: &EnvName,
        mut rec: LifecycleRecord,
        state: LifeState,
        actor: &Actor,
        action: &str,
    ) -> Result<LifecycleRecord, EngineError> {
        // Read before the record changes the environment set (an ended integration
        // environment leaves it).
        let runtime = self.runtime_for(env);
        let on_swarm = self.swarm_for(env).is_some();
        let public = self.routed_services(env);
        let instance = rec.kind == EnvKind::Integration;
        {
            let _guard = self.lifecycle().lock.lock().await;
            rec.state = state;
            rec.ended_at_ms = Some(now_ms());
            rec.ended_by = Some(actor.to_string());
            self.put_record(env, rec.clone()).await?;
        }
        if instance {
            self.stop_worker(env);
        }
        let stopped = self.teardown(env, &runtime, on_swarm, &public, instance).await;
        self.audit(
            actor,
            action,
            &format!("env/{env}"),
            json!({ "kind": rec.kind, "branch": rec.branch, "template": rec.template,
                    "expires_at_ms": rec.expires_at_ms, "instances_stopped": stopped }),
        )
        .await;
        tracing::info!(env = %env, action, stopped, "environment torn down");
        Ok(rec)
    }

    /// Tears a static environment down before `config reload` removes it from the file: routes,
    /// instances (serving and warm), scheduler jobs; its directory and history stay. Returns how
    /// many instances it stopped.
    pub(crate) async fn tear_down_static(&self, env: &EnvName) -> usize {
        // As every teardown: never beside a run of this environment.
        let gate = self.env_gate(env);
        let _held = gate.lock().await;
        let runtime = self.runtime_for(env);
        let on_swarm = self.swarm_for(env).is_some();
        let public = self.routed_services(env);
        self.teardown(env, &runtime, on_swarm, &public, false).await
    }

    /// The public services whose routes `env` may have: the serving release's and the warm
    /// release's (a service the newer version dropped keeps its warm instances, not its route).
    fn routed_services(&self, env: &EnvName) -> Vec<cutover_core::ServiceName> {
        let services = self.env_services(env);
        let mut public: Vec<_> = self
            .app(env)
            .services
            .iter()
            .chain(services.warm_def.iter().flat_map(|d| d.services.iter()))
            .filter(|(_, s)| s.public)
            .map(|(n, _)| n.clone())
            .collect();
        public.sort();
        public.dedup();
        public
    }

    /// Stops everything `env` runs: routes, instances (serving, warm and
    /// any other), scheduler jobs; for an instance also its directory and
    /// the releases nothing else uses. Returns how many instances it stopped.
    async fn teardown(
        &self,
        env: &EnvName,
        runtime: &Arc<dyn Runtime>,
        on_swarm: bool,
        public: &[cutover_core::ServiceName],
        remove_files: bool,
    ) -> usize {
        for service in public {
            if let Ok(route) = self.route(env, service)
                && let Err(e) = self.data_plane().remove(&route).await
            {
                tracing::warn!(env = %env, error = %e, "could not remove a route");
            }
        }
        let services = self
            .deployments()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(env)
            .unwrap_or_default();
        let mut stopped = 0;
        match runtime.status_of(&self.config().app, env).await {
            Ok(all) => {
                for st in all {
                    match runtime.stop(&st.id).await {
                        Ok(_) => stopped += 1,
                        Err(e) => {
                            tracing::error!(env = %env, instance = st.id.as_str(), error = %e, "could not stop")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(env = %env, error = %e, "cannot list instances to stop"),
        }
        // On Swarm the non-public services are Swarm services of their own (converged, not
        // instances): remove them, or they would run on after their environment is gone.
        if let Some(swarm) = self.swarm().filter(|_| on_swarm) {
            let config = self.config();
            let def = services.def.clone().unwrap_or_else(|| self.base_definition());
            for (name, _) in def.services.iter().filter(|(_, s)| !s.public) {
                match swarm.remove_converged(&config.app, env, name).await {
                    Ok(true) => stopped += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(env = %env, service = %name, error = %e, "could not remove the Swarm service")
                    }
                }
            }
        }
        self.terminate_jobs(env);
        if remove_files {
            let _ = std::fs::remove_dir_all(self.env_dir(env));
            let mine: Vec<Version> = services
                .version
                .into_iter()
                .chain(services.warm_version)
                .collect();
            let topo = self.topology();
            let in_use: Vec<Version> = topo
                .config
                .environments
                .keys()
                .filter(|e| *e != env)
                .flat_map(|e| {
                    let s = self.env_services(e);
                    s.version.into_iter().chain(s.warm_version)
                })
                .collect();
            for v in mine.iter().filter(|v| !in_use.contains(v)) {
                let _ = std::fs::remove_dir_all(self.release_dir(v));
                if let Some(root) = self.release_dir(v).parent() {
                    let _ = std::fs::remove_dir_all(root.join(".built").join(v.as_str()));
                }
            }
        }
        stopped
    }
}

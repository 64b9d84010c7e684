//! Swarm environments: the non-public services, which Swarm updates itself.
//!
//! Public services on Swarm go through the same instance rollout as every
//! runtime (`deploy.rs`): each replica is its own one-replica Swarm service
//! with its own host-mode port, and Cutover's router switches between them —
//! Swarm's own start-first update of a service with a host-mode port
//! deadlocks on one node, and the routing mesh needs IPVS. Non-public
//! services (workers, the scheduler's back office) have no port, so Swarm's
//! native update serves them: one service `<app>-<env>-<service>`, image tag
//! = SHA, start-first, failure action rollback. The rollout converges them
//! after the new public instances are healthy and before traffic moves, so
//! a worker that fails leaves the old version serving everywhere; undo and
//! fast rollback converge them back.
//!
//! On a multi-node swarm with the routing mesh, public services could use
//! the native update too; the router would then front the mesh port.

use std::time::Duration;

use cutover_core::config::RuntimeKind;
use cutover_core::{EnvName, Version};
use cutover_docker::{ConvergeSpec, SwarmRuntime};
use tokio::sync::mpsc;

use crate::Engine;
use crate::pipeline::executor::StageError;
use crate::pipeline::logs::StageLog;

impl Engine {
    /// The Swarm runtime when `env` runs on it.
    pub(crate) fn swarm_for(&self, env: &EnvName) -> Option<&SwarmRuntime> {
        // An environment deleted meanwhile (an expired integration environment) is not on Swarm.
        let kind = self.config().environments.get(env).map(|e| e.runtime);
        (kind == Some(RuntimeKind::Swarm))
            .then(|| self.swarm())
            .flatten()
            .map(|s| &**s)
    }

    /// Whether the instance rollout handles this service in `env` (everything
    /// but the non-public services of a Swarm environment).
    pub(crate) fn managed_as_instances(&self, env: &EnvName, public: bool) -> bool {
        public || self.swarm_for(env).is_none()
    }

    /// Converges every non-public service of a Swarm environment to `version`.
    pub(crate) async fn converge_workers(
        &self,
        env: &EnvName,
        version: &Version,
        def: &cutover_core::config::AppDefinition,
        env_vars: &[(String, String)],
        log: &StageLog,
    ) -> Result<(), StageError> {
        let Some(swarm) = self.swarm_for(env) else {
            return Ok(());
        };
        // Non-public services the serving definition has and `def` has not: removed.
        let app = self.config().app.clone();
        for (name, _) in self
            .app(env)
            .services
            .iter()
            .filter(|(n, s)| !s.public && !def.services.contains_key(*n))
        {
            match swarm.remove_converged(&app, env, name).await {
                Ok(true) => {
                    log.line(format!(
                        "{name}: no longer in the definition; its Swarm service removed"
                    ))
                    .await
                }
                Ok(false) => {}
                Err(e) => {
                    log.line(format!("{name}: could not remove its Swarm service: {e}"))
                        .await
                }
            }
        }
        let counts = self.replica_counts_for(env, def).await;
        for (name, svc) in def.services.iter().filter(|(_, s)| !s.public) {
            let spec = ConvergeSpec {
                app: self.config().app.clone(),
                env: env.clone(),
                service: name.clone(),
                version: version.clone(),
                replicas: counts[name],
                env_vars: env_vars.to_vec(),
                run: Some(svc.run.clone()).filter(|r| !r.trim().is_empty()),
                monitor: Duration::from_secs(2),
                timeout: svc.health_timeout.max(Duration::from_secs(60)),
                placement: svc.placement.clone(),
            };
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let forward = {
                let log = log.clone();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        log.line(line).await;
                    }
                })
            };
            let outcome = swarm.converge(spec, tx).await;
            let _ = forward.await;
            match outcome {
                Ok(o) => {
                    log.line(format!(
                        "{name}: {:?} on Swarm, {} tasks running",
                        o.action, o.running
                    ))
                    .await
                }
                Err(e) => return Err(StageError::Failed(format!("{name} (Swarm service): {e}"))),
            }
        }
        Ok(())
    }
}

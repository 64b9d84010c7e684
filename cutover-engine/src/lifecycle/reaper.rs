//! The reaper: every `reap_interval`, environments whose ttl has run out
//! are torn down — an integration instance is removed as by `env delete`,
//! a prod-like environment stops serving until a later release activates it
//! again. An environment whose gate is held (a run is executing) or that has
//! an active run is skipped and looked at again on the next pass.

use cutover_core::Actor;

use super::{LifeState, is_due};
use crate::pipeline::SYSTEM_ACTOR;
use crate::{Engine, now_ms};

impl Engine {
    /// One pass of the reaper.
    pub(crate) async fn reap_once(&self) {
        let now = now_ms();
        let due: Vec<_> = self
            .topology()
            .records
            .iter()
            .filter(|(_, r)| r.state == LifeState::Active && is_due(r.expires_at_ms, now))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        for (env, _) in due {
            let gate = self.env_gate(&env);
            let Ok(_held) = gate.try_lock() else {
                tracing::debug!(env = %env, "expired but a run is executing; next pass");
                continue;
            };
            match self.active_runs(&env).await {
                Ok(runs) if runs.is_empty() => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(env = %env, error = %e, "cannot read runs; not reaping");
                    continue;
                }
            }
            // Re-read under the gate: a deploy may have renewed it meanwhile.
            let Some(rec_now) = self.record(&env).filter(|r| r.state == LifeState::Active) else {
                continue;
            };
            if !is_due(rec_now.expires_at_ms, now_ms()) {
                continue;
            }
            let actor = Actor::parse(SYSTEM_ACTOR).unwrap_or_else(|e| panic!("system actor: {e}"));
            if let Err(e) = self
                .end_environment(&env, rec_now, LifeState::Expired, &actor, "env.expire")
                .await
            {
                tracing::error!(env = %env, error = %e, "could not expire the environment");
            } else {
                tracing::info!(env = %env, "environment expired after its ttl");
            }
        }
    }
}

//! Routes that follow Swarm: on a multi-node swarm a public instance's task
//! runs on any node and is reached at that node's address, so when a node
//! dies or is drained Swarm starts the task again elsewhere (same service,
//! same host port, another address). Every second, for each Swarm
//! environment whose gate is free (no run, no scale change), the follower
//! reads the instances once (`SwarmRuntime::status`) and
//!
//! - records each serving and warm instance's current address in the
//!   serving sets (so a later rollout, drain or `rollback --fast` uses it);
//! - points each public route at the serving instances that run and did not
//!   fail their last health probe: one that stops answering leaves the
//!   route (at its next failed probe, within `health_interval`), one Swarm
//!   restarted on another node joins it once a probe there passes.
//!
//! A route is only rewritten when its upstreams differ, for the version it
//! serves (never during a rolling update, which holds the gate anyway); with
//! no instance left to route to it is left alone (the router's connect
//! failover still tries every address). Rejected: making the router eject
//! upstreams by itself (it knows nothing about instances, by design), and
//! re-running a rollout on a move (it would start new instances where Swarm
//! already replaced the task).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use cutover_router::Backend;
use cutover_runtime::{InstanceState, InstanceStatus, Runtime};

use crate::Engine;

/// Pause between two looks.
const EVERY: Duration = Duration::from_secs(1);

impl Engine {
    /// Starts the follower when some environment runs on Swarm.
    pub(crate) fn spawn_route_follower(&self) {
        if self.swarm().is_none() {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EVERY).await;
                engine.follow_moves_once().await;
            }
        });
    }

    async fn follow_moves_once(&self) {
        let Some(swarm) = self.swarm().cloned() else {
            return;
        };
        let envs: Vec<_> = self
            .config()
            .environments
            .keys()
            .filter(|e| self.swarm_for(e).is_some())
            .cloned()
            .collect();
        if envs.is_empty() {
            return;
        }
        let all = match swarm.status().await {
            Ok(all) => all,
            Err(err) => {
                tracing::debug!(error = %err, "route follower: cannot list the Swarm instances");
                return;
            }
        };
        let by_id: HashMap<_, &InstanceStatus> = all.iter().map(|s| (s.id.clone(), s)).collect();
        for env in envs {
            let gate = self.env_gate(&env);
            let Ok(_held) = gate.try_lock() else {
                continue;
            };
            // Addresses first: the serving sets say where every instance is.
            let deployed = {
                let mut deployments = self.deployments().lock().unwrap_or_else(|p| p.into_inner());
                let Some(deployed) = deployments.get_mut(&env) else {
                    continue;
                };
                for set in deployed.current.values_mut().chain(deployed.warm.values_mut()) {
                    for (id, addr) in &mut set.instances {
                        if let Some(now) = by_id.get(id)
                            && now.addr != *addr
                        {
                            *addr = now.addr;
                        }
                    }
                }
                deployed.clone()
            };
            let Some(def) = deployed.def.clone() else {
                continue;
            };
            for (name, set) in deployed
                .current
                .iter()
                .filter(|(n, _)| def.services.get(*n).is_some_and(|s| s.public))
            {
                let mut want: Vec<SocketAddr> = set
                    .instances
                    .iter()
                    .filter_map(|(id, _)| by_id.get(id))
                    .filter(|s| s.state == InstanceState::Running && s.healthy != Some(false))
                    .map(|s| s.addr)
                    .collect();
                if want.is_empty() {
                    continue;
                }
                want.sort();
                let Ok(route) = self.route(&env, name) else {
                    continue;
                };
                let Some(state) = self.data_plane().route_state(&route).await else {
                    continue;
                };
                let mut have = state.upstreams.clone();
                have.sort();
                if state.version != set.version.as_str() || have == want {
                    continue;
                }
                tracing::info!(%env, service = %name, from = ?have, to = ?want, "route follows Swarm");
                if let Err(err) = self
                    .data_plane()
                    .switch(&route, Backend::new(set.version.to_string(), want))
                    .await
                {
                    tracing::warn!(%env, service = %name, error = %err, "route follower: switch failed");
                }
            }
        }
    }
}

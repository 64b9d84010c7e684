//! Public host names of integration environments: an integration template's
//! `hosts: { web: ["{branch}.review.example.com"] }` gives the environment made for branch
//! `feature/Login_2` the name `feature-login-2.review.example.com` (`branch_label`).
//!
//! The router's host table is part of its edge settings, which the server pushes whole at
//! start from `cutover.yml` (templates' patterns left out). The engine keeps the server's way of
//! making them ([`Engine::set_edge_base`]) and pushes them again, from the configuration of
//! the moment and with every live instance's names added, whenever the topology changes
//! (create, delete, expiry, restore at start, `config reload`) and after a new data plane got
//! its routes back; mirror routers get the same settings. Two branches whose labels collide
//! are refused at `env create` ([`Engine::check_branch_hosts`]); a collision that appears anyway
//! (a static name added to `cutover.yml` later) keeps the first owner and logs the other.
//!
//! Rejected: patterns in the router itself (it would have to know how environment names are
//! derived from branches, which is the engine's business, and names are truncated and
//! suffixed on collision); a second control-socket operation for hosts alone (one more thing
//! a hand-over must carry; the whole settings are small).

use std::collections::BTreeMap;

use cutover_core::config::{Config, Tier, branch_label, expand_host, is_pattern};
use cutover_core::{EnvName, ServiceName};
use cutover_dataplane::{EdgeConfig, HostRoute};

use super::{LifecycleRecord, Topology};
use crate::dataplane::DataPlane;
use crate::{Engine, EngineError};

/// Every concrete public host name of `config`'s non-integration environments.
fn static_hosts(config: &Config) -> Vec<String> {
    config
        .environments
        .values()
        .filter(|e| e.tier != Tier::Integration)
        .flat_map(|e| e.hosts.values().flatten().cloned())
        .collect()
}

/// The hosts of an environment made from `template` for `branch` (patterns expanded).
pub(crate) fn instance_hosts(
    template_hosts: &BTreeMap<ServiceName, Vec<String>>,
    branch: &str,
) -> Result<BTreeMap<ServiceName, Vec<String>>, String> {
    if template_hosts.is_empty() {
        return Ok(BTreeMap::new());
    }
    let label = branch_label(branch)?;
    Ok(template_hosts
        .iter()
        .map(|(s, names)| (s.clone(), names.iter().map(|n| expand_host(n, &label)).collect()))
        .collect())
}

/// Sets each live instance's hosts in `config` (already holding the instance environments),
/// skipping a name another environment has (logged).
pub(crate) fn expand_all(config: &mut Config, base: &Config, records: &BTreeMap<EnvName, LifecycleRecord>) {
    let mut taken: std::collections::BTreeSet<String> = static_hosts(base).into_iter().collect();
    for (name, rec) in records.iter().filter(|(_, r)| r.is_live_instance()) {
        let Some(template) = rec.template.as_ref().and_then(|t| base.environments.get(t)) else {
            continue;
        };
        let Some(env) = config.environments.get_mut(name) else {
            continue;
        };
        if base.environments.contains_key(name) {
            continue;
        }
        let hosts = match instance_hosts(&template.hosts, rec.branch.as_deref().unwrap_or("")) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(env = %name, error = %e, "integration environment gets no public host");
                env.hosts.clear();
                continue;
            }
        };
        let mut kept = BTreeMap::new();
        for (service, names) in hosts {
            let mut mine = Vec::new();
            for host in names {
                if taken.insert(host.clone()) {
                    mine.push(host);
                } else {
                    tracing::warn!(env = %name, host, "host already used by another environment; not routed to this one");
                }
            }
            kept.insert(service, mine);
        }
        env.hosts = kept;
    }
}

/// The server's way of making the router's settings from a configuration.
pub type EdgeBase = std::sync::Arc<dyn Fn(&Config) -> EdgeConfig + Send + Sync>;

impl Engine {
    /// How the server makes the router's settings from `cutover.yml`; the engine adds the
    /// integration environments' hosts to them (see the module docs).
    pub fn set_edge_base(&self, edge: EdgeBase) {
        *self
            .inner
            .edge_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(edge);
    }

    /// Refuses a new environment for `branch` from `template` whose host names are already
    /// someone else's (two branches with the same label, or a static name).
    pub(crate) fn check_branch_hosts(
        &self,
        topo: &Topology,
        template: &EnvName,
        branch: &str,
    ) -> Result<(), EngineError> {
        let Some(tcfg) = topo.config.environments.get(template) else {
            return Ok(());
        };
        let mine = instance_hosts(&tcfg.hosts, branch).map_err(EngineError::Refused)?;
        for host in mine.values().flatten() {
            // Templates' hosts are patterns, never equal to a name.
            let owner = topo
                .config
                .environments
                .iter()
                .find(|(_, e)| e.hosts.values().flatten().any(|h| h == host && !is_pattern(h)));
            if let Some((owner, _)) = owner {
                let theirs = topo
                    .records
                    .get(owner)
                    .and_then(|r| r.branch.clone())
                    .map(|b| format!(" (branch {b:?})"))
                    .unwrap_or_default();
                return Err(EngineError::Conflict(format!(
                    "branch {branch:?} would be served at {host}, which environment {owner}{theirs} already has: \
                     both branch names give the same host label; rename the branch, or delete {owner} first"
                )));
            }
        }
        Ok(())
    }

    /// Pushes the edge settings with every live instance's hosts to the data plane (nothing
    /// before the server set the base). Failures are logged: routing by `.localhost` names and
    /// fixed ports goes on, and the next change or data-plane restart pushes again.
    pub(crate) async fn push_public_hosts(&self) {
        let Some(base) = self
            .inner
            .edge_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        let topo = self.topology();
        let mut edge = base(&topo.config);
        let app = topo.config.app.to_string();
        for (name, _) in topo.records.iter().filter(|(_, r)| r.is_live_instance()) {
            let Some(env) = topo.config.environments.get(name) else {
                continue;
            };
            for (service, names) in &env.hosts {
                edge.hosts.extend(names.iter().map(|host| HostRoute {
                    host: host.clone(),
                    app: app.clone(),
                    env: name.to_string(),
                    service: service.to_string(),
                }));
            }
        }
        let result = match self.data_plane() {
            DataPlane::Embedded(router) => edge
                .to_settings()
                .and_then(|s| router.set_edge(s).map_err(|e| e.to_string())),
            DataPlane::Remote(client, mirrors) => {
                let main = client.configure(&edge).await.map_err(|e| e.to_string());
                mirrors.configure(&edge).await;
                main
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "could not push the integration environments' host names to the router");
        }
    }
}

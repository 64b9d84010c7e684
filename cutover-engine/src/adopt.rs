//! Adoption at start: a new `cutover serve` keeps what a previous one left running.
//!
//! Instances outlive their control plane (their runtime leaves them running on exit and takes
//! them in again at start, unclaimed; see `Runtime::recover`), and the routes live in the data
//! plane. So reconciling an environment to its `last_deployed_version` first *adopts*: per
//! service, the running, healthy instances of that version (those the route already points at
//! first, up to the replica count) are claimed with the spec a start would use, so a later
//! crash of one restarts it as usual; only missing replicas are started. Public instances of
//! one other version that every public service still has become the warm release again (so
//! `rollback --fast` survives a restart). Everything else the previous server left in this
//! environment is stopped, and a route that does not point at exactly the adopted set is
//! switched to it (and the old generation drained).
//!
//! Invariant: reconciliation never stops a healthy instance of the last deployed version; it
//! only ever adds to it. A control plane killed after a switch but before
//! `last_deployed_version` was written (the run is interrupted) therefore puts traffic back on
//! the recorded version, whose public instances are still running warm.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::config::AppDefinition;
use cutover_core::{EnvName, ServiceName, Version};
use cutover_router::Backend;
use cutover_runtime::{InstanceId, InstanceState, InstanceStatus};

use crate::Engine;
use crate::deploy::{DRAIN_TIMEOUT, EnvServices, Launch, ServiceSet};
use crate::pipeline::executor::StageError;

/// How long an adopted instance has to answer its health check before it is replaced.
const ADOPT_HEALTH_DEADLINE: Duration = Duration::from_secs(5);

impl Engine {
    /// The instances a previous server left in `env` (unclaimed, found by the runtime's
    /// recovery).
    pub(crate) async fn leftovers(&self, env: &EnvName) -> Vec<InstanceStatus> {
        match self.runtime_for(env).status_of(&self.config().app, env).await {
            Ok(list) => list.into_iter().filter(|s| s.owner.adopted).collect(),
            Err(e) => {
                tracing::warn!(env = %env, error = %e, "cannot list the instances a previous server left");
                Vec::new()
            }
        }
    }

    /// Stops what a previous server left in an environment that has nothing deployed.
    pub(crate) async fn stop_leftovers(&self, env: &EnvName, left: &[InstanceStatus]) {
        for st in left {
            match self.runtime_for(env).stop(&st.id).await {
                Ok(_) => {
                    tracing::info!(env = %env, instance = %st.id, "stopped an instance a previous server left")
                }
                Err(e) => {
                    tracing::warn!(env = %env, instance = %st.id, error = %e, "could not stop an instance a previous server left")
                }
            }
        }
    }

    /// Stops instances a previous server left for environments that no longer exist (deleted,
    /// or gone from `cutover.yml`) or of another application; each known environment's
    /// worker decides about its own.
    pub(crate) async fn stop_orphans(&self) {
        let config = self.config();
        for runtime in self.runtimes() {
            let Ok(all) = runtime.status().await else {
                continue;
            };
            for st in all.into_iter().filter(|s| s.owner.adopted) {
                // Kept for its environment's worker only if that environment still exists and
                // still runs on this runtime.
                let same_runtime =
                    |env| std::ptr::addr_eq(Arc::as_ptr(&runtime), Arc::as_ptr(&self.runtime_for(env)));
                if st.app == config.app && config.environments.contains_key(&st.env) && same_runtime(&st.env)
                {
                    continue;
                }
                match runtime.stop(&st.id).await {
                    Ok(_) => {
                        tracing::info!(env = %st.env, instance = %st.id, "stopped an instance of an environment that no longer exists")
                    }
                    Err(e) => {
                        tracing::warn!(env = %st.env, instance = %st.id, error = %e, "could not stop an instance a previous server left")
                    }
                }
            }
        }
    }

    /// Is this leftover alive and, when the service has a health path, answering it?
    async fn still_serves(&self, env: &EnvName, st: &InstanceStatus, health: Option<&str>) -> bool {
        if st.state != InstanceState::Running {
            return false;
        }
        match health {
            Some(path) => {
                let settings = Self::health_settings(ADOPT_HEALTH_DEADLINE);
                self.runtime_for(env)
                    .wait_healthy(&st.id, path, &settings)
                    .await
                    .is_ok()
            }
            None => true,
        }
    }

    /// Brings `l.env` to `l.version`, keeping every healthy instance of that version a previous
    /// server left; see the module docs. Returns a one-line summary.
    pub(crate) async fn adopt_env(
        &self,
        l: &Launch<'_>,
        left: Vec<InstanceStatus>,
    ) -> Result<String, StageError> {
        let env = l.env;
        let runtime = self.runtime_for(env).clone();
        let counts = self.replica_counts_for(env, l.def).await;
        let mut kept: HashSet<InstanceId> = HashSet::new();
        let mut current = BTreeMap::new();
        let mut routes = BTreeMap::new();
        let (mut adopted, mut started_n) = (0usize, 0usize);
        let mut started = Vec::new();
        for (name, svc) in l
            .def
            .services
            .iter()
            .filter(|(_, s)| self.managed_as_instances(env, s.public))
        {
            let want = counts[name] as usize;
            let route = self.route(env, name)?;
            let state = if svc.public {
                self.data_plane().route_state(&route).await
            } else {
                None
            };
            let routed = |a: &SocketAddr| state.as_ref().is_some_and(|r| r.upstreams.contains(a));
            let mut candidates: Vec<&InstanceStatus> = left
                .iter()
                .filter(|s| &s.service == name && s.requested_version == *l.version)
                .collect();
            candidates.sort_by_key(|s| (!routed(&s.addr), s.replica, s.created_at));
            let mut set: Vec<(InstanceId, SocketAddr)> = Vec::new();
            let mut replicas = BTreeSet::new();
            for st in candidates {
                if set.len() >= want || replicas.contains(&st.replica) {
                    continue;
                }
                if !self.still_serves(env, st, svc.health.as_deref()).await {
                    l.log
                        .line(format!(
                            "{name} {}: left running but not healthy; replacing it",
                            st.id
                        ))
                        .await;
                    continue;
                }
                match runtime
                    .adopt(&st.id, self.instance_spec(l, name, st.replica))
                    .await
                {
                    Ok(_) => {
                        l.log
                            .line(format!(
                                "{name} r{}: adopted {} on {} (pid {})",
                                st.replica,
                                st.id,
                                st.addr,
                                st.pid.map_or_else(|| "-".to_owned(), |p| p.to_string())
                            ))
                            .await;
                        kept.insert(st.id.clone());
                        replicas.insert(st.replica);
                        set.push((st.id.clone(), st.addr));
                        adopted += 1;
                    }
                    Err(e) => l.log.line(format!("{name} {}: not adopted: {e}", st.id)).await,
                }
            }
            let free: Vec<u32> = (0u32..)
                .filter(|r| !replicas.contains(r))
                .take(want - set.len())
                .collect();
            for r in free {
                let new = self.start_healthy(l, name, r..r + 1, &mut started).await;
                match new {
                    Ok(new) => {
                        started_n += new.len();
                        set.extend(new);
                    }
                    Err(e) => {
                        for id in &started {
                            let _ = runtime.stop(id).await;
                        }
                        return Err(e);
                    }
                }
            }
            routes.insert(name.clone(), state);
            current.insert(
                name.clone(),
                ServiceSet {
                    version: l.version.clone(),
                    instances: set,
                },
            );
        }
        let (warm_version, warm, warm_def) = self.adopt_warm(l, &left, &counts, &mut kept).await;
        for st in left.iter().filter(|s| !kept.contains(&s.id)) {
            match runtime.stop(&st.id).await {
                Ok(_) => {
                    l.log
                        .line(format!(
                            "{} {} ({}): left by a previous server, not needed; stopped",
                            st.service,
                            st.id,
                            st.requested_version.short()
                        ))
                        .await
                }
                Err(e) => l.log.line(format!("could not stop {}: {e}", st.id)).await,
            }
        }
        // Routes that do not point at exactly the adopted set (a run was cut off after its
        // switch, or the data plane was replaced) are switched to it.
        for (name, set) in current.iter().filter(|(n, _)| l.def.services[*n].public) {
            let want: BTreeSet<SocketAddr> = set.instances.iter().map(|(_, a)| *a).collect();
            let same = routes.get(name).and_then(Option::as_ref).is_some_and(|r| {
                r.version == l.version.as_str()
                    && r.upstreams.iter().copied().collect::<BTreeSet<_>>() == want
            });
            if same {
                continue;
            }
            let old = self
                .data_plane()
                .switch(
                    &self.route(env, name)?,
                    Backend::new(l.version.to_string(), want.into_iter().collect()),
                )
                .await
                .map_err(StageError::Failed)?;
            l.log
                .line(format!("{name}: route pointed at {}", l.version.short()))
                .await;
            if let Some(old) = old {
                old.drain(DRAIN_TIMEOUT).await;
            }
        }
        self.converge_workers(env, l.version, l.def, l.env_vars, l.log)
            .await?;
        self.set_env_services(
            env,
            EnvServices {
                version: Some(l.version.clone()),
                current,
                warm_version: warm_version.clone(),
                warm,
                def: Some(l.def.clone()),
                warm_def,
            },
        );
        self.data_plane_health()
            .adopted
            .fetch_add(adopted as u64, std::sync::atomic::Ordering::Relaxed);
        let warm_note = warm_version
            .map(|w| format!("; {} kept warm", w.short()))
            .unwrap_or_default();
        Ok(format!(
            "adopted {adopted} running instances of {}, started {started_n}{warm_note}",
            l.version.short()
        ))
    }

    /// The warm release again after a restart: the public instances of the previously deployed
    /// version, when every public service still has them healthy, claimed with that version's
    /// spec.
    async fn adopt_warm(
        &self,
        l: &Launch<'_>,
        left: &[InstanceStatus],
        counts: &BTreeMap<ServiceName, u32>,
        kept: &mut HashSet<InstanceId>,
    ) -> (
        Option<Version>,
        BTreeMap<ServiceName, ServiceSet>,
        Option<Arc<AppDefinition>>,
    ) {
        let env = l.env;
        // The warm release is the one deployed before the current one (a run cut off after it
        // started a newer version's instances leaves those too; they are not a release).
        let Ok(version) = self.previous_deployed(env, Some(l.version.as_str())).await else {
            return (None, BTreeMap::new(), None);
        };
        let def = match self.definition_at(&version).await {
            Ok((def, _)) => def,
            Err(_) => return (None, BTreeMap::new(), None),
        };
        let public: Vec<&ServiceName> = def
            .services
            .iter()
            .filter(|(_, s)| s.public && self.managed_as_instances(env, true))
            .map(|(n, _)| n)
            .collect();
        let complete = public.iter().all(|p| {
            left.iter()
                .any(|s| &s.service == *p && s.requested_version == version)
        });
        if !complete {
            return (None, BTreeMap::new(), None);
        }
        let dir = self.release_dir(&version);
        if public.is_empty() || !dir.is_dir() {
            return (None, BTreeMap::new(), None);
        }
        let vars = self.instance_env_for(env, &version).await;
        let wl = Launch {
            env,
            version: &version,
            release_dir: &dir,
            env_vars: &vars,
            log: l.log,
            cancel: l.cancel,
            def: &def,
        };
        let runtime = self.runtime_for(env).clone();
        let mut warm = BTreeMap::new();
        for name in public {
            let svc = &def.services[name];
            let mut set = Vec::new();
            for st in left
                .iter()
                .filter(|s| &s.service == name && s.requested_version == version)
            {
                if set.len() >= counts.get(name).copied().unwrap_or(1) as usize
                    || !self.still_serves(env, st, svc.health.as_deref()).await
                {
                    continue;
                }
                if runtime
                    .adopt(&st.id, self.instance_spec(&wl, name, st.replica))
                    .await
                    .is_ok()
                {
                    set.push((st.id.clone(), st.addr));
                }
            }
            if set.is_empty() {
                // A warm release missing a service would mix versions on `rollback --fast`.
                for set in warm.values() {
                    let set: &ServiceSet = set;
                    for (id, _) in &set.instances {
                        let _ = runtime.stop(id).await;
                    }
                }
                return (None, BTreeMap::new(), None);
            }
            kept.extend(set.iter().map(|(id, _)| id.clone()));
            warm.insert(
                name.clone(),
                ServiceSet {
                    version: version.clone(),
                    instances: set,
                },
            );
        }
        l.log
            .line(format!(
                "previous release {} adopted warm for `cutover rollback --fast`",
                version.short()
            ))
            .await;
        (Some(version), warm, Some(def.clone()))
    }
}

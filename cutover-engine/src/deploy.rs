//! Deploy services: start the new version's instances, wait for health,
//! switch the router atomically, drain, and keep the previous release warm.
//!
//! Blue-green (default): every new instance of every service is started and
//! healthy before any route moves; then all public routes are switched back
//! to back, the old generations drained (bounded), the old non-public
//! instances stopped and the old public instances kept warm, receiving no
//! traffic, for a sub-second fast rollback. A new version that fails its
//! health check never receives traffic: its instances are stopped and the
//! old version keeps serving. Rolling replaces one instance at a time; while
//! it runs the route's `X-Cutover-Version` names both versions (`old+new`),
//! because both really answer.
//!
//! What serves is kept in memory (`EnvServices`) and rebuilt at start by
//! `reconcile_env` from `last_deployed_version`; what *really* runs is always
//! read from the runtime (`status`). Rejected: persisting instance ids, which
//! die with the server anyway (the runtime cleans leftovers up at start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use cutover_core::config::{AppDefinition, Strategy};
use cutover_core::{EnvName, ServiceName, Version};
use cutover_router::{Backend, RouteKey};
use cutover_runtime::{HealthSettings, InstanceId, InstanceSpec};
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::dataplane::OldGeneration;
use crate::pipeline::executor::StageError;
use crate::pipeline::logs::StageLog;

/// How long in-flight requests of a switched-out generation may finish.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The instances of one service at one version.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSet {
    pub version: Version,
    pub instances: Vec<(InstanceId, SocketAddr)>,
}

/// What serves an environment, and what is kept warm.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvServices {
    pub version: Option<Version>,
    pub current: BTreeMap<ServiceName, ServiceSet>,
    /// The previous release's public instances: running, no traffic.
    pub warm_version: Option<Version>,
    pub warm: BTreeMap<ServiceName, ServiceSet>,
    /// The application definition `version` was deployed with (see `definition`).
    pub def: Option<Arc<AppDefinition>>,
    /// The warm release's definition.
    pub warm_def: Option<Arc<AppDefinition>>,
}

/// What to start: one version of the application in one environment.
pub(crate) struct Launch<'a> {
    pub env: &'a EnvName,
    pub version: &'a Version,
    pub release_dir: &'a Path,
    pub env_vars: &'a [(String, String)],
    pub log: &'a StageLog,
    pub cancel: &'a CancellationToken,
    /// The application definition of `version`: which services run, how.
    pub def: &'a Arc<AppDefinition>,
}

/// What a run changed, so a failure can put it back.
#[derive(Debug)]
pub(crate) struct Rollout {
    pub(crate) before: EnvServices,
    pub(crate) started: Vec<InstanceId>,
    pub(crate) switched: bool,
    /// The definition rolled out (its routes are removed by an undo when `before` lacks them).
    pub(crate) def: Option<Arc<AppDefinition>>,
}

impl Engine {
    pub(crate) fn env_services(&self, env: &EnvName) -> EnvServices {
        self.deployments()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(env)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn set_env_services(&self, env: &EnvName, services: EnvServices) {
        self.deployments()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(env.clone(), services);
    }

    /// The version whose instances receive traffic now, if any.
    pub fn serving_version(&self, env: &EnvName) -> Option<Version> {
        self.env_services(env).version
    }

    /// The previous release, still running without traffic, if any.
    pub fn warm_previous(&self, env: &EnvName) -> Option<Version> {
        let s = self.env_services(env);
        s.warm_version.filter(|_| !s.warm.is_empty())
    }

    pub(crate) fn route(&self, env: &EnvName, service: &ServiceName) -> Result<RouteKey, StageError> {
        RouteKey::new(self.config().app.as_str(), env.as_str(), service.as_str())
            .map_err(|e| StageError::Failed(e.to_string()))
    }

    pub(crate) fn health_settings(deadline: Duration) -> HealthSettings {
        HealthSettings {
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
            deadline,
        }
    }

    /// What an instance of `service` at `l.version` runs: the one place a spec is made, for a
    /// start and for the adoption of an instance a previous server started.
    pub(crate) fn instance_spec(&self, l: &Launch<'_>, service: &ServiceName, replica: u32) -> InstanceSpec {
        let svc = &l.def.services[service];
        InstanceSpec {
            app: self.config().app.clone(),
            env: l.env.clone(),
            service: service.clone(),
            version: l.version.clone(),
            release_dir: l.release_dir.to_owned(),
            run: svc.run.clone(),
            env_vars: {
                let mut vars = l.env_vars.to_vec();
                if let Some(port) = svc.port {
                    vars.push((cutover_docker::CONTAINER_PORT_VAR.to_owned(), port.to_string()));
                }
                vars
            },
            replica,
            health_path: svc.health.clone(),
            placement: svc.placement.clone(),
        }
    }

    /// Starts `replicas` instances of one service and waits until every one
    /// is healthy. Started ids are pushed to `started` as they come, so a
    /// failure half-way can stop them.
    pub(crate) async fn start_healthy(
        &self,
        l: &Launch<'_>,
        service: &ServiceName,
        replicas: std::ops::Range<u32>,
        started: &mut Vec<InstanceId>,
    ) -> Result<Vec<(InstanceId, SocketAddr)>, StageError> {
        let svc = &l.def.services[service];
        let mut out = Vec::new();
        for replica in replicas {
            let spec = self.instance_spec(l, service, replica);
            // With its causes: a Swarm task's rejection says which node and why (a failed pull).
            let status = self
                .runtime_for(l.env)
                .start(spec)
                .await
                .map_err(|e| StageError::Failed(crate::releases::error_chain(&e)))?;
            started.push(status.id.clone());
            l.log
                .line(format!(
                    "{service} r{replica}: started {} on {}",
                    status.id.as_str(),
                    status.addr
                ))
                .await;
            out.push((status.id, status.addr));
        }
        for (id, addr) in &out {
            match &svc.health {
                Some(path) => {
                    let settings = Self::health_settings(svc.health_timeout);
                    let runtime = self.runtime_for(l.env);
                    let wait = runtime.wait_healthy(id, path, &settings);
                    tokio::select! {
                        r = wait => r.map_err(|e| StageError::Failed(format!("{service} is not healthy: {e}")))?,
                        () = l.cancel.cancelled() => return Err(StageError::Cancelled),
                    }
                    l.log
                        .line(format!("{service} {}: healthy at {addr}{path}", id.as_str()))
                        .await;
                }
                None => {
                    // No health path: alive after a short grace is the best we can know.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let st = self
                        .runtime_for(l.env)
                        .instance(id)
                        .await
                        .map_err(|e| StageError::Failed(e.to_string()))?;
                    if st.pid.is_none() {
                        return Err(StageError::Failed(format!(
                            "{service} {} exited right after starting ({}); add a `health` path to check readiness",
                            id.as_str(),
                            st.last_exit.unwrap_or_default()
                        )));
                    }
                    l.log
                        .line(format!(
                            "{service} {}: running (no health path configured)",
                            id.as_str()
                        ))
                        .await;
                }
            }
        }
        Ok(out)
    }

    /// Starts every service whose replicas `which` selects, healthy, as sets.
    pub(crate) async fn start_services(
        &self,
        l: &Launch<'_>,
        which: impl Fn(&cutover_core::config::Service) -> bool,
        started: &mut Vec<InstanceId>,
    ) -> Result<BTreeMap<ServiceName, ServiceSet>, StageError> {
        let counts = self.replica_counts_for(l.env, l.def).await;
        let mut sets = BTreeMap::new();
        for (name, _) in l.def.services.iter().filter(|(_, s)| which(s)) {
            let n = counts[name];
            let instances = self.start_healthy(l, name, 0..n, started).await?;
            sets.insert(
                name.clone(),
                ServiceSet {
                    version: l.version.clone(),
                    instances,
                },
            );
        }
        Ok(sets)
    }

    /// Points every public route at the given sets, back to back; returns the
    /// generations switched out.
    pub(crate) async fn switch_routes(
        &self,
        env: &EnvName,
        def: &AppDefinition,
        sets: &BTreeMap<ServiceName, ServiceSet>,
    ) -> Result<Vec<(ServiceName, OldGeneration)>, StageError> {
        let mut old = Vec::new();
        for (name, set) in sets
            .iter()
            .filter(|(n, _)| def.services.get(*n).is_some_and(|s| s.public))
        {
            let addrs = set.instances.iter().map(|(_, a)| *a).collect();
            if let Some(g) = self
                .data_plane()
                .switch(
                    &self.route(env, name)?,
                    Backend::new(set.version.to_string(), addrs),
                )
                .await
                .map_err(StageError::Failed)?
            {
                old.push((name.clone(), g));
            }
        }
        Ok(old)
    }

    /// Rolls every service out to `l.version`. `slot` receives the undo
    /// record before anything changes.
    pub(crate) async fn roll_out(
        &self,
        l: &Launch<'_>,
        slot: &mut Option<Rollout>,
    ) -> Result<String, StageError> {
        let before = self.env_services(l.env);
        *slot = Some(Rollout {
            before: before.clone(),
            started: Vec::new(),
            switched: false,
            def: Some(l.def.clone()),
        });
        let mut started = Vec::new();
        let result = match self.config().environments[l.env].strategy {
            Strategy::BlueGreen => self.blue_green(l, &before, &mut started, slot).await,
            Strategy::Rolling => self.rolling(l, &before, &mut started, slot).await,
        };
        if let Some(r) = slot.as_mut() {
            r.started = started;
        }
        result
    }

    async fn blue_green(
        &self,
        l: &Launch<'_>,
        before: &EnvServices,
        started: &mut Vec<InstanceId>,
        slot: &mut Option<Rollout>,
    ) -> Result<String, StageError> {
        let next = self
            .start_services(l, |svc| self.managed_as_instances(l.env, svc.public), started)
            .await?;
        // Swarm updates non-public services itself; a failure rolls them back
        // there, before any traffic has moved.
        self.converge_workers(l.env, l.version, l.def, l.env_vars, l.log)
            .await?;
        self.switch_over(l, before, next, slot, false).await
    }

    /// The second half of blue-green, once every new instance is healthy: switch every public
    /// route back to back, (with `release_hold`) release the requests a hold kept waiting, drain
    /// the old generations, keep the previous release warm.
    pub(crate) async fn switch_over(
        &self,
        l: &Launch<'_>,
        before: &EnvServices,
        next: BTreeMap<ServiceName, ServiceSet>,
        slot: &mut Option<Rollout>,
        release_hold: bool,
    ) -> Result<String, StageError> {
        // Everything is healthy: switch every public route, back to back.
        let mut old_generations = self.switch_routes(l.env, l.def, &next).await?;
        // Public services the new version no longer has: their routes go (their instances stay
        // warm with the previous release, for a rollback that brings them back).
        old_generations.extend(
            self.remove_routes_not_in(l.env, before.def.as_deref(), l.def)
                .await?,
        );
        if let Some(r) = slot.as_mut() {
            r.switched = true;
        }
        if release_hold {
            self.release_hold_now(l.env, l.log).await;
        }
        l.log
            .line(format!(
                "traffic switched to {} on every public service",
                l.version.short()
            ))
            .await;
        for (name, generation) in old_generations {
            let left = generation.drain(DRAIN_TIMEOUT).await;
            if left > 0 {
                l.log
                    .line(format!(
                        "{name}: {left} requests of the old version still running after {DRAIN_TIMEOUT:?}"
                    ))
                    .await;
            }
        }
        for set in before.warm.values() {
            self.stop_set(l.env, set, l.log).await;
        }
        let (warm_version, warm) = self.keep_warm(l.env, before, l.version, l.log).await;
        let warm_def = warm_version
            .as_ref()
            .map(|_| before.def.clone().unwrap_or_else(|| self.base_definition()));
        if let Some(w) = &warm_version {
            l.log
                .line(format!(
                    "previous release {} kept warm for `cutover rollback --fast`",
                    w.short()
                ))
                .await;
        }
        self.set_env_services(
            l.env,
            EnvServices {
                version: Some(l.version.clone()),
                current: next,
                warm_version,
                warm,
                def: Some(l.def.clone()),
                warm_def,
            },
        );
        Ok(format!("blue-green to {}", l.version.short()))
    }

    /// The public instances of what served before become warm (running, no
    /// traffic); its non-public instances are stopped, since workers must not
    /// run old code beside new.
    async fn keep_warm(
        &self,
        env: &EnvName,
        before: &EnvServices,
        now: &Version,
        log: &StageLog,
    ) -> (Option<Version>, BTreeMap<ServiceName, ServiceSet>) {
        let mut warm = BTreeMap::new();
        let def = before.def.clone().unwrap_or_else(|| self.base_definition());
        for (name, set) in &before.current {
            if def.services.get(name).is_some_and(|s| s.public) && set.version != *now {
                warm.insert(name.clone(), set.clone());
            } else {
                self.stop_set(env, set, log).await;
            }
        }
        let version = if warm.is_empty() {
            None
        } else {
            before.version.clone()
        };
        (version, warm)
    }

    async fn rolling(
        &self,
        l: &Launch<'_>,
        before: &EnvServices,
        started: &mut Vec<InstanceId>,
        slot: &mut Option<Rollout>,
    ) -> Result<String, StageError> {
        let counts = self.replica_counts_for(l.env, l.def).await;
        let mut next = BTreeMap::new();
        for (name, svc) in l
            .def
            .services
            .iter()
            .filter(|(_, s)| self.managed_as_instances(l.env, s.public))
        {
            let n = counts[name];
            let old: Vec<(InstanceId, SocketAddr)> = before
                .current
                .get(name)
                .map(|s| s.instances.clone())
                .unwrap_or_default();
            let old_version = before.current.get(name).map(|s| s.version.clone());
            let mut new_set = Vec::new();
            for replica in 0..n {
                new_set.extend(self.start_healthy(l, name, replica..replica + 1, started).await?);
                let remaining: Vec<_> = old.iter().skip(new_set.len()).cloned().collect();
                if svc.public {
                    // Both versions answer until the last old instance goes; the header says so.
                    let label = match (&old_version, remaining.is_empty()) {
                        (Some(o), false) if o != l.version => format!("{o}+{}", l.version),
                        _ => l.version.to_string(),
                    };
                    let addrs = new_set.iter().chain(remaining.iter()).map(|(_, a)| *a).collect();
                    if let Some(old_gen) = self
                        .data_plane()
                        .switch(&self.route(l.env, name)?, Backend::new(label, addrs))
                        .await
                        .map_err(StageError::Failed)?
                    {
                        if let Some(r) = slot.as_mut() {
                            r.switched = true;
                        }
                        old_gen.drain(DRAIN_TIMEOUT).await;
                    }
                }
                if let Some((id, _)) = old.get(replica as usize) {
                    let _ = self.runtime_for(l.env).stop(id).await;
                    l.log
                        .line(format!("{name}: replaced old instance {}", id.as_str()))
                        .await;
                }
            }
            for (id, _) in old.iter().skip(n as usize) {
                let _ = self.runtime_for(l.env).stop(id).await;
            }
            next.insert(
                name.clone(),
                ServiceSet {
                    version: l.version.clone(),
                    instances: new_set,
                },
            );
        }
        self.converge_workers(l.env, l.version, l.def, l.env_vars, l.log)
            .await?;
        // Services the new version no longer has: routes removed, instances stopped.
        for (_, old) in self
            .remove_routes_not_in(l.env, before.def.as_deref(), l.def)
            .await?
        {
            old.drain(DRAIN_TIMEOUT).await;
        }
        for (name, set) in before.current.iter().filter(|(n, _)| !next.contains_key(*n)) {
            if self.managed_as_instances(l.env, true) {
                l.log
                    .line(format!("{name}: no longer in the definition; stopped"))
                    .await;
                self.stop_set(l.env, set, l.log).await;
            }
        }
        for set in before.warm.values() {
            self.stop_set(l.env, set, l.log).await;
        }
        self.set_env_services(
            l.env,
            EnvServices {
                version: Some(l.version.clone()),
                current: next,
                def: Some(l.def.clone()),
                ..Default::default()
            },
        );
        Ok(format!("rolling to {}", l.version.short()))
    }

    /// Replaces one service's instances with `n` of the serving version, blue-green: the new
    /// set starts healthy, the route switches, the old set drains and stops. Other services
    /// and the warm release are untouched. A failure stops what it started.
    pub(crate) async fn replace_service(
        &self,
        l: &Launch<'_>,
        service: &ServiceName,
        n: u32,
    ) -> Result<(), StageError> {
        let public = l.def.services[service].public;
        if !self.managed_as_instances(l.env, public) {
            // A Swarm service: its own update machinery changes the replica count.
            return self
                .converge_workers(l.env, l.version, l.def, l.env_vars, l.log)
                .await;
        }
        let before = self.env_services(l.env);
        let mut started = Vec::new();
        let new = match self.start_healthy(l, service, 0..n, &mut started).await {
            Ok(new) => new,
            Err(e) => {
                for id in &started {
                    let _ = self.runtime_for(l.env).stop(id).await;
                }
                return Err(e);
            }
        };
        if public {
            let addrs = new.iter().map(|(_, a)| *a).collect();
            if let Some(old) = self
                .data_plane()
                .switch(
                    &self.route(l.env, service)?,
                    Backend::new(l.version.to_string(), addrs),
                )
                .await
                .map_err(StageError::Failed)?
            {
                l.log
                    .line(format!("{service}: traffic switched to {n} instances"))
                    .await;
                old.drain(DRAIN_TIMEOUT).await;
            }
        }
        if let Some(old) = before.current.get(service) {
            self.stop_set(l.env, old, l.log).await;
        }
        let mut after = self.env_services(l.env);
        after.current.insert(
            service.clone(),
            ServiceSet {
                version: l.version.clone(),
                instances: new,
            },
        );
        self.set_env_services(l.env, after);
        l.log
            .line(format!(
                "{service}: {n} replicas of {} running",
                l.version.short()
            ))
            .await;
        Ok(())
    }

    /// Stops the warm release: before a `post_switch` hook, whose changes (the contract half of
    /// a schema change) the previous version's code may not survive. `rollback --fast` then has
    /// nothing to switch to; a full rollback (with `hooks.rollback`) remains.
    pub(crate) async fn drop_warm(&self, env: &EnvName, log: &StageLog) {
        let mut services = self.env_services(env);
        let Some(version) = services.warm_version.take() else {
            return;
        };
        for set in services.warm.values() {
            self.stop_set(env, set, log).await;
        }
        log.line(format!(
            "previous release {} stopped before post_switch: no warm release for `rollback --fast`",
            version.short()
        ))
        .await;
        services.warm.clear();
        services.warm_def = None;
        self.set_env_services(env, services);
    }

    /// Removes the routes of the public services `old` has and `new` has not (a version that
    /// dropped a service); returns their generations, to drain.
    pub(crate) async fn remove_routes_not_in(
        &self,
        env: &EnvName,
        old: Option<&AppDefinition>,
        new: &AppDefinition,
    ) -> Result<Vec<(ServiceName, OldGeneration)>, StageError> {
        let base = self.base_definition();
        let old = old.unwrap_or(&base);
        let mut gone = Vec::new();
        for (name, _) in old
            .services
            .iter()
            .filter(|(n, s)| s.public && !new.services.get(*n).is_some_and(|s| s.public))
        {
            if let Some(g) = self
                .data_plane()
                .remove(&self.route(env, name)?)
                .await
                .map_err(StageError::Failed)?
            {
                gone.push((name.clone(), g));
            }
        }
        Ok(gone)
    }

    pub(crate) async fn stop_set(&self, env: &EnvName, set: &ServiceSet, log: &StageLog) {
        for (id, _) in &set.instances {
            if let Err(e) = self.runtime_for(env).stop(id).await {
                log.line(format!("could not stop {}: {e}", id.as_str())).await;
            }
        }
    }

    /// Undoes a rollout: routes back to what served before, instances this
    /// run started stopped, the remembered state restored.
    pub(crate) async fn undo_rollout(&self, env: &EnvName, rollout: Rollout, log: &StageLog) {
        let mut before = rollout.before;
        let old_def = before.def.clone().unwrap_or_else(|| self.base_definition());
        if rollout.switched {
            let mut names: std::collections::BTreeSet<ServiceName> =
                old_def.services.keys().cloned().collect();
            if let Some(new) = &rollout.def {
                names.extend(new.services.keys().cloned());
            }
            let public_in = |d: Option<&AppDefinition>, n: &ServiceName| {
                d.is_some_and(|d| d.services.get(n).is_some_and(|s| s.public))
            };
            for name in &names {
                let Ok(route) = self.route(env, name) else {
                    continue;
                };
                let was_public = public_in(Some(&old_def), name);
                let is_public = public_in(rollout.def.as_deref(), name);
                match before.current.get(name).filter(|_| was_public) {
                    Some(set) => {
                        let addrs = set.instances.iter().map(|(_, a)| *a).collect();
                        if let Err(e) = self
                            .data_plane()
                            .switch(&route, Backend::new(set.version.to_string(), addrs))
                            .await
                        {
                            log.line(e).await;
                        }
                    }
                    None if was_public || is_public => {
                        if let Err(e) = self.data_plane().remove(&route).await {
                            log.line(e).await;
                        }
                    }
                    None => {}
                }
            }
            log.line("traffic switched back to the previous version").await;
        }
        for id in &rollout.started {
            let _ = self.runtime_for(env).stop(id).await;
        }
        if !rollout.started.is_empty() {
            log.line(format!(
                "stopped {} instances of the new version",
                rollout.started.len()
            ))
            .await;
        }
        // Old non-public instances were stopped at the switch (workers must
        // not run two versions); bring them back at the old version.
        if let Some(version) = before.version.clone() {
            let vars = self.instance_env_for(env, &version).await;
            let dir = self.release_dir(&version);
            let cancel = CancellationToken::new();
            let l = Launch {
                env,
                version: &version,
                release_dir: &dir,
                env_vars: &vars,
                log,
                cancel: &cancel,
                def: &old_def,
            };
            for (name, set) in before.current.iter_mut() {
                let mut alive = true;
                for (id, _) in &set.instances {
                    alive &= self.runtime_for(env).instance(id).await.is_ok();
                }
                if alive {
                    continue;
                }
                let n = set.instances.len() as u32;
                match self.start_healthy(&l, name, 0..n, &mut Vec::new()).await {
                    Ok(instances) => set.instances = instances,
                    Err(e) => {
                        log.line(format!("could not restart {name} at {}: {e:?}", version.short()))
                            .await
                    }
                }
            }
        }
        if let Some(version) = before.version.clone() {
            let vars = self.instance_env_for(env, &version).await;
            if let Err(e) = self.converge_workers(env, &version, &old_def, &vars, log).await {
                log.line(format!(
                    "could not converge Swarm services back to {}: {e:?}",
                    version.short()
                ))
                .await;
            }
        }
        self.set_env_services(env, before);
    }

    /// Fast rollback: switch public routes to the warm release at once, then
    /// restart the non-public services at that version; the release that
    /// served becomes the warm one.
    pub(crate) async fn switch_to_warm(
        &self,
        env: &EnvName,
        version: &Version,
        log: &StageLog,
    ) -> Result<Rollout, StageError> {
        let before = self.env_services(env);
        if before.warm_version.as_ref() != Some(version) || before.warm.is_empty() {
            return Err(StageError::Failed(format!(
                "{} is no longer warm; run a full rollback: cutover rollback {env} --to {version}",
                version.short()
            )));
        }
        let warm_def = before.warm_def.clone().unwrap_or_else(|| self.base_definition());
        let t0 = std::time::Instant::now();
        self.switch_routes(env, &warm_def, &before.warm).await?;
        // Public services the warm release does not have: their routes go (a fast rollback
        // waits for no drain, as for the switch itself).
        self.remove_routes_not_in(env, before.def.as_deref(), &warm_def)
            .await?;
        log.line(format!(
            "traffic switched to {} in {} ms",
            version.short(),
            t0.elapsed().as_millis()
        ))
        .await;
        let mut started = Vec::new();
        let vars = self.instance_env_for(env, version).await;
        let dir = self.release_dir(version);
        let cancel = CancellationToken::new();
        let l = Launch {
            env,
            version,
            release_dir: &dir,
            env_vars: &vars,
            log,
            cancel: &cancel,
            def: &warm_def,
        };
        let mut current = before.warm.clone();
        current.extend(
            self.start_services(
                &l,
                |s| !s.public && self.managed_as_instances(env, false),
                &mut started,
            )
            .await?,
        );
        self.converge_workers(env, version, &warm_def, &vars, log).await?;
        let (warm_version, warm) = self.keep_warm(env, &before, version, log).await;
        let next_warm_def = warm_version
            .as_ref()
            .map(|_| before.def.clone().unwrap_or_else(|| self.base_definition()));
        self.set_env_services(
            env,
            EnvServices {
                version: Some(version.clone()),
                current,
                warm_version,
                warm,
                def: Some(warm_def.clone()),
                warm_def: next_warm_def,
            },
        );
        Ok(Rollout {
            before,
            started,
            switched: true,
            def: Some(warm_def),
        })
    }
}

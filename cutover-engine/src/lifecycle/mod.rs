//! Environment lifecycle: integration environments created and removed on
//! demand, expiry of temporary environments (TTL), and auto-deploy.
//!
//! The engine's environment set is a [`Topology`] behind one `ArcSwap`: the
//! environments of `cutover.yml` plus the active integration instances, each
//! instantiated from an integration-tier entry of the file (its *template*)
//! with a branch. `Engine::config()` hands out a snapshot of it, so the rest
//! of the engine indexes environments exactly as before.
//!
//! The one source of truth for what exists beyond the file is a lifecycle
//! record per environment in the parameter store, at
//! `/<app>/environments/<env>` (JSON, written by Cutover only, with the
//! store's history of every change): an integration instance's template,
//! branch, creator, last activity, expiry and state (active, deleted,
//! expired); a prod-like environment's activation and expiry; the last
//! commit auto-deploy started a run for. The topology is rebuilt from the
//! file and these records at start and after every change; every change is
//! written to the store before it is acted upon. Rejected: a new table
//! (the parameter store already gives history, compare-and-set and both
//! backends), and a registry beside the configuration (two sources that
//! every `config().environments[...]` lookup would have to consult).
//!
//! Removing an environment (delete or expiry) holds the environment's *gate*,
//! which its worker holds while it executes a run, so a teardown and a run
//! never overlap: the reaper skips an environment whose gate is taken.

mod auto_deploy;
mod hosts;
mod naming;
mod reaper;
mod teardown;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_core::config::{Config, Tier};
use cutover_core::{Actor, EnvName};
use cutover_store::ParamKey;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use hosts::EdgeBase;
pub use naming::{derive_name, slug};

use crate::pipeline::SYSTEM_ACTOR;
use crate::{Engine, EngineError, ReleaseRequest, now_ms};

/// How long a forced delete waits for a cancelled run to put things back.
const FORCE_WAIT: Duration = Duration::from_secs(60);

/// How often the reaper and the auto-deploy watcher look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleSettings {
    pub reap_interval: Duration,
    pub watch_interval: Duration,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            reap_interval: Duration::from_secs(5),
            watch_interval: Duration::from_secs(5),
        }
    }
}

impl LifecycleSettings {
    /// Reads `CUTOVER_REAP_INTERVAL` and `CUTOVER_AUTO_DEPLOY_INTERVAL`
    /// (durations such as `1s`, `30s`); unset means 5s each.
    pub fn from_env() -> Result<Self, String> {
        let mut s = Self::default();
        for (var, slot) in [
            ("CUTOVER_REAP_INTERVAL", &mut s.reap_interval),
            ("CUTOVER_AUTO_DEPLOY_INTERVAL", &mut s.watch_interval),
        ] {
            if let Ok(text) = std::env::var(var) {
                *slot = cutover_core::config::parse_duration(&text).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        Ok(s)
    }
}

/// Declared in `cutover.yml`, or created per branch from an integration template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvKind {
    Static,
    Integration,
}

/// Where an environment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifeState {
    Active,
    /// An integration instance removed by a person (`cutover env delete`).
    Deleted,
    /// Torn down by the reaper after its ttl.
    Expired,
}

/// The persisted lifecycle of one environment (`/<app>/environments/<env>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LifecycleRecord {
    pub kind: EnvKind,
    pub state: LifeState,
    /// Integration: the `cutover.yml` entry it was made from.
    #[serde(default)]
    pub template: Option<EnvName>,
    /// Integration: the branch it runs.
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub created_at_ms: Option<i64>,
    #[serde(default)]
    pub created_by: Option<String>,
    /// Integration: creation, then every deploy; the ttl counts from here.
    #[serde(default)]
    pub last_activity_ms: Option<i64>,
    /// Integration: when this instance last got through a deploy (None:
    /// never since it was created, so nothing is brought back at start).
    #[serde(default)]
    pub last_deployed_at_ms: Option<i64>,
    /// Prod-like: when a deploy made it active; the ttl counts from here.
    #[serde(default)]
    pub activated_at_ms: Option<i64>,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// When it was deleted or expired.
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    #[serde(default)]
    pub ended_by: Option<String>,
    /// Auto-deploy: the newest branch head it has started a run for (or
    /// found deployed), so a commit whose run failed is not retried.
    #[serde(default)]
    pub auto_deploy_seen: Option<String>,
}

impl LifecycleRecord {
    fn new_static() -> Self {
        Self {
            kind: EnvKind::Static,
            state: LifeState::Active,
            template: None,
            branch: None,
            created_at_ms: None,
            created_by: None,
            last_activity_ms: None,
            last_deployed_at_ms: None,
            activated_at_ms: None,
            expires_at_ms: None,
            ended_at_ms: None,
            ended_by: None,
            auto_deploy_seen: None,
        }
    }

    fn is_live_instance(&self) -> bool {
        self.kind == EnvKind::Integration && self.state == LifeState::Active
    }
}

/// When something that was active at `from_ms` expires, given its ttl.
pub fn expiry(from_ms: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| from_ms.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)))
}

/// Whether an expiry time has come.
pub fn is_due(expires_at_ms: Option<i64>, now_ms: i64) -> bool {
    expires_at_ms.is_some_and(|at| now_ms >= at)
}

/// The environment set: the file's environments plus the live integration
/// instances, and every lifecycle record.
pub(crate) struct Topology {
    pub config: Arc<Config>,
    pub records: BTreeMap<EnvName, LifecycleRecord>,
}

impl Topology {
    /// Builds the effective configuration from the file and the records.
    pub fn build(base: &Config, records: BTreeMap<EnvName, LifecycleRecord>) -> Self {
        let mut config = base.clone();
        for (name, rec) in records.iter().filter(|(_, r)| r.is_live_instance()) {
            if base.environments.contains_key(name) {
                continue; // a file entry always wins; the record is stale
            }
            let Some(template) = rec.template.as_ref().and_then(|t| base.environments.get(t)) else {
                tracing::warn!(env = %name, "integration environment's template is no longer in cutover.yml; not restored");
                continue;
            };
            if template.tier != Tier::Integration {
                continue;
            }
            let mut env = template.clone();
            env.branch = rec.branch.clone();
            // Fixed router ports belong to the template; instances are
            // reached by host name only.
            env.ports.clear();
            config.environments.insert(name.clone(), env);
        }
        hosts::expand_all(&mut config, base, &records);
        Self {
            config: Arc::new(config),
            records,
        }
    }
}

/// In-memory lifecycle state: the per-environment gates and worker generations.
#[derive(Default)]
pub(crate) struct LifecycleShared {
    /// Serialises read-modify-write of records and topology swaps.
    pub lock: tokio::sync::Mutex<()>,
    gates: Mutex<HashMap<EnvName, Arc<tokio::sync::Mutex<()>>>>,
    workers: Mutex<HashMap<EnvName, u64>>,
    next_worker: std::sync::atomic::AtomicU64,
}

/// What `cutover env create` asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub template: String,
    pub branch: String,
    /// Also start a release of the branch head.
    pub deploy: bool,
    pub actor: Actor,
}

/// What `cutover env create` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub environment: crate::EnvironmentSummary,
    /// The run `--deploy` started.
    pub run: Option<cutover_store::RunRecord>,
}

impl Engine {
    pub(crate) fn lifecycle(&self) -> &LifecycleShared {
        &self.inner.lifecycle
    }

    pub(crate) fn topology(&self) -> Arc<Topology> {
        self.inner.topology.load_full()
    }

    /// The lifecycle record of `env`, if it has one.
    pub(crate) fn record(&self, env: &EnvName) -> Option<LifecycleRecord> {
        self.topology().records.get(env).cloned()
    }

    /// Whether `env` is a prod-like environment torn down after its ttl.
    pub(crate) fn is_expired(&self, env: &EnvName) -> bool {
        self.record(env).is_some_and(|r| r.state == LifeState::Expired)
    }

    /// Whether `env` is an integration-tier entry of the file, which
    /// instances are made from, rather than an environment of its own.
    pub(crate) fn is_template(&self, env: &EnvName) -> bool {
        self.inner
            .base
            .load()
            .environments
            .get(env)
            .is_some_and(|e| e.tier == Tier::Integration)
    }

    /// Refuses to deploy an integration template itself.
    pub(crate) fn refuse_template(&self, env: &EnvName) -> Result<(), EngineError> {
        if self.is_template(env) {
            return Err(EngineError::Refused(format!(
                "{env} is an integration template, not an environment; create one for a branch: \
                 cutover env create {env} --branch BRANCH --deploy"
            )));
        }
        Ok(())
    }

    /// The gate a worker holds while it executes a run of `env`.
    pub(crate) fn env_gate(&self, env: &EnvName) -> Arc<tokio::sync::Mutex<()>> {
        self.lifecycle()
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(env.clone())
            .or_default()
            .clone()
    }

    /// Registers a new worker for `env`; an older one ends at its next look.
    pub(crate) fn worker_generation(&self, env: &EnvName) -> u64 {
        let generation = self
            .lifecycle()
            .next_worker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lifecycle()
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(env.clone(), generation);
        generation
    }

    /// Whether the worker of generation `gen` still owns `env`.
    pub(crate) fn worker_current(&self, env: &EnvName, generation: u64) -> bool {
        self.lifecycle()
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(env)
            == Some(&generation)
            && self.config().environments.contains_key(env)
    }

    pub(crate) fn stop_worker(&self, env: &EnvName) {
        self.lifecycle()
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(env);
        self.shared().wakeup(env).notify_one();
    }

    fn record_key(&self, env: &EnvName) -> ParamKey {
        let raw = format!("{}/{env}", self.records_prefix());
        ParamKey::parse(&raw).unwrap_or_else(|e| panic!("lifecycle key {raw} must be valid: {e}"))
    }

    /// `/<app>/environments`: where lifecycle records live.
    pub(crate) fn records_prefix(&self) -> String {
        format!("/{}/environments", self.inner.base.load().app)
    }

    /// Persists `rec` for `env`, then swaps in the topology built with it.
    /// Call with the lifecycle lock held.
    async fn put_record(&self, env: &EnvName, rec: LifecycleRecord) -> Result<(), EngineError> {
        let value = serde_json::to_string(&rec).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.store()
            .param_put(&self.record_key(env), &value, SYSTEM_ACTOR, None)
            .await?;
        let mut records = self.topology().records.clone();
        records.insert(env.clone(), rec);
        self.inner
            .topology
            .store(Arc::new(Topology::build(&self.inner.base.load(), records)));
        self.push_public_hosts().await;
        Ok(())
    }

    /// At start: reads every lifecycle record and rebuilds the topology.
    pub(crate) async fn restore_lifecycle(&self) -> Result<(), EngineError> {
        let mut records = BTreeMap::new();
        for p in self.store().param_list(&self.records_prefix()).await? {
            let Some(name) = p.key.rsplit('/').next().and_then(|n| EnvName::parse(n).ok()) else {
                continue;
            };
            match serde_json::from_str::<LifecycleRecord>(&p.value) {
                Ok(rec) => {
                    records.insert(name, rec);
                }
                Err(e) => tracing::error!(key = %p.key, error = %e, "unreadable lifecycle record; ignored"),
            }
        }
        let topology = Topology::build(&self.inner.base.load(), records);
        for (name, rec) in topology.records.iter().filter(|(_, r)| r.is_live_instance()) {
            if topology.config.environments.contains_key(name) {
                tracing::info!(env = %name, branch = rec.branch.as_deref().unwrap_or(""), "integration environment restored");
            }
        }
        self.inner.topology.store(Arc::new(topology));
        self.push_public_hosts().await;
        Ok(())
    }

    /// Whether a start of the server should bring `env` back to its last
    /// deployed version: not when it expired, nor for an instance that was
    /// (re)created and never deployed since.
    pub(crate) fn should_reconcile(&self, env: &EnvName) -> bool {
        match self.record(env) {
            None => true,
            Some(r) if r.state != LifeState::Active => false,
            Some(r) if r.kind == EnvKind::Integration => r.last_deployed_at_ms.is_some(),
            Some(_) => true,
        }
    }

    /// Creates an integration environment from `template` for `branch`.
    pub async fn env_create(&self, req: CreateRequest) -> Result<Created, EngineError> {
        let template = self.template_name(&req.template)?;
        let tcfg = self.inner.base.load().environments[&template].clone();
        let branch = req.branch.trim().to_owned();
        // Length and characters, as for any typed git ref, before git sees it.
        cutover_core::VersionRef::parse(&branch)?;
        let repo_path = self.repo().path().display().to_string();
        let b = branch.clone();
        let head = self
            .with_repo(move |repo| {
                repo.branch_head(&b).map_err(|source| match source {
                    cutover_git::GitError::BranchNotFound { .. } => EngineError::Refused(format!(
                        "branch {b:?} does not exist in the repository {repo_path}; push it there first, \
                         or check the name (`git branch -a`)"
                    )),
                    other => EngineError::Git {
                        repo: repo_path,
                        source: Box::new(other),
                    },
                })
            })
            .await?;
        let _guard = self.lifecycle().lock.lock().await;
        let topo = self.topology();
        let live: Vec<(&EnvName, &LifecycleRecord)> = topo
            .records
            .iter()
            .filter(|(_, r)| r.is_live_instance() && r.template.as_ref() == Some(&template))
            .collect();
        if let Some((name, _)) = live
            .iter()
            .find(|(_, r)| r.branch.as_deref() == Some(branch.as_str()))
        {
            return Err(EngineError::Conflict(format!(
                "branch {branch:?} already has the integration environment {name} (from {template}); \
                 use it, or remove it first: cutover env delete {name}"
            )));
        }
        let max = tcfg.max_active.unwrap_or(8) as usize;
        if live.len() >= max {
            let names: Vec<String> = live
                .iter()
                .map(|(n, r)| format!("{n} ({})", r.branch.as_deref().unwrap_or("?")))
                .collect();
            return Err(EngineError::Conflict(format!(
                "{template} allows at most {max} active integration environments (max_active) and has {}: {}; \
                 remove one with `cutover env delete NAME`, or raise max_active in cutover.yml",
                live.len(),
                names.join(", ")
            )));
        }
        self.check_branch_hosts(&topo, &template, &branch)?;
        let name = derive_name(&template, &branch, |candidate| {
            if topo.config.environments.keys().any(|e| e.as_str() == candidate) {
                return true;
            }
            // A former instance's name is reused only for its own template
            // and branch, so its history stays with what it ran.
            topo.records.iter().any(|(n, r)| {
                n.as_str() == candidate
                    && (r.kind != EnvKind::Integration
                        || r.template.as_ref() != Some(&template)
                        || r.branch.as_deref() != Some(branch.as_str()))
            })
        })?;
        let now = now_ms();
        let rec = LifecycleRecord {
            kind: EnvKind::Integration,
            state: LifeState::Active,
            template: Some(template.clone()),
            branch: Some(branch.clone()),
            created_at_ms: Some(now),
            created_by: Some(req.actor.to_string()),
            last_activity_ms: Some(now),
            expires_at_ms: expiry(now, tcfg.ttl),
            // A re-created instance starts from the branch head it sees
            // now: auto-deploy waits for a new commit, `--deploy` deploys.
            auto_deploy_seen: tcfg.auto_deploy.then(|| head.to_string()),
            ..LifecycleRecord::new_static()
        };
        self.put_record(&name, rec).await?;
        drop(_guard);
        self.audit(
            &req.actor,
            "env.create",
            &format!("env/{name}"),
            json!({ "template": template, "branch": branch, "head": head.to_string() }),
        )
        .await;
        tracing::info!(env = %name, branch, "integration environment created");
        crate::pipeline::Executor::spawn_worker(self, name.clone());
        let run = if req.deploy {
            Some(
                self.release(ReleaseRequest {
                    env: name.to_string(),
                    version: Some(head.to_string()),
                    destructive: false,
                    confirmed: false,
                    actor: req.actor.clone(),
                    override_policy: None,
                })
                .await?,
            )
        } else {
            None
        };
        Ok(Created {
            environment: self.environment(name.as_str()).await?,
            run,
        })
    }

    fn template_name(&self, name: &str) -> Result<EnvName, EngineError> {
        let base = self.inner.base.load_full();
        let templates: Vec<&str> = base
            .environments
            .iter()
            .filter(|(_, e)| e.tier == Tier::Integration)
            .map(|(n, _)| n.as_str())
            .collect();
        match base.environments.iter().find(|(n, _)| n.as_str() == name) {
            Some((n, e)) if e.tier == Tier::Integration => Ok(n.clone()),
            found => {
                let what = match found {
                    Some((_, e)) => format!(
                        "{name:?} is a {} environment, not an integration template",
                        e.tier
                    ),
                    None => format!("there is no integration template {name:?}"),
                };
                let hint = if templates.is_empty() {
                    "cutover.yml declares none; add one, e.g. `review: { tier: integration, max_active: 8 }`"
                        .to_owned()
                } else {
                    format!("templates in cutover.yml: {}", templates.join(", "))
                };
                Err(EngineError::Refused(format!("{what}; {hint}")))
            }
        }
    }

    /// After a run got through Deploy services: an integration instance's
    /// activity (its ttl restarts), a prod-like environment's activation.
    pub(crate) async fn note_deployed(&self, env: &EnvName) -> Result<(), EngineError> {
        let cfg = self.config();
        let Some(ecfg) = cfg.environments.get(env) else {
            return Ok(());
        };
        let _guard = self.lifecycle().lock.lock().await;
        let now = now_ms();
        let rec = match (ecfg.tier, self.record(env)) {
            (_, Some(mut r)) if r.kind == EnvKind::Integration => {
                r.last_activity_ms = Some(now);
                r.last_deployed_at_ms = Some(now);
                r.expires_at_ms = expiry(now, ecfg.ttl);
                r
            }
            (Tier::ProdLike, r) => {
                let mut r = r.unwrap_or_else(LifecycleRecord::new_static);
                if r.state != LifeState::Active || r.activated_at_ms.is_none() {
                    r.state = LifeState::Active;
                    r.activated_at_ms = Some(now);
                    r.expires_at_ms = expiry(now, ecfg.ttl);
                    r.ended_at_ms = None;
                    r.ended_by = None;
                }
                r
            }
            _ => return Ok(()),
        };
        self.put_record(env, rec).await
    }

    /// Background tasks: the reaper and the auto-deploy watcher.
    pub(crate) fn spawn_lifecycle_tasks(&self) {
        let settings = self.inner.lifecycle_settings;
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(settings.reap_interval).await;
                engine.reap_once().await;
            }
        });
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(settings.watch_interval).await;
                engine.watch_once().await;
            }
        });
    }

    /// The well-known version as an environment of this kind shows it: an
    /// integration instance never deployed since it was (re)created shows
    /// none, whatever an earlier instance of that name left.
    pub(crate) fn visible_deployed(&self, env: &EnvName, value: Option<String>) -> Option<String> {
        match self.record(env) {
            Some(r) if r.kind == EnvKind::Integration && r.last_deployed_at_ms.is_none() => None,
            _ => value,
        }
    }

    /// What `env list` and `status` show of the lifecycle.
    pub(crate) fn lifecycle_view(&self, env: &EnvName) -> LifecycleView {
        let rec = self.record(env);
        let kind = rec.as_ref().map(|r| r.kind).unwrap_or(EnvKind::Static);
        let kind = if self.is_template(env) {
            "integration-template"
        } else {
            match kind {
                EnvKind::Static => "static",
                EnvKind::Integration => "integration",
            }
        };
        let state = match rec.as_ref().map(|r| r.state) {
            Some(LifeState::Expired) => "expired",
            Some(LifeState::Deleted) => "deleted",
            _ => "active",
        };
        LifecycleView {
            kind,
            state,
            template: rec.as_ref().and_then(|r| r.template.clone()),
            created_at_ms: rec.as_ref().and_then(|r| r.created_at_ms),
            created_by: rec.as_ref().and_then(|r| r.created_by.clone()),
            last_activity_ms: rec
                .as_ref()
                .and_then(|r| r.last_activity_ms.or(r.activated_at_ms)),
            expires_at_ms: rec
                .as_ref()
                .filter(|r| r.state == LifeState::Active)
                .and_then(|r| r.expires_at_ms),
            expired_at_ms: rec
                .as_ref()
                .filter(|r| r.state == LifeState::Expired)
                .and_then(|r| r.ended_at_ms),
        }
    }
}

/// The lifecycle part of an environment's summary and status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LifecycleView {
    /// `static` (declared in cutover.yml), `integration` (made per branch)
    /// or `integration-template` (the cutover.yml entry instances are made from).
    pub kind: &'static str,
    /// `active` or `expired` (a prod-like environment after its ttl).
    pub state: &'static str,
    pub template: Option<EnvName>,
    pub created_at_ms: Option<i64>,
    pub created_by: Option<String>,
    /// Integration: the last deploy (or creation); prod-like: activation.
    pub last_activity_ms: Option<i64>,
    /// When the reaper will tear it down, if it has a ttl and is active.
    pub expires_at_ms: Option<i64>,
    /// When the reaper tore it down.
    pub expired_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_adds_the_ttl_and_none_without_one() {
        assert_eq!(expiry(1_000, Some(Duration::from_secs(3))), Some(4_000));
        assert_eq!(expiry(1_000, None), None);
        assert_eq!(expiry(i64::MAX - 5, Some(Duration::from_secs(3))), Some(i64::MAX));
    }

    #[test]
    fn due_exactly_at_the_expiry_and_never_without_one() {
        assert!(!is_due(Some(4_000), 3_999));
        assert!(is_due(Some(4_000), 4_000));
        assert!(is_due(Some(4_000), 9_000));
        assert!(!is_due(None, i64::MAX));
    }

    #[test]
    fn records_read_back_with_missing_optional_fields() {
        let rec: LifecycleRecord = serde_json::from_str(r#"{"kind":"static","state":"expired"}"#).unwrap();
        assert_eq!(rec.state, LifeState::Expired);
        assert_eq!(rec.expires_at_ms, None);
        let json = serde_json::to_string(&LifecycleRecord::new_static()).unwrap();
        let back: LifecycleRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, LifecycleRecord::new_static());
    }
}

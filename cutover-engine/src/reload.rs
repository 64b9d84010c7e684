//! `cutover config reload` (and SIGHUP): the server's own `cutover.yml` swapped without a
//! restart.
//!
//! The file is read again from its path (never from the request), validated as at start, and
//! compared with the running one. Environments may be added or changed; one that leaves the
//! file is refused while it runs anything (instances, a run), unless the caller asks to tear it
//! down (`--tear-down ENV`). What was wired into processes at start — `app`, `repo`, `router`,
//! `run_as`, `webhooks`, `notifications`, fixed `ports`, a runtime no environment used at start, an environment
//! moving to another runtime while it runs — is refused with a pointer to a restart, which since
//! the data plane split costs no request. A refused reload changes nothing; an accepted one is
//! swapped atomically (the topology every lookup reads), audited, and new environments get their
//! worker.

use std::sync::Arc;

use cutover_core::config::{Config, RuntimeKind};
use cutover_core::{Actor, EnvName};
use serde::Serialize;

use crate::{Engine, EngineError};

/// What a reload did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    pub file: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Removed environments whose instances were stopped first (`tear_down`).
    pub torn_down: Vec<String>,
    /// Changes of the file's own application part (what a commit without a definition deploys).
    pub application_changes: Vec<String>,
}

fn json_of<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

impl Engine {
    /// Reloads the server's `cutover.yml`; see the module docs. `tear_down`: environments
    /// removed from the file whose instances may be stopped.
    pub async fn reload_config(
        &self,
        actor: &Actor,
        tear_down: &[String],
    ) -> Result<ReloadReport, EngineError> {
        let _one = self.lifecycle().lock.lock().await;
        let old = self.inner.base.load_full();
        let file = old.file.clone();
        let text = std::fs::read_to_string(&file)
            .map_err(|e| EngineError::Refused(format!("cannot read {}: {e}", file.display())))?;
        let new = cutover_core::config::parse(&text, &file).map_err(|errors| {
            EngineError::Refused(format!(
                "{} is invalid; the running configuration stays:\n{errors}",
                file.display()
            ))
        })?;
        crate::check_webhooks(&new.webhooks).map_err(EngineError::Refused)?;
        self.needs_no_restart(&old, &new).await?;
        let removed: Vec<EnvName> = old
            .environments
            .keys()
            .filter(|e| !new.environments.contains_key(*e))
            .cloned()
            .collect();
        let mut torn_down = Vec::new();
        for env in &removed {
            let instances = self
                .runtime_for(env)
                .status_of(&old.app, env)
                .await
                .map(|l| l.len())
                .unwrap_or(0);
            let runs = self.active_runs(env).await.map(|r| r.len()).unwrap_or(0);
            if instances + runs == 0 {
                continue;
            }
            if !tear_down.iter().any(|t| t == env.as_str()) {
                return Err(EngineError::Refused(format!(
                    "environment {env} is no longer in {} but still runs {instances} instance(s) and {runs} run(s); \
                     nothing was changed. Tear it down with the reload: cutover config reload --tear-down {env}",
                    file.display()
                )));
            }
            if runs > 0 {
                return Err(EngineError::Refused(format!(
                    "environment {env} has {runs} active run(s); cancel them first (cutover runs {env}), then reload"
                )));
            }
            let stopped = self.tear_down_static(env).await;
            torn_down.push(format!("{env} ({stopped} instances stopped)"));
        }
        let added: Vec<String> = new
            .environments
            .keys()
            .filter(|e| !old.environments.contains_key(*e))
            .map(|e| e.to_string())
            .collect();
        let changed: Vec<String> = new
            .environments
            .iter()
            .filter(|(e, cfg)| {
                old.environments
                    .get(*e)
                    .is_some_and(|o| json_of(o) != json_of(*cfg))
            })
            .map(|(e, _)| e.to_string())
            .collect();
        let application_changes = new.definition().changes_from(&old.definition());
        // The swap: text, application part, then the file itself and the topology built on it.
        self.inner.config_text.store(Arc::new(text));
        self.inner.base_definition.store(Arc::new(new.definition()));
        self.inner.base.store(Arc::new(new));
        self.inner.definitions.clear();
        let records = self.topology().records.clone();
        self.inner
            .topology
            .store(Arc::new(crate::lifecycle::Topology::build(
                &self.inner.base.load(),
                records,
            )));
        // Environments' public host names may have changed: the router gets them now.
        self.push_public_hosts().await;
        for env in &removed {
            self.stop_worker(env);
        }
        for env in &added {
            if let Ok(env) = EnvName::parse(env) {
                crate::pipeline::Executor::spawn_worker(self, env);
            }
        }
        let report = ReloadReport {
            file: file.display().to_string(),
            added,
            removed: removed.iter().map(|e| e.to_string()).collect(),
            changed,
            torn_down,
            application_changes,
        };
        self.audit(actor, "config.reload", "config", json_of(&report))
            .await;
        tracing::info!(
            added = ?report.added,
            removed = ?report.removed,
            changed = ?report.changed,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Refuses what only a restart can apply.
    async fn needs_no_restart(&self, old: &Config, new: &Config) -> Result<(), EngineError> {
        let mut restart = Vec::new();
        if old.app != new.app {
            restart.push("app".to_owned());
        }
        if json_of(&old.repo) != json_of(&new.repo) {
            restart.push("repo".to_owned());
        }
        if json_of(&old.router) != json_of(&new.router) {
            restart.push("router".to_owned());
        }
        if old.run_as != new.run_as {
            restart.push("run_as".to_owned());
        }
        if json_of(&old.webhooks) != json_of(&new.webhooks) {
            restart.push("webhooks".to_owned());
        }
        if json_of(&old.notifications) != json_of(&new.notifications) {
            restart.push("notifications".to_owned());
        }
        for (env, cfg) in &new.environments {
            let before = old.environments.get(env);
            if before.map(|b| &b.ports).unwrap_or(&Default::default()) != &cfg.ports
                && (before.is_some() || !cfg.ports.is_empty())
            {
                restart.push(format!("environments.{env}.ports"));
            }
            let needs = match cfg.runtime {
                RuntimeKind::Docker => self.docker().is_none(),
                RuntimeKind::Swarm => self.swarm().is_none(),
                RuntimeKind::Process => false,
            };
            if needs {
                restart.push(format!(
                    "environments.{env}.runtime ({} was not connected at start)",
                    cfg.runtime
                ));
            }
            if let Some(b) = before
                && b.runtime != cfg.runtime
            {
                let running = self
                    .runtime_for(env)
                    .status_of(&old.app, env)
                    .await
                    .map(|l| l.len())
                    .unwrap_or(0);
                if running > 0 {
                    restart.push(format!(
                        "environments.{env}.runtime while it runs {running} instance(s)"
                    ));
                }
            }
        }
        if restart.is_empty() {
            return Ok(());
        }
        Err(EngineError::Refused(format!(
            "these changes need a restart of `cutover serve` (production keeps serving through it); nothing was \
             changed: {}",
            restart.join(", ")
        )))
    }
}

//! The migration-safe switch (`migrations: hold | hold-before-start`): the install step runs
//! while the router holds the environment's requests, so no request is answered by the old
//! version after the migration began, and none fails.
//!
//! `hold` (the new version can start against the old schema, as an expand step allows): start
//! and health-check the new instances; hold; drain the old version's admitted requests; run the
//! install step; switch every public route; release the held requests, which go to the new
//! version. The hold lasts only drain + migration + a pointer swap.
//!
//! `hold-before-start` (the new version cannot start before its migration): hold; drain; run the
//! install step; start and health-check the new instances; switch; release. The hold also lasts
//! the start and health checks.
//!
//! The hold is bounded (`hold_timeout`): the router itself answers 503 with `Retry-After` and the
//! environment's maintenance page past the bound (the gate carries it, see
//! `cutover_router::Gate`), and the run either waits for the install step to end and switches
//! (`on_hold_timeout: continue`) or stops it and fails (`fail`). Every way out of the held part
//! (success, failure, cancel) releases the gate before returning; a hold left by a dead control
//! plane is released by the next one at start ([`Engine::sync_gates`]), and ends in 503s at its
//! bound meanwhile. Maintenance mode (`maintenance.rs`) wins over a hold: a release puts the
//! maintenance gate back.
//!
//! Not covered: the old version's non-public instances (workers) run until the switch, as in
//! any blue-green deploy; a hold deploy is blue-green whatever `strategy` says.
//!
//! Rejected: holding in the engine by removing routes (a removed route answers 404, and the
//! waiting would be the client's) and a queue of held requests in the control plane (it must
//! not carry traffic; the data plane holds them, each request waiting on its own connection).

use std::future::Future;
use std::time::Instant;

use cutover_core::EnvName;
use cutover_core::config::{Migrations, OnHoldTimeout};
use cutover_router::Gate;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::deploy::{Launch, Rollout};
use crate::pipeline::executor::StageError;
use crate::pipeline::logs::StageLog;

/// `Retry-After` of a hold past its bound: holds are short.
const HOLD_RETRY_AFTER_SECS: u32 = 5;

impl Engine {
    /// The environment's 503 page: its `maintenance_page` file, else the built-in one.
    pub(crate) fn configured_page(&self, env: &EnvName) -> String {
        let Some(path) = self.config().environments[env].maintenance_page.clone() else {
            return cutover_router::DEFAULT_PAGE.to_owned();
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() <= crate::maintenance::MAX_PAGE => {
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Ok(bytes) => {
                tracing::warn!(env = %env, path = %path.display(), size = bytes.len(),
                    "maintenance_page is larger than 64 KiB; the built-in page is used");
                cutover_router::DEFAULT_PAGE.to_owned()
            }
            Err(e) => {
                tracing::warn!(env = %env, path = %path.display(), error = %e,
                    "cannot read maintenance_page; the built-in page is used");
                cutover_router::DEFAULT_PAGE.to_owned()
            }
        }
    }

    /// Blue-green with the install step (`migrate`) inside a router hold. `stop_migration`
    /// cancels `migrate` (for `on_hold_timeout: fail`).
    pub(crate) async fn roll_out_held(
        &self,
        l: &Launch<'_>,
        slot: &mut Option<Rollout>,
        migrate: impl Future<Output = Result<(), StageError>>,
        stop_migration: &CancellationToken,
    ) -> Result<String, StageError> {
        let before = self.env_services(l.env);
        *slot = Some(Rollout {
            before: before.clone(),
            started: Vec::new(),
            switched: false,
            def: Some(l.def.clone()),
        });
        let mut started = Vec::new();
        let result = self
            .held(l, &before, &mut started, slot, migrate, stop_migration)
            .await;
        if let Some(r) = slot.as_mut() {
            r.started = started;
        }
        if result.is_err() {
            // Whatever failed, requests are not left waiting: the old version serves again
            // (the run's undo keeps its routes), or the maintenance page if that is on.
            self.release_hold(l.env, l.log).await;
        }
        result
    }

    async fn held(
        &self,
        l: &Launch<'_>,
        before: &crate::deploy::EnvServices,
        started: &mut Vec<cutover_runtime::InstanceId>,
        slot: &mut Option<Rollout>,
        migrate: impl Future<Output = Result<(), StageError>>,
        stop_migration: &CancellationToken,
    ) -> Result<String, StageError> {
        let env_cfg = self.config().environments[l.env].clone();
        let start_public = |svc: &cutover_core::config::Service| self.managed_as_instances(l.env, svc.public);
        let mut next = None;
        if env_cfg.migrations == Migrations::Hold {
            next = Some(self.start_services(l, start_public, started).await?);
            self.converge_workers(l.env, l.version, l.def, l.env_vars, l.log)
                .await?;
        }
        let bound = env_cfg.hold_timeout;
        let app = self.config().app.to_string();
        let held_at = Instant::now();
        let maintenance = self.maintenance_on(l.env).await;
        if !maintenance {
            let gate = Gate::hold(bound, HOLD_RETRY_AFTER_SECS, self.configured_page(l.env));
            self.data_plane()
                .set_gate(&app, l.env.as_str(), Some(gate))
                .await
                .map_err(StageError::Failed)?;
        }
        let left = self.data_plane().drain_env(&app, l.env.as_str(), bound).await;
        // One log write inside the hold (each is a store write the held requests wait for).
        let how = if maintenance {
            "maintenance mode is on: requests keep getting the maintenance page (no hold)".to_owned()
        } else {
            format!(
                "requests to {} held at the router (migrations: {}, bound {})",
                l.env,
                env_cfg.migrations.as_str(),
                cutover_core::config::format_duration(bound)
            )
        };
        let drained = if left > 0 {
            format!(
                "{left} requests of the serving version still running at the bound; the install step starts anyway"
            )
        } else {
            format!(
                "serving version drained in {} ms; install step starts",
                held_at.elapsed().as_millis()
            )
        };
        l.log.line(format!("{how}; {drained}")).await;
        match env_cfg.on_hold_timeout {
            OnHoldTimeout::Continue => migrate.await?,
            OnHoldTimeout::Fail => {
                tokio::pin!(migrate);
                let left = bound.saturating_sub(held_at.elapsed());
                match tokio::time::timeout(left, &mut migrate).await {
                    Ok(r) => r?,
                    Err(_) => {
                        stop_migration.cancel();
                        let _ = migrate.await;
                        return Err(StageError::Failed(format!(
                            "the install step was still running at hold_timeout ({}) and was stopped \
                             (on_hold_timeout: fail); the previous version serves again. Raise hold_timeout \
                             or set on_hold_timeout: continue for a migration that must finish",
                            cutover_core::config::format_duration(bound)
                        )));
                    }
                }
            }
        }
        let next = match next {
            Some(n) => n,
            None => {
                let n = self.start_services(l, start_public, started).await?;
                self.converge_workers(l.env, l.version, l.def, l.env_vars, l.log)
                    .await?;
                n
            }
        };
        // With maintenance on there is no hold to release (its gate stays).
        let outcome = self.switch_over(l, before, next, slot, !maintenance).await?;
        let took = held_at.elapsed();
        if took > bound {
            l.log
                .line(format!(
                    "the hold lasted {} ms, past its bound: requests got 503 meanwhile",
                    took.as_millis()
                ))
                .await;
        }
        Ok(format!("{outcome}, install under a {} ms hold", took.as_millis()))
    }

    /// Ends a hold on `env`: the gate is cleared, or set back to maintenance when that is on.
    pub(crate) async fn release_hold(&self, env: &EnvName, log: &StageLog) {
        let gate = self.maintenance_gate(env).await;
        self.set_release(env, gate, log).await;
    }

    /// Ends a hold right after the switch: the gate is cleared first (the held requests wait on
    /// nothing else, not even a store read), then maintenance, if someone turned it on during the
    /// hold, goes in force.
    pub(crate) async fn release_hold_now(&self, env: &EnvName, log: &StageLog) {
        self.set_release(env, None, log).await;
        if let Some(gate) = self.maintenance_gate(env).await {
            self.set_release(env, Some(gate), log).await;
        }
    }

    async fn set_release(&self, env: &EnvName, gate: Option<Gate>, log: &StageLog) {
        let app = self.config().app.to_string();
        let maintenance = gate.is_some();
        match self.data_plane().set_gate(&app, env.as_str(), gate).await {
            Ok(()) if maintenance => {
                log.line("held requests get the maintenance page (maintenance is on)")
                    .await
            }
            Ok(()) => log.line("held requests released").await,
            Err(e) => {
                log.line(format!(
                    "could not release the hold ({e}); the data plane answers 503 past its bound until the next start releases it"
                ))
                .await;
            }
        }
    }

    /// At start and after a data plane was replaced: every environment's gate as it should be
    /// with no run active: maintenance where it is on, nothing elsewhere (a hold a dead control
    /// plane left is released; its run was interrupted). Returns how many gates were changed.
    pub async fn sync_gates(&self) -> usize {
        let app = self.config().app.to_string();
        let current = match self.data_plane().gates().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data plane's gates");
                Vec::new()
            }
        };
        let envs: Vec<EnvName> = self.config().environments.keys().cloned().collect();
        let mut changed = 0;
        for env in envs {
            let want = self.maintenance_gate(&env).await;
            let have = current
                .iter()
                .find(|(a, e, _)| *a == app && e == env.as_str())
                .map(|(_, _, g)| g.clone());
            let same = match (&want, &have) {
                (None, None) => true,
                (Some(w), Some(h)) => w.mode == h.mode && w.page == h.page,
                _ => false,
            };
            if same {
                continue;
            }
            if have
                .as_ref()
                .is_some_and(|h| h.mode == cutover_router::GateMode::Hold)
            {
                tracing::warn!(env = %env, "releasing a hold left by a previous control plane");
            }
            match self.data_plane().set_gate(&app, env.as_str(), want).await {
                Ok(()) => changed += 1,
                Err(e) => tracing::error!(env = %env, error = %e, "cannot set the gate of an environment"),
            }
        }
        changed
    }
}

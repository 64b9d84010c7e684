//! Pipeline runs: what people ask for (release, cancel, approve, reject,
//! rollback, promote) and how runs are found and read.
//!
//! A request fixes the SHA the run deploys and checks the environment's
//! policy (`policy`), records a queued run and wakes the environment's worker
//! (`executor`); the worker runs one run at a time per environment through
//! the 13 stages (`stages`). Everything a request checks is checked before
//! anything is written, so a refused request changes nothing.

pub(crate) mod executor;
mod hooks;
pub mod logs;
mod policy;
mod stages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_core::config::Tier;
use cutover_core::{Actor, EnvName, RunKind, RunState, Version};
use cutover_store::{ApprovalRecord, Decision, NewRun, RunLogLine, RunRecord, RunUpdate};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use executor::Executor;
pub use logs::{LogEvent, LogHub};
pub(crate) use policy::Fixed;
pub use policy::PolicyOverride;

use crate::{Engine, EngineError, WellKnownKey};

/// The actor the engine itself writes as (pipeline-owned keys, scheduler).
pub const SYSTEM_ACTOR: &str = "cutover";

/// Live handles of a run that is executing: how to cancel it and how to hand
/// it an approval decision.
pub(crate) struct RunControl {
    pub cancel: CancellationToken,
    pub decisions: mpsc::UnboundedSender<ApprovalRecord>,
}

/// State shared by request handlers and workers.
#[derive(Default)]
pub(crate) struct Shared {
    pub wakeups: Mutex<HashMap<EnvName, Arc<Notify>>>,
    pub controls: Mutex<HashMap<i64, RunControl>>,
    pub logs: LogHub,
}

impl Shared {
    pub fn wakeup(&self, env: &EnvName) -> Arc<Notify> {
        self.wakeups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(env.clone())
            .or_default()
            .clone()
    }
}

/// A release request as the API receives it.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub env: String,
    /// Sets desired_version first (any ref form); None deploys the current desired_version.
    pub version: Option<String>,
    pub destructive: bool,
    /// The destructive pipeline needs an explicit confirmation.
    pub confirmed: bool,
    pub actor: Actor,
    /// An admin's override of the environment's `requires:` policy.
    pub override_policy: Option<PolicyOverride>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRecord,
    pub approvals: Vec<ApprovalRecord>,
}

impl Engine {
    /// Queues a run of the normal or destructive pipeline.
    pub async fn release(&self, req: ReleaseRequest) -> Result<RunRecord, EngineError> {
        let env = self.env_name(&req.env)?;
        self.refuse_template(&env)?;
        let tier = self.config().environments[&env].tier;
        let kind = if req.destructive {
            if matches!(tier, Tier::Prod | Tier::ProdLike) {
                return Err(EngineError::Refused(format!(
                    "the destructive pipeline resets data and is refused on {env} (tier {tier}, a production tier); \
                     run the normal pipeline instead: cutover release {env}"
                )));
            }
            if !req.confirmed {
                return Err(EngineError::Refused(format!(
                    "the destructive pipeline resets {env}'s data (database cleanup, demo data, scheduler reset); \
                     confirm with --yes"
                )));
            }
            RunKind::Destructive
        } else {
            RunKind::Normal
        };
        // Fix the SHA now: `version` as typed, else desired_version as it is
        // (its writer chose it); `latest` = what was last built here.
        let key = self.key(&env, WellKnownKey::DesiredVersion);
        let (fixed, stored) = match &req.version {
            Some(v) => {
                let stored = self.resolve_desired(&env, &key, v).await?;
                (
                    self.fix_version(&env, &stored, req.actor.as_str()).await?,
                    Some(stored),
                )
            }
            None => (self.fix_desired(&env).await?, None),
        };
        let reason = self
            .check_requires(
                &env,
                &fixed.version,
                None,
                req.override_policy.as_ref(),
                &req.actor,
            )
            .await?;
        if let Some(stored) = stored {
            self.param_put(key.as_str(), &stored, &req.actor, None).await?;
        }
        self.enqueue(&env, kind, &req.actor, &fixed, reason).await
    }

    /// Queues a run fixed to `fixed.version`; the caller checked the request.
    pub(crate) async fn enqueue(
        &self,
        env: &EnvName,
        kind: RunKind,
        actor: &Actor,
        fixed: &Fixed,
        reason: Option<String>,
    ) -> Result<RunRecord, EngineError> {
        let (run, superseded) = self
            .store()
            .run_enqueue(NewRun {
                env: env.to_string(),
                kind,
                requested_by: actor.to_string(),
                target_version: Some(fixed.version.to_string()),
                version_chosen_by: Some(fixed.chosen_by.clone()),
                reason: reason.clone(),
            })
            .await?;
        self.audit(
            actor,
            "run.request",
            &format!("run/{}", run.id),
            json!({
                "env": env, "kind": kind, "target": fixed.version, "chosen_by": fixed.chosen_by,
                "reason": reason, "superseded": superseded
            }),
        )
        .await;
        for id in &superseded {
            self.shared().logs.end(*id);
        }
        self.notify_superseded(&superseded).await;
        self.notify_run("run.queued", &run);
        self.shared().wakeup(env).notify_one();
        Ok(run)
    }

    pub async fn run(&self, id: i64) -> Result<RunView, EngineError> {
        let run = self
            .store()
            .run_get(id)
            .await?
            .ok_or(EngineError::RunNotFound { id })?;
        let approvals = self.store().approvals(id).await?;
        Ok(RunView { run, approvals })
    }

    pub async fn runs(&self, env: Option<&str>, limit: u32) -> Result<Vec<RunRecord>, EngineError> {
        let env = match env {
            Some(e) => Some(self.env_name(e)?),
            None => None,
        };
        Ok(self
            .store()
            .run_list(env.as_ref().map(EnvName::as_str), limit.clamp(1, 500), None)
            .await?)
    }

    /// Persisted lines after `after_seq` (optionally one stage's).
    pub async fn run_logs(
        &self,
        id: i64,
        stage: Option<&str>,
        after_seq: i64,
    ) -> Result<Vec<RunLogLine>, EngineError> {
        let stage = stage
            .map(cutover_core::Stage::parse)
            .transpose()
            .map_err(EngineError::Refused)?;
        let view = self.run(id).await?;
        let mut lines = self.store().log_read(id, stage, after_seq, 10_000).await?;
        // Masked when written; again as served, for lines written before a value was set.
        let masker = self.log_masker_named(&view.run.env).await;
        for l in &mut lines {
            if let std::borrow::Cow::Owned(masked) = masker.mask(&l.line) {
                l.line = masked;
            }
        }
        Ok(lines)
    }

    /// Subscribes to a run's live log. Subscribe first, then read what is
    /// persisted, then skip live lines with a seq already seen.
    pub fn follow_run(&self, id: i64) -> tokio::sync::broadcast::Receiver<LogEvent> {
        self.shared().logs.subscribe(id)
    }

    /// Cancels a queued or active run. The executor stops it at the next
    /// safe point and restores the serving version.
    pub async fn cancel(&self, id: i64, actor: &Actor) -> Result<RunRecord, EngineError> {
        let run = self
            .store()
            .run_get(id)
            .await?
            .ok_or(EngineError::RunNotFound { id })?;
        if run.state.is_terminal() {
            return Err(EngineError::Refused(format!(
                "run {id} already ended ({}); nothing to cancel",
                run.state
            )));
        }
        let now = crate::now_ms();
        if run.state == RunState::Queued {
            let update = RunUpdate {
                ended_at_ms: Some(now),
                error: Some(format!("cancelled by {actor} while queued")),
                ..RunUpdate::default()
            };
            match self
                .store()
                .run_transition(id, &[RunState::Queued], RunState::Cancelled, update)
                .await
            {
                Ok(run) => {
                    self.store().stages_mark_not_run(id).await?;
                    self.audit(actor, "run.cancel", &format!("run/{id}"), json!({}))
                        .await;
                    self.shared().logs.end(id);
                    return Ok(run);
                }
                // It started meanwhile: cancel it as an active run below.
                Err(cutover_store::StoreError::RunStateConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let token = {
            let controls = self.shared().controls.lock().unwrap_or_else(|e| e.into_inner());
            controls.get(&id).map(|c| c.cancel.clone())
        };
        match token {
            Some(t) => {
                t.cancel();
                self.audit(actor, "run.cancel", &format!("run/{id}"), json!({}))
                    .await;
                let run = self
                    .store()
                    .run_get(id)
                    .await?
                    .ok_or(EngineError::RunNotFound { id })?;
                Ok(run)
            }
            None => Err(EngineError::Refused(format!(
                "run {id} is {} but not executing here; try again",
                run.state
            ))),
        }
    }

    /// Approves or rejects a run waiting in the Approval stage: its SHA,
    /// fixed when it was requested. `expected`, if given, is the SHA (or a
    /// prefix of at least 7 characters) the approver looked at; another one
    /// is refused, so nobody approves what they did not see.
    pub async fn decide(
        &self,
        id: i64,
        actor: &Actor,
        decision: Decision,
        comment: Option<String>,
        expected: Option<&str>,
    ) -> Result<RunView, EngineError> {
        let comment = comment.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
        if decision == Decision::Reject && comment.is_none() {
            return Err(EngineError::Refused(
                "a rejection needs a reason: add --comment \"why\" so the requester knows what to fix"
                    .to_owned(),
            ));
        }
        let run = self
            .store()
            .run_get(id)
            .await?
            .ok_or(EngineError::RunNotFound { id })?;
        if run.state != RunState::AwaitingApproval {
            return Err(EngineError::Refused(format!(
                "run {id} is not waiting for approval (it is {}){}",
                run.state,
                if run.state.is_terminal() {
                    ""
                } else {
                    "; approve it when its Approval stage is reached"
                }
            )));
        }
        let env = self.env_name(&run.env)?;
        let tier = self.config().environments[&env].tier;
        let target = run.target_version.as_deref().unwrap_or("");
        if let Some(e) = expected.map(str::trim).filter(|e| !e.is_empty()) {
            let e = e.to_ascii_lowercase();
            if e.len() < 7 {
                return Err(EngineError::Refused(format!(
                    "--version {e:?} is too short to name a SHA: give at least 7 characters of the run's version \
                     (cutover run {id} shows it)"
                )));
            }
            if target.is_empty() || !target.starts_with(&e) {
                return Err(EngineError::Conflict(format!(
                    "run {id} deploys {}, not {e:?}: look at the run again (cutover run {id}) before you {}",
                    if target.is_empty() {
                        "no fixed version"
                    } else {
                        target
                    },
                    decision.as_str()
                )));
            }
        }
        if tier.is_production() {
            if run.requested_by == actor.as_str() {
                return Err(EngineError::Forbidden(format!(
                    "{actor} requested run {id} on {env} (a production environment) and so cannot also approve or reject it: \
                     four-eyes rule; ask another approver"
                )));
            }
            if run.version_chosen_by.as_deref() == Some(actor.as_str()) {
                return Err(EngineError::Forbidden(format!(
                    "{actor} chose the version of run {id} on {env} (a production environment): they wrote the \
                     desired_version {} was resolved from, and so cannot also approve or reject it: four-eyes rule; \
                     ask an approver who did not choose it",
                    short(target)
                )));
            }
        }
        // Claim the decision: only one approve/reject wins the state change.
        self.store()
            .run_transition(
                id,
                &[RunState::AwaitingApproval],
                RunState::Running,
                RunUpdate::default(),
            )
            .await
            .map_err(|e| match e {
                cutover_store::StoreError::RunStateConflict { current, .. } => EngineError::Refused(format!(
                    "run {id} is not waiting for approval any more (it is {current})"
                )),
                other => other.into(),
            })?;
        let record = self
            .store()
            .approval_add(id, actor.as_str(), decision, comment.as_deref())
            .await?;
        let action = if decision == Decision::Approve {
            "run.approve"
        } else {
            "run.reject"
        };
        self.audit(
            actor,
            action,
            &format!("run/{id}"),
            json!({ "comment": comment, "version": run.target_version }),
        )
        .await;
        let sender = {
            let controls = self.shared().controls.lock().unwrap_or_else(|e| e.into_inner());
            controls.get(&id).map(|c| c.decisions.clone())
        };
        if let Some(s) = sender {
            let _ = s.send(record);
        }
        self.run(id).await
    }

    /// Rolls back by deploying an older version through the normal pipeline
    /// (`to`: default the version deployed before the current one).
    pub async fn rollback(
        &self,
        env: &str,
        to: Option<&str>,
        actor: &Actor,
        over: Option<&PolicyOverride>,
    ) -> Result<RunRecord, EngineError> {
        let env = self.env_name(env)?;
        let current = self.well_known(&env, WellKnownKey::LastDeployedVersion).await?;
        let target = match to {
            Some(r) => {
                // Validated like every typed version (length, characters) before git sees it.
                let r = match cutover_core::VersionRef::parse(r)? {
                    cutover_core::VersionRef::Git(r) => r,
                    cutover_core::VersionRef::Latest => {
                        return Err(EngineError::Refused(
                            "rollback --to takes a commit SHA, a branch or a tag, not `latest`; \
                             use `cutover release ENV --version latest` to deploy the newest build"
                                .into(),
                        ));
                    }
                };
                self.fetch_source_best_effort("resolve rollback --to").await;
                self.with_repo(move |repo| {
                    repo.resolve(&r).map_err(|source| EngineError::Resolve {
                        key: "rollback --to".into(),
                        reference: r.clone(),
                        source: Box::new(source),
                    })
                })
                .await?
            }
            None => self.previous_deployed(&env, current.as_deref()).await?,
        };
        if current.as_deref() == Some(target.as_str()) {
            return Err(EngineError::Refused(format!(
                "{env} already runs {}; nothing to roll back to",
                target.short()
            )));
        }
        let overridden = self.check_requires(&env, &target, None, over, actor).await?;
        let key = self.key(&env, WellKnownKey::DesiredVersion);
        self.param_put(key.as_str(), target.as_str(), actor, None).await?;
        let mut reason = format!(
            "rollback from {}",
            current.as_deref().map(short).unwrap_or("nothing")
        );
        if let Some(o) = overridden {
            reason.push_str("; ");
            reason.push_str(&o);
        }
        let fixed = Fixed {
            version: target,
            chosen_by: actor.to_string(),
        };
        self.enqueue(&env, RunKind::Rollback, actor, &fixed, Some(reason))
            .await
    }

    /// Switches traffic back to the still-warm previous release; recorded as a run.
    ///
    /// Refused when a run since the warm release last served ran an install step (the warm code
    /// would meet a migrated schema), unless `force` (audited as `rollback.fast` with
    /// `force: true`).
    pub async fn fast_rollback(
        &self,
        env: &str,
        actor: &Actor,
        force: bool,
    ) -> Result<RunRecord, EngineError> {
        let env = self.env_name(env)?;
        let warm = self.warm_previous(&env).ok_or_else(|| {
            EngineError::Refused(format!(
                "{env} has no warm previous release to switch back to (it is kept after a successful deploy until the next one); \
                 use `cutover rollback {env}` for a full rollback"
            ))
        })?;
        let installs = self.installs_since_warm(&env, &warm).await?;
        if !installs.is_empty() {
            let ids: Vec<String> = installs.iter().map(|id| format!("#{id}")).collect();
            if !force {
                return Err(EngineError::Conflict(format!(
                    "refusing a fast rollback of {env} to {}: run {} ran an install step since that release served, so its \
                     code would meet a migrated schema. Use `cutover rollback {env} --to {}` (it runs hooks.rollback \
                     first), or `--fast --force` if you know the schema still fits",
                    warm.short(),
                    ids.join(", "),
                    warm.short()
                )));
            }
            self.audit(
                actor,
                "rollback.fast",
                &format!("env/{env}"),
                serde_json::json!({ "force": true, "to": warm.as_str(), "install_runs": installs }),
            )
            .await;
        }
        let key = self.key(&env, WellKnownKey::DesiredVersion);
        self.param_put(key.as_str(), warm.as_str(), actor, None).await?;
        let fixed = Fixed {
            version: warm,
            chosen_by: actor.to_string(),
        };
        self.enqueue(
            &env,
            RunKind::FastRollback,
            actor,
            &fixed,
            Some("fast rollback to the warm release".into()),
        )
        .await
    }

    /// Runs since the warm release `warm` last served (newest first, down to the run that
    /// switched away from it) whose install step ran (succeeded or failed: it may have migrated).
    async fn installs_since_warm(&self, env: &EnvName, warm: &Version) -> Result<Vec<i64>, EngineError> {
        let mut out = Vec::new();
        for run in self.store().run_list(Some(env.as_str()), 100, None).await? {
            let Some(run) = self.store().run_get(run.id).await? else {
                continue;
            };
            let ran_install = run.stages.iter().any(|s| {
                s.stage == cutover_core::Stage::Install
                    && matches!(
                        s.status,
                        cutover_core::StageStatus::Succeeded | cutover_core::StageStatus::Failed
                    )
            });
            if ran_install {
                out.push(run.id);
            }
            let switched_away = run.state == cutover_core::RunState::Succeeded
                && run.kind != RunKind::FastRollback
                && run.target_version.as_deref() != Some(warm.as_str());
            if switched_away {
                break;
            }
        }
        Ok(out)
    }

    /// Sets `to`'s desired_version to what `from` last deployed, then releases `to`.
    /// The `requires:` policy of `to` counts `from` as passed (it deployed the version).
    /// With `flags`, every feature flag of `from` is copied onto `to` once the run is queued
    /// (see `flags.rs`).
    pub async fn promote(
        &self,
        from: &str,
        to: &str,
        actor: &Actor,
        over: Option<&PolicyOverride>,
        flags: bool,
    ) -> Result<RunRecord, EngineError> {
        let from = self.env_name(from)?;
        let to = self.env_name(to)?;
        if from == to {
            return Err(EngineError::Refused(format!("cannot promote {from} to itself")));
        }
        let version = self
            .well_known(&from, WellKnownKey::LastDeployedVersion)
            .await?
            .ok_or_else(|| {
                EngineError::Refused(format!(
                    "{from} has no deployed version yet; release it first: cutover release {from}"
                ))
            })?;
        let v = Version::parse(&version)?;
        let overridden = self.check_requires(&to, &v, Some(&from), over, actor).await?;
        let key = self.key(&to, WellKnownKey::DesiredVersion);
        self.param_put(key.as_str(), &version, actor, None).await?;
        let mut reason = format!("promote from {from}");
        if let Some(o) = overridden {
            reason.push_str("; ");
            reason.push_str(&o);
        }
        let fixed = Fixed {
            version: v,
            chosen_by: actor.to_string(),
        };
        let run = self
            .enqueue(&to, RunKind::Normal, actor, &fixed, Some(reason))
            .await?;
        if flags {
            let why = format!("promote from {from} (run #{})", run.id);
            self.copy_flags(&from, &to, actor, &why).await?;
        }
        Ok(run)
    }

    /// The newest value of last_deployed_version that differs from `current`.
    pub(crate) async fn previous_deployed(
        &self,
        env: &EnvName,
        current: Option<&str>,
    ) -> Result<Version, EngineError> {
        let key = self.key(env, WellKnownKey::LastDeployedVersion);
        let history = self.store().param_history(&key).await?;
        let prev = history
            .iter()
            .map(|p| p.value.as_str())
            .find(|v| Some(*v) != current);
        match prev {
            Some(v) => Ok(Version::parse(v)?),
            None => Err(EngineError::Refused(format!(
                "{env} has no earlier deployed version to roll back to; name one with --to SHA"
            ))),
        }
    }
}

fn short(v: &str) -> &str {
    &v[..v.len().min(12)]
}

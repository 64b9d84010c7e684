//! The executor: one worker task per environment takes the oldest queued run
//! and drives it through the 13 stages, persisting each transition before
//! acting on it.
//!
//! One worker per environment is what makes "one active run per
//! environment" true without locks: a run only starts when the worker that
//! owns the environment picks it. Different environments run in parallel.
//! A failed or cancelled stage stops the run; `restore` then puts the
//! environment back on its serving version (router switched back, new
//! instances stopped, scheduler resumed) before the run is marked ended.

use std::path::PathBuf;
use std::sync::Arc;

use cutover_core::{EnvName, RunKind, RunState, Stage, StageStatus, Version};
use cutover_store::{ApprovalRecord, RunRecord, RunUpdate, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RunControl;
use super::logs::StageLog;
use crate::deploy::Rollout;
use crate::{Engine, now_ms};

/// Why a stage did not succeed.
#[derive(Debug)]
pub(crate) enum StageError {
    Failed(String),
    Cancelled,
}

impl<E: std::fmt::Display> From<E> for StageError {
    fn from(e: E) -> Self {
        StageError::Failed(e.to_string())
    }
}

/// What a stage did.
pub(crate) enum StageOutcome {
    Done(Option<String>),
    Skipped(String),
}

/// Everything a run carries from stage to stage.
pub(crate) struct RunCtx {
    pub engine: Engine,
    pub run: RunRecord,
    pub env: EnvName,
    pub version: Option<Version>,
    pub previous: Option<Version>,
    pub release_dir: Option<PathBuf>,
    /// Settings rendered for this version (name, value), given to hooks and instances.
    pub settings: Vec<(String, String)>,
    /// The application definition of this run's version (set by Source; see `definition`).
    pub def: Option<Arc<cutover_core::config::AppDefinition>>,
    /// Masks every line, note and error of this run (see [`crate::masking`]).
    pub masker: Arc<crate::masking::Masker>,
    pub cancel: CancellationToken,
    pub decisions: mpsc::UnboundedReceiver<ApprovalRecord>,
    /// What this run did to the scheduler, to put back on failure.
    pub scheduler_touch: Option<crate::scheduler::SchedulerTouch>,
    /// Services this run started or switched, to undo on failure.
    pub rollout: Option<Rollout>,
    /// This run wrote last_deployed_version; a later failure writes the
    /// previous value back, since the old version serves again.
    pub wrote_deployed: bool,
}

impl RunCtx {
    /// The application definition this run deploys: its version's (read by Source), else the
    /// server's (a fast rollback reads no commit: it restores what was warm).
    pub fn def(&self) -> Arc<cutover_core::config::AppDefinition> {
        self.def.clone().unwrap_or_else(|| self.engine.app(&self.env))
    }
}

impl RunCtx {
    pub fn kind(&self) -> RunKind {
        self.run.kind
    }

    pub fn log(&self, stage: Stage) -> StageLog {
        StageLog {
            hub: self.engine.shared().logs.clone(),
            store: self.engine.store().clone(),
            run_id: Some(self.run.id),
            stage,
            masker: self.masker.clone(),
            capture: None,
        }
    }

    /// The version this run deploys; set by the Source stage.
    pub fn version(&self) -> Result<&Version, StageError> {
        self.version
            .as_ref()
            .ok_or_else(|| StageError::Failed("no version was resolved (Source did not run)".into()))
    }
}

/// A stage's note or error, masked: it becomes the stage's note, the run's `error` and
/// webhook bodies.
fn mask_outcome(
    outcome: Result<StageOutcome, StageError>,
    masker: &crate::masking::Masker,
) -> Result<StageOutcome, StageError> {
    match outcome {
        Ok(StageOutcome::Done(note)) => Ok(StageOutcome::Done(note.map(|n| masker.mask_owned(n)))),
        Ok(StageOutcome::Skipped(reason)) => Ok(StageOutcome::Skipped(masker.mask_owned(reason))),
        Err(StageError::Failed(m)) => Err(StageError::Failed(masker.mask_owned(m))),
        Err(StageError::Cancelled) => Err(StageError::Cancelled),
    }
}

/// Starts and owns the per-environment workers.
pub struct Executor;

impl Executor {
    /// Spawns one worker per configured environment.
    pub fn spawn_workers(engine: &Engine) {
        for env in engine.config().environments.keys() {
            Self::spawn_worker(engine, env.clone());
        }
    }

    /// Spawns the worker of one environment (at start, or when an
    /// integration environment is created); a previous worker of that
    /// name ends at its next look.
    pub(crate) fn spawn_worker(engine: &Engine, env: EnvName) {
        let engine = engine.clone();
        let generation = engine.worker_generation(&env);
        tokio::spawn(async move { engine.worker(env, generation).await });
    }
}

impl Engine {
    async fn worker(&self, env: EnvName, generation: u64) {
        let wake = self.shared().wakeup(&env);
        let gate = self.env_gate(&env);
        if self.should_reconcile(&env) {
            let _held = gate.lock().await;
            self.reconcile_env(&env).await;
        }
        loop {
            if !self.worker_current(&env, generation) {
                tracing::debug!(env = %env, "worker ends: the environment was removed");
                return;
            }
            match self.next_queued(&env).await {
                Ok(Some(run)) => {
                    // Held while the run executes, so a teardown never overlaps it.
                    let _held = gate.lock().await;
                    if !self.worker_current(&env, generation) {
                        return;
                    }
                    self.execute(run).await
                }
                Ok(None) => wake.notified().await,
                Err(e) => {
                    tracing::error!(env = %env, error = %e, "cannot read the run queue; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn next_queued(&self, env: &EnvName) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .store()
            .runs_unfinished()
            .await?
            .into_iter()
            .find(|r| r.env == env.as_str() && r.state == RunState::Queued))
    }

    pub(crate) async fn execute(&self, run: RunRecord) {
        let id = run.id;
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared()
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                RunControl {
                    cancel: cancel.clone(),
                    decisions: tx,
                },
            );
        let update = RunUpdate {
            started_at_ms: Some(now_ms()),
            ..RunUpdate::default()
        };
        let run = match self
            .store()
            .run_transition(id, &[RunState::Queued], RunState::Running, update)
            .await
        {
            Ok(run) => run,
            Err(e) => {
                // Cancelled or superseded between being picked and starting.
                tracing::info!(run = id, error = %e, "run did not start");
                self.forget(id);
                return;
            }
        };
        self.notify_run("run.started", &run);
        let env = match self.env_name(&run.env) {
            Ok(env) => env,
            Err(e) => {
                self.finish(id, Err((Stage::Source, StageError::Failed(e.to_string()))))
                    .await;
                self.forget(id);
                return;
            }
        };
        self.refresh_server_log_masker().await;
        let masker = self.log_masker(&env).await;
        let mut ctx = RunCtx {
            engine: self.clone(),
            run,
            env,
            version: None,
            previous: None,
            release_dir: None,
            settings: Vec::new(),
            def: None,
            masker,
            cancel,
            decisions: rx,
            scheduler_touch: None,
            rollout: None,
            wrote_deployed: false,
        };
        let mut failure = None;
        for stage in Stage::ALL {
            if ctx.cancel.is_cancelled() {
                failure = Some((stage, StageError::Cancelled));
                break;
            }
            if let Err(e) = self
                .store()
                .stage_update(id, stage, StageStatus::Running, None)
                .await
            {
                failure = Some((
                    stage,
                    StageError::Failed(format!("cannot record the stage start: {e}")),
                ));
                break;
            }
            let log = ctx.log(stage);
            log.line(format!("── {} ──", stage.title())).await;
            let started = std::time::Instant::now();
            let outcome = mask_outcome(super::stages::run_stage(&mut ctx, stage, &log).await, &ctx.masker);
            if !matches!(outcome, Ok(StageOutcome::Skipped(_))) {
                self.metrics()
                    .stage_ended(ctx.env.as_str(), stage, started.elapsed().as_secs_f64());
            }
            let recorded = match &outcome {
                Ok(StageOutcome::Done(note)) => {
                    self.store()
                        .stage_update(id, stage, StageStatus::Succeeded, note.as_deref())
                        .await
                }
                Ok(StageOutcome::Skipped(reason)) => {
                    log.line(format!("skipped: {reason}")).await;
                    self.store()
                        .stage_update(id, stage, StageStatus::Skipped, Some(reason))
                        .await
                }
                Err(e) => {
                    let note = match e {
                        StageError::Failed(m) => m.clone(),
                        StageError::Cancelled => "cancelled".to_owned(),
                    };
                    log.line(format!("failed: {note}")).await;
                    self.store()
                        .stage_update(id, stage, StageStatus::Failed, Some(&note))
                        .await
                }
            };
            let (status, note) = match &outcome {
                Ok(StageOutcome::Done(note)) => ("succeeded", note.clone()),
                Ok(StageOutcome::Skipped(reason)) => ("skipped", Some(reason.clone())),
                Err(StageError::Failed(m)) => ("failed", Some(m.clone())),
                Err(StageError::Cancelled) => ("failed", Some("cancelled".to_owned())),
            };
            let mut now = ctx.run.clone();
            now.version = ctx.version.as_ref().map(|v| v.to_string());
            self.notify_stage(&now, stage, status, note.as_deref());
            if let Err(e) = outcome {
                failure = Some((stage, e));
                break;
            }
            if let Err(e) = recorded {
                failure = Some((
                    stage,
                    StageError::Failed(format!("cannot record the stage outcome: {e}")),
                ));
                break;
            }
        }
        if let Some((stage, _)) = &failure {
            let log = ctx.log(*stage);
            self.restore(&mut ctx, &log).await;
        }
        self.finish(id, failure.map_or(Ok(()), Err)).await;
        self.forget(id);
    }

    async fn finish(&self, id: i64, result: Result<(), (Stage, StageError)>) {
        let from = [RunState::Running, RunState::AwaitingApproval];
        let now = Some(now_ms());
        let outcome = match result {
            Ok(()) => {
                self.store()
                    .run_transition(
                        id,
                        &from,
                        RunState::Succeeded,
                        RunUpdate {
                            ended_at_ms: now,
                            ..Default::default()
                        },
                    )
                    .await
            }
            Err((stage, err)) => {
                if let Err(e) = self.store().stages_mark_not_run(id).await {
                    tracing::error!(run = id, error = %e, "cannot mark the remaining stages as not run");
                }
                let (state, error) = match err {
                    StageError::Cancelled => {
                        (RunState::Cancelled, format!("cancelled during {}", stage.title()))
                    }
                    StageError::Failed(m) => (RunState::Failed, format!("{} failed: {m}", stage.title())),
                };
                let update = RunUpdate {
                    ended_at_ms: now,
                    failed_stage: Some(stage),
                    error: Some(error),
                    ..Default::default()
                };
                self.store().run_transition(id, &from, state, update).await
            }
        };
        match outcome {
            Ok(run) => {
                tracing::info!(run = id, state = %run.state, "run ended");
                self.notify_run("run.finished", &run);
                self.metrics().run_ended(&run);
            }
            Err(e) => tracing::error!(run = id, error = %e, "cannot record the end of the run"),
        }
        self.shared().logs.end(id);
    }

    fn forget(&self, id: i64) {
        self.shared()
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Puts the environment back on its serving version after a failure:
    /// undo this run's rollout, then resume the scheduler on what serves.
    async fn restore(&self, ctx: &mut RunCtx, log: &StageLog) {
        if let Some(rollout) = ctx.rollout.take() {
            log.line("restoring the previous version's services").await;
            self.undo_rollout(&ctx.env, rollout, log).await;
        }
        if ctx.wrote_deployed
            && let Some(prev) = &ctx.previous
        {
            let key = self.key(&ctx.env, crate::WellKnownKey::LastDeployedVersion);
            match self
                .store()
                .param_put(&key, prev.as_str(), super::SYSTEM_ACTOR, None)
                .await
            {
                Ok(_) => {
                    log.line(format!("last_deployed_version restored to {prev}"))
                        .await
                }
                Err(e) => {
                    log.line(format!("could not restore last_deployed_version: {e}"))
                        .await
                }
            }
        }
        if let Some(touch) = ctx.scheduler_touch.take() {
            let serving = self.serving_version(&ctx.env).or_else(|| ctx.previous.clone());
            match self.scheduler_restore(&ctx.env, serving.as_ref(), touch).await {
                Ok(()) => {
                    let v = serving
                        .map(|v| v.short().to_owned())
                        .unwrap_or_else(|| "none".into());
                    log.line(format!("scheduler back on the serving version ({v})"))
                        .await;
                }
                Err(e) => log.line(format!("could not restore the scheduler: {e}")).await,
            }
        }
    }

    /// Marks runs that were active when the server died as interrupted,
    /// naming their stage; queued runs stay queued. Called once at start.
    pub(crate) async fn interrupt_leftover_runs(&self) -> Result<(), StoreError> {
        for run in self.store().runs_unfinished().await? {
            if !run.state.is_active() {
                continue;
            }
            let stage = run.current_stage.unwrap_or(Stage::Source);
            self.store()
                .stage_update(
                    run.id,
                    stage,
                    StageStatus::Failed,
                    Some("interrupted: the server stopped"),
                )
                .await?;
            self.store().stages_mark_not_run(run.id).await?;
            let update = RunUpdate {
                ended_at_ms: Some(now_ms()),
                failed_stage: Some(stage),
                error: Some(format!(
                    "interrupted during {}: the server stopped while the run was active",
                    stage.title()
                )),
                ..RunUpdate::default()
            };
            let ended = self
                .store()
                .run_transition(run.id, &[run.state], RunState::Interrupted, update)
                .await?;
            // People heard it start; they hear it ended (the generic webhooks never did).
            self.notify_people(crate::notify::Trigger::Finished, &ended);
            tracing::warn!(
                run = run.id,
                stage = stage.slug(),
                "run interrupted by a server stop"
            );
        }
        Ok(())
    }
}

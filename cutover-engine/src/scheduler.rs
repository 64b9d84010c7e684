//! The scheduler: cron jobs per environment, run from the active release.
//!
//! State (suspended, active version, pending version) lives in the store so
//! it survives a restart: a person's suspend stays suspended; a suspend left
//! by a pipeline that died is lifted at start, on the deployed version; job
//! runs that were running when the server died are recorded as interrupted.
//!
//! Pipelines use it like this: the Pre-deploy hook stage suspends (no new
//! starts, running jobs waited for, bounded by `scheduler.suspend_timeout`);
//! Deploy scheduler installs the new version's jobs as *pending*; Install
//! activates them and resumes. Any failure puts the scheduler back on the
//! serving version, resumed unless a person had suspended it.
//!
//! Evaluation is at minute resolution, in UTC or the job's `timezone:` (`CronSchedule`, croner:
//! a job is due in a minute when its next start after the previous minute is this one, which
//! gives croner's daylight-saving rules). A job whose
//! previous run is still going is skipped for that minute, and the skip is
//! recorded. Rejected: an external cron daemon (it would not know what a
//! release is, nor suspend around migrations).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cutover_core::config::{CronSchedule, SuspendTimeoutAction};
use cutover_core::{Actor, EnvName, JobName, Version};
use cutover_runtime::{TaskExit, TaskSpec};
use cutover_store::{JobRun, JobRunState, SchedulerState};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::pipeline::SYSTEM_ACTOR;
use crate::pipeline::executor::StageError;
use crate::pipeline::logs::StageLog;
use crate::{Engine, EngineError, WellKnownKey, now_ms};

/// Job runs in progress (by job run id), and a signal when one ends.
#[derive(Default)]
pub(crate) struct SchedulerShared {
    running: Mutex<HashMap<i64, (EnvName, JobName, CancellationToken)>>,
    ended: Notify,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SchedulerStatus {
    pub env: EnvName,
    pub suspended: bool,
    pub reason: Option<String>,
    /// The version whose jobs run.
    pub version: Option<String>,
    /// Jobs installed by a pipeline that are not active yet.
    pub pending_version: Option<String>,
    pub updated_by: Option<String>,
    pub jobs: Vec<JobStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    /// The IANA time zone the schedule is read in (`UTC` unless the job sets `timezone:`).
    pub timezone: String,
    pub run: String,
    pub running: bool,
    pub next_at_ms: Option<i64>,
    pub last_run: Option<JobRun>,
}

/// What a pipeline did to the scheduler, so a failure can undo it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedulerTouch {
    /// A person had suspended it before the run: leave it suspended.
    pub was_suspended: bool,
}

impl Engine {
    fn scheduler_shared(&self) -> &SchedulerShared {
        self.scheduler_state()
    }

    async fn scheduler_load(&self, env: &EnvName) -> Result<SchedulerState, EngineError> {
        Ok(self
            .store()
            .scheduler_get(env.as_str())
            .await?
            .unwrap_or(SchedulerState {
                env: env.to_string(),
                suspended: false,
                reason: None,
                version: None,
                pending_version: None,
                updated_at_ms: 0,
                updated_by: SYSTEM_ACTOR.to_owned(),
            }))
    }

    fn running_jobs(&self, env: &EnvName) -> Vec<JobName> {
        let map = self
            .scheduler_shared()
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut jobs: Vec<JobName> = map
            .values()
            .filter(|(e, _, _)| e == env)
            .map(|(_, j, _)| j.clone())
            .collect();
        jobs.sort();
        jobs.dedup();
        jobs
    }

    /// Waits until no job of `env` runs, up to the configured bound.
    async fn wait_for_jobs(&self, env: &EnvName, cancel: &CancellationToken) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.app(env).scheduler.suspend_timeout;
        loop {
            let notified = self.scheduler_shared().ended.notified();
            let running = self.running_jobs(env);
            if running.is_empty() {
                return Ok(());
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    let names: Vec<&str> = running.iter().map(JobName::as_str).collect();
                    return Err(format!(
                        "jobs still running after {}: {}; they were not stopped — wait for them, raise scheduler.suspend_timeout, \
                         or set scheduler.on_suspend_timeout: terminate",
                        cutover_core::config::format_duration(self.app(env).scheduler.suspend_timeout),
                        names.join(", ")
                    ));
                }
                () = cancel.cancelled() => return Err("cancelled".into()),
            }
        }
    }

    /// Signals every running job of `env` to stop (SIGTERM, then SIGKILL).
    pub(crate) fn terminate_jobs(&self, env: &EnvName) {
        let map = self
            .scheduler_shared()
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (e, _, cancel) in map.values() {
            if e == env {
                cancel.cancel();
            }
        }
    }

    async fn wait_for_jobs_at_most(&self, env: &EnvName, bound: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.scheduler_shared().ended.notified();
            let running = self.running_jobs(env);
            if running.is_empty() {
                return Ok(());
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    let names: Vec<&str> = running.iter().map(JobName::as_str).collect();
                    return Err(format!("jobs did not stop after being terminated: {}", names.join(", ")));
                }
            }
        }
    }

    /// Pre-deploy: suspend and wait for running jobs. None when there are no jobs.
    pub(crate) async fn scheduler_suspend_for_run(
        &self,
        env: &EnvName,
        run_id: i64,
        log: &StageLog,
        cancel: &CancellationToken,
    ) -> Result<Option<SchedulerTouch>, StageError> {
        if self.app(env).scheduler.jobs.is_empty() {
            return Ok(None);
        }
        let mut state = self.scheduler_load(env).await?;
        let was_suspended = state.suspended;
        if !was_suspended {
            state.suspended = true;
            state.reason = Some(format!("pipeline run {run_id}"));
            state.updated_by = SYSTEM_ACTOR.to_owned();
            self.store().scheduler_put(&state).await?;
            log.line("scheduler suspended: no new jobs start").await;
        } else {
            log.line(format!(
                "scheduler already suspended ({})",
                state.reason.clone().unwrap_or_default()
            ))
            .await;
        }
        let running = self.running_jobs(env);
        if !running.is_empty() {
            let names: Vec<&str> = running.iter().map(JobName::as_str).collect();
            log.line(format!("waiting for running jobs: {}", names.join(", ")))
                .await;
        }
        let touch = SchedulerTouch { was_suspended };
        let mut waited = self.wait_for_jobs(env, cancel).await;
        if waited.is_err()
            && !cancel.is_cancelled()
            && self.app(env).scheduler.on_suspend_timeout == SuspendTimeoutAction::Terminate
        {
            let running = self.running_jobs(env);
            let names: Vec<&str> = running.iter().map(JobName::as_str).collect();
            log.line(format!(
                "terminating jobs still running (on_suspend_timeout: terminate): {}",
                names.join(", ")
            ))
            .await;
            self.terminate_jobs(env);
            waited = self.wait_for_jobs_at_most(env, Duration::from_secs(60)).await;
        }
        if let Err(why) = waited {
            // Leave the scheduler as the run found it, then fail.
            let serving = self.serving_version(env);
            let _ = self.scheduler_restore(env, serving.as_ref(), touch).await;
            return Err(if cancel.is_cancelled() {
                StageError::Cancelled
            } else {
                StageError::Failed(why)
            });
        }
        Ok(Some(touch))
    }

    /// Deploy scheduler: the new version's jobs, installed while suspended.
    pub(crate) async fn scheduler_install(
        &self,
        env: &EnvName,
        version: &Version,
        log: &StageLog,
    ) -> Result<(), StageError> {
        let mut state = self.scheduler_load(env).await?;
        state.pending_version = Some(version.to_string());
        state.updated_by = SYSTEM_ACTOR.to_owned();
        self.store().scheduler_put(&state).await?;
        for (name, job) in &self.def_for(env, version).scheduler.jobs {
            log.line(format!(
                "job {name}: \"{}\" runs `{}` (installed, suspended)",
                job.schedule, job.run
            ))
            .await;
        }
        Ok(())
    }

    /// Install: make `version`'s jobs active; resume unless a person suspended it.
    pub(crate) async fn scheduler_activate(
        &self,
        env: &EnvName,
        version: &Version,
        touch: SchedulerTouch,
    ) -> Result<(), EngineError> {
        let mut state = self.scheduler_load(env).await?;
        state.version = Some(version.to_string());
        state.pending_version = None;
        if !touch.was_suspended {
            state.suspended = false;
            state.reason = None;
        }
        state.updated_by = SYSTEM_ACTOR.to_owned();
        self.store().scheduler_put(&state).await?;
        Ok(())
    }

    /// After a failure: jobs of the serving version, resumed unless a person suspended it.
    pub(crate) async fn scheduler_restore(
        &self,
        env: &EnvName,
        serving: Option<&Version>,
        touch: SchedulerTouch,
    ) -> Result<(), EngineError> {
        let mut state = self.scheduler_load(env).await?;
        if let Some(v) = serving {
            state.version = Some(v.to_string());
        }
        state.pending_version = None;
        if !touch.was_suspended {
            state.suspended = false;
            state.reason = None;
        }
        state.updated_by = SYSTEM_ACTOR.to_owned();
        self.store().scheduler_put(&state).await?;
        Ok(())
    }

    /// At start, before anything runs: job runs that were running when the
    /// server died are recorded as interrupted.
    pub(crate) async fn interrupt_leftover_job_runs(&self) -> Result<(), EngineError> {
        for run in self.store().job_runs_unfinished().await? {
            self.store()
                .job_run_finish(
                    run.id,
                    JobRunState::Interrupted,
                    None,
                    Some("the server stopped while it ran"),
                )
                .await?;
        }
        Ok(())
    }

    /// At start, per environment: a suspend left by a pipeline that died is
    /// lifted on the deployed version.
    pub(crate) async fn scheduler_recover(&self, env: &EnvName) -> Result<(), EngineError> {
        let state = self.scheduler_load(env).await?;
        if state.suspended && state.updated_by == SYSTEM_ACTOR {
            let deployed = self.well_known(env, WellKnownKey::LastDeployedVersion).await?;
            let deployed = deployed.as_deref().map(Version::parse).transpose()?;
            self.scheduler_restore(env, deployed.as_ref(), SchedulerTouch { was_suspended: false })
                .await?;
            tracing::warn!(env = %env, "scheduler was left suspended by an interrupted run; resumed");
        }
        Ok(())
    }

    /// Starts the minute loop that fires due jobs in every environment.
    pub(crate) fn spawn_scheduler(&self) {
        // Every environment's definition may add jobs (a commit's `scheduler:`): the loop runs
        // even when the server's file has none; a minute without due jobs costs nothing.
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                let now = now_ms();
                let next = (now / 60_000 + 1) * 60_000;
                tokio::time::sleep(Duration::from_millis((next - now).max(1) as u64)).await;
                let minute = next / 1000;
                for env in engine.config().environments.keys() {
                    if let Err(e) = engine.tick(env, minute).await {
                        tracing::error!(env = %env, error = %e, "scheduler tick failed");
                    }
                }
            }
        });
    }

    /// Starts the jobs due in the minute that begins at `minute` (Unix seconds).
    async fn tick(&self, env: &EnvName, minute: i64) -> Result<(), EngineError> {
        if self.is_expired(env) {
            return Ok(()); // torn down after its ttl: nothing runs until a release
        }
        let state = self.scheduler_load(env).await?;
        let Some(version) = state.version.as_deref().filter(|_| !state.suspended) else {
            return Ok(());
        };
        let version = Version::parse(version)?;
        for (name, job) in &self.app(env).scheduler.jobs {
            let due = CronSchedule::parse_in(&job.schedule, job.timezone.as_deref())
                .map(|s| s.is_due(minute))
                .unwrap_or(false);
            if due {
                self.start_job(env, name, &version, "schedule").await?;
            }
        }
        Ok(())
    }

    /// Starts one run of a job (or records it as skipped while the previous one runs).
    async fn start_job(
        &self,
        env: &EnvName,
        job: &JobName,
        version: &Version,
        trigger: &str,
    ) -> Result<JobRun, EngineError> {
        let def = self.def_for(env, version);
        let Some(job_def) = def.scheduler.jobs.get(job) else {
            return Err(EngineError::Refused(format!(
                "{version} defines no job {job} (scheduler.jobs of its cutover.yml)",
                version = version.short()
            )));
        };
        let running = self.running_jobs(env).contains(job) && !job_def.overlap;
        let command = job_def.run.clone();
        let run = self
            .store()
            .job_run_start(env.as_str(), job.as_str(), version.as_str(), trigger)
            .await?;
        if running {
            return Ok(self
                .store()
                .job_run_finish(
                    run.id,
                    JobRunState::Skipped,
                    None,
                    Some("the previous run is still running"),
                )
                .await?);
        }
        let cancel = CancellationToken::new();
        self.scheduler_shared()
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id, (env.clone(), job.clone(), cancel.clone()));
        let mut vars = self.instance_env_for(env, version).await;
        vars.push(("CUTOVER_VERSION".to_owned(), version.to_string()));
        if let Some(image) = self.task_image(env, version) {
            vars.push((cutover_docker::TASK_IMAGE_VAR.to_owned(), image));
        }
        vars.push(("CUTOVER_JOB".to_owned(), job.to_string()));
        let spec = TaskSpec {
            label: format!("job {job}"),
            command,
            dir: self.release_dir(version),
            env_vars: vars,
            timeout: self.config().environments[env].hook_timeout,
        };
        let engine = self.clone();
        let (env, job, id) = (env.clone(), job.clone(), run.id);
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel::<cutover_runtime::TaskLine>();
            let store = engine.store().clone();
            let masker = engine.log_masker(&env).await;
            let forward = tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    let _ = store.job_log_append(id, &masker.mask(&line.text)).await;
                }
            });
            let outcome = engine.runtime_for(&env).run_task(spec, tx, cancel).await;
            let _ = forward.await;
            let (state, code, note) = match outcome {
                Ok(o) => match o.exit {
                    TaskExit::Code(0) => (JobRunState::Succeeded, Some(0), None),
                    TaskExit::Code(c) => (JobRunState::Failed, Some(c), Some(format!("exit status {c}"))),
                    TaskExit::Signal(s) => (JobRunState::Failed, None, Some(format!("killed by signal {s}"))),
                    TaskExit::TimedOut { after } => (
                        JobRunState::Terminated,
                        None,
                        Some(format!("timed out after {}s", after.as_secs())),
                    ),
                    TaskExit::Cancelled => (JobRunState::Terminated, None, Some("terminated".to_owned())),
                },
                Err(e) => (JobRunState::Failed, None, Some(e.to_string())),
            };
            if let Err(e) = engine
                .store()
                .job_run_finish(id, state, code, note.as_deref())
                .await
            {
                tracing::error!(job = %job, error = %e, "cannot record the end of a job run");
            }
            engine
                .scheduler_shared()
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            engine.scheduler_shared().ended.notify_waiters();
        });
        Ok(run)
    }

    fn job_name(&self, env: &EnvName, job: &str) -> Result<JobName, EngineError> {
        let name = JobName::parse(job)?;
        let def = self.app(env);
        if !def.scheduler.jobs.contains_key(&name) {
            let known: Vec<&str> = def.scheduler.jobs.keys().map(JobName::as_str).collect();
            return Err(EngineError::Refused(format!(
                "unknown job {job:?}; scheduler.jobs has: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(name)
    }

    pub async fn scheduler_status(&self, env: &str) -> Result<SchedulerStatus, EngineError> {
        let env = self.env_name(env)?;
        let state = self.scheduler_load(&env).await?;
        let running = self.running_jobs(&env);
        let now_s = now_ms() / 1000;
        let mut jobs = Vec::new();
        for (name, job) in &self.app(&env).scheduler.jobs {
            let last = self
                .store()
                .job_runs(env.as_str(), Some(name.as_str()), 1)
                .await?
                .into_iter()
                .next();
            let next = CronSchedule::parse_in(&job.schedule, job.timezone.as_deref())
                .ok()
                .and_then(|s| s.next_after(now_s))
                .map(|s| s * 1000);
            jobs.push(JobStatus {
                name: name.to_string(),
                schedule: job.schedule.clone(),
                timezone: job.timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
                run: job.run.clone(),
                running: running.contains(name),
                next_at_ms: if state.suspended || state.version.is_none() {
                    None
                } else {
                    next
                },
                last_run: last,
            });
        }
        Ok(SchedulerStatus {
            env,
            suspended: state.suspended,
            reason: state.reason,
            version: state.version,
            pending_version: state.pending_version,
            updated_by: Some(state.updated_by),
            jobs,
        })
    }

    /// A person suspends the scheduler: no new starts; waits for running jobs (bounded).
    pub async fn scheduler_suspend(&self, env: &str, actor: &Actor) -> Result<SchedulerStatus, EngineError> {
        let env = self.env_name(env)?;
        let mut state = self.scheduler_load(&env).await?;
        state.suspended = true;
        state.reason = Some(format!("suspended by {actor}"));
        state.updated_by = actor.to_string();
        self.store().scheduler_put(&state).await?;
        self.audit(actor, "scheduler.suspend", env.as_str(), serde_json::json!({}))
            .await;
        self.wait_for_jobs(&env, &CancellationToken::new())
            .await
            .map_err(EngineError::Refused)?;
        self.scheduler_status(env.as_str()).await
    }

    pub async fn scheduler_resume(&self, env: &str, actor: &Actor) -> Result<SchedulerStatus, EngineError> {
        let env = self.env_name(env)?;
        let mut state = self.scheduler_load(&env).await?;
        if state.pending_version.is_some() {
            return Err(EngineError::Refused(format!(
                "a pipeline run is installing new jobs on {env}; it resumes the scheduler after its Install stage"
            )));
        }
        state.suspended = false;
        state.reason = None;
        state.updated_by = actor.to_string();
        self.store().scheduler_put(&state).await?;
        self.audit(actor, "scheduler.resume", env.as_str(), serde_json::json!({}))
            .await;
        self.scheduler_status(env.as_str()).await
    }

    /// Runs a job now, from the active release (allowed while suspended: a person asked).
    pub async fn scheduler_run_now(
        &self,
        env: &str,
        job: &str,
        actor: &Actor,
    ) -> Result<JobRun, EngineError> {
        let env = self.env_name(env)?;
        let job = self.job_name(&env, job)?;
        let state = self.scheduler_load(&env).await?;
        if let Some(pending) = &state.pending_version {
            return Err(EngineError::Refused(format!(
                "a pipeline run is installing the jobs of {} on {env} and holds the scheduler so no job runs against \
                 half-migrated data; run the job after its Install stage",
                &pending[..12.min(pending.len())]
            )));
        }
        let version = state.version.ok_or_else(|| {
            EngineError::Refused(format!(
                "{env} has no jobs installed yet: deploy it first (cutover release {env})"
            ))
        })?;
        let version = Version::parse(&version)?;
        self.audit(
            actor,
            "scheduler.run",
            &format!("{env}/{job}"),
            serde_json::json!({}),
        )
        .await;
        self.start_job(&env, &job, &version, "manual").await
    }

    pub async fn job_runs(
        &self,
        env: &str,
        job: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRun>, EngineError> {
        let env = self.env_name(env)?;
        let job = job.map(|j| self.job_name(&env, j)).transpose()?;
        Ok(self
            .store()
            .job_runs(
                env.as_str(),
                job.as_ref().map(JobName::as_str),
                limit.clamp(1, 500),
            )
            .await?)
    }

    pub async fn job_log(
        &self,
        job_run_id: i64,
        after_seq: i64,
    ) -> Result<Vec<(i64, i64, String)>, EngineError> {
        let mut lines = self.store().job_log_read(job_run_id, after_seq, 10_000).await?;
        // Masked when written; again as served, for lines written before a value was set.
        if let Some(run) = self.store().job_run_get(job_run_id).await? {
            let masker = self.log_masker_named(&run.env).await;
            for (_, _, line) in &mut lines {
                if let std::borrow::Cow::Owned(masked) = masker.mask(line) {
                    *line = masked;
                }
            }
        }
        Ok(lines)
    }
}

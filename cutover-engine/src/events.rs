//! Live events for the dashboard (`GET /api/v1/events`): a run was created, changed state,
//! finished or waits for an approval; a stage changed; an environment's versions, lifecycle
//! or scheduler changed.
//!
//! They are raised by a decorator around the [`Store`] the engine is given ([`EventStore`]):
//! every write that changes what the dashboard shows goes through the store, so no code path
//! (executor, cancel, approvals, recovery at start, lifecycle, scheduler) can change state
//! without an event, and nothing has to remember to send one. An event says *what* changed
//! (environment, run id, state, stage), never a value: the client re-reads what it shows
//! through the API, under the same authorization as any other read. Rejected: events raised at
//! each call site (a new path would forget them), polling the store per client.
//!
//! [`EventStore`] forwards every `Store` method explicitly: a method added to the trait without
//! a default body fails to compile until it is forwarded here; one added *with* a default body
//! must be forwarded by hand too (or the default runs instead of the real store's).
//!
//! One `tokio::sync::broadcast` channel of [`EVENT_BUFFER`] events: a slow reader lags behind,
//! and the stream then ends for that reader (the client re-reads everything and reconnects);
//! no reader can make the channel grow. At most [`MAX_EVENT_STREAMS`] streams at once, and
//! [`MAX_EVENT_STREAMS_PER_TOKEN`] per token, so one token cannot take every slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_core::{RunState, Stage, StageStatus};
use cutover_store::{
    ApprovalRecord, AuditEntry, Decision, JobRun, JobRunState, NewAuditEntry, NewRun, NewToken, ParamKey,
    ParamVersion, RunLogLine, RunRecord, RunUpdate, SchedulerState, Store, StoreError, TokenRecord,
};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events buffered for the slowest stream before it is dropped.
pub const EVENT_BUFFER: usize = 1024;
/// Concurrent event streams a server serves; more are refused (429) until one ends.
pub const MAX_EVENT_STREAMS: usize = 64;
/// Concurrent event streams of one token (a browser holds six connections per server).
pub const MAX_EVENT_STREAMS_PER_TOKEN: usize = 8;

/// Why no event stream was opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    #[error(
        "{MAX_EVENT_STREAMS} event streams are open on this server already; close a dashboard tab or retry later"
    )]
    Server,
    #[error(
        "this token has {MAX_EVENT_STREAMS_PER_TOKEN} event streams open already; close a dashboard tab (one in the background holds none) or retry later"
    )]
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunCreated,
    /// A new state that is neither the end nor a wait for approval (e.g. queued → running).
    RunChanged,
    StageChanged,
    ApprovalNeeded,
    RunFinished,
    /// Versions (`desired_version`, `last_build_version`, `last_deployed_version`), replica
    /// counts, scale requests, flags, the lifecycle record or the scheduler of the environment
    /// changed.
    EnvironmentChanged,
}

/// One event: what changed, never a value (re-read it through the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub kind: EventKind,
    pub env: String,
    pub run_id: Option<i64>,
    /// The run's state after the change.
    pub state: Option<RunState>,
    pub stage: Option<Stage>,
    pub stage_status: Option<StageStatus>,
}

/// Open streams: in all, and per token name.
#[derive(Default)]
struct Counts {
    total: usize,
    per_token: HashMap<String, usize>,
}

/// The engine's event channel and its stream counts.
pub(crate) struct Events {
    tx: broadcast::Sender<Event>,
    counts: Arc<Mutex<Counts>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
            counts: Arc::default(),
        }
    }
}

impl Events {
    fn send(&self, event: Event) {
        // No receiver: nobody watches; that is fine.
        let _ = self.tx.send(event);
    }

    fn take(&self, token: &str) -> Result<EventStream, StreamRefused> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= MAX_EVENT_STREAMS {
            return Err(StreamRefused::Server);
        }
        let mine = counts.per_token.entry(token.to_owned()).or_default();
        if *mine >= MAX_EVENT_STREAMS_PER_TOKEN {
            return Err(StreamRefused::Token);
        }
        *mine += 1;
        counts.total += 1;
        Ok(EventStream {
            events: self.tx.subscribe(),
            token: token.to_owned(),
            counts: self.counts.clone(),
        })
    }
}

/// A subscription that counts against the caps until dropped.
pub struct EventStream {
    pub events: broadcast::Receiver<Event>,
    token: String,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_token.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_token.remove(&self.token);
            }
        }
    }
}

impl crate::Engine {
    /// A new event stream for the token named `token`, unless a cap is reached.
    pub fn event_stream(&self, token: &str) -> Result<EventStream, StreamRefused> {
        self.inner.events.take(token)
    }
}

/// The engine's store: every call goes to `inner`; writes that change what the dashboard
/// shows also raise an [`Event`].
pub(crate) struct EventStore {
    pub inner: Arc<dyn Store>,
    pub events: Arc<Events>,
    /// `/<app>-`: the prefix of every environment's parameters.
    pub env_prefix: String,
    /// `/<app>/environments/`: lifecycle records.
    pub records_prefix: String,
    /// `/<app>/scale-requests/`: scale change requests (JSON with `env`).
    pub scale_prefix: String,
}

impl EventStore {
    fn env_event(&self, env: &str) {
        self.events.send(Event {
            kind: EventKind::EnvironmentChanged,
            env: env.to_owned(),
            run_id: None,
            state: None,
            stage: None,
            stage_status: None,
        });
    }

    fn run_event(&self, kind: EventKind, run: &RunRecord) {
        self.events.send(Event {
            kind,
            env: run.env.clone(),
            run_id: Some(run.id),
            state: Some(run.state),
            stage: None,
            stage_status: None,
        });
    }

    fn state_event(&self, run: &RunRecord) {
        let kind = if run.state.is_terminal() {
            EventKind::RunFinished
        } else if run.state == RunState::AwaitingApproval {
            EventKind::ApprovalNeeded
        } else {
            EventKind::RunChanged
        };
        self.run_event(kind, run);
    }

    fn env_of_key(&self, key: &str) -> Option<String> {
        env_of_key(&self.env_prefix, &self.records_prefix, key)
    }
}

/// The environment a parameter key belongs to when it is one the overview shows.
fn env_of_key(env_prefix: &str, records_prefix: &str, key: &str) -> Option<String> {
    if let Some(env) = key.strip_prefix(records_prefix) {
        return Some(env.to_owned());
    }
    let (env, rest) = key.strip_prefix(env_prefix)?.split_once('/')?;
    let shown = matches!(
        rest,
        "desired_version" | "last_build_version" | "last_deployed_version"
    ) || rest.starts_with("replicas/")
        || rest.starts_with("flags/");
    shown.then(|| env.to_owned())
}

#[async_trait::async_trait]
impl Store for EventStore {
    async fn param_get(&self, key: &ParamKey) -> Result<Option<ParamVersion>, StoreError> {
        self.inner.param_get(key).await
    }

    async fn param_put(
        &self,
        key: &ParamKey,
        value: &str,
        actor: &str,
        expect_version: Option<i64>,
    ) -> Result<ParamVersion, StoreError> {
        let put = self.inner.param_put(key, value, actor, expect_version).await?;
        if let Some(env) = self.env_of_key(&put.key) {
            self.env_event(&env);
        } else if put.key.starts_with(&self.scale_prefix) {
            // A scale request's record names its environment.
            let env = serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .and_then(|v| v["env"].as_str().map(str::to_owned));
            if let Some(env) = env {
                self.env_event(&env);
            }
        }
        Ok(put)
    }

    async fn param_history(&self, key: &ParamKey) -> Result<Vec<ParamVersion>, StoreError> {
        self.inner.param_history(key).await
    }

    async fn param_list(&self, prefix: &str) -> Result<Vec<ParamVersion>, StoreError> {
        self.inner.param_list(prefix).await
    }

    async fn audit_append(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        self.inner.audit_append(entry).await
    }

    async fn audit_list(&self, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_list(limit, before_id).await
    }

    async fn run_enqueue(&self, new: NewRun) -> Result<(RunRecord, Vec<i64>), StoreError> {
        let (run, superseded) = self.inner.run_enqueue(new).await?;
        for id in &superseded {
            if let Ok(Some(old)) = self.inner.run_get(*id).await {
                self.state_event(&old);
            }
        }
        self.run_event(EventKind::RunCreated, &run);
        Ok((run, superseded))
    }

    async fn run_get(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.inner.run_get(id).await
    }

    async fn run_list(
        &self,
        env: Option<&str>,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.run_list(env, limit, before_id).await
    }

    async fn run_transition(
        &self,
        id: i64,
        from: &[RunState],
        to: RunState,
        update: RunUpdate,
    ) -> Result<RunRecord, StoreError> {
        let run = self.inner.run_transition(id, from, to, update).await?;
        self.state_event(&run);
        Ok(run)
    }

    async fn run_update(&self, id: i64, update: RunUpdate) -> Result<RunRecord, StoreError> {
        let run = self.inner.run_update(id, update).await?;
        self.run_event(EventKind::RunChanged, &run);
        Ok(run)
    }

    async fn stage_update(
        &self,
        run_id: i64,
        stage: Stage,
        status: StageStatus,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.stage_update(run_id, stage, status, note).await?;
        if let Ok(Some(run)) = self.inner.run_get(run_id).await {
            self.events.send(Event {
                kind: EventKind::StageChanged,
                env: run.env,
                run_id: Some(run_id),
                state: Some(run.state),
                stage: Some(stage),
                stage_status: Some(status),
            });
        }
        Ok(())
    }

    async fn stages_mark_not_run(&self, run_id: i64) -> Result<(), StoreError> {
        self.inner.stages_mark_not_run(run_id).await?;
        if let Ok(Some(run)) = self.inner.run_get(run_id).await {
            self.run_event(EventKind::RunChanged, &run);
        }
        Ok(())
    }

    async fn log_append(&self, run_id: i64, stage: Stage, line: &str) -> Result<RunLogLine, StoreError> {
        self.inner.log_append(run_id, stage, line).await
    }

    async fn log_read(
        &self,
        run_id: i64,
        stage: Option<Stage>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunLogLine>, StoreError> {
        self.inner.log_read(run_id, stage, after_seq, limit).await
    }

    async fn runs_unfinished(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.runs_unfinished().await
    }

    async fn run_succeeded_with(&self, env: &str, version: &str) -> Result<bool, StoreError> {
        self.inner.run_succeeded_with(env, version).await
    }

    async fn approval_add(
        &self,
        run_id: i64,
        actor: &str,
        decision: Decision,
        comment: Option<&str>,
    ) -> Result<ApprovalRecord, StoreError> {
        let added = self.inner.approval_add(run_id, actor, decision, comment).await?;
        if let Ok(Some(run)) = self.inner.run_get(run_id).await {
            self.run_event(EventKind::RunChanged, &run);
        }
        Ok(added)
    }

    async fn approvals(&self, run_id: i64) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.inner.approvals(run_id).await
    }

    async fn scheduler_get(&self, env: &str) -> Result<Option<SchedulerState>, StoreError> {
        self.inner.scheduler_get(env).await
    }

    async fn scheduler_put(&self, state: &SchedulerState) -> Result<(), StoreError> {
        self.inner.scheduler_put(state).await?;
        self.env_event(&state.env);
        Ok(())
    }

    async fn job_run_start(
        &self,
        env: &str,
        job: &str,
        version: &str,
        trigger: &str,
    ) -> Result<JobRun, StoreError> {
        self.inner.job_run_start(env, job, version, trigger).await
    }

    async fn job_run_finish(
        &self,
        id: i64,
        state: JobRunState,
        exit_code: Option<i32>,
        note: Option<&str>,
    ) -> Result<JobRun, StoreError> {
        self.inner.job_run_finish(id, state, exit_code, note).await
    }

    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<JobRun>, StoreError> {
        self.inner.job_runs(env, job, limit).await
    }

    async fn job_runs_unfinished(&self) -> Result<Vec<JobRun>, StoreError> {
        self.inner.job_runs_unfinished().await
    }

    async fn job_log_append(&self, job_run_id: i64, line: &str) -> Result<i64, StoreError> {
        self.inner.job_log_append(job_run_id, line).await
    }

    async fn job_log_read(
        &self,
        job_run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, i64, String)>, StoreError> {
        self.inner.job_log_read(job_run_id, after_seq, limit).await
    }

    async fn job_history_reset(&self, env: &str) -> Result<u64, StoreError> {
        self.inner.job_history_reset(env).await
    }

    async fn job_run_get(&self, id: i64) -> Result<Option<JobRun>, StoreError> {
        self.inner.job_run_get(id).await
    }

    async fn token_create(&self, new: NewToken) -> Result<TokenRecord, StoreError> {
        self.inner.token_create(new).await
    }

    async fn token_bootstrap(&self, new: NewToken) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token_bootstrap(new).await
    }

    async fn token_find(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token_find(secret_hash).await
    }

    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.token_list().await
    }

    async fn token_revoke(&self, name: &str, by: &str) -> Result<TokenRecord, StoreError> {
        self.inner.token_revoke(name, by).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_keys_the_overview_shows_raise_an_environment_event() {
        let of = |k| env_of_key("/shop-", "/shop/environments/", k);
        assert_eq!(of("/shop-prod/desired_version").as_deref(), Some("prod"));
        assert_eq!(of("/shop-dev/last_deployed_version").as_deref(), Some("dev"));
        assert_eq!(of("/shop/environments/review-x").as_deref(), Some("review-x"));
        assert_eq!(of("/shop-prod/replicas/api").as_deref(), Some("prod"));
        assert_eq!(of("/shop-prod/secrets/db"), None);
        assert_eq!(of("/shop-prod/env/desired_version"), None);
        assert_eq!(of("/other-prod/desired_version"), None);
    }

    #[test]
    fn streams_beyond_the_caps_are_refused_and_a_closed_one_frees_its_slot() {
        let events = Events::default();
        let mut alice: Vec<_> = (0..MAX_EVENT_STREAMS_PER_TOKEN)
            .map(|_| events.take("alice").unwrap())
            .collect();
        assert_eq!(events.take("alice").err(), Some(StreamRefused::Token));
        alice.pop();
        alice.push(events.take("alice").expect("a closed stream frees its slot"));
        let mut others: Vec<_> = (alice.len()..MAX_EVENT_STREAMS)
            .map(|i| events.take(&format!("t{i}")).unwrap())
            .collect();
        assert_eq!(events.take("bob").err(), Some(StreamRefused::Server));
        others.pop();
        assert!(events.take("bob").is_ok());
    }
}

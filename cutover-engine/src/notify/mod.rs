//! Notifications people read and the git host's deployment records (`notifications:` in
//! cutover.yml): Slack-compatible incoming webhooks (`slack.rs`), GitHub Deployments and commit
//! statuses (`github.rs`), GitLab commit statuses (`gitlab.rs`). The generic JSON `webhooks:`
//! stay in `webhooks.rs`, which hands each run event to [`Engine::notify_people`] too.
//!
//! Flow: the engine sends a bare event (run record, what happened) on one bounded queue; one
//! dispatcher task adds what a person wants to read (the commit's subject from the local
//! repository, the dashboard link) and puts a [`Notice`] on each interested receiver's own
//! queue; each receiver has one task, so it sees a run's events in order, and a receiver that
//! is down delays only itself. Nothing here is awaited by a run: every hand-over is a
//! `try_send` (a full queue drops the notice, logs it and counts it). A request that fails for
//! a reason that may pass (connection error, timeout, 429, 5xx) is tried again after 1 s and
//! 3 s, then given up; each try is bounded by 5 s and an answer's body is read only up to
//! 64 KiB. Failures are logged (without the URL of a Slack receiver, which is a secret, nor any
//! answer's body) and counted in `cutover_notifications_total{kind, receiver, outcome}`.
//!
//! Credentials (the Slack URL, API tokens) are platform secrets `/<app>/secrets/<name>`, read
//! and decrypted for each notice, so a rotated secret is used at once; they pass the server
//! log's masker like every secret, and are never put in a log line here. Redirects are followed
//! only within the first request's origin (`http::client_builder`); a Slack URL must be https://
//! (plain http only to loopback, where a test receiver lives).
//!
//! Links: with `notifications.public_url`, messages link to `<public_url>/#/run/<id>` (GitHub:
//! `log_url`, `target_url`; `environment_url` is the environment's page). Without it they carry
//! no link, and Slack messages say how to get one. Rejected: guessing the address from the
//! server's listen address (a loopback or 0.0.0.0 address is no link anyone can open).

mod github;
mod gitlab;
mod slack;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::config::{Notifications, Receiver, ReceiverKind, Tier};
use cutover_core::{RunKind, RunState, Version};
use cutover_git::Repo;
use cutover_store::{ParamKey, RunRecord, Store};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Engine, SecretKey};

/// Pauses before the second and third try of a request.
const RETRY_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// Bound on one try (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer's body that is read.
const MAX_ANSWER: usize = 64 * 1024;
/// Notices waiting per receiver (and events waiting for the dispatcher).
const QUEUE: usize = 1000;

/// What happened to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Queued,
    Started,
    AwaitingApproval,
    Finished,
    /// A newer request replaced it while it was queued.
    Superseded,
}

/// A run event with what people read about it.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub trigger: Trigger,
    pub app: String,
    pub env: String,
    pub tier: Option<Tier>,
    pub run_id: i64,
    pub kind: RunKind,
    pub state: RunState,
    /// The full SHA the run deploys (fixed at request), if known.
    pub sha: Option<String>,
    /// The first line of its commit message, if the repository has the commit.
    pub subject: Option<String>,
    pub requested_by: String,
    pub chosen_by: Option<String>,
    /// What served before (for a rollback: what it rolled back from).
    pub previous: Option<String>,
    /// The run's error (already masked by the engine).
    pub error: Option<String>,
    /// `<public_url>/#/run/<id>`, with `notifications.public_url`.
    pub run_url: Option<String>,
    /// `<public_url>/#/env/<env>`, with `notifications.public_url`.
    pub env_url: Option<String>,
}

impl Notice {
    /// The first 7 hex digits of the SHA (as git hosts show them).
    pub fn short_sha(&self) -> Option<&str> {
        self.sha.as_deref().map(|s| &s[..s.len().min(7)])
    }
}

/// What the engine hands over.
struct Raw {
    trigger: Trigger,
    run: RunRecord,
    tier: Option<Tier>,
    template: Option<String>,
}

/// The engine's side: the dispatcher's queue and the delivery counters.
pub(crate) struct Notifier {
    queue: Option<mpsc::Sender<Raw>>,
    counts: Family<Vec<(&'static str, String)>, Counter>,
}

/// Reads the platform secrets receivers name, at each use.
#[derive(Clone)]
pub(crate) struct Secrets {
    store: Arc<dyn Store>,
    key: SecretKey,
    app: String,
}

impl Secrets {
    /// The decrypted value of `/<app>/secrets/<name>`; errors say which key and how to set it
    /// (never the value).
    pub async fn read(&self, name: &str, field: &str) -> Result<String, String> {
        let key =
            ParamKey::parse(&format!("/{}/secrets/{name}", self.app)).map_err(|e| format!("{field}: {e}"))?;
        let stored = self
            .store
            .param_get(&key)
            .await
            .map_err(|e| format!("cannot read {key}: {e}"))?;
        match stored {
            Some(p) => self
                .key
                .decrypt(&p.value)
                .map_err(|e| format!("cannot decrypt {key}: {e}")),
            None => Err(format!(
                "{field} names {key}, which is not set; set it (an admin) with `cutover param put {key} -`"
            )),
        }
    }
}

/// One receiver's sending side: its label, client and counters.
pub(crate) struct Sender {
    /// `slack receiver 0` (never its URL).
    pub label: String,
    kind: &'static str,
    index: String,
    /// Built for the scheme of the last URL used (https loads the platform's roots).
    client: Option<(bool, reqwest::Client)>,
    counts: Family<Vec<(&'static str, String)>, Counter>,
}

/// A request that did not succeed (already logged).
#[derive(Debug)]
pub(crate) struct Undelivered;

impl Sender {
    fn client(&mut self, url: &str) -> Result<reqwest::Client, Undelivered> {
        let https = url.starts_with("https://");
        if let Some((h, c)) = &self.client
            && *h == https
        {
            return Ok(c.clone());
        }
        let built = crate::http::client_builder(url)
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| {
                tracing::error!(receiver = %self.label, error = %e, "cannot build the notification client");
                self.count("failed");
                Undelivered
            })?;
        self.client = Some((https, built.clone()));
        Ok(built)
    }

    fn count(&self, outcome: &str) {
        self.counts
            .get_or_create(&vec![
                ("kind", self.kind.to_owned()),
                ("receiver", self.index.clone()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Logs and counts a notice this receiver could not send for a reason of its own (a
    /// secret that is not set, a URL it refuses).
    pub fn refuse(&self, why: &str) {
        tracing::error!(receiver = %self.label, reason = why, "notification not sent");
        self.count("failed");
    }

    /// POSTs `body` as JSON to `url` with `headers`, retrying what may pass; returns the
    /// answer's JSON body (`Null` when it has none or it does not parse). `what` names the
    /// request in logs; the URL is logged only when `show_url` (never a Slack URL).
    pub async fn post(
        &mut self,
        url: &str,
        show_url: bool,
        headers: &[(&str, String)],
        body: &Value,
        what: &str,
    ) -> Result<Value, Undelivered> {
        let client = self.client(url)?;
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let shown = if show_url { url } else { "(secret)" };
        for attempt in 0..=RETRY_AFTER.len() {
            if attempt > 0 {
                tokio::time::sleep(RETRY_AFTER[attempt - 1]).await;
            }
            let mut request = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(
                    reqwest::header::USER_AGENT,
                    concat!("cutover/", env!("CARGO_PKG_VERSION")),
                );
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            // Without the URL: a Slack URL is a secret.
            let outcome = request
                .body(bytes.clone())
                .send()
                .await
                .map_err(reqwest::Error::without_url);
            let retry = match outcome {
                Ok(answer) if answer.status().is_success() => {
                    self.count("delivered");
                    return Ok(read_bounded(answer).await);
                }
                Ok(answer) => {
                    let status = answer.status();
                    tracing::warn!(receiver = %self.label, url = shown, %status, what, try_ = attempt + 1, "notification refused");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    tracing::warn!(receiver = %self.label, url = shown, error = %crate::releases::error_chain(&e), what, try_ = attempt + 1, "notification receiver unreachable");
                    !e.is_builder()
                }
            };
            if !retry {
                break;
            }
        }
        tracing::error!(receiver = %self.label, url = shown, what, "notification not delivered; giving up");
        self.count("failed");
        Err(Undelivered)
    }
}

impl Sender {
    /// GETs `url` with `headers` once (a lookup, not a notification: neither retried nor
    /// counted); the answer's JSON body, `None` when it fails or is not a success.
    pub async fn get(&mut self, url: &str, headers: &[(&str, String)], what: &str) -> Option<Value> {
        let client = self.client(url).ok()?;
        let mut request = client.get(url).header(
            reqwest::header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        match request.send().await.map_err(reqwest::Error::without_url) {
            Ok(answer) if answer.status().is_success() => Some(read_bounded(answer).await),
            Ok(answer) => {
                tracing::warn!(receiver = %self.label, url, status = %answer.status(), what, "lookup refused");
                None
            }
            Err(e) => {
                tracing::warn!(receiver = %self.label, url, error = %crate::releases::error_chain(&e), what, "lookup failed");
                None
            }
        }
    }
}

/// At most [`MAX_ANSWER`] bytes of an answer, as JSON (`Null` otherwise).
async fn read_bounded(mut answer: reqwest::Response) -> Value {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Value::Null;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Whether `url` may carry a credential: https, or plain http to this machine.
pub(crate) fn safe_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    cutover_core::config::is_loopback_host(host)
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

impl Notifier {
    /// Starts the dispatcher and one task per receiver (needs a tokio runtime); none when no
    /// receiver is configured.
    pub(crate) fn new(
        config: &Notifications,
        app: &str,
        store: Arc<dyn Store>,
        key: SecretKey,
        repo: Repo,
    ) -> Notifier {
        let counts = Family::default();
        if config.receivers.is_empty() {
            return Notifier { queue: None, counts };
        }
        if config.public_url.is_none() {
            tracing::warn!(
                "notifications.public_url is not set: messages will carry no link to the run; set it to the \
                 address people open the dashboard at"
            );
        }
        let secrets = Secrets {
            store,
            key,
            app: app.to_owned(),
        };
        let receivers: Vec<(Receiver, mpsc::Sender<Notice>)> = config
            .receivers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (tx, rx) = mpsc::channel::<Notice>(QUEUE);
                let sender = Sender {
                    label: format!("{} receiver {i}", r.kind.name()),
                    kind: r.kind.name(),
                    index: i.to_string(),
                    client: None,
                    counts: counts.clone(),
                };
                tokio::spawn(receive(r.kind.clone(), sender, secrets.clone(), rx));
                (r.clone(), tx)
            })
            .collect();
        let (tx, rx) = mpsc::channel::<Raw>(QUEUE);
        let dispatcher = Dispatcher {
            app: app.to_owned(),
            public_url: config.public_url.clone(),
            repo,
            subjects: HashMap::new(),
            receivers,
            counts: counts.clone(),
        };
        tokio::spawn(dispatcher.run(rx));
        Notifier {
            queue: Some(tx),
            counts,
        }
    }

    /// Registers the delivery counters in a scrape's registry.
    pub(crate) fn register(&self, reg: &mut prometheus_client::registry::Registry) {
        reg.register(
            "cutover_notifications",
            "Notifications (slack, github, gitlab receivers) by receiver and outcome: delivered, failed, dropped",
            self.counts.clone(),
        );
    }

    fn send(&self, raw: Raw) {
        if let Some(queue) = &self.queue
            && queue.try_send(raw).is_err()
        {
            tracing::error!("notification queue full; a run event was dropped");
            self.counts
                .get_or_create(&vec![
                    ("kind", "all".to_owned()),
                    ("receiver", "dispatcher".to_owned()),
                    ("outcome", "dropped".to_owned()),
                ])
                .inc();
        }
    }

    fn active(&self) -> bool {
        self.queue.is_some()
    }
}

/// Turns run events into notices and hands them to the receivers that want them.
struct Dispatcher {
    app: String,
    public_url: Option<String>,
    repo: Repo,
    /// Commit subjects by SHA (a run's events ask for the same one several times).
    subjects: HashMap<String, Option<String>>,
    receivers: Vec<(Receiver, mpsc::Sender<Notice>)>,
    counts: Family<Vec<(&'static str, String)>, Counter>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Raw>) {
        while let Some(raw) = rx.recv().await {
            let notice = self.notice(&raw).await;
            for (i, (receiver, queue)) in self.receivers.iter().enumerate() {
                if !receiver.wants_env(&notice.env, raw.template.as_deref()) {
                    continue;
                }
                if queue.try_send(notice.clone()).is_err() {
                    tracing::error!(
                        receiver = %format!("{} receiver {i}", receiver.kind.name()),
                        run = notice.run_id,
                        "notification queue full (receiver down?); notice dropped"
                    );
                    self.counts
                        .get_or_create(&vec![
                            ("kind", receiver.kind.name().to_owned()),
                            ("receiver", i.to_string()),
                            ("outcome", "dropped".to_owned()),
                        ])
                        .inc();
                }
            }
        }
    }

    async fn notice(&mut self, raw: &Raw) -> Notice {
        let run = &raw.run;
        let sha = run
            .target_version
            .clone()
            .or_else(|| run.version.clone())
            .filter(|v| Version::parse(v).is_ok());
        let subject = match &sha {
            Some(sha) => self.subject(sha).await,
            None => None,
        };
        let base = self.public_url.as_deref();
        Notice {
            trigger: raw.trigger,
            app: self.app.clone(),
            env: run.env.clone(),
            tier: raw.tier,
            run_id: run.id,
            kind: run.kind,
            state: run.state,
            sha,
            subject,
            requested_by: run.requested_by.clone(),
            chosen_by: run.version_chosen_by.clone(),
            previous: run.previous_version.clone(),
            error: run.error.clone(),
            run_url: base.map(|b| format!("{b}/#/run/{}", run.id)),
            env_url: base.map(|b| format!("{b}/#/env/{}", crate::http::encode_segment(&run.env))),
        }
    }

    async fn subject(&mut self, sha: &str) -> Option<String> {
        if let Some(known) = self.subjects.get(sha) {
            return known.clone();
        }
        let repo = self.repo.clone();
        let version = Version::parse(sha).ok()?;
        let found = tokio::task::spawn_blocking(move || repo.commit(&version).ok().map(|c| c.subject))
            .await
            .ok()
            .flatten();
        if self.subjects.len() > 256 {
            self.subjects.clear();
        }
        self.subjects.insert(sha.to_owned(), found.clone());
        found
    }
}

/// One receiver's task: its notices, in order.
async fn receive(kind: ReceiverKind, mut sender: Sender, secrets: Secrets, mut rx: mpsc::Receiver<Notice>) {
    let mut github = github::Deployments::default();
    while let Some(notice) = rx.recv().await {
        match &kind {
            ReceiverKind::Slack { url_secret, events } => {
                slack::deliver(&mut sender, &secrets, url_secret, events, &notice).await
            }
            ReceiverKind::Github {
                repository,
                token_secret,
                api_url,
            } => {
                let target = github::Target {
                    api_url,
                    repository,
                    token_secret,
                };
                github.deliver(&mut sender, &secrets, &target, &notice).await
            }
            ReceiverKind::Gitlab {
                project,
                token_secret,
                api_url,
            } => gitlab::deliver(&mut sender, &secrets, api_url, project, token_secret, &notice).await,
        }
    }
}

impl Engine {
    /// Hands a run event to the notification receivers (never waits for them).
    pub(crate) fn notify_people(&self, trigger: Trigger, run: &RunRecord) {
        let notifier = &self.inner.notifier;
        if !notifier.active() {
            return;
        }
        let config = self.config();
        let env = cutover_core::EnvName::parse(&run.env).ok();
        let tier = env
            .as_ref()
            .and_then(|e| config.environments.get(e))
            .map(|e| e.tier);
        let template = env.as_ref().and_then(|e| {
            self.topology()
                .records
                .get(e)
                .and_then(|r| r.template.as_ref())
                .map(ToString::to_string)
        });
        notifier.send(Raw {
            trigger,
            run: run.clone(),
            tier,
            template,
        });
    }

    /// Runs a newer request replaced while they were queued.
    pub(crate) async fn notify_superseded(&self, ids: &[i64]) {
        if !self.inner.notifier.active() {
            return;
        }
        for id in ids {
            if let Ok(Some(run)) = self.store().run_get(*id).await {
                self.notify_people(Trigger::Superseded, &run);
            }
        }
    }

    /// Warns at start about every secret a receiver names that is not set (the file cannot
    /// know; a message would otherwise fail only when the first run ends).
    pub(crate) async fn check_notification_secrets(&self) {
        let config = self.config();
        for (i, r) in config.notifications.receivers.iter().enumerate() {
            let (field, name) = match &r.kind {
                ReceiverKind::Slack { url_secret, .. } => ("url_secret", url_secret),
                ReceiverKind::Github { token_secret, .. } | ReceiverKind::Gitlab { token_secret, .. } => {
                    ("token_secret", token_secret)
                }
            };
            let Ok(key) = ParamKey::parse(&format!("/{}/secrets/{name}", config.app)) else {
                continue;
            };
            if let Ok(None) = self.store().param_get(&key).await {
                tracing::warn!(
                    receiver = %format!("{} receiver {i}", r.kind.name()),
                    "notifications.receivers[{i}].{field} names {key}, which is not set: nothing is sent \
                     there until an admin sets it with `cutover param put {key} -`"
                );
            }
        }
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A finished release of prod by alice, with a link.
    pub(crate) fn notice(trigger: Trigger, state: RunState) -> Notice {
        Notice {
            trigger,
            app: "shop".into(),
            env: "prod".into(),
            tier: Some(Tier::Prod),
            run_id: 12,
            kind: RunKind::Normal,
            state,
            sha: Some("3f2a9c1d0e5b4a6978675645342312f0e1d2c3b4".into()),
            subject: Some("Fix the <checkout> & totals".into()),
            requested_by: "alice".into(),
            chosen_by: Some("bob".into()),
            previous: Some("0123456789abcdef0123456789abcdef01234567".into()),
            error: None,
            run_url: Some("https://cutover.example.com/#/run/12".into()),
            env_url: Some("https://cutover.example.com/#/env/prod".into()),
        }
    }

    #[test]
    fn credentials_go_over_https_or_to_loopback_only() {
        assert!(safe_url("https://hooks.slack.com/services/T/B/X"));
        assert!(safe_url("http://127.0.0.1:9/x"));
        assert!(safe_url("http://localhost/x"));
        assert!(!safe_url("http://hooks.example.com/x"));
        assert!(!safe_url("http://127.0.0.1@evil.example/x"));
        assert!(!safe_url("ftp://x"));
    }

    #[test]
    fn clipping_counts_characters_not_bytes() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip(&"é".repeat(200), 140).chars().count(), 140);
    }
}

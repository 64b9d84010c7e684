//! Webhook notifications: run and stage events POSTed as JSON to the URLs of
//! `webhooks:` in cutover.yml.
//!
//! Events go through one queue and one sender task, so each URL receives
//! them in the order they happened; a slow or failing webhook delays later
//! events (each POST is bounded by 5 s) and is logged, never retried and
//! never allowed to fail a run. Rejected: a task per event (fast, but a
//! receiver could see "run finished" before "stage finished").
//!
//! Body: `{"event": "run.queued" | "run.started" | "run.finished" |
//! "stage.finished", "app", "env", "at_ms", "run": {id, kind, state, version,
//! requested_by, error, failed_stage}, "stage": {stage, title, status, note}}`.

use std::time::Duration;

use cutover_core::Stage;
use cutover_core::config::WebhookEvent;
use cutover_store::RunRecord;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Engine;

/// The sending side of the delivery queue, created with the engine.
pub(crate) struct Webhooks {
    queue: Option<mpsc::UnboundedSender<(Vec<String>, Value)>>,
}

impl Webhooks {
    /// Starts the sender task when any webhook is configured (needs a tokio runtime then).
    pub(crate) fn new(configured: bool) -> Webhooks {
        if !configured {
            return Webhooks { queue: None };
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<String>, Value)>();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook client; webhooks are off");
                    return;
                }
            };
            while let Some((urls, body)) = rx.recv().await {
                for url in urls {
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            tracing::warn!(url, status = %r.status(), event = %body["event"], "webhook refused an event")
                        }
                        Err(e) => {
                            tracing::warn!(url, error = %e, event = %body["event"], "webhook unreachable")
                        }
                    }
                }
            }
        });
        Webhooks { queue: Some(tx) }
    }
}

fn run_json(run: &RunRecord) -> Value {
    json!({
        "id": run.id,
        "kind": run.kind,
        "state": run.state,
        "version": run.version,
        "requested_by": run.requested_by,
        "error": run.error,
        "failed_stage": run.failed_stage,
    })
}

impl Engine {
    fn send(&self, kind: WebhookEvent, event: &str, run: &RunRecord, extra: Option<Value>) {
        let Some(queue) = &self.webhooks().queue else {
            return;
        };
        let urls: Vec<String> = self
            .config()
            .webhooks
            .iter()
            .filter(|w| w.events.contains(&kind))
            .map(|w| w.url.clone())
            .collect();
        if urls.is_empty() {
            return;
        }
        let mut body = json!({
            "event": event,
            "app": self.config().app,
            "env": run.env,
            "at_ms": crate::now_ms(),
            "run": run_json(run),
        });
        if let Some(extra) = extra {
            body["stage"] = extra;
        }
        let _ = queue.send((urls, body));
    }

    /// `run.queued`, `run.started` or `run.finished`.
    pub(crate) fn notify_run(&self, event: &str, run: &RunRecord) {
        self.send(WebhookEvent::Run, event, run, None);
    }

    /// `stage.finished`, with the stage's outcome.
    pub(crate) fn notify_stage(&self, run: &RunRecord, stage: Stage, status: &str, note: Option<&str>) {
        let extra = json!({ "stage": stage, "title": stage.title(), "status": status, "note": note });
        self.send(WebhookEvent::Stage, "stage.finished", run, Some(extra));
    }
}

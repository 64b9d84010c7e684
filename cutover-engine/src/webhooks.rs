//! Webhook notifications: run and stage events POSTed as JSON to the URLs of
//! `webhooks:` in cutover.yml, over http or https.
//!
//! Each webhook has its own queue and sender task, so it receives events in
//! the order they happened, and a slow or dead receiver delays only its own
//! events. A delivery that fails for a reason that may pass (connection
//! error, timeout, 429 or 5xx) is tried again after 1 s and 3 s, then given
//! up and logged; other refusals (4xx) are logged at once. Each POST is
//! bounded by 5 s; a queue holds at most 1,000 events (beyond that new ones
//! are dropped and logged); a webhook never fails a run. Every try of one
//! event carries the same `X-Cutover-Delivery` id, so a receiver can drop
//! duplicates. Rejected: a task per event (fast, but a receiver could see
//! "run finished" before "stage finished"); one queue for all webhooks (a
//! dead receiver would hold up every other).
//!
//! https uses the platform's certificate roots, or with `ca_file:` only the
//! authorities in that PEM file (a private CA, a self-signed receiver).
//! With `secret_env: NAME`, the server reads a key from its environment
//! variable NAME at start and signs every try: `X-Cutover-Timestamp: <unix
//! seconds>` and `X-Cutover-Signature: sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<exact body bytes>">`, so a receiver that refuses old
//! timestamps cannot be fed a captured delivery again (GitHub's bare-body
//! scheme was rejected for that reason; Cutover's own push webhook accepts the
//! same form).
//!
//! Run events are also handed to `notify` (`notifications:`: Slack, GitHub, GitLab), which keeps
//! its own receivers, queues and message shapes; this module only dispatches to it.
//!
//! Body: `{"event": "run.queued" | "run.started" | "run.finished" |
//! "stage.finished", "delivery" (the X-Cutover-Delivery id), "app", "env", "at_ms", "run": {id, kind, state, version,
//! requested_by, error, failed_stage}, "stage": {stage, title, status, note}}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cutover_core::Stage;
use cutover_core::config::{Webhook, WebhookEvent};
use cutover_store::RunRecord;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Engine;

/// Pauses before the second and third try of a delivery.
const RETRY_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
const TIMEOUT: Duration = Duration::from_secs(5);

const QUEUE: usize = 1000;

/// The sending sides of the webhooks' queues (indexed like `config.webhooks`; `None` for a
/// webhook whose client could not be built), created with the engine.
pub(crate) struct Webhooks {
    queues: Vec<Option<(String, mpsc::Sender<Value>)>>,
    next_id: AtomicU64,
}

/// The certificate authorities a webhook trusts: `None` for the platform's roots.
/// Errors say which file and what is wrong with it.
pub fn load_ca(webhook: &Webhook) -> Result<Option<Vec<reqwest::Certificate>>, String> {
    let Some(path) = &webhook.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "webhook {}: cannot read ca_file {}: {e}",
            shown_url(&webhook.url),
            path.display()
        )
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "webhook {}: ca_file {} is not a PEM certificate bundle: {e}",
            shown_url(&webhook.url),
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "webhook {}: ca_file {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            shown_url(&webhook.url),
            path.display()
        ));
    }
    Ok(Some(certs))
}

/// The signing key of a webhook with `secret_env`, from the server's environment.
fn load_secret(webhook: &Webhook) -> Result<Option<Vec<u8>>, String> {
    let Some(name) = &webhook.secret_env else {
        return Ok(None);
    };
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Some(v.into_bytes())),
        _ => Err(format!(
            "webhook {}: secret_env {name} is not set (or empty) in the server's environment; \
             start the server with {name}=<the key the receiver verifies with>",
            shown_url(&webhook.url)
        )),
    }
}

/// Every webhook's CA file and signing key load: run before starting a server, so a bad
/// path or a missing variable fails there.
pub fn check_webhooks(webhooks: &[Webhook]) -> Result<(), String> {
    webhooks
        .iter()
        .try_for_each(|w| load_ca(w).and(load_secret(w)).map(|_| ()))
}

/// Every webhook's CA file loads (`cutover config check`: the signing keys live in the
/// server's environment, not necessarily where the file is checked).
pub fn check_webhook_files(webhooks: &[Webhook]) -> Result<(), String> {
    webhooks.iter().try_for_each(|w| load_ca(w).map(|_| ()))
}

/// `sha256=<hex HMAC-SHA256(key, body)>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    signature_parts(key, &[body])
}

/// `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`: what `X-Cutover-Signature` carries.
pub fn timestamped_signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    signature_parts(key, &[timestamp.to_string().as_bytes(), b".", body])
}

fn signature_parts(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn client_for(webhook: &Webhook) -> Result<reqwest::Client, String> {
    let mut builder = crate::http::client_builder(&webhook.url)
        .timeout(TIMEOUT)
        .no_proxy();
    if let Some(certs) = load_ca(webhook)? {
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| {
        format!(
            "webhook {}: cannot build its HTTP client: {e}",
            shown_url(&webhook.url)
        )
    })
}

/// A webhook URL as logs show it: without user, password and query (which may hold the
/// receiver's token), e.g. `https://hooks.example.com/cutover?…`.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            if had_query {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(a webhook URL that does not parse)".to_owned(),
    }
}

/// Whether a failed try may succeed later.
fn worth_retrying(outcome: &Result<reqwest::StatusCode, reqwest::Error>) -> bool {
    match outcome {
        Ok(status) => status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS,
        Err(e) => !e.is_builder(),
    }
}

async fn deliver(client: &reqwest::Client, url: &str, key: Option<&[u8]>, body: &Value, id: &str) {
    let event = body["event"].as_str().unwrap_or_default();
    let shown = shown_url(url);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    for attempt in 0..=RETRY_AFTER.len() {
        if attempt > 0 {
            tokio::time::sleep(RETRY_AFTER[attempt - 1]).await;
        }
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Cutover-Event", event)
            .header("X-Cutover-Delivery", id);
        if let Some(k) = key {
            // Signed per try: a retry carries its own, fresh timestamp.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            request = request
                .header("X-Cutover-Timestamp", now.to_string())
                .header("X-Cutover-Signature", timestamped_signature(k, now, &bytes));
        }
        // Without the URL: its query may hold the receiver's token, and this goes to the log.
        let outcome = request
            .body(bytes.clone())
            .send()
            .await
            .map(|r| r.status())
            .map_err(reqwest::Error::without_url);
        let last = attempt == RETRY_AFTER.len();
        match &outcome {
            Ok(status) if status.is_success() => return,
            Ok(status) => {
                tracing::warn!(url = %shown, %status, event, delivery = id, try_ = attempt + 1, "webhook refused an event")
            }
            Err(e) => {
                tracing::warn!(url = %shown, error = %crate::releases::error_chain(e), event, delivery = id, try_ = attempt + 1, "webhook unreachable")
            }
        }
        if last || !worth_retrying(&outcome) {
            tracing::error!(
                url = %shown,
                event,
                delivery = id,
                "webhook event not delivered; giving up"
            );
            return;
        }
    }
}

impl Webhooks {
    /// Starts one sender task per configured webhook (needs a tokio runtime then).
    pub(crate) fn new(webhooks: &[Webhook]) -> Webhooks {
        let queues = webhooks
            .iter()
            .map(|w| {
                let (client, key) = client_for(w)
                    .and_then(|c| Ok((c, load_secret(w)?)))
                    .map_err(|e| tracing::error!(error = %e, "this webhook is off"))
                    .ok()?;
                let (tx, mut rx) = mpsc::channel::<Value>(QUEUE);
                let url = w.url.clone();
                tokio::spawn(async move {
                    while let Some(body) = rx.recv().await {
                        let id = body["delivery"].as_str().unwrap_or_default().to_owned();
                        deliver(&client, &url, key.as_deref(), &body, &id).await;
                    }
                });
                Some((shown_url(&w.url), tx))
            })
            .collect();
        Webhooks {
            queues,
            next_id: AtomicU64::new(1),
        }
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
        let targets: Vec<usize> = self
            .config()
            .webhooks
            .iter()
            .enumerate()
            .filter(|(_, w)| w.events.contains(&kind))
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return;
        }
        let at_ms = crate::now_ms();
        let n = self.webhooks().next_id.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({
            "event": event,
            "delivery": format!("{at_ms}-{n}"),
            "app": self.config().app,
            "env": run.env,
            "at_ms": at_ms,
            "run": run_json(run),
        });
        if let Some(extra) = extra {
            body["stage"] = extra;
        }
        for i in targets {
            if let Some(Some((url, queue))) = self.webhooks().queues.get(i)
                && queue.try_send(body.clone()).is_err()
            {
                tracing::error!(url, event, "webhook queue full (receiver down?); event dropped");
            }
        }
    }

    /// `run.queued`, `run.started` or `run.finished`; also to `notifications:` receivers.
    pub(crate) fn notify_run(&self, event: &str, run: &RunRecord) {
        self.send(WebhookEvent::Run, event, run, None);
        let trigger = match event {
            "run.queued" => crate::notify::Trigger::Queued,
            "run.started" => crate::notify::Trigger::Started,
            _ => crate::notify::Trigger::Finished,
        };
        self.notify_people(trigger, run);
    }

    /// `stage.finished`, with the stage's outcome.
    pub(crate) fn notify_stage(&self, run: &RunRecord, stage: Stage, status: &str, note: Option<&str>) {
        let extra = json!({ "stage": stage, "title": stage.title(), "status": status, "note": note });
        self.send(WebhookEvent::Stage, "stage.finished", run, Some(extra));
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn logged_webhook_urls_carry_no_credentials() {
        assert_eq!(
            super::shown_url("https://u:p@hooks.example.com:8443/x?token=abc#f"),
            "https://hooks.example.com:8443/x?…"
        );
        assert_eq!(
            super::shown_url("http://127.0.0.1:9/hook"),
            "http://127.0.0.1:9/hook"
        );
    }

    #[test]
    fn signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            super::timestamped_signature(b"Jefe", 42, b"body"),
            signature(b"Jefe", b"42.body")
        );
    }
}

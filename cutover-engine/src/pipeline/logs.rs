//! Stage logs: every line is persisted first (so `cutover logs` can read it
//! later, after a crash too) and then broadcast to live followers.
//!
//! A follower subscribes *before* reading what is persisted and then skips
//! broadcast lines it already has (by `seq`), so no line is lost or doubled
//! between the two. When a run ends the hub sends `End`, which closes every
//! follow stream. Rejected: tailing the database by polling (latency and load
//! grow with followers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_core::Stage;
use cutover_store::{RunLogLine, Store};
use tokio::sync::broadcast;

use crate::masking::Masker;

/// What followers of a run receive.
#[derive(Debug, Clone)]
pub enum LogEvent {
    Line(RunLogLine),
    /// The run ended; no more lines will come.
    End,
}

#[derive(Clone, Default)]
pub struct LogHub {
    channels: Arc<Mutex<HashMap<i64, broadcast::Sender<LogEvent>>>>,
}

impl LogHub {
    fn sender(&self, run_id: i64) -> broadcast::Sender<LogEvent> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(run_id)
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    pub fn subscribe(&self, run_id: i64) -> broadcast::Receiver<LogEvent> {
        self.sender(run_id).subscribe()
    }

    /// Tells followers the run ended and forgets its channel.
    pub fn end(&self, run_id: i64) {
        let sender = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run_id);
        if let Some(s) = sender {
            let _ = s.send(LogEvent::End);
        }
    }

    /// Persists and broadcasts one line. A store failure is logged and the
    /// line still goes to live followers: a full disk must not fail a deploy
    /// half-way, and the tracing log keeps the line.
    pub async fn line(&self, store: &Arc<dyn Store>, run_id: i64, stage: Stage, text: &str) {
        let text = if text.contains('\0') {
            text.replace('\0', "\u{fffd}")
        } else {
            text.to_owned()
        };
        tracing::info!(run = run_id, stage = stage.slug(), "{text}");
        match store.log_append(run_id, stage, &text).await {
            Ok(line) => {
                let _ = self.sender(run_id).send(LogEvent::Line(line));
            }
            Err(e) => tracing::error!(run = run_id, error = %e, "could not persist a log line"),
        }
    }
}

/// Writes lines into one stage's log, masked (see [`crate::masking`]).
#[derive(Clone)]
pub struct StageLog {
    pub(crate) hub: LogHub,
    pub(crate) store: Arc<dyn Store>,
    /// None: work outside any run, logged to tracing only.
    pub(crate) run_id: Option<i64>,
    pub(crate) stage: Stage,
    pub(crate) masker: Arc<Masker>,
    /// Work outside a run whose lines go back to the caller too (a scale change).
    pub(crate) capture: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

impl StageLog {
    /// A log for work outside any run (reconciliation at start): lines go to
    /// the server's tracing log only.
    pub fn system(store: Arc<dyn Store>, stage: Stage) -> StageLog {
        StageLog {
            hub: LogHub::default(),
            store,
            run_id: None,
            stage,
            masker: Arc::new(Masker::none()),
            capture: None,
        }
    }

    /// This log, masked with `masker`.
    pub(crate) fn masked_with(mut self, masker: Arc<Masker>) -> StageLog {
        self.masker = masker;
        self
    }

    /// As [`StageLog::system`], also keeping every line for the caller.
    pub(crate) fn capturing(
        store: Arc<dyn Store>,
        stage: Stage,
    ) -> (StageLog, Arc<std::sync::Mutex<Vec<String>>>) {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut log = StageLog::system(store, stage);
        log.capture = Some(Arc::clone(&lines));
        (log, lines)
    }

    pub async fn line(&self, text: impl AsRef<str>) {
        let masked = self.masker.mask(text.as_ref()).into_owned();
        if let Some(lines) = &self.capture
            && let Ok(mut lines) = lines.lock()
        {
            lines.push(masked.clone());
        }
        match self.run_id {
            Some(run_id) => self.hub.line(&self.store, run_id, self.stage, &masked).await,
            None => tracing::info!(stage = self.stage.slug(), "{masked}"),
        }
    }
}

//! The access log: one JSON line per request (`time`, `host`, `app`, `env`, `service`,
//! `version`, `status`, `bytes`, `duration_ms`, `upstream`, `client`, `method`, `path`), to
//! stdout or to a file rotated by size. Off unless configured.
//!
//! A line is written when the response is over (its body fully sent, or dropped because the
//! client went away), so `bytes` and `duration_ms` are the real ones. Requests never wait for the
//! disk: lines go through a bounded channel to one writer thread; when the writer falls behind
//! (a full channel) lines are dropped and counted, and the count is logged. The query string is
//! left out of `path` (it often carries tokens).
//!
//! Rotation: when the file would pass `max_size` bytes it is renamed to `<path>.1` (`.1` to
//! `.2`, ..., the oldest beyond `keep` removed) and a new file is started; with `keep: 0` the
//! file is simply truncated. Rejected: `tracing-appender` (time-based rotation only) and
//! logging through `tracing` (operators want the access log apart from the diagnostic log).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

/// Lines buffered between the requests and the writer thread before lines are dropped.
const QUEUE: usize = 16 * 1024;

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// The data plane's standard output.
    Stdout,
    /// A file, rotated by size.
    File {
        /// The file (created 0640 if missing, appended to otherwise).
        path: PathBuf,
        /// Rotate before the file passes this many bytes (at least 1).
        max_size: u64,
        /// Rotated files kept (`<path>.1` is the newest).
        keep: usize,
    },
}

/// Why the access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {}: check that its directory exists and is writable by the data plane", path.display())]
pub struct AccessLogError {
    /// The file.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// An open access log (cheap to share; the writer thread ends when the last clone is dropped).
#[derive(Debug)]
pub(crate) struct AccessLog {
    target: AccessLogTarget,
    tx: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl AccessLog {
    pub(crate) fn open(target: AccessLogTarget) -> Result<Self, AccessLogError> {
        let sink = match &target {
            AccessLogTarget::Stdout => Sink::Stdout,
            AccessLogTarget::File { path, max_size, keep } => {
                let file = open_append(path).map_err(|source| AccessLogError {
                    path: path.clone(),
                    source,
                })?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Sink::File {
                    path: path.clone(),
                    file,
                    size,
                    max_size: (*max_size).max(1),
                    keep: *keep,
                }
            }
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(sink, &rx))
            .map_err(|source| AccessLogError {
                path: PathBuf::from("(writer thread)"),
                source,
            })?;
        Ok(Self {
            target,
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn target(&self) -> &AccessLogTarget {
        &self.target
    }

    fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "access log writer is behind; lines dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// What one request did, filled in while it is forwarded (`host`, `route`, `version` and
/// `upstream` only when the access log is on).
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) logging: bool,
    /// The route's metrics, once it was admitted to a generation (its in-flight gauge raised).
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::RouteMetrics>>,
    pub(crate) host: Option<String>,
    pub(crate) route: Option<crate::RouteKey>,
    pub(crate) version: Option<String>,
    pub(crate) upstream: Option<SocketAddr>,
}

impl Drop for Trace {
    /// Also when the request is abandoned before its answer (the client went away).
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.in_flight.dec();
        }
    }
}

/// A response being sent: its metrics and log line are recorded when it is dropped (see
/// [`crate::body::RouterBody`]).
pub(crate) struct Pending {
    pub(crate) log: Option<std::sync::Arc<AccessLog>>,
    pub(crate) unrouted: std::sync::Arc<crate::metrics::RouteMetrics>,
    pub(crate) time: SystemTime,
    pub(crate) start: Instant,
    pub(crate) trace: Trace,
    pub(crate) status: u16,
    pub(crate) client: IpAddr,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) bytes: u64,
}

impl Pending {
    /// The line of a request answered `status`: `(time, start)` when it began (the wall clock
    /// only matters with a log), `(client, method, path)` for the log's fields.
    pub(crate) fn new(
        ctx: &crate::proxy::ConnCtx,
        log: Option<std::sync::Arc<AccessLog>>,
        (time, start): (SystemTime, Instant),
        trace: Trace,
        status: u16,
        (client, method, path): (IpAddr, String, String),
    ) -> Box<Self> {
        Box::new(Self {
            log,
            unrouted: std::sync::Arc::clone(&ctx.inner.metrics.unrouted),
            time,
            start,
            trace,
            status,
            client,
            method,
            path,
            bytes: 0,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        match &self.trace.metrics {
            // (the in-flight gauge goes down when `trace` is dropped, right after)
            Some(m) => m.finished(self.status, elapsed.as_secs_f64(), self.bytes),
            None => self
                .unrouted
                .finished(self.status, elapsed.as_secs_f64(), self.bytes),
        }
        if let Some(log) = &self.log {
            log.send(render(self, elapsed));
        }
    }
}

fn render(p: &Pending, duration: Duration) -> Vec<u8> {
    let route = p.trace.route.as_ref();
    let value = serde_json::json!({
        "time": humantime::format_rfc3339_millis(p.time).to_string(),
        "host": p.trace.host,
        "app": route.map(crate::RouteKey::app),
        "env": route.map(crate::RouteKey::env),
        "service": route.map(crate::RouteKey::service),
        "version": p.trace.version,
        "status": p.status,
        "bytes": p.bytes,
        "duration_ms": (duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "upstream": p.trace.upstream.map(|a| a.to_string()),
        "client": p.client.to_string(),
        "method": p.method,
        "path": p.path,
    });
    let mut line = serde_json::to_vec(&value).unwrap_or_default();
    line.push(b'\n');
    line
}

enum Sink {
    Stdout,
    File {
        path: PathBuf,
        file: File,
        size: u64,
        max_size: u64,
        keep: usize,
    },
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn write_loop(mut sink: Sink, rx: &Receiver<Vec<u8>>) {
    let mut failing = false;
    while let Ok(line) = rx.recv() {
        let result = match &mut sink {
            Sink::Stdout => io::stdout().lock().write_all(&line),
            Sink::File {
                path,
                file,
                size,
                max_size,
                keep,
            } => (|| {
                if *size > 0 && *size + line.len() as u64 > *max_size {
                    *file = rotate(path, *keep)?;
                    *size = 0;
                }
                file.write_all(&line)?;
                *size += line.len() as u64;
                Ok(())
            })(),
        };
        match result {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write the access log");
            }
            Ok(()) => failing = false,
            Err(_) => {}
        }
    }
}

/// `<path>` → `<path>.1` → ... → `<path>.<keep>` (the oldest removed); returns a fresh file.
fn rotate(path: &Path, keep: usize) -> io::Result<File> {
    let numbered = |n: usize| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return OpenOptions::new().write(true).truncate(true).open(path);
    }
    let _ = fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            fs::rename(&from, numbered(n + 1))?;
        }
    }
    fs::rename(path, numbered(1))?;
    open_append(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = std::env::temp_dir().join(format!("cutover-access-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let mut sink = Sink::File {
            path: path.clone(),
            file: open_append(&path).unwrap(),
            size: 0,
            max_size: 25,
            keep: 2,
        };
        let (tx, rx) = mpsc::sync_channel(16);
        for i in 0..7 {
            tx.send(format!("line {i} of ten chars\n").into_bytes()).unwrap(); // 20 bytes each
        }
        drop(tx);
        write_loop(std::mem::replace(&mut sink, Sink::Stdout), &rx);
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "line 6 of ten chars\n");
        assert_eq!(read(&dir.join("access.log.1")), "line 5 of ten chars\n");
        assert_eq!(read(&dir.join("access.log.2")), "line 4 of ten chars\n");
        assert!(!dir.join("access.log.3").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}

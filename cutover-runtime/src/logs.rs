//! Instance logs: every line an instance writes to stdout or stderr, plus the
//! supervisor's own events (started, exited, restarting), appended with a
//! timestamp to one file per instance and broadcast to followers.
//!
//! Shape: reader tasks (one per pipe per process) send [`LogLine`]s through a
//! bounded channel to one writer *task* per instance, which takes every line
//! waiting (up to [`BATCH`]) and appends them with one unbuffered `write_all`
//! before broadcasting them, so a reader of the file ([`tail_file`]) sees
//! every line as soon as it was broadcast. The bounded channel makes a
//! runaway writer slow down on its own pipe instead of growing memory. Lines
//! longer than 64 KiB are split.
//!
//! No thread per instance: the writer used to be a `spawn_blocking` loop that
//! held one of tokio's blocking-pool threads for the whole life of the
//! instance, so ~500 live instances exhausted the pool (512 threads) and every
//! other `spawn_blocking` (git in Source, checkouts) waited forever: the server
//! hung. Now the number of live instances costs tasks and file descriptors,
//! never a bounded pool. The append itself is a plain `write(2)` from the
//! writer task: an append of a few KiB to a local file lands in the page
//! cache in microseconds. Rejected: `tokio::fs::File`, which hands every write
//! to the same blocking pool (short-lived, but the pool is exactly the shared
//! resource this must not compete for), and a dedicated writer thread for all
//! instances, which loses the per-instance back-pressure.
//!
//! Following is a `tokio::sync::broadcast`: a slow follower loses lines
//! (`RecvError::Lagged`) rather than slowing the instance. Rejected: a
//! file-follow stream (inotify or polling), which needs a dependency or a
//! poll interval, for the same result within one server process.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// The supervisor (start, exit, restart, stop events).
    Cutover,
}

impl LogStream {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Cutover => "cutover",
        }
    }
}

/// One timestamped log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Unix ms.
    pub at: u64,
    pub stream: LogStream,
    pub text: String,
}

impl LogLine {
    pub fn new(stream: LogStream, text: impl Into<String>) -> Self {
        Self {
            at: crate::unix_ms(),
            stream,
            text: text.into(),
        }
    }
}

/// The file format: `2026-05-01T10:00:00.123Z stdout listening on :8080`.
impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = UNIX_EPOCH + Duration::from_millis(self.at);
        write!(
            f,
            "{} {} {}",
            humantime::format_rfc3339_millis(at),
            self.stream.label(),
            self.text
        )
    }
}

const MAX_LINE: u64 = 64 * 1024;
const FOLLOW_BUFFER: usize = 1024;
const CHANNEL: usize = 256;
/// At most this many lines are written by one `write_all`.
const BATCH: usize = 64;

/// The write side of one instance's log; cheap to clone (one per reader).
#[derive(Clone, Debug)]
pub(crate) struct LogSink {
    tx: mpsc::Sender<LogLine>,
    /// Created by the first follower: an instance nobody follows pays nothing for the
    /// broadcast buffer (1,024 lines, ~70 KiB), which was most of the server's memory per
    /// instance.
    followers: Followers,
    path: PathBuf,
}

type Followers = std::sync::Arc<std::sync::OnceLock<broadcast::Sender<LogLine>>>;

impl LogSink {
    /// Opens (creates, appends to) `path` and starts the writer task (must be
    /// called within a tokio runtime). The task ends when every sink is dropped.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let followers = Followers::default();
        let out = followers.clone();
        let shown = path.to_owned();
        tokio::spawn(write_lines(file, rx, out, shown));
        Ok(Self {
            tx,
            followers,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.followers
            .get_or_init(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe()
    }

    /// Logs a supervisor event (also traced at `info`).
    pub(crate) async fn event(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(log = %self.path.display(), "{text}");
        self.send(LogLine::new(LogStream::Cutover, text)).await;
    }

    pub(crate) async fn send(&self, line: LogLine) {
        // The writer only goes away when every sink is dropped.
        let _ = self.tx.send(line).await;
    }

    /// Copies `pipe` into the log line by line until EOF.
    pub(crate) fn pump(
        &self,
        pipe: impl AsyncRead + Unpin + Send + 'static,
        stream: LogStream,
    ) -> tokio::task::JoinHandle<()> {
        let sink = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        sink.send(LogLine::new(stream, text)).await;
                    }
                    Err(err) => {
                        sink.event(format!("reading {} failed: {err}", stream.label()))
                            .await;
                        break;
                    }
                }
            }
        })
    }
}

async fn write_lines(mut file: File, mut rx: mpsc::Receiver<LogLine>, followers: Followers, path: PathBuf) {
    let mut failed = false;
    let mut batch = Vec::with_capacity(BATCH);
    let mut text = String::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        text.clear();
        for line in &batch {
            // Writing into a String cannot fail.
            let _ = writeln!(text, "{line}");
        }
        if let Err(err) = file.write_all(text.as_bytes())
            && !failed
        {
            failed = true;
            tracing::warn!(log = %path.display(), error = %err, "writing an instance log failed; lines are only broadcast from now on");
        }
        for line in batch.drain(..) {
            // No follower is not an error.
            if let Some(followers) = followers.get() {
                let _ = followers.send(line);
            }
        }
    }
}

/// The last `lines` lines of a log file (reads at most the last 256 KiB).
/// A missing file has no lines.
pub fn tail_file(path: &Path, lines: usize) -> io::Result<Vec<String>> {
    const WINDOW: u64 = 256 * 1024;
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // probably cut in the middle
    }
    let skip = all.len().saturating_sub(lines);
    Ok(all[skip..].iter().map(|s| (*s).to_owned()).collect())
}

pub(crate) fn unix_ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped() {
        let line = LogLine {
            at: 1_700_000_000_123,
            stream: LogStream::Stderr,
            text: "boom".into(),
        };
        assert_eq!(line.to_string(), "2023-11-14T22:13:20.123Z stderr boom");
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        assert!(tail_file(&path, 3).unwrap().is_empty());
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_file(&path, 2).unwrap(), ["c", "d"]);
        assert_eq!(tail_file(&path, 10).unwrap().len(), 4);
    }
}

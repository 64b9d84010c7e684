//! Instance logs: one file per instance, `<state_dir>/logs/<app>-<env>-<service>-<id>.log`,
//! into which the instance's process writes its stdout and stderr *itself*, and into which
//! the runtime appends its own events (started, exited, restarting, stopping), timestamped.
//!
//! Output goes straight into the file: the child gets the file, opened `O_APPEND`, as its
//! stdout and stderr, so the instance never depends on this server process. Rejected: pipes
//! read by pump tasks that timestamp each line (the earlier design). A pipe dies with its
//! reader: when the server restarted, crashed or was upgraded, every instance's next write
//! got SIGPIPE/EPIPE (or blocked on a full pipe), so instances could not outlive their server
//! and be adopted by the next one. The accepted cost: application lines are in the file as
//! the application wrote them, without a per-line timestamp or stream label (stdout and
//! stderr are one stream), and two writers appending to one file may interleave a line that
//! was written in pieces.
//!
//! The runtime's own events keep the timestamped format (`<rfc3339> cutover <text>`, see
//! [`LogLine`]'s `Display`) and are appended by one writer *task* per instance (a bounded
//! channel, one unbuffered `write(2)` per batch), so an event never blocks the caller on the
//! disk. No thread per instance: a `spawn_blocking` writer per instance once exhausted
//! tokio's blocking pool at ~500 instances and hung the server. Rejected: `tokio::fs::File`,
//! which hands every write to the same blocking pool.
//!
//! Following (`Runtime::follow_logs`) tails the file: the first follower of an instance
//! starts a task that polls the file every [`FOLLOW_POLL`] from its end at that moment,
//! splits complete lines (64 KiB at most per line) and broadcasts them as [`LogLine`]s; a
//! line in the event format becomes [`LogStream::Cutover`] with its own time, any other line
//! is [`LogStream::Stdout`] timestamped when read. The task ends when the last follower goes
//! or the instance is stopped (`LogSink::close_followers`, which ends every follower's
//! stream). A slow follower loses lines (`RecvError::Lagged`) rather than slowing anything.
//! Rejected: inotify, which needs a dependency (or `unsafe`) for a stream that is read by a
//! person or a dashboard at human speed.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Where a line came from. The process runtime's instances write both of their streams into
/// one file, so their lines are all [`LogStream::Stdout`]; the docker backend and one-off
/// tasks still tell stderr apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// The runtime itself (start, exit, restart, stop events).
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

/// The format of the runtime's events in an instance's log file (and of task lines):
/// `2026-05-01T10:00:00.123Z cutover started pid 42 …`.
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

const MAX_LINE: usize = 64 * 1024;
const FOLLOW_BUFFER: usize = 1024;
const CHANNEL: usize = 256;
/// At most this many events are written by one `write_all`.
const BATCH: usize = 64;
/// How often a followed log file is looked at.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// At most this much of a followed file is read per poll (a runaway writer makes the
/// follower lag, not the server's memory grow).
const FOLLOW_READ: u64 = 1024 * 1024;

/// The runtime's side of one instance's log: its events, and its followers; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct LogSink {
    tx: mpsc::Sender<LogLine>,
    /// The tail task and its broadcast, created by the first follower: an instance nobody
    /// follows pays nothing for it.
    followers: Followers,
    path: PathBuf,
}

type Followers = Arc<Mutex<Option<Tail>>>;

/// A running tail of the file and the sender its followers subscribe to.
#[derive(Debug)]
struct Tail {
    tx: broadcast::Sender<LogLine>,
    done: CancellationToken,
}

impl LogSink {
    /// Opens (creates, appends to) `path` and starts the event writer task (must be called
    /// within a tokio runtime). The task ends when every sink is dropped.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = Self::open_append(path)?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let shown = path.to_owned();
        tokio::spawn(write_lines(file, rx, shown));
        Ok(Self {
            tx,
            followers: Followers::default(),
            path: path.to_owned(),
        })
    }

    fn open_append(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// The log file opened `O_APPEND` again, for a child's stdout and stderr.
    pub(crate) fn for_child(&self) -> io::Result<(File, File)> {
        let out = Self::open_append(&self.path)?;
        let err = out.try_clone()?;
        Ok((out, err))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A follower of the lines appended from now on (see the module docs). Must be called
    /// within a tokio runtime.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tail) = followers.as_ref() {
            return tail.tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(FOLLOW_BUFFER);
        let done = CancellationToken::new();
        // From the end at subscription: a missing file has nothing yet.
        let from = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        tokio::spawn(tail_file_into(
            self.path.clone(),
            from,
            tx.clone(),
            done.clone(),
            Arc::downgrade(&self.followers),
        ));
        *followers = Some(Tail { tx, done });
        rx
    }

    /// Ends every follower's stream (the instance was stopped or left to the next server).
    pub(crate) fn close_followers(&self) {
        let tail = self.followers.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tail) = tail {
            tail.done.cancel();
        }
    }

    /// Logs a supervisor event (also traced at `info`).
    pub(crate) async fn event(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(log = %self.path.display(), "{text}");
        // The writer only goes away when every sink is dropped.
        let _ = self.tx.send(LogLine::new(LogStream::Cutover, text)).await;
    }
}

async fn write_lines(mut file: File, mut rx: mpsc::Receiver<LogLine>, path: PathBuf) {
    let mut failed = false;
    let mut batch = Vec::with_capacity(BATCH);
    let mut text = String::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        text.clear();
        for line in batch.drain(..) {
            // Writing into a String cannot fail.
            let _ = writeln!(text, "{line}");
        }
        if let Err(err) = file.write_all(text.as_bytes())
            && !failed
        {
            failed = true;
            tracing::warn!(log = %path.display(), error = %err, "writing an event into an instance log failed");
        }
    }
}

/// The follow task: polls `path` from offset `pos` and broadcasts each complete line, until
/// `done` or until no follower is left (then it removes itself from `followers`, so the
/// next follower starts a new tail).
async fn tail_file_into(
    path: PathBuf,
    mut pos: u64,
    tx: broadcast::Sender<LogLine>,
    done: CancellationToken,
    followers: std::sync::Weak<Mutex<Option<Tail>>>,
) {
    let mut lines = LineSplitter::default();
    loop {
        tokio::select! {
            biased;
            () = done.cancelled() => return,
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        if tx.receiver_count() == 0 {
            let Some(followers) = followers.upgrade() else {
                return;
            };
            let mut followers = followers.lock().unwrap_or_else(|p| p.into_inner());
            // Nobody subscribed in between (subscribing takes the same lock).
            if tx.receiver_count() == 0 {
                if followers.as_ref().is_some_and(|t| t.tx.same_channel(&tx)) {
                    *followers = None;
                }
                return;
            }
        }
        match read_from(&path, &mut pos) {
            Ok(bytes) => {
                for text in lines.push(&bytes) {
                    // No follower right now is not an error.
                    let _ = tx.send(parse_line(&text));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(log = %path.display(), error = %err, "following an instance log failed");
                return;
            }
        }
    }
}

/// What was appended to `path` since `pos` (at most [`FOLLOW_READ`]); `pos` moves on. A file
/// shorter than `pos` was truncated: it is read from its start again.
fn read_from(path: &Path, pos: &mut u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < *pos {
        *pos = 0;
    }
    if len == *pos {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(*pos))?;
    let mut bytes = Vec::new();
    file.take(FOLLOW_READ).read_to_end(&mut bytes)?;
    *pos += bytes.len() as u64;
    Ok(bytes)
}

/// Splits a byte stream into lines (without `\n` or `\r`), cutting lines longer than 64 KiB.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(Self::text(&mut self.partial));
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    out.push(Self::text(&mut self.partial));
                }
            }
        }
        out
    }

    fn text(buf: &mut Vec<u8>) -> String {
        while matches!(buf.last(), Some(b'\r')) {
            buf.pop();
        }
        let text = String::from_utf8_lossy(buf).into_owned();
        buf.clear();
        text
    }
}

/// A line of the file as a [`LogLine`]: the runtime's event format (`<rfc3339> cutover
/// <text>`) keeps its time and becomes [`LogStream::Cutover`]; anything else is the
/// application's, [`LogStream::Stdout`], timestamped now.
pub(crate) fn parse_line(line: &str) -> LogLine {
    let event = line.split_once(' ').and_then(|(stamp, rest)| {
        let text = rest.strip_prefix("cutover ")?;
        let at = humantime::parse_rfc3339(stamp).ok()?;
        Some(LogLine {
            at: unix_ms_of(at),
            stream: LogStream::Cutover,
            text: text.to_owned(),
        })
    });
    event.unwrap_or_else(|| LogLine::new(LogStream::Stdout, line))
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

    #[test]
    fn events_are_parsed_back_and_other_lines_are_the_applications() {
        let event = LogLine {
            at: 1_700_000_000_123,
            stream: LogStream::Cutover,
            text: "started pid 42".into(),
        };
        assert_eq!(parse_line(&event.to_string()), event);
        let app = parse_line("listening on 127.0.0.1:8080");
        assert_eq!(app.stream, LogStream::Stdout);
        assert_eq!(app.text, "listening on 127.0.0.1:8080");
        // An application line that merely looks like a timestamp stays the application's.
        let fake = parse_line("2023-11-14T22:13:20.123Z stdout hello");
        assert_eq!(fake.stream, LogStream::Stdout);
        assert_eq!(fake.text, "2023-11-14T22:13:20.123Z stdout hello");
    }

    #[test]
    fn lines_are_split_across_reads_and_cut_at_64_kib() {
        let mut split = LineSplitter::default();
        assert!(split.push(b"hel").is_empty());
        assert_eq!(split.push(b"lo\r\nworld\n\npart"), ["hello", "world", ""]);
        assert_eq!(split.push(b"ial\n"), ["partial"]);
        let long = vec![b'x'; MAX_LINE + 10];
        let out = split.push(&long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(split.push(b"\n"), ["x".repeat(10)]);
    }

    #[test]
    fn reading_on_from_an_offset_sees_only_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut pos = 0;
        assert_eq!(
            read_from(&path, &mut pos).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::write(&path, "old\n").unwrap();
        pos = 4;
        assert!(read_from(&path, &mut pos).unwrap().is_empty());
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(read_from(&path, &mut pos).unwrap(), b"new\n");
        assert_eq!(pos, 8);
        std::fs::write(&path, "a\n").unwrap();
        assert_eq!(
            read_from(&path, &mut pos).unwrap(),
            b"a\n",
            "truncated: from the start"
        );
    }
}

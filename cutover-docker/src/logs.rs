//! Instance logs from Docker's logs API, in the process runtime's shapes:
//! [`LogLine`]s (`2026-05-01T10:00:00.123Z stdout text` when displayed).
//! The same code reads a container's logs (docker runtime) and a Swarm
//! service's (`GET /services/<id>/logs`, swarm runtime): see [`LogSource`].
//!
//! - **Tail**: `GET /containers/<id>/logs?tail=N&timestamps=1`, the
//!   engine's own timestamps.
//! - **Follow**: one follower task per instance, started by `start`,
//!   streams `follow=1` into a `broadcast` channel (a lagging follower loses
//!   lines, as with processes). Docker ends a follow stream when the
//!   container exits, also when its restart policy is about to restart it,
//!   so the follower follows again from the last timestamp it saw (lines
//!   at or before it are dropped as duplicates) until `stop` aborts it.
//!   The channel then closes: the stream ends when the instance is stopped.
//!   An instance adopted from a previous server is followed from its
//!   adoption on: its history stays in `tail`, not replayed to followers.
//!
//! Rejected: reading Docker's json-file logs from disk (root-only, driver
//! dependent) and attaching to the container (only new output, and an
//! attach does not survive a restart either).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptions, LogsOptionsBuilder};
use cutover_runtime::{LogLine, LogStream};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

/// Splits a byte stream into lines of at most `max` bytes (never inside a
/// UTF-8 character); `\r\n` and `\n` end a line.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// The last piece was cut at `max`, not at a newline.
    split: bool,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(4),
            split: false,
        }
    }

    /// Adds `bytes`; returns the lines completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                if !(self.split && self.buf.is_empty()) {
                    out.push(String::from_utf8_lossy(&self.buf).into_owned());
                }
                self.buf.clear();
                self.split = false;
                continue;
            }
            self.buf.push(b);
            if self.buf.len() >= self.max {
                let keep = incomplete_char_tail(&self.buf);
                let rest = self.buf.split_off(self.buf.len() - keep);
                out.push(String::from_utf8_lossy(&self.buf).into_owned());
                self.buf = rest;
                self.split = true;
            }
        }
        out
    }

    /// What is left after the stream ended (a last line without newline).
    pub(crate) fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        Some(text)
    }
}

/// How many bytes at the end of `buf` start a UTF-8 character whose
/// remaining bytes have not arrived yet (0 to 3).
fn incomplete_char_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let byte = buf[buf.len() - back];
        if byte & 0xC0 != 0x80 {
            let need = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if need > back { back } else { 0 };
        }
    }
    0
}

/// Splits `2026-11-21T23:44:35.123456789Z text` into its time and text;
/// a line without a readable timestamp keeps its text and gets `now`.
pub(crate) fn parse_timestamped(line: &str) -> (SystemTime, String) {
    if let Some((stamp, text)) = line.split_once(' ')
        && let Ok(at) = humantime::parse_rfc3339(stamp)
    {
        return (at, text.to_owned());
    }
    (SystemTime::now(), line.to_owned())
}

fn log_line(at: SystemTime, stream: LogStream, text: String) -> LogLine {
    LogLine {
        at: crate::ms_of(at),
        stream,
        text,
    }
}

fn stream_of(output: &LogOutput) -> Option<LogStream> {
    match output {
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => Some(LogStream::Stdout),
        LogOutput::StdErr { .. } => Some(LogStream::Stderr),
        LogOutput::StdIn { .. } => None,
    }
}

const MAX_LINE: usize = 64 * 1024;

/// Whose output to read: the engine answers both in the same framing
/// (`<RFC 3339 time> <text>` per line with `timestamps=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogSource {
    /// A container, by id or name.
    Container(String),
    /// A Swarm service, by id or name: the output of all its tasks.
    Service(String),
}

impl LogSource {
    fn stream<'a>(
        &'a self,
        docker: &'a Docker,
        options: LogsOptions,
    ) -> BoxStream<'a, Result<LogOutput, bollard::errors::Error>> {
        match self {
            Self::Container(id) => docker.logs(id, Some(options)).boxed(),
            Self::Service(id) => docker.service_logs(id, Some(options)).boxed(),
        }
    }
}

/// The last `lines` lines of a container's output, formatted like the
/// process runtime's log files.
pub(crate) async fn tail(
    docker: &Docker,
    container: &str,
    lines: usize,
) -> Result<Vec<String>, bollard::errors::Error> {
    tail_of(docker, &LogSource::Container(container.to_owned()), lines).await
}

/// The last `lines` lines of `source`'s output (see [`tail`]).
pub(crate) async fn tail_of(
    docker: &Docker,
    source: &LogSource,
    lines: usize,
) -> Result<Vec<String>, bollard::errors::Error> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = source.stream(docker, options);
    let mut out = Vec::new();
    let mut splitters = [LineSplitter::new(MAX_LINE), LineSplitter::new(MAX_LINE)];
    while let Some(item) = stream.next().await {
        let output = item?;
        let Some(kind) = stream_of(&output) else { continue };
        let index = usize::from(kind == LogStream::Stderr);
        for line in splitters[index].push(output.as_ref()) {
            let (at, text) = parse_timestamped(&line);
            out.push(log_line(at, kind, text));
        }
    }
    for (index, kind) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
        if let Some(line) = splitters[index].finish() {
            let (at, text) = parse_timestamped(&line);
            out.push(log_line(at, kind, text));
        }
    }
    // The two streams arrive interleaved in time order already; a stable
    // sort keeps that order for equal timestamps.
    out.sort_by_key(|l| l.at);
    let skip = out.len().saturating_sub(lines);
    Ok(out[skip..].iter().map(ToString::to_string).collect())
}

/// Follows a container's output into `sender` until aborted (see the
/// module documentation). `after`: only lines written after that time (an
/// adopted instance's history is not replayed); `None` for all of them.
pub(crate) async fn follow(
    docker: Docker,
    container: String,
    sender: broadcast::Sender<LogLine>,
    after: Option<SystemTime>,
) {
    follow_source(docker, LogSource::Container(container), sender, after).await;
}

/// Follows `source`'s output into `sender` until aborted (see [`follow`]).
pub(crate) async fn follow_source(
    docker: Docker,
    source: LogSource,
    sender: broadcast::Sender<LogLine>,
    after: Option<SystemTime>,
) {
    let mut last_seen: Option<SystemTime> = after;
    loop {
        let since = last_seen
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
            .unwrap_or(0);
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let mut stream = source.stream(&docker, options);
        let mut splitters = [LineSplitter::new(MAX_LINE), LineSplitter::new(MAX_LINE)];
        while let Some(item) = stream.next().await {
            let Ok(output) = item else { break };
            let Some(kind) = stream_of(&output) else { continue };
            let index = usize::from(kind == LogStream::Stderr);
            for line in splitters[index].push(output.as_ref()) {
                let (at, text) = parse_timestamped(&line);
                if last_seen.is_some_and(|seen| at <= seen) {
                    continue;
                }
                last_seen = Some(at);
                let _ = sender.send(log_line(at, kind, text));
            }
        }
        // The container exited (and may be restarting) or the engine hung
        // up; follow again shortly. `stop` aborts this task.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_at_newlines_and_at_the_limit() {
        let mut s = LineSplitter::new(8);
        assert_eq!(s.push(b"ab\r\ncd"), ["ab"]);
        assert_eq!(s.push(b"\n"), ["cd"]);
        assert_eq!(s.push(b"0123456789\n"), ["01234567", "89"]);
        // Exactly the limit: the newline is not an extra empty line.
        assert_eq!(s.push(b"01234567\n"), ["01234567"]);
        assert_eq!(s.push(b"\n"), [""]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn characters_are_never_cut() {
        let mut s = LineSplitter::new(4);
        let text = "aé€😀";
        let mut lines = s.push(text.as_bytes());
        lines.extend(s.finish());
        assert_eq!(lines.concat(), text);
        assert!(lines.iter().all(|l| !l.contains('\u{fffd}')), "{lines:?}");
    }

    #[test]
    fn timestamps_are_read() {
        let (at, text) = parse_timestamped("2023-11-14T22:13:20.123456789Z hello world");
        assert_eq!(crate::ms_of(at), 1_700_000_000_123);
        assert_eq!(text, "hello world");
        let (_, text) = parse_timestamped("no stamp here");
        assert_eq!(text, "no stamp here");
    }
}

//! HTTP health checks: one [`probe`] and [`wait_healthy`] (probe until 2xx or
//! a deadline).
//!
//! The probe is a minimal hand-written HTTP/1.1 GET over a `TcpStream`
//! (`Connection: close`, read the status line, done). Rejected: hyper-util's
//! client. A health check needs the status code only; the hand-written probe
//! has no connection pool that could hide a restarted upstream behind a
//! reused socket, adds no dependency, and its failure texts (`connection
//! refused`, `timed out after 2s`, `HTTP 503`) go straight into the error a
//! user reads. Only loopback addresses are probed by the process runtime.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::types::HealthSettings;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The server answered with this HTTP status.
    Status(u16),
    /// Nothing usable came back: the text says what happened.
    Failed(String),
}

impl ProbeResult {
    /// 2xx.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Status(code) if (200..300).contains(code))
    }
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "HTTP {code}"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// A health-check path must be an absolute path without spaces or control
/// characters (it is written into the request line).
pub fn valid_path(path: &str) -> bool {
    path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// One `GET path` against `addr`, bounded by `timeout` as a whole. The caller
/// checks [`valid_path`] first; an invalid path is reported as a failure.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> ProbeResult {
    if !valid_path(path) {
        return ProbeResult::Failed(format!("invalid health-check path {path:?}"));
    }
    match tokio::time::timeout(timeout, get_status(addr, path)).await {
        Ok(Ok(code)) => ProbeResult::Status(code),
        Ok(Err(err)) => ProbeResult::Failed(describe_io(&err)),
        Err(_) => ProbeResult::Failed(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

fn describe_io(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed before a status line".to_owned(),
        io::ErrorKind::InvalidData => err.to_string(),
        _ => format!("I/O error: {err}"),
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cutover-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // Read up to the end of the status line (bounded: 1 KiB is plenty).
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]);
        }
        if buf.len() > 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "status line longer than 1 KiB",
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_status_line(line: &[u8]) -> io::Result<u16> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(line)),
        )
    };
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    if !proto.starts_with("HTTP/1.") {
        return Err(bad());
    }
    parts
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(bad)
}

/// Why [`wait_healthy`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHealthy {
    pub attempts: u32,
    /// The last probe's result.
    pub last: ProbeResult,
}

/// Probes every `interval` until a 2xx answer (returns its status) or until
/// `deadline` has passed (returns the last result seen). The first probe is
/// made at once; each probe's timeout is cut to the time left.
pub async fn wait_healthy(
    addr: SocketAddr,
    path: &str,
    settings: &HealthSettings,
) -> Result<u16, NotHealthy> {
    wait_healthy_unless(addr, path, settings, || None).await
}

/// As [`wait_healthy`], but gives up as soon as `hopeless` says why (checked before every
/// probe), e.g. a process that keeps exiting: the reason becomes the result's `last`.
pub async fn wait_healthy_unless(
    addr: SocketAddr,
    path: &str,
    settings: &HealthSettings,
    hopeless: impl Fn() -> Option<String>,
) -> Result<u16, NotHealthy> {
    let give_up = Instant::now() + settings.deadline;
    let mut attempts = 0;
    loop {
        if let Some(why) = hopeless() {
            return Err(NotHealthy {
                attempts,
                last: ProbeResult::Failed(why),
            });
        }
        let left = give_up.saturating_duration_since(Instant::now());
        let timeout = settings.timeout.min(left).max(Duration::from_millis(10));
        attempts += 1;
        let last = probe(addr, path, timeout).await;
        if let ProbeResult::Status(code) = last
            && last.is_healthy()
        {
            return Ok(code);
        }
        if Instant::now() + settings.interval >= give_up {
            return Err(NotHealthy { attempts, last });
        }
        tokio::time::sleep(settings.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content").unwrap(), 204);
        assert_eq!(parse_status_line(b"HTTP/1.0 503").unwrap(), 503);
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2000 x").is_err());
    }

    #[test]
    fn paths() {
        assert!(valid_path("/health"));
        assert!(valid_path("/health?full=1"));
        assert!(!valid_path("health"));
        assert!(!valid_path("/a b"));
        assert!(!valid_path("/a\r\nX: y"));
    }

    #[test]
    fn only_2xx_is_healthy() {
        assert!(ProbeResult::Status(200).is_healthy());
        assert!(ProbeResult::Status(299).is_healthy());
        assert!(!ProbeResult::Status(301).is_healthy());
        assert!(!ProbeResult::Failed("x".into()).is_healthy());
    }
}

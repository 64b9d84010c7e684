//! The control protocol: one JSON request line per unix-socket connection, one JSON answer line.
//!
//! A request is `{"secret": "...", "op": "switch", ...}`; the server parses it as a generic JSON
//! value first, checks the secret, and only then the op, so an unknown op with a wrong secret is
//! refused, and an unknown op with the right one is an error answer, never a crash. An answer is
//! `{"status": "ok", "value": ...}` or `{"status": "error", "kind": "...", "message": "..."}`.
//! Lines are bounded (1 MiB) and must arrive within 10 s.
//!
//! Rejected: length-prefixed binary frames (JSON lines can be typed by hand with `socat` when
//! debugging) and one long-lived multiplexed connection (a connection per request needs no
//! request ids, and a data plane that handed over is left simply by reconnecting).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::{EdgeConfig, ListenerKind};

/// Longest request or answer line.
pub(crate) const MAX_LINE: u64 = 1024 * 1024;
/// Time a peer has to send its request line.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Operations (the `op` field of a request).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    Hello,
    Listen {
        kind: ListenerKind,
        addr: SocketAddr,
    },
    Close {
        kind: ListenerKind,
    },
    Switch {
        app: String,
        env: String,
        service: String,
        version: String,
        upstreams: Vec<SocketAddr>,
    },
    Remove {
        app: String,
        env: String,
        service: String,
    },
    Drain {
        generation: u64,
        timeout_ms: u64,
    },
    Generation {
        app: String,
        env: String,
        service: String,
    },
    Routes,
    /// Sets (`gate`) or clears (none) an environment's hold or maintenance gate.
    SetGate {
        app: String,
        env: String,
        #[serde(default)]
        gate: Option<crate::GateRecord>,
    },
    /// Every gate.
    Gates,
    /// Replaces an environment's feature flags (sent in `Cutover-Flags`; empty: none).
    SetFlags {
        app: String,
        env: String,
        flags: std::collections::BTreeMap<String, String>,
    },
    /// Every environment's flags.
    Flags,
    /// Waits until no route of the environment has a request in flight (while it is held).
    DrainEnv {
        app: String,
        env: String,
        timeout_ms: u64,
    },
    /// The router's metrics (Prometheus text, see `Router::encode_metrics`).
    Metrics,
    /// Replaces the router's forwarding and access-log settings.
    Configure {
        edge: EdgeConfig,
    },
    Shutdown,
    /// A newer data plane asks for the listeners and the table (see the `handover` module).
    HandOver,
}

impl Op {
    /// Whether the op changes the table or listeners (refused once a hand-over started, since
    /// the successor would not see the change).
    pub(crate) fn mutates(&self) -> bool {
        matches!(
            self,
            Op::Listen { .. }
                | Op::Close { .. }
                | Op::Switch { .. }
                | Op::Remove { .. }
                | Op::SetGate { .. }
                | Op::SetFlags { .. }
                | Op::Configure { .. }
        )
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub(crate) secret: &'a str,
    #[serde(flatten)]
    pub(crate) op: &'a Op,
}

/// Why a request failed, as the client needs to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorKind {
    /// Wrong secret or uid.
    Refused,
    /// A mutation reached a data plane that handed over (or is handing over).
    HandedOver,
    /// Not a valid request.
    BadRequest,
    /// The operation failed.
    Failed,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Answer {
    Ok {
        #[serde(default)]
        value: serde_json::Value,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Answer {
    pub(crate) fn ok(value: impl Serialize) -> Self {
        match serde_json::to_value(value) {
            Ok(value) => Answer::Ok { value },
            Err(e) => Answer::error(ErrorKind::Failed, format!("cannot serialise the answer: {e}")),
        }
    }
    pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Answer::Error {
            kind,
            message: message.into(),
        }
    }
    pub(crate) fn line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            b"{\"status\":\"error\",\"kind\":\"failed\",\"message\":\"unserialisable answer\"}".to_vec()
        });
        v.push(b'\n');
        v
    }
}

/// Why a line could not be read.
#[derive(Debug)]
pub(crate) enum LineError {
    TooLong,
    Closed,
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            LineError::Closed => write!(f, "connection closed before a complete line"),
            LineError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes (without the newline).
pub(crate) async fn read_line<R: AsyncRead + Unpin>(reader: R) -> Result<Vec<u8>, LineError> {
    let mut reader = BufReader::new(reader.take(MAX_LINE + 1));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).await.map_err(LineError::Io)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        Ok(buf)
    } else if buf.len() as u64 > MAX_LINE {
        Err(LineError::TooLong)
    } else {
        Err(LineError::Closed)
    }
}

/// Compares two secrets without an early exit on the first differing byte.
pub(crate) fn secret_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shape_is_flat_with_op_tag() {
        let op = Op::Drain {
            generation: 7,
            timeout_ms: 10,
        };
        let json = serde_json::to_value(Request { secret: "s", op: &op }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"secret": "s", "op": "drain", "generation": 7, "timeout_ms": 10})
        );
        let back: Op = serde_json::from_value(json).unwrap();
        assert!(matches!(back, Op::Drain { generation: 7, .. }));
        assert!(serde_json::from_value::<Op>(serde_json::json!({"op": "explode"})).is_err());
    }

    #[test]
    fn secret_comparison() {
        assert!(secret_matches("abc", "abc"));
        assert!(!secret_matches("abd", "abc"));
        assert!(!secret_matches("ab", "abc"));
    }

    #[tokio::test]
    async fn line_bounds() {
        let ok: &[u8] = b"{\"a\":1}\nrest";
        assert_eq!(read_line(ok).await.unwrap(), b"{\"a\":1}");
        let open: &[u8] = b"no newline";
        assert!(matches!(read_line(open).await, Err(LineError::Closed)));
        let long = vec![b'x'; MAX_LINE as usize + 10];
        assert!(matches!(
            read_line(long.as_slice()).await,
            Err(LineError::TooLong)
        ));
    }
}

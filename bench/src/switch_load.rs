//! Bounded load while something switches versions, and what the clients saw per switch.
//!
//! Used by `runtime_deploys`; the definitions are those of `deploy_under_load` (see
//! bench/README.md): `--conns` clients send `GET /version.json`, pausing between requests; a
//! client whose request fails waits [`RETRY_PAUSE`] and reconnects. Unlike there, a server
//! that closes the connection after each answer (`Connection: close`, as `busybox httpd`
//! does) is followed by reconnecting for the next request, which is not a failure: the
//! connect is then part of that next request (its latency, and its failure if it fails).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::fixture::{med_p90_max, unix_micros};

/// A client whose request failed waits this long, then reconnects.
pub const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// The answer carried none of the known version markers.
pub const UNKNOWN: u8 = u8::MAX;

/// One request as a client saw it; times are wall-clock µs, comparable with the server's.
#[derive(Clone, Copy)]
pub struct Hit {
    pub sent: u64,
    pub done: u64,
    /// `None`: failed (connect, transport or non-2xx); else the index of the version
    /// whose marker the body contains ([`UNKNOWN`] if none).
    pub answer: Option<u8>,
}

/// The shape of the load: the same for every phase of a run.
#[derive(Clone)]
pub struct Shape {
    pub conns: usize,
    pub pause: Duration,
    /// `Host:` header (the router routes on it; a service ignores it).
    pub host: Arc<str>,
    /// A string only version `i`'s `/version.json` contains, per version.
    pub markers: Arc<Vec<String>>,
    /// Bounds of one phase.
    pub limit: Duration,
    pub max_requests: usize,
}

/// Starts the load against `addr`; it runs until `stop`, `shape.limit` or
/// `shape.max_requests`. The hits come back sorted by send time.
pub fn start_load(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    shape: &Shape,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Hit>> {
    let per_conn = shape.max_requests / shape.conns.max(1);
    let deadline = Instant::now() + shape.limit;
    let tasks: Vec<_> = (0..shape.conns)
        .map(|_| {
            let (stop, shape) = (Arc::clone(stop), shape.clone());
            rt.spawn(async move { client(addr, &shape, &stop, deadline, per_conn).await })
        })
        .collect();
    rt.spawn(async move {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all.sort_by_key(|h| h.sent);
        all
    })
}

type Sender = SendRequest<Empty<Bytes>>;

async fn client(
    addr: SocketAddr,
    shape: &Shape,
    stop: &AtomicBool,
    deadline: Instant,
    max: usize,
) -> Vec<Hit> {
    let mut hits = Vec::with_capacity(max.min(1 << 16));
    let mut conn: Option<Sender> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && hits.len() < max {
        let sent = unix_micros();
        let answer = request(addr, shape, &mut conn).await;
        hits.push(Hit {
            sent,
            done: unix_micros(),
            answer,
        });
        if answer.is_none() {
            conn = None;
            tokio::time::sleep(RETRY_PAUSE).await;
        } else if !shape.pause.is_zero() {
            tokio::time::sleep(shape.pause).await;
        }
    }
    hits
}

async fn request(addr: SocketAddr, shape: &Shape, conn: &mut Option<Sender>) -> Option<u8> {
    if conn.as_ref().is_none_or(Sender::is_closed) {
        let stream = TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        *conn = Some(sender);
    }
    let sender = conn.as_mut()?;
    sender.ready().await.ok()?;
    let req = Request::get("/version.json")
        .header(http::header::HOST, &*shape.host)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let closes = resp.version() < http::Version::HTTP_11
        || resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let ok = resp.status().is_success();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    if closes {
        *conn = None;
    }
    let text = String::from_utf8_lossy(&body);
    let tag = shape.markers.iter().position(|m| text.contains(m.as_str()));
    ok.then(|| tag.map_or(UNKNOWN, |i| i as u8))
}

/// One switch as observed: when it was issued, when it took effect, when the next one could
/// begin at the earliest, and which version it switched to.
pub struct Switch {
    pub label: String,
    pub to: u8,
    pub issued: u64,
    pub effective: u64,
    pub next_bound: Option<u64>,
    /// How long the switch took, as the report shows it.
    pub took: String,
}

/// Per-switch figures.
pub struct Row {
    pub requests: usize,
    pub failed: usize,
    pub checked: usize,
    pub straddling: usize,
    pub old: usize,
    pub outage_ms: f64,
}

/// What a phase produced: every hit, the switches, and when the load was stopped (µs).
pub type Phase = (Vec<Hit>, Vec<Switch>, u64);

/// Per-switch figures, with `deploy_under_load`'s definitions: requests sent and failures
/// ended between issuing this switch and the next; old-version answers among requests sent
/// after it took effect and answered before the next switch could begin.
pub fn analyse(hits: &[Hit], switches: &[Switch], end: u64) -> Vec<Row> {
    switches
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let until = switches.get(i + 1).map_or(end, |n| n.issued);
            let requests = hits
                .iter()
                .filter(|h| h.sent >= s.issued && h.sent < until)
                .count();
            let failed: Vec<&Hit> = hits
                .iter()
                .filter(|h| h.answer.is_none() && h.done >= s.issued && h.done < until)
                .collect();
            let first = failed.iter().map(|h| h.sent).min();
            let outage_ms = match (first, failed.iter().map(|h| h.done).max()) {
                (Some(first), Some(last)) => last.saturating_sub(first) as f64 / 1e3,
                _ => 0.0,
            };
            let bound = s.next_bound.unwrap_or(u64::MAX);
            let (checked, straddling): (Vec<&Hit>, Vec<&Hit>) = hits
                .iter()
                .filter(|h| h.sent >= s.effective && h.sent < bound)
                .partition(|h| h.done < bound);
            let old = checked
                .iter()
                .filter(|h| h.answer.is_some_and(|a| a != s.to))
                .count();
            Row {
                requests,
                failed: failed.len(),
                checked: checked.len(),
                straddling: straddling.len(),
                old,
                outage_ms,
            }
        })
        .collect()
}

/// Whole-phase figures for the side-by-side table.
pub struct Summary {
    pub requests: usize,
    pub rps: f64,
    pub failed: usize,
    pub during_switches: usize,
    pub old: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn summarize((hits, switches, end): &Phase) -> Summary {
    let rows = analyse(hits, switches, *end);
    let start = hits.first().map_or(0, |h| h.sent);
    let secs = end.saturating_sub(start) as f64 / 1e6;
    let lat: Vec<f64> = hits
        .iter()
        .filter(|h| h.answer.is_some())
        .map(|h| h.done.saturating_sub(h.sent) as f64)
        .collect();
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted
        .get(((sorted.len() as f64 * 0.99) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Summary {
        requests: hits.len(),
        rps: hits.len() as f64 / secs.max(1e-9),
        failed: hits.iter().filter(|h| h.answer.is_none()).count(),
        during_switches: rows.iter().map(|r| r.failed).sum(),
        old: rows.iter().map(|r| r.old).sum(),
        p50_us: med_p90_max(&lat).0,
        p99_us: p99,
    }
}

/// Prints a phase's per-switch table.
pub fn print_switches(name: &str, phase: &Phase) {
    let (hits, switches, end) = phase;
    let rows = analyse(hits, switches, *end);
    println!();
    println!("{name}:");
    println!(
        "{:<4}{:<30}{:>4}{:>24}{:>10}{:>8}{:>12}{:>9}{:>12}{:>6}",
        "#", "switch", "to", "took", "requests", "failed", "outage", "checked", "straddling", "old"
    );
    for (i, (s, r)) in switches.iter().zip(&rows).enumerate() {
        let to = if s.to == UNKNOWN {
            "?".to_owned()
        } else {
            format!("v{}", u16::from(s.to) + 1)
        };
        println!(
            "{:<4}{:<30}{:>4}{:>24}{:>10}{:>8}{:>9.1} ms{:>9}{:>12}{:>6}",
            i + 1,
            s.label,
            to,
            s.took,
            r.requests,
            r.failed,
            r.outage_ms,
            r.checked,
            r.straddling,
            r.old
        );
    }
}

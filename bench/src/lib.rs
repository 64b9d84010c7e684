//! Shared helpers for the benchmark binaries in `src/bin` (not tests; see `bench/README.md`).
//!
//! Everything runs on loopback (127.0.0.1) and every load is bounded by both a duration and a
//! request count. Latencies are kept as raw samples and sorted for percentiles: exact, and at
//! a few million samples cheap enough. Rejected: criterion (made for micro-benchmarks of
//! functions, not for a concurrent socket load with side-by-side throughput figures).

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

pub mod children;
pub mod fixture;
pub mod reference;
pub mod switch_load;
pub mod tls_load;

pub use children::{UpstreamChild, Wire, child_main, run_load_pinned, spawn_upstream};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Starts a trivial HTTP/1.1 upstream on 127.0.0.1:0 that answers `body` to every request.
pub async fn trivial_upstream(body: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = Bytes::copy_from_slice(body.as_bytes());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One request as the load generator saw it (kept small: millions are stored).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the request was handed to the connection.
    pub sent: Instant,
    /// Send to end of body.
    pub latency: Duration,
    /// `None` on failure (transport error or non-2xx), else the first byte of the body: the
    /// benchmark upstreams answer versions that differ in their first byte.
    pub answer: Option<u8>,
}

/// Load shape: concurrent keep-alive connections, bounded by time and total count.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub connections: usize,
    pub duration: Duration,
    pub max_requests: usize,
}

/// Runs `load` against `addr` with `Host: host`; returns every sample and the wall time.
pub async fn run_load(addr: SocketAddr, host: &str, load: Load) -> (Vec<Sample>, Duration) {
    let host: Arc<str> = host.into();
    let per_conn = load.max_requests.div_ceil(load.connections.max(1));
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let host = Arc::clone(&host);
        tasks.push(tokio::spawn(async move {
            client_loop(addr, &host, deadline, per_conn).await
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(mut s) = t.await {
            samples.append(&mut s);
        }
    }
    (samples, start.elapsed())
}

async fn client_loop(addr: SocketAddr, host: &str, deadline: Instant, max: usize) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(max.min(1 << 16));
    let Ok(stream) = TcpStream::connect(addr).await else {
        return samples;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return samples;
    };
    tokio::spawn(conn);
    while samples.len() < max && Instant::now() < deadline {
        let sent = Instant::now();
        let req = Request::get("/")
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .expect("static request is valid");
        let answer = async {
            sender.ready().await.ok()?;
            let resp = sender.send_request(req).await.ok()?;
            let ok = resp.status().is_success();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            ok.then(|| body.first().copied().unwrap_or(0))
        }
        .await;
        let failed = answer.is_none();
        samples.push(Sample {
            sent,
            latency: sent.elapsed(),
            answer,
        });
        if failed {
            break; // the connection is unusable; count the failure and stop this client
        }
    }
    samples
}

/// Throughput and latency percentiles of a run.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub requests: usize,
    pub failures: usize,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn summarize(samples: &[Sample], elapsed: Duration) -> Summary {
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[idx]
    };
    Summary {
        requests: samples.len(),
        failures: samples.iter().filter(|s| s.answer.is_none()).count(),
        rps: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// Formats a duration in microseconds.
pub fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// CPU time (user + system) this whole process has used so far, from `/proc/self/stat`
/// (Linux; clock ticks assumed to be 100 Hz, the kernel's fixed `USER_HZ`).
pub fn process_cpu_time() -> Option<Duration> {
    pid_cpu_time("self")
}

/// User + system CPU time of process `pid` ("self" for this one) so far, from /proc (Linux
/// only; 10 ms resolution).
pub fn pid_cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The value after `name` on the command line (`--conns 16`), parsed; `default` when the flag is
/// absent or its value does not parse. Every benchmark reads its options this way.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins every thread of this process to `cpus` (a `taskset` list such as `0` or `0-1`).
pub fn pin_self(cpus: &str) -> std::io::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "taskset -p -c {cpus} failed ({status})"
        )))
    }
}

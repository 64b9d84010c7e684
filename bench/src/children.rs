//! Child processes of a benchmark binary, so that what is measured runs apart from what
//! measures it: a load generator pinned to its own CPU ([`run_load_pinned`]) and the trivial
//! upstream in a process of its own ([`spawn_upstream`]), as an instance is in production. The
//! binary's `main` must call [`child_main`] first: in a child it does the child's work and
//! exits.

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls_load::{BenchCert, run_tls_load};
use crate::{Load, Sample, run_load, trivial_upstream};

/// The flag that makes a benchmark binary a load-generator child (see [`run_load_pinned`]).
pub const LOAD_CHILD: &str = "--load-child";
/// The flag that makes a benchmark binary an upstream child (see [`spawn_upstream`]).
pub const UPSTREAM_CHILD: &str = "--upstream-child";

/// How a pinned load speaks: plain HTTP/1.1, or TLS (trusting `cert`) with HTTP/1.1 or HTTP/2.
#[derive(Clone)]
pub enum Wire {
    Plain,
    Tls { cert: BenchCert, h2: bool },
}

/// Runs `load` in a child process of this same binary pinned to CPU `cpu` (`taskset -c`), so
/// the generator's own work does not land on the cores of what is measured; returns the
/// samples (with `sent` set to when they were read back) and the child's wall time.
pub fn run_load_pinned(
    addr: SocketAddr,
    host: &str,
    load: Load,
    cpu: usize,
    wire: &Wire,
) -> std::io::Result<(Vec<Sample>, Duration)> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .arg(exe)
        .arg(LOAD_CHILD)
        .arg(addr.to_string())
        .arg(host)
        .arg(load.duration.as_millis().to_string())
        .arg(load.connections.to_string())
        .arg(load.max_requests.to_string());
    if let Wire::Tls { cert, h2 } = wire {
        cmd.arg(if *h2 { "h2" } else { "h1" }).arg(&cert.cert);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "the pinned load generator failed ({}); is taskset (util-linux) installed?",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let elapsed = Duration::from_micros(lines.next().and_then(|l| l.parse().ok()).unwrap_or(0));
    let now = Instant::now();
    let samples = lines
        .filter_map(|l| {
            let (us, ok) = l.split_once(' ')?;
            Some(Sample {
                sent: now,
                latency: Duration::from_micros(us.parse().ok()?),
                answer: (ok == "1").then_some(b'?'),
            })
        })
        .collect();
    Ok((samples, elapsed))
}

/// A trivial upstream ([`trivial_upstream`]) in a child process of this binary, on a
/// current-thread runtime and the CPUs this process has when it is spawned; killed on drop (and
/// it exits by itself when this process dies: it watches its stdin).
pub struct UpstreamChild {
    pub addr: SocketAddr,
    child: Child,
}

/// Starts an [`UpstreamChild`] answering `body`.
pub fn spawn_upstream(body: &str) -> std::io::Result<UpstreamChild> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg(UPSTREAM_CHILD)
        .arg(body)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    match line.trim().parse::<SocketAddr>() {
        Ok(addr) => Ok(UpstreamChild { addr, child }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::other(format!(
                "the upstream child did not say where it listens (got {line:?})"
            )))
        }
    }
}

impl Drop for UpstreamChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child (`<bin> --load-child ADDR HOST MS CONNS MAX [h1|h2 CERT_PEM]` or
/// `<bin> --upstream-child BODY`): does the child's work and exits. Returns normally in any
/// other process.
pub fn child_main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == UPSTREAM_CHILD) {
        upstream_child(args.get(i + 1).map_or("", String::as_str));
    }
    let Some(i) = args.iter().position(|a| a == LOAD_CHILD) else {
        return;
    };
    let get = |k: usize| args.get(i + k).cloned().unwrap_or_default();
    let (Ok(addr), host, Ok(ms), Ok(conns), Ok(max)) = (
        get(1).parse::<SocketAddr>(),
        get(2),
        get(3).parse::<u64>(),
        get(4).parse::<usize>(),
        get(5).parse::<usize>(),
    ) else {
        eprintln!("usage: {LOAD_CHILD} ADDR HOST MILLIS CONNS MAX_REQUESTS [h1|h2 CERT_PEM]");
        std::process::exit(2);
    };
    let tls = match get(6).as_str() {
        "" => None,
        proto => match BenchCert::load(&PathBuf::from(get(7))) {
            Ok(cert) => Some((cert, proto == "h2")),
            Err(e) => {
                eprintln!("load child: the certificate to trust: {e}");
                std::process::exit(2);
            }
        },
    };
    let runtime = current_thread();
    let load = Load {
        connections: conns,
        duration: Duration::from_millis(ms),
        max_requests: max,
    };
    let (samples, elapsed) = runtime.block_on(async {
        match &tls {
            Some((cert, h2)) => run_tls_load(addr, &host, cert, *h2, load).await,
            None => run_load(addr, &host, load).await,
        }
    });
    let mut out = String::with_capacity(samples.len() * 8);
    out.push_str(&format!("{}\n", elapsed.as_micros()));
    for s in &samples {
        out.push_str(&format!(
            "{} {}\n",
            s.latency.as_micros(),
            u8::from(s.answer.is_some())
        ));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    std::process::exit(0);
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime for a benchmark child: {e}"))
}

fn upstream_child(body: &str) -> ! {
    // The parent holds our stdin: when it goes (dropped, or the parent died), so do we.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = current_thread();
    runtime.block_on(async {
        let addr = match trivial_upstream(body).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("upstream child: {e}");
                std::process::exit(1);
            }
        };
        println!("{addr}");
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
    std::process::exit(0)
}

//! Router overhead and switch-under-load benchmark (loopback only, bounded).
//!
//! 1. Throughput and p50/p99 latency of a trivial upstream hit directly, then through
//!    `cutover-router`, with the same keep-alive load; prints the ratio (goal ≥ 0.8×). The same
//!    load through reference proxies (a raw TCP relay, nginx and HAProxy when installed; see
//!    `cutover_bench::reference`) shows what any proxy reaches on this machine.
//! 2. The same over TLS, HTTP/1.1 and HTTP/2, against nginx with the same certificate (see
//!    `tls_section`).
//! 3. Ten `switch`es between two upstream versions during load; prints total requests,
//!    failures and, per switch, how many requests sent after it returned were answered by
//!    the older version (must be 0), plus what `drain` saw.
//!
//! The trivial upstreams run in a child process each (as an instance does in production), so the
//! router serves the router alone. With 2 CPUs or more, this process (router, relay), the
//! upstreams, nginx and HAProxy are pinned to every CPU but the last before anything starts, and
//! sections 1 and 2 run the load generator in a child process pinned to the last CPU
//! (`taskset`), so the figures are not the generator's cost. The router is served as the data
//! plane serves its main and TLS listeners (`Router::serve_threads`: one thread with a
//! current-thread runtime per CPU it may use), nginx and HAProxy with as many workers;
//! `--serve tasks` serves it as tasks of this process's runtime instead (`--threads`: 0 = one
//! worker per CPU it may use, 1 = current-thread, N = N workers). `--pin 0`: nothing pinned, the
//! generator in-process; the switch section always keeps the generator in-process, unpinned.
//!
//! Usage: `cargo run --release -p cutover-bench --bin router_overhead [-- --secs N --rounds N
//! --conns N --serve threads|tasks --threads N --pin 0|1 --only plain,tls,switch]` (`--only`:
//! the sections to run, all by default).

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use cutover_bench::arg;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_bench::reference::{External, Kind, machine_cpu_time, tcp_relay};
use cutover_bench::tls_load::{run_tls_load, self_signed};
use cutover_bench::{
    Load, Sample, Wire, child_main, micros, pin_self, process_cpu_time, run_load, run_load_pinned,
    spawn_upstream, summarize,
};
use cutover_router::{Backend, CertFiles, Listening, RouteKey, Router, RouterConfig, TlsCerts, TlsOptions};
use tokio::net::TcpListener;

const MAX_REQUESTS: usize = 5_000_000;
const SWITCHES: usize = 10;
const SWITCH_EVERY: Duration = Duration::from_millis(300);

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

fn main() -> std::io::Result<()> {
    child_main();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The generator on the last CPU, everything measured on the others (the upstreams, nginx
    // and HAProxy, started later, inherit this process's CPUs). Pinned before the runtime is
    // built, so its default worker count is what the router would get under this affinity.
    let pinned = (arg("--pin", 1) == 1 && cpus >= 2)
        .then(|| pin_self(&format!("0-{}", cpus - 2)).map(|()| cpus - 1))
        .and_then(|r| r.map_err(|e| println!("not pinned: {e}")).ok());
    let proxy_cpus = if pinned.is_some() { cpus - 1 } else { cpus };
    // This process's runtime (the router's with `--serve tasks`). `--threads 0` (default):
    // tokio's multi-thread runtime with one worker per CPU it may use; `--threads 1`: a
    // current-thread runtime; `--threads N`: N workers. nginx and HAProxy get as many workers
    // (with `--serve threads`, as many as the router has threads).
    let threads = arg("--threads", 0usize);
    let runtime = match threads {
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let workers = if threads == 0 { proxy_cpus } else { threads };
    runtime.block_on(run(pinned, cpus, workers))
}

async fn run(pinned: Option<usize>, cpus: usize, workers: usize) -> std::io::Result<()> {
    let secs = arg("--secs", 3);
    let conns = arg("--conns", 32) as usize;
    let rounds = arg("--rounds", 3).clamp(1, 20);
    let sections = Sections::parse(&arg("--only", "plain,tls,switch".to_owned()))?;
    let load = Load {
        connections: conns,
        duration: Duration::from_secs(secs),
        max_requests: MAX_REQUESTS,
    };
    let warmup = Load {
        duration: Duration::from_millis(500),
        ..load
    };

    let upstreams = (spawn_upstream(&sha('1'))?, spawn_upstream(&sha('2'))?);
    let (v1, v2) = (upstreams.0.addr, upstreams.1.addr);
    let router = Router::new(RouterConfig::default());
    let route = RouteKey::new("bench", "prod", "web").expect("static key is valid");
    let host = router.host_of(&route);
    router.switch(&route, Backend::new(sha('1'), vec![v1]));
    let router_addr = start_router(&router, Listening::ByHost, workers).await?;

    println!(
        "router_overhead: {conns} keep-alive connections, {rounds} interleaved rounds of \
         {secs} s per target, at most {MAX_REQUESTS} requests, loopback, {cpus} CPU(s); \
         router: {}, nginx/HAProxy workers: {workers}; upstreams: a process each",
        if serve_on_threads() {
            format!("{workers} thread(s) with a current-thread runtime each, as the data plane serves")
        } else {
            match arg("--threads", 0) {
                0 => format!("tasks of a runtime with {workers} worker(s), one per CPU it may use"),
                1 => "tasks of a current-thread runtime".to_owned(),
                n => format!("tasks of a runtime with {n} workers"),
            }
        }
    );
    match pinned {
        Some(cpu) => println!(
            "pinned: load generator (own process) on CPU {cpu}; router, upstreams, relay, nginx and HAProxy on CPU 0-{}",
            cpus - 2
        ),
        None => println!("not pinned: the load generator shares this process's CPUs"),
    }
    if sections.plain {
        plain_section(router_addr, v1, &host, (load, warmup), rounds, pinned, workers).await?;
    }
    if sections.tls {
        tls_section(&router, &host, v1, (load, warmup), rounds, pinned, workers).await?;
    }
    if pinned.is_some() {
        // The switch section generates load in this process: every CPU again.
        pin_self(&format!("0-{}", cpus - 1))?;
    }
    if sections.switch {
        switch_under_load(&router, &route, router_addr, (v1, v2), conns).await;
    }
    drop(upstreams);
    Ok(())
}

/// The sections `--only` names (comma-separated; all three by default).
struct Sections {
    plain: bool,
    tls: bool,
    switch: bool,
}

impl Sections {
    fn parse(list: &str) -> std::io::Result<Sections> {
        let mut s = Sections {
            plain: false,
            tls: false,
            switch: false,
        };
        for name in list.split(',').map(str::trim) {
            match name {
                "plain" => s.plain = true,
                "tls" => s.tls = true,
                "switch" => s.switch = true,
                other => {
                    return Err(std::io::Error::other(format!(
                        "--only: unknown section {other:?} (known: plain, tls, switch; e.g. --only tls)"
                    )));
                }
            }
        }
        Ok(s)
    }
}

/// Section 1: plain HTTP/1.1 through the router and the reference proxies, against direct.
async fn plain_section(
    router_addr: SocketAddr,
    v1: SocketAddr,
    host: &str,
    (load, warmup): (Load, Load),
    rounds: u64,
    pinned: Option<usize>,
    workers: usize,
) -> std::io::Result<()> {
    let relay = tcp_relay(v1).await?;
    let mut externals = Vec::new();
    for kind in [Kind::Nginx, Kind::Haproxy] {
        match External::start(kind, v1, workers) {
            Ok(Some(p)) => externals.push((kind.name(), p)),
            Ok(None) => println!("{}: not installed, skipped", kind.name()),
            Err(e) => println!("{}: {e}", kind.name()),
        }
    }
    // (name, address, the process serving it when not this one)
    let mut targets = vec![
        ("direct", v1, None),
        ("via router", router_addr, None),
        ("tcp relay", relay, None),
    ];
    targets.extend(externals.iter().map(|(n, p)| (*n, p.addr, Some(p.pid()))));

    // Interleaved rounds (direct, router, relay, nginx, haproxy, direct, …) so that a
    // neighbour's load on this shared machine falls on every phase alike rather than on one.
    struct Acc {
        samples: Vec<Sample>,
        elapsed: Duration,
        proc_cpu: Duration,
        all_cpu: Duration,
    }
    let mut acc: Vec<Acc> = targets
        .iter()
        .map(|_| Acc {
            samples: Vec::new(),
            elapsed: Duration::ZERO,
            proc_cpu: Duration::ZERO,
            all_cpu: Duration::ZERO,
        })
        .collect();
    for _ in 0..rounds {
        for ((_, addr, serving), a) in targets.iter().zip(acc.iter_mut()) {
            let (proc_cpu, all_cpu, (mut samples, elapsed)) =
                measure(*addr, host, Wire::Plain, load, warmup, pinned, *serving).await?;
            a.samples.append(&mut samples);
            a.elapsed += elapsed;
            a.proc_cpu += proc_cpu;
            a.all_cpu += all_cpu;
        }
    }
    let rows: Vec<_> = targets
        .iter()
        .zip(&acc)
        .map(|((name, _, _), a)| {
            let s = summarize(&a.samples, a.elapsed);
            (
                *name,
                s,
                per_req(a.proc_cpu, s.requests),
                per_req(a.all_cpu, s.requests),
            )
        })
        .collect();
    drop(externals);
    println!();
    println!(
        "{:<14}{:>10}{:>10}{:>9}{:>11}{:>11}{:>10}{:>10}{:>8}",
        "", "requests", "req/s", "failed", "p50", "p99", "proc CPU", "all CPU", "ratio"
    );
    let direct = rows[0].1;
    for (name, s, pcpu, mcpu) in &rows {
        println!(
            "{name:<14}{:>10}{:>10.0}{:>9}{:>11}{:>11}{:>10}{:>10}{:>7.2}x",
            s.requests,
            s.rps,
            s.failures,
            micros(s.p50),
            micros(s.p99),
            pcpu,
            mcpu,
            s.rps / direct.rps,
        );
    }
    println!(
        "(CPU columns are per request: proc = the serving process: this one for the router and \
         the relay (with the load generator unless pinned; not the upstreams), nginx's master \
         and workers, HAProxy; all = every CPU of the machine, so the upstreams and the load \
         generator are counted too; ratio = req/s against direct)"
    );
    let p = rows[1].1;
    let relay = rows[2].1;
    println!(
        "throughput ratio router/direct: {:.2}x (goal >= 0.80x); p50 +{}, p99 +{}",
        p.rps / direct.rps,
        micros(p.p50.saturating_sub(direct.p50)),
        micros(p.p99.saturating_sub(direct.p99)),
    );
    println!(
        "upper bound on this machine (tcp relay, no HTTP parsing): {:.2}x; \
         the router reaches {:.0} % of it",
        relay.rps / direct.rps,
        100.0 * p.rps / relay.rps
    );
    if let Some((_, nginx, nginx_cpu, _)) = rows.iter().find(|r| r.0 == "nginx") {
        println!(
            "router vs nginx: {:.2}x the throughput (goal >= 1.00x), p99 {} vs {} (goal: lower); \
             CPU per request {} vs {}",
            p.rps / nginx.rps,
            micros(p.p99),
            micros(nginx.p99),
            rows[1].2.trim(),
            nginx_cpu.trim()
        );
    }
    Ok(())
}

/// CPU time so far of the process serving a target: `serving` (and its children), else this one.
fn serving_cpu_time(serving: Option<u32>) -> Option<Duration> {
    match serving {
        Some(pid) => cutover_bench::reference::tree_cpu_time(pid),
        None => process_cpu_time(),
    }
}

/// CPU time used since a mark by the process serving a target (`serving_cpu_time`) and by
/// the whole machine.
struct CpuMark {
    serving: Option<u32>,
    proc: Option<Duration>,
    all: Option<Duration>,
}

impl CpuMark {
    fn now(serving: Option<u32>) -> Self {
        Self {
            serving,
            proc: serving_cpu_time(serving),
            all: machine_cpu_time(),
        }
    }

    /// (the serving process's, the machine's) CPU time since the mark; zero when unknown.
    fn used(&self) -> (Duration, Duration) {
        let since = |start: Option<Duration>, end: Option<Duration>| {
            end.zip(start).map_or(Duration::ZERO, |(e, s)| e - s)
        };
        (
            since(self.proc, serving_cpu_time(self.serving)),
            since(self.all, machine_cpu_time()),
        )
    }
}

/// One warm-up then one measured load against `addr`: in a child pinned to CPU `pinned` when
/// given, else in this process. Returns the CPU time the serving process and the machine used
/// during the measured load ([`CpuMark::used`]), then its samples and wall time.
async fn measure(
    addr: SocketAddr,
    host: &str,
    wire: Wire,
    load: Load,
    warmup: Load,
    pinned: Option<usize>,
    serving: Option<u32>,
) -> std::io::Result<(Duration, Duration, (Vec<Sample>, Duration))> {
    if let Some(cpu) = pinned {
        let host = host.to_owned();
        return tokio::task::spawn_blocking(move || {
            run_load_pinned(addr, &host, warmup, cpu, &wire)?;
            let mark = CpuMark::now(serving);
            let r = run_load_pinned(addr, &host, load, cpu, &wire)?;
            let (proc_cpu, all_cpu) = mark.used();
            Ok((proc_cpu, all_cpu, r))
        })
        .await
        .map_err(std::io::Error::other)?;
    }
    let go = |l: Load| {
        let wire = wire.clone();
        async move {
            match &wire {
                Wire::Plain => run_load(addr, host, l).await,
                Wire::Tls { cert, h2 } => run_tls_load(addr, host, cert, *h2, l).await,
            }
        }
    };
    go(warmup).await;
    let mark = CpuMark::now(serving);
    let r = go(load).await;
    let (proc_cpu, all_cpu) = mark.used();
    Ok((proc_cpu, all_cpu, r))
}

/// 2. The same load over TLS (one self-signed certificate, served by the router and by nginx),
///    HTTP/1.1 and HTTP/2 by ALPN, interleaved rounds, the generator pinned apart as in
///    section 1; prints req/s, p50, p99 and the router's ratio against nginx per protocol.
async fn tls_section(
    router: &Router,
    host: &str,
    upstream: SocketAddr,
    (load, warmup): (Load, Load),
    rounds: u64,
    pinned: Option<usize>,
    workers: usize,
) -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let cert = self_signed(dir.path(), host)?;
    let certs = TlsCerts::load(vec![CertFiles {
        hosts: vec![host.to_owned()],
        cert: cert.cert.clone(),
        key: cert.key.clone(),
    }])
    .map_err(std::io::Error::other)?;
    let opts = TlsOptions {
        certs: std::sync::Arc::new(certs),
        hsts: None,
    };
    let router_tls = start_router(router, Listening::TlsWith(opts), workers).await?;
    let nginx = match External::start_with_tls(Kind::Nginx, upstream, workers, Some((&cert.cert, &cert.key)))
    {
        Ok(n) => n,
        Err(e) => {
            println!("nginx (TLS): {e}");
            None
        }
    };
    // (name, address, HTTP/2, the process serving it when not this one)
    let mut targets = vec![
        ("router h1/tls", router_tls, false, None),
        ("router h2", router_tls, true, None),
    ];
    if let Some(n) = &nginx {
        targets.push(("nginx h1/tls", n.addr, false, Some(n.pid())));
        targets.push(("nginx h2", n.addr, true, Some(n.pid())));
    } else {
        println!("nginx: not installed, TLS comparison skipped");
    }
    // (samples, wall time, the serving process's CPU time)
    let mut acc: Vec<(Vec<Sample>, Duration, Duration)> = targets
        .iter()
        .map(|_| (Vec::new(), Duration::ZERO, Duration::ZERO))
        .collect();
    for _ in 0..rounds {
        for ((_, addr, h2, serving), a) in targets.iter().zip(acc.iter_mut()) {
            let wire = Wire::Tls {
                cert: cert.clone(),
                h2: *h2,
            };
            let (proc_cpu, _, (mut samples, elapsed)) =
                measure(*addr, host, wire, load, warmup, pinned, *serving).await?;
            a.0.append(&mut samples);
            a.1 += elapsed;
            a.2 += proc_cpu;
        }
    }
    println!();
    println!(
        "TLS (one self-signed certificate, {} keep-alive connections):",
        load.connections
    );
    println!(
        "{:<14}{:>10}{:>10}{:>9}{:>11}{:>11}{:>10}{:>14}",
        "", "requests", "req/s", "failed", "p50", "p99", "proc CPU", "vs nginx"
    );
    let sums: Vec<_> = acc.iter().map(|(s, e, _)| summarize(s, *e)).collect();
    for (i, ((name, _, _, _), s)) in targets.iter().zip(&sums).enumerate() {
        let vs = sums
            .get(i + 2)
            .filter(|_| i < 2)
            .map_or(String::new(), |n| format!("{:.2}x", s.rps / n.rps));
        println!(
            "{name:<14}{:>10}{:>10.0}{:>9}{:>11}{:>11}{:>10}{:>14}",
            s.requests,
            s.rps,
            s.failures,
            micros(s.p50),
            micros(s.p99),
            per_req(acc[i].2, s.requests),
            vs
        );
    }
    println!("(proc CPU: per request, of the serving process as in the table above)");
    drop(nginx);
    Ok(())
}

/// CPU time per request to a tenth of a µs (the CPU times are read to 10 ms; a round's
/// tens of thousands of requests make a tenth meaningful).
fn per_req(cpu: Duration, n: usize) -> String {
    match n {
        0 => "n/a".to_owned(),
        n => format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / n as f64),
    }
}

/// Serves `listening` on 127.0.0.1:0 the data plane's way ([`Router::serve_threads`],
/// `workers` threads with a runtime each; the default, `--serve threads`) or as tasks of this
/// process's runtime (`--serve tasks`, the runtime chosen by `--threads`).
async fn start_router(router: &Router, listening: Listening, workers: usize) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let r = router.clone();
    if serve_on_threads() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _stop = stop; // never sent: serves until the process ends
            r.serve_threads(listening, listener, workers, stopped).await
        });
        return Ok(addr);
    }
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        match listening {
            Listening::TlsWith(opts) => r.serve_tls(listener, opts, std::future::pending()).await,
            _ => r.serve(listener, std::future::pending()).await,
        }
    });
    Ok(addr)
}

/// `--serve threads` (default) or `--serve tasks`.
fn serve_on_threads() -> bool {
    arg("--serve", "threads".to_owned()) != "tasks"
}

async fn switch_under_load(
    router: &Router,
    route: &RouteKey,
    router_addr: SocketAddr,
    (v1, v2): (SocketAddr, SocketAddr),
    conns: usize,
) {
    router.switch(route, Backend::new(sha('1'), vec![v1]));
    let load = Load {
        connections: conns,
        duration: SWITCH_EVERY * (SWITCHES as u32 + 2),
        max_requests: MAX_REQUESTS,
    };
    let host = router.host_of(route);
    let load_task = tokio::spawn(async move { run_load(router_addr, &host, load).await });

    // Per switch: instant before calling `switch`, instant it returned, the version switched
    // to, requests still on the old generation then, and how many drain left after 5 s.
    let mut switches = Vec::with_capacity(SWITCHES);
    tokio::time::sleep(SWITCH_EVERY).await;
    for i in 0..SWITCHES {
        let (version, addr) = if i % 2 == 0 {
            (sha('2'), v2)
        } else {
            (sha('1'), v1)
        };
        let before = Instant::now();
        let old = router.switch(route, Backend::new(version.clone(), vec![addr]));
        let at = Instant::now();
        let in_flight = old.as_ref().map_or(0, |g| g.in_flight());
        let left = match old {
            Some(g) => g.drain(Duration::from_secs(5)).await,
            None => 0,
        };
        switches.push((before, at, version, in_flight, left));
        tokio::time::sleep(SWITCH_EVERY).await;
    }
    let Ok((samples, elapsed)) = load_task.await else {
        println!("switch under load: load task panicked");
        return;
    };
    let s = summarize(&samples, elapsed);
    println!();
    println!(
        "switch under load: {SWITCHES} switches every {} ms between 2 versions, {} requests, \
         {} failed, {:.0} req/s",
        SWITCH_EVERY.as_millis(),
        s.requests,
        s.failures,
        s.rps
    );
    println!(
        "{:<8}{:>9}{:>14}{:>11}{:>10}{:>12}{:>13}",
        "switch", "to", "in-flight@sw", "undrained", "checked", "straddling", "old answers"
    );
    // A request sent after switch `i` returned and answered before switch `i + 1` began must
    // carry version `i`. One sent after `i` but still running when `i + 1` began may carry
    // either (the versions alternate, so the body cannot tell them apart): not checked.
    let mut total_old = 0;
    for (i, (_, at, version, in_flight, left)) in switches.iter().enumerate() {
        let next = switches.get(i + 1).map(|s| s.0);
        let after: Vec<&Sample> = samples.iter().filter(|x| x.sent > *at).collect();
        let (checked, straddling): (Vec<&Sample>, Vec<&Sample>) = after
            .iter()
            .filter(|x| next.is_none_or(|n| x.sent < n))
            .partition(|x| next.is_none_or(|n| x.sent + x.latency < n));
        let old = checked
            .iter()
            .filter(|x| x.answer.is_some_and(|b| b != version.as_bytes()[0]))
            .count();
        total_old += old;
        println!(
            "{:<8}{:>9}{:>14}{:>11}{:>10}{:>12}{:>13}",
            i + 1,
            &version[..7],
            in_flight,
            left,
            checked.len(),
            straddling.len(),
            old
        );
    }
    println!("old-version answers after a switch, total: {total_old}");
}

//! Reference proxies for `router_overhead`: what other programs reach on the same machine, with
//! the same load, so the router's throughput ratio can be read against what is possible here.
//!
//! - [`tcp_relay`]: a byte relay in this process (tokio `copy_bidirectional`, one upstream
//!   connection per client connection). It parses no HTTP at all, so it cannot route per
//!   request, switch atomically or add headers; it is the cheapest thing a user-space proxy
//!   can do per request and so an upper bound for any of them.
//! - [`External`]: nginx or HAProxy from the distribution (`apt-get install nginx-light
//!   haproxy`), started with a generated configuration (upstream keep-alive on, access logs
//!   off, as many workers/threads as the router has runtime workers: one per CPU it may use)
//!   and stopped when dropped. Skipped when the binary
//!   is not installed.

// Benchmarks start the real binary, baselines and fixture tools directly.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// Starts a TCP relay on 127.0.0.1:0 that forwards every accepted connection to `upstream`.
pub async fn tcp_relay(upstream: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    Ok(addr)
}

/// Which distribution proxy to start.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    fn binary(self) -> Option<PathBuf> {
        let name = self.name();
        ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    }
}

/// A running nginx or HAProxy reverse proxy in front of one upstream; killed on drop.
pub struct External {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl External {
    /// Starts `kind` in front of `upstream`. `Ok(None)` when it is not installed; an error
    /// (with its log) when it is but does not start listening within 5 s.
    pub fn start(kind: Kind, upstream: SocketAddr, workers: usize) -> std::io::Result<Option<External>> {
        Self::start_with_tls(kind, upstream, workers, None)
    }

    /// As [`External::start`] (`workers`: nginx's worker processes, HAProxy's threads); with `tls` (certificate and key PEM files), nginx terminates
    /// TLS with HTTP/2 and HTTP/1.1 by ALPN (HAProxy is then skipped: `Ok(None)`).
    pub fn start_with_tls(
        kind: Kind,
        upstream: SocketAddr,
        workers: usize,
        tls: Option<(&Path, &Path)>,
    ) -> std::io::Result<Option<External>> {
        let Some(bin) = kind.binary() else {
            return Ok(None);
        };
        if tls.is_some() && !matches!(kind, Kind::Nginx) {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("cutover-bench-proxy-")
            .tempdir()?;
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.path().display();
        let mut cmd = match kind {
            Kind::Nginx => {
                let listen = match tls {
                    Some((cert, key)) => format!(
                        "listen {addr} ssl http2;\n ssl_certificate {};\n ssl_certificate_key {};\n ssl_session_cache off;",
                        cert.display(),
                        key.display()
                    ),
                    None => format!("listen {addr};"),
                };
                let conf = format!(
                    "worker_processes {workers};\n\
                     pid {d}/nginx.pid;\n\
                     error_log {d}/error.log warn;\n\
                     events {{ worker_connections 1024; }}\n\
                     http {{\n\
                       access_log off;\n\
                       keepalive_requests 10000000;\n\
                       client_body_temp_path {d}/body;\n\
                       proxy_temp_path {d}/proxy;\n\
                       fastcgi_temp_path {d}/fastcgi;\n\
                       uwsgi_temp_path {d}/uwsgi;\n\
                       scgi_temp_path {d}/scgi;\n\
                       upstream up {{ server {upstream}; keepalive 64; }}\n\
                       server {{\n\
                         {listen}\n\
                         location / {{\n\
                           proxy_pass http://up;\n\
                           proxy_http_version 1.1;\n\
                           proxy_set_header Connection \"\";\n\
                         }}\n\
                       }}\n\
                     }}\n"
                );
                std::fs::write(dir.path().join("nginx.conf"), conf)?;
                let mut c = Command::new(bin);
                c.arg("-p")
                    .arg(dir.path())
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-c")
                    .arg(dir.path().join("nginx.conf"))
                    .args(["-g", "daemon off;"]);
                c
            }
            Kind::Haproxy => {
                let conf = format!(
                    "global\n  maxconn 4096\n  nbthread {workers}\n\
                     defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
                     timeout server 30s\n  option http-keep-alive\n  http-reuse always\n\
                     frontend f\n  bind {addr}\n  default_backend b\n\
                     backend b\n  server s1 {upstream}\n"
                );
                std::fs::write(dir.path().join("haproxy.cfg"), conf)?;
                let mut c = Command::new(bin);
                c.arg("-db").arg("-f").arg(dir.path().join("haproxy.cfg"));
                c
            }
        };
        let log = std::fs::File::create(dir.path().join("stderr.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut proxy = External {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while StdStream::connect(addr).is_err() {
            let exited = proxy.child.try_wait()?.is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(proxy._dir.path().join("stderr.log")).unwrap_or_default()
                    + &std::fs::read_to_string(proxy._dir.path().join("error.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "{} did not start listening on {addr}: {}",
                    kind.name(),
                    log.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(proxy))
    }
}

impl External {
    /// The proxy's (master) process id, for [`tree_cpu_time`].
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time used so far by process `pid` and its children (nginx's master and workers).
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut total = crate::pid_cpu_time(&pid.to_string())?;
    for child in children.split_whitespace() {
        total += crate::pid_cpu_time(child).unwrap_or_default();
    }
    Some(total)
}

impl Drop for External {
    fn drop(&mut self) {
        // nginx: SIGKILL to the master leaves its workers; they exit when the master's
        // pipe closes, and the prefix directory goes with `_dir`. Ask politely first.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Busy CPU time of the whole machine so far (all CPUs, from `/proc/stat`: everything but idle
/// and iowait), so that proxies running in other processes are counted too.
pub fn machine_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4)?;
    Some(Duration::from_millis((total - idle) * 10))
}

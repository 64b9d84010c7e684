//! The API's accept loop: HTTP/1.1 per connection with a header-read timeout, a
//! request-body timeout, the peer address for the failed-authentication limit, and
//! graceful shutdown bounded by a grace period.
//!
//! A client that opens a connection and drips one header line every few seconds, or
//! keeps an idle keep-alive connection, is cut after [`ApiTimeouts::header_read`]
//! (hyper's header-read timer also runs while a kept-alive connection waits for its next
//! request); a request body that does not arrive within [`ApiTimeouts::body_read`] fails
//! (JSON handlers answer 400 saying the body could not be read; others 408). Answers themselves are not bounded: `follow` log streams last as long as
//! their run. Rejected: `axum::serve`, which exposes neither timer (it is why a dripping
//! client could hold a connection for minutes), and hyper-util's `auto` builder (HTTP/2
//! buys nothing for the CLI and dashboard and would need its own keep-alive settings).
//!
//! With `--tls-cert`/`--tls-key` ([`ApiTls`]) the same loop serves HTTPS: the handshake is
//! bounded by the header-read timeout, and the files are watched like the router's
//! (`cutover_router::TlsCerts`, checked every second: a renewed certificate is used for new
//! connections, open ones keep theirs, a pair that does not load keeps the previous one).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// Environment variable that changes [`ApiTimeouts::header_read`] (seconds).
pub const HEADER_TIMEOUT_VAR: &str = "CUTOVER_API_HEADER_TIMEOUT_SECS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTimeouts {
    /// A request's headers must arrive within this, and an idle connection is closed after it.
    pub header_read: Duration,
    /// A request's body must arrive within this (else a 4xx).
    pub body_read: Duration,
    /// After SIGTERM, requests in flight get this long before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ApiTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

impl ApiTimeouts {
    /// The defaults (30 s), with `CUTOVER_API_HEADER_TIMEOUT_SECS` applied to the header
    /// and body reads.
    pub fn from_env() -> Result<Self, String> {
        let mut t = Self::default();
        if let Ok(raw) = std::env::var(HEADER_TIMEOUT_VAR) {
            let secs: u64 = raw.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("{HEADER_TIMEOUT_VAR}={raw:?} is not a positive whole number of seconds, e.g. 30")
            })?;
            t.header_read = Duration::from_secs(secs);
            t.body_read = Duration::from_secs(secs);
        }
        Ok(t)
    }
}

/// The API's certificate and key (PEM files, reloaded when they change).
#[derive(Clone, Debug)]
pub struct ApiTls {
    certs: std::sync::Arc<cutover_router::TlsCerts>,
}

impl ApiTls {
    /// Loads the pair; the error names the file and what was wrong with it.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, cutover_router::TlsError> {
        let certs = cutover_router::TlsCerts::load(vec![cutover_router::CertFiles {
            // No name: the only certificate, served whatever the client's SNI.
            hosts: Vec::new(),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }])?;
        Ok(Self {
            certs: std::sync::Arc::new(certs),
        })
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` resolves, then lets
/// requests in flight finish for at most `timeouts.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: ApiTimeouts,
    tls: Option<ApiTls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        timeouts.body_read,
    ));
    let acceptor = tls.as_ref().map(|t| {
        tokio_rustls::TlsAcceptor::from(cutover_router::server_config_with_alpn(&t.certs, &[b"http/1.1"]))
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut reload = tokio::time::interval(cutover_router::RELOAD_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = reload.tick(), if tls.is_some() => {
                if let Some(t) = &tls {
                    let certs = std::sync::Arc::clone(&t.certs);
                    // stat + parse off the runtime's worker threads
                    let _ = tokio::task::spawn_blocking(move || certs.reload_if_changed()).await;
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let stop = stop_rx.clone();
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    match acceptor {
                        None => serve_conn(stream, peer, app, timeouts, stop).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(timeouts.header_read, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => serve_conn(stream, peer, app, timeouts, stop).await,
                                Ok(Err(e)) => tracing::debug!(source = %peer, error = %e, "API TLS handshake failed"),
                                Err(_) => tracing::debug!(source = %peer, "API TLS handshake too slow"),
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(timeouts.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "API shutdown grace elapsed; closing the remaining connections (log followers)"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// One connection, plain or TLS: HTTP/1.1 until it closes or the server stops.
async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    timeouts: ApiTimeouts,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_conn(peer, r),
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            log_conn(peer, conn.await);
        }
    }
}

fn log_conn(peer: SocketAddr, result: Result<(), hyper::Error>) {
    match result {
        Err(e) if e.is_timeout() => {
            tracing::info!(source = %peer, "API connection closed: its request headers did not arrive in time (or it sat idle)");
        }
        Err(e) => tracing::debug!(source = %peer, error = ?e, "API connection ended with an error"),
        Ok(()) => {}
    }
}

/// Accept errors are per connection (reset, aborted) or resource exhaustion (EMFILE):
/// neither stops the server. Back off briefly on the latter.
async fn accept_error(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => {}
        _ => {
            tracing::warn!(error = %e, "API accept failed; retrying shortly");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

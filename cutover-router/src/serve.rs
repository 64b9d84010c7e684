//! Listeners: accept loop, per-connection HTTP/1.1 serving, graceful shutdown.
//!
//! Each connection runs in its own task inside a `JoinSet`, so shutdown can (1) stop
//! accepting, (2) give every connection a last call (up to 1 s) for a request already on its
//! way, then ask it to finish its current request and close (`graceful_shutdown`), (3) wait for
//! them up to `shutdown_grace`, then (4) drop the rest and close upgraded tunnels. Without the
//! last call, `graceful_shutdown` closes a connection accepted a moment before the stop whose
//! request head is not read yet, failing a request that reached the listener (hand-overs of the
//! listening socket to a newer data plane hit this every time under load). Rejected: hyper-util's `GracefulShutdown` watcher, which does not
//! accept HTTP/1 connections with upgrades enabled; hyper-util's `auto` builder (HTTP/2 from
//! clients buys nothing for local services and complicates per-request accounting).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::proxy::{self, ConnCtx, Target};
use crate::{RouteKey, Router};

impl Router {
    /// Serves `listener`, routing each request by its `Host`, until `shutdown` resolves; then
    /// stops accepting and lets in-flight requests finish (bounded by
    /// [`crate::RouterConfig::shutdown_grace`]).
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        self.serve_target(Target::ByHost, listener, shutdown).await
    }

    /// Like [`Router::serve`], but every request goes to `route` whatever its `Host` (a fixed
    /// port per environment and service). The route may be switched or even absent (→ 404).
    pub async fn serve_fixed(
        &self,
        route: RouteKey,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let host = self.host_of(&route);
        self.serve_target(Target::Fixed(host.into()), listener, shutdown)
            .await
    }

    async fn serve_target(
        &self,
        target: Target,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let config = &self.inner.config;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (hard_tx, hard_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            accept_error(e).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let ctx = Arc::new(ConnCtx {
                        inner: Arc::clone(&self.inner),
                        target: target.clone(),
                        peer,
                        proto: "http",
                        hard_stop: hard_rx.clone(),
                    });
                    let mut stop = stop_rx.clone();
                    let header_timeout = config.client_header_timeout;
                    let last_call = config.shutdown_grace.min(LAST_CALL);
                    let (requests, _) = watch::channel(0u64);
                    let mut started = requests.subscribe();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            requests.send_modify(|n| *n += 1);
                            proxy::handle(Arc::clone(&ctx), req)
                        });
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(header_timeout)
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            r = conn.as_mut() => log_conn(r),
                            () = async { let _ = stop.wait_for(|s| *s).await; } => {
                                // Last call: a request that is on its way (on a connection
                                // accepted a moment ago, or on an idle keep-alive one) is still
                                // served, with `Connection: close`.
                                started.mark_unchanged(); // only requests after the stop
                                tokio::select! {
                                    r = conn.as_mut() => return log_conn(r),
                                    _ = started.changed() => {}
                                    () = tokio::time::sleep(last_call) => {}
                                }
                                conn.as_mut().graceful_shutdown();
                                log_conn(conn.await);
                            }
                        }
                    });
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let open = conns.len();
        if open > 0 {
            tracing::info!(open, "router shutting down: waiting for in-flight requests");
        }
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = conns.len(),
                "router shutdown grace elapsed; closing remaining connections"
            );
            conns.shutdown().await;
        }
        let _ = hard_tx.send(true);
        Ok(())
    }
}

/// On shutdown, how long a connection without a request in flight is kept open for one that
/// is on its way (bounded by the shutdown grace). Closing at once would fail requests that
/// already reached the listener: a connection accepted just before the stop whose request head
/// is not read yet (the last requests before a data-plane hand-over), or a keep-alive client
/// sending its next request as the connection closes.
pub(crate) const LAST_CALL: Duration = Duration::from_secs(1);

fn log_conn(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = ?e, "client connection ended with an error");
    }
}

/// Accept errors are per-connection (reset, aborted) or resource exhaustion (EMFILE): neither
/// should stop the router. Back off briefly on the latter.
async fn accept_error(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => {}
        _ => {
            tracing::warn!(error = %e, "accept failed; retrying shortly");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

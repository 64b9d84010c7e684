//! Listeners: accept loop, per-connection serving (the router's own HTTP/1.1 path in `fast`,
//! hyper's for the connections it hands over), graceful shutdown.
//!
//! Each connection runs in its own task inside a `JoinSet`, so shutdown can (1) stop
//! accepting, (2) give every connection a last call (up to 1 s) for a request already on its
//! way, then ask it to finish its current request and close (`graceful_shutdown`), (3) wait for
//! them up to `shutdown_grace`, then (4) drop the rest and close upgraded tunnels. Without the
//! last call, `graceful_shutdown` closes a connection accepted a moment before the stop whose
//! request head is not read yet, failing a request that reached the listener (hand-overs of the
//! listening socket to a newer data plane hit this every time under load). The TLS listener
//! (`tls`) runs the same loop ([`Router::accept_loop`], [`drive`]) with a handshake in front
//! and its certificates' reload on the loop's tick. Rejected: hyper-util's `GracefulShutdown` watcher, which does not
//! accept HTTP/1 connections with upgrades enabled; hyper-util's `auto` builder (HTTP/2 from
//! clients buys nothing for local services and complicates per-request accounting).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::client_stream::ClientStream;
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
        self.accept_loop(target, "http", listener, None, shutdown, crate::fast::serve_conn)
            .await
    }

    /// The accept loop every listener shares: each accepted connection gets its context and
    /// runs `serve_conn` in its own task; `reload` (a TLS listener's certificates) is checked
    /// every [`crate::RELOAD_EVERY`]. On shutdown: stop accepting, tell every connection (its
    /// last call, see [`drive`]), wait for them up to the shutdown grace, then drop the rest
    /// and close upgraded tunnels.
    pub(crate) async fn accept_loop<F, Fut>(
        &self,
        target: Target,
        proto: &'static str,
        listener: TcpListener,
        reload: Option<Arc<crate::TlsCerts>>,
        shutdown: impl Future<Output = ()>,
        serve_conn: F,
    ) -> io::Result<()>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let config = &self.inner.config;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (hard_tx, hard_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut tick = tokio::time::interval(crate::RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        // A place under the connection cap, taken before the next accept.
        let mut slot = None;
        let limit = &self.inner.conn_limit;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                taken = limit.take(), if slot.is_none() => slot = Some(taken),
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = tick.tick(), if reload.is_some() => {
                    if let Some(certs) = &reload {
                        let certs = Arc::clone(certs);
                        // stat + parse off the runtime's worker threads
                        let _ = tokio::task::spawn_blocking(move || certs.reload_if_changed()).await;
                    }
                }
                accepted = listener.accept(), if slot.is_some() => {
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
                        upstreams: Arc::clone(&self.upstreams),
                        target: target.clone(),
                        peer,
                        hop: crate::forwarded::Hop::new(peer),
                        proto,
                        hard_stop: hard_rx.clone(),
                    });
                    conns.spawn(serve_conn(Conn {
                        ctx,
                        stream,
                        stop: stop_rx.clone(),
                        requests: Arc::default(),
                        last_call: config.shutdown_grace.min(LAST_CALL),
                        header_timeout: config.client_header_timeout,
                        send_timeout: config.client_send_timeout,
                        slot: slot.take().expect("accepting only with a place"),
                    }));
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let open = conns.len();
        if open > 0 {
            tracing::info!(
                open,
                proto,
                "router listener shutting down: waiting for in-flight requests"
            );
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

/// What a listener hands each accepted connection.
pub(crate) struct Conn {
    pub(crate) ctx: Arc<ConnCtx>,
    pub(crate) stream: TcpStream,
    /// Flips to `true` when the listener stops.
    pub(crate) stop: watch::Receiver<bool>,
    /// Told of every request begun on the connection (the service calls [`Requests::begin`]).
    pub(crate) requests: Arc<Requests>,
    pub(crate) last_call: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) send_timeout: Duration,
    /// Its place under the connection cap, held by its socket.
    pub(crate) slot: crate::limit::Slot,
}

/// A connection's requests as its [`drive`] needs to know them: one begun after the stop ends
/// the last call. Nothing is counted or woken before the stop (a watch channel bumped per
/// request cost about 2 % of the router's user time).
#[derive(Default)]
pub(crate) struct Requests {
    watching: AtomicBool,
    begun: Notify,
}

impl Requests {
    /// A request begins (called by the connection's service).
    pub(crate) fn begin(&self) {
        if self.watching.load(Ordering::SeqCst) {
            // A permit is kept if `drive` is not waiting yet.
            self.begun.notify_one();
        }
    }
}

/// Serves an HTTP/1.1 connection with hyper (bodies, upgrades, whatever is not plain) from its
/// current point to its end: the connections [`crate::fast`] hands over.
pub(crate) async fn serve_hyper<IO>(conn: crate::fast::Stream, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let crate::fast::Stream {
        ctx,
        stop,
        requests,
        last_call,
        header_timeout,
        hsts,
        .. // the send timeout is the stream's
    } = conn;
    let svc = service(ctx, Arc::clone(&requests), hsts);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let r = drive(conn, |c| c.graceful_shutdown(), stop, &requests, last_call).await;
    log_conn(r);
}

impl Conn {
    /// The connection's settings for serving it over its stream (or over TLS on top of it),
    /// with the listener's HSTS.
    pub(crate) fn into_stream(
        self,
        hsts: Option<http::HeaderValue>,
    ) -> (crate::fast::Stream, ClientStream<TcpStream>) {
        let stream = crate::fast::Stream {
            ctx: self.ctx,
            stop: self.stop,
            requests: self.requests,
            last_call: self.last_call,
            header_timeout: self.header_timeout,
            send_timeout: self.send_timeout,
            hsts,
        };
        (
            stream,
            ClientStream::new(self.stream, self.send_timeout, Some(self.slot)),
        )
    }
}

/// The hyper service of a client connection: every request is routed and forwarded, told to
/// `begun` (the last call, see [`drive`]), and answered with the listener's HSTS if any.
pub(crate) fn service(
    ctx: Arc<ConnCtx>,
    begun: Arc<Requests>,
    hsts: Option<http::HeaderValue>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::RouterBody>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        begun.begin();
        let ctx = Arc::clone(&ctx);
        let hsts = hsts.clone();
        // Boxed: the request's future is 3.4 KiB (a test build's `size_of`) and hyper moves
        // what this returns into its own state, a copy each time; a box is one allocation
        // (measured with `router_overhead` when hyper served HTTP/2 too: memcpy from 4.1 % to
        // 2.6 % of the serving thread's time).
        Box::pin(async move {
            let mut resp = proxy::handle(ctx, req.map(crate::body::ClientBody::Hyper)).await?;
            if let Some(v) = hsts {
                resp.headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, v);
            }
            Ok::<_, std::convert::Infallible>(resp)
        })
    })
}

/// Runs one client connection to its end. When the listener stops: the last call (a request
/// that is on its way, on a connection accepted a moment ago or an idle keep-alive one, is
/// still served, with `Connection: close`), then `graceful` asks it to finish and close.
pub(crate) async fn drive<C: Future>(
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    mut stop: watch::Receiver<bool>,
    requests: &Requests,
    last_call: Duration,
) -> C::Output {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            requests.watching.store(true, Ordering::SeqCst); // only requests after the stop
            tokio::select! {
                r = conn.as_mut() => return r,
                () = requests.begun.notified() => {}
                () = tokio::time::sleep(last_call) => {}
            }
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// On shutdown, how long a connection without a request in flight is kept open for one that
/// is on its way (bounded by the shutdown grace). Closing at once would fail requests that
/// already reached the listener: a connection accepted just before the stop whose request head
/// is not read yet (the last requests before a data-plane hand-over), or a keep-alive client
/// sending its next request as the connection closes.
pub(crate) const LAST_CALL: Duration = Duration::from_secs(1);

fn log_conn<E: std::fmt::Debug>(result: Result<(), E>) {
    if let Err(e) = result {
        tracing::debug!(error = ?e, "client connection ended with an error");
    }
}

/// Accept errors are per-connection (reset, aborted) or resource exhaustion (EMFILE): neither
/// should stop the router. Back off briefly on the latter.
pub(crate) async fn accept_error(e: io::Error) {
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

//! Serving one listening socket from several threads, each with a current-thread tokio runtime
//! and its own duplicate of the socket: the data plane's way for its main and TLS listeners.
//!
//! Why: a proxied request is a handful of small steps (read the client, write the upstream,
//! read the upstream, write the client) handed between tasks; on tokio's multi-thread scheduler
//! every hand-over pays for work-stealing bookkeeping and, across workers, a wake-up of another
//! thread. One current-thread runtime per CPU keeps a connection, its upstream connection task
//! and its timers on one thread, as nginx's and HAProxy's workers do. Measured with
//! `router_overhead` (bench/README.md): 28–29 µs of CPU per request against 31 µs for one
//! multi-thread runtime with the same number of workers. Every thread accepts from the same
//! socket (the kernel hands each connection to one of them); the [`Router`] and its tables are
//! shared, so a switch, a gate or a certificate applies to every thread at once.
//!
//! Rejected: `SO_REUSEPORT` with one socket per thread (a hand-over to a newer data plane passes
//! one socket per listener, and a socket closed with connections in its queue drops them).

use std::io;
use std::net::TcpListener as StdListener;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::{RouteKey, Router};

/// What a listener served by [`Router::serve_threads`] routes by.
#[derive(Clone, Debug)]
pub enum Listening {
    /// The `Host` of each request ([`Router::serve`]).
    ByHost,
    /// Always this route ([`Router::serve_fixed`]).
    Fixed(RouteKey),
    /// HTTPS with the configured certificates ([`Router::serve_tls_configured`]).
    Tls,
    /// HTTPS with these certificates ([`Router::serve_tls`]).
    TlsWith(crate::TlsOptions),
}

/// The number of serving threads when none is configured: one per CPU this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Router {
    /// Serves `socket` from `threads` threads (at least one), each accepting on its own
    /// duplicate of the socket on a current-thread runtime, until `stop` turns `true` or its
    /// sender is dropped (the owner is gone: its runtime ended); then every thread stops
    /// accepting and lets its connections finish (the shutdown of [`Router::serve`]). The
    /// threads are not the caller's runtime's: they notice its end, they do not end with it. Returns once all threads are done: the first error any of them met,
    /// if one did. Call it from within a tokio runtime (it awaits the threads without blocking).
    pub async fn serve_threads(
        &self,
        listening: Listening,
        socket: StdListener,
        threads: usize,
        stop: watch::Receiver<bool>,
    ) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let mut done = Vec::with_capacity(threads.max(1));
        let mut started = Ok(());
        for i in 0..threads.max(1) {
            let spawned = socket.try_clone().and_then(|dup| {
                let (tx, rx) = oneshot::channel();
                let (router, listening, stop) = (self.clone(), listening.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("cutover-router-{i}"))
                    .spawn(move || {
                        let _ = tx.send(serve_one(&router, listening, dup, stop));
                    })
                    .map(|_| rx)
            });
            match spawned {
                Ok(rx) => done.push(rx),
                Err(e) => {
                    // Serve with the threads that started; say why there are fewer.
                    tracing::warn!(error = %e, started = i, "cannot start a router thread");
                    started = Err(e);
                    break;
                }
            }
        }
        drop(socket);
        if done.is_empty() {
            return started;
        }
        let mut result = Ok(());
        for rx in done {
            let outcome = rx
                .await
                .unwrap_or_else(|_| Err(io::Error::other("a router thread panicked")));
            if let Err(e) = outcome
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }
}

/// One serving thread: its runtime, its listener and its upstream pool, until `stop`.
fn serve_one(
    router: &Router,
    listening: Listening,
    socket: StdListener,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The pool's connection tasks run on this runtime: sharing a pool with other threads would
    // hand them connections that die with this thread when it stops first.
    let router = Router {
        inner: std::sync::Arc::clone(&router.inner),
        upstreams: std::sync::Arc::new(crate::proxy::Upstreams::new(&router.inner.config)),
    };
    runtime.block_on(async move {
        let listener = TcpListener::from_std(socket)?;
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match listening {
            Listening::ByHost => router.serve(listener, shutdown).await,
            Listening::Fixed(key) => router.serve_fixed(key, listener, shutdown).await,
            Listening::Tls => router.serve_tls_configured(listener, shutdown).await,
            Listening::TlsWith(opts) => router.serve_tls(listener, opts, shutdown).await,
        }
    })
}

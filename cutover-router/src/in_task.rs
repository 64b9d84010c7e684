//! An HTTP/2 connection's streams run in the connection's own task instead of a task each.
//!
//! hyper's HTTP/2 server hands every stream (the request's future and the writing of its
//! answer) to an executor. With tokio's, an h2 request crosses the serving thread's run queue
//! twice more than an HTTP/1.1 one: the connection spawns the stream's task (which waits
//! behind every other ready task before it writes to the upstream), and the stream's answer
//! wakes the connection's task (which waits again before it writes the answer). Under load the
//! waits spread the latencies (bench/README.md). [`InTask`] is the executor instead: it keeps
//! the streams in the connection's future ([`Streams`]), which polls them before and after
//! the connection: a request read from the client goes to the upstream in the same turn, an
//! upstream's answer goes to the client in the same turn.
//!
//! A stream that ends its work is dropped at once, as a finished task would be; one that
//! panics is dropped alone, as a task would be (the connection and its other streams go on);
//! when the connection ends, its streams are dropped with it (their requests' upstream calls
//! are given up, as hyper's reset does to a spawned stream).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper gives the streams of one connection to (see the module documentation).
#[derive(Clone, Default)]
pub(crate) struct InTask(Arc<Mutex<Vec<Stream>>>);

impl<F> hyper::rt::Executor<F> for InTask
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let stream = AssertUnwindSafe(stream).catch_unwind().map(|ended| {
            if ended.is_err() {
                tracing::error!("an HTTP/2 stream panicked; its connection goes on");
            }
        });
        crate::body::lock(&self.0).push(Box::pin(stream));
    }
}

/// A connection's future with its streams (see the module documentation).
pub(crate) struct Streams<C> {
    conn: Pin<Box<C>>,
    new: InTask,
    running: FuturesUnordered<Stream>,
}

impl<C: Future> Streams<C> {
    /// `conn` served with `executor` as its streams' executor.
    pub(crate) fn new(conn: C, executor: InTask) -> Self {
        Self {
            conn: Box::pin(conn),
            new: executor,
            running: FuturesUnordered::new(),
        }
    }

    /// The connection itself (e.g. to ask it to shut down gracefully).
    pub(crate) fn conn(&mut self) -> Pin<&mut C> {
        self.conn.as_mut()
    }

    /// Moves the streams the connection started into `running`; whether there were any.
    fn take_new(&mut self) -> bool {
        let mut new = crate::body::lock(&self.new.0);
        let any = !new.is_empty();
        self.running.extend(new.drain(..));
        any
    }

    /// Polls the running streams until none is ready; drops those that ended.
    fn poll_streams(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }
}

impl<C: Future> Future for Streams<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        // Streams woken since the last turn first (an upstream's answer), so the connection
        // writes what they gave it in this turn.
        this.poll_streams(cx);
        // Bounded: a connection that keeps starting streams yields to other tasks now and then.
        for _ in 0..8 {
            let done = this.conn.as_mut().poll(cx);
            if let Poll::Ready(out) = done {
                return Poll::Ready(out);
            }
            // Streams the connection just started go to their upstream in this turn; what
            // they answer at once is written by the next pass over the connection.
            if !this.take_new() {
                return Poll::Pending;
            }
            this.poll_streams(cx);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::time::Duration;

    #[tokio::test]
    async fn streams_run_in_the_connections_future_and_a_panicking_one_goes_alone() {
        let executor = InTask::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let e = executor.clone();
        // A connection that starts two streams and ends with what the second one sends, which
        // it can only get if its own future polls them (nothing else does: no task is spawned).
        let conn = async move {
            e.execute(async { panic!("a stream's bug") });
            e.execute(async move {
                tokio::task::yield_now().await;
                let _ = tx.send(7);
            });
            rx.await.expect("the second stream ran to its end")
        };
        let ended = tokio::time::timeout(Duration::from_secs(5), Streams::new(conn, executor)).await;
        assert_eq!(ended.expect("the streams were polled"), 7);
    }
}

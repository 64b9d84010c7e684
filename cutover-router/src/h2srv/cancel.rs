//! A stream's cancellation (its answer's futures end when it is reset) and a request's panic
//! kept to its own stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// A stream's cancellation: set when the stream is reset; its answer's futures end at once.
#[derive(Default)]
pub(super) struct Cancel {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    pub(super) fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A future that ends with `None` when its stream is cancelled (and is then dropped with what
/// it holds: the upstream call, the upstream's body).
pub(super) struct Cancellable<F> {
    cancel: Arc<Cancel>,
    fut: F,
    /// Its waker is with `cancel`: once is enough, the set it is in (`FuturesUnordered`)
    /// wakes each of its futures with one waker of its own (registering on every poll was
    /// ~1 % of the serving thread's time).
    registered: bool,
}

impl<F> Cancellable<F> {
    pub(super) fn new(cancel: Arc<Cancel>, fut: F) -> Self {
        Self {
            cancel,
            fut,
            registered: false,
        }
    }
}

impl<F: Future + Unpin> Future for Cancellable<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if self.cancel.flag.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if !self.registered {
            self.registered = true;
            self.cancel.waker.register(cx.waker());
            if self.cancel.flag.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
        }
        Pin::new(&mut self.fut).poll(cx).map(Some)
    }
}

/// `fut`, a panic in it caught: `None` then (logged). A request whose handling panics is reset
/// alone; its connection and other streams go on, as when each stream was a task.
pub(super) async fn alone<F: Future>(fut: F) -> Option<F::Output> {
    use futures_util::FutureExt;
    let caught = std::panic::AssertUnwindSafe(fut).catch_unwind().await;
    if caught.is_err() {
        tracing::error!("an HTTP/2 request's handling panicked; its stream is reset, its connection goes on");
    }
    caught.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_ends_alone() {
        assert_eq!(alone(async { 7 }).await, Some(7));
        let panicked = alone(async {
            tokio::task::yield_now().await;
            panic!("a request's bug");
        })
        .await;
        assert_eq!(panicked, None::<()>);
    }
}

//! The cap on client connections open at once ([`crate::RouterConfig::max_client_connections`],
//! across the router's listeners and serving threads): a flood of connections (each holds a
//! socket, buffers, TLS state) cannot take the machine's memory or file descriptors. At the
//! cap an accept loop stops accepting until a connection closes; new clients wait in the
//! listen backlog meanwhile (as HAProxy's `maxconn`), and the client timeouts keep idle and
//! slow connections from holding places for long. A place is held by the connection's socket
//! ([`crate::client_stream::ClientStream`]), so an upgraded tunnel keeps its place until it
//! closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

pub(crate) struct ConnLimit {
    max: usize,
    open: AtomicUsize,
    freed: Notify,
    /// Open client connections (`cutover_router_client_connections`).
    gauge: Gauge,
    /// Accepts that had to wait for a place (`cutover_router_connection_limit_waits_total`).
    waits: Counter,
    /// When the last warning was logged (s since the epoch): one per minute at most.
    warned: AtomicU64,
}

/// One client connection's place under the cap, given back when dropped.
pub(crate) struct Slot(Arc<ConnLimit>);

impl ConnLimit {
    pub(crate) fn new(max: usize, gauge: Gauge, waits: Counter) -> Self {
        Self {
            max: max.max(1),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
            gauge,
            waits,
            warned: AtomicU64::new(0),
        }
    }

    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(open, open + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.gauge.inc();
                    return Some(Slot(Arc::clone(self)));
                }
                Err(now) => open = now,
            }
        }
    }

    /// A place for the next connection, once there is one. Cancel-safe: dropped while
    /// waiting, it takes nothing.
    pub(crate) async fn take(self: &Arc<Self>) -> Slot {
        if let Some(slot) = self.try_take() {
            return slot;
        }
        self.waits.inc();
        self.warn();
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }

    fn warn(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.warned.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max = self.max,
                "the router has as many client connections open as it allows; new ones wait in \
                 the listen backlog until one closes (RouterConfig::max_client_connections)"
            );
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn places_are_taken_up_to_the_cap_and_a_freed_one_goes_to_a_waiter() {
        let limit = Arc::new(ConnLimit::new(2, Gauge::default(), Counter::default()));
        let a = limit.take().await;
        let _b = limit.take().await;
        assert_eq!(limit.gauge.get(), 2);
        let waiter = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.take().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a third place was given");
        // A waiter dropped while waiting takes nothing.
        let dropped = tokio::time::timeout(Duration::from_millis(10), limit.take()).await;
        assert!(dropped.is_err());
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the freed place went to the waiter")
            .unwrap();
        assert_eq!(limit.open.load(Ordering::SeqCst), 2);
        assert_eq!(limit.waits.get(), 2);
        drop(c);
        assert_eq!(limit.gauge.get(), 1);
    }
}

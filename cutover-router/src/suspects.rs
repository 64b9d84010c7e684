//! Upstream addresses that failed to connect lately (see the `proxy` module's docs on connect
//! retry), and which connects get the full connect timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::body::lock;

/// Upstream addresses that failed to connect lately, with the time their mark ends. Requests
/// read it without locking while it is empty (the common case).
#[derive(Default)]
pub(crate) struct Suspects {
    /// Entries in `until` (read first, so healthy routes never take the lock).
    count: AtomicUsize,
    until: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Suspects {
    /// The order in which to try `upstreams` starting at `start` (round-robin): every upstream
    /// once, those not suspect first, then the suspect ones (the last resort, still tried).
    pub(crate) fn order(
        &self,
        upstreams: &[SocketAddr],
        start: usize,
        now: impl FnOnce() -> Instant,
    ) -> Vec<usize> {
        let n = upstreams.len();
        let ring = (0..n).map(|i| (start + i) % n);
        if self.count.load(Ordering::Acquire) == 0 {
            return ring.collect(); // no clock read on the common path
        }
        let now = now();
        let mut until = lock(&self.until);
        until.retain(|_, end| *end > now);
        self.count.store(until.len(), Ordering::Release);
        let (mut fine, suspect): (Vec<usize>, Vec<usize>) =
            ring.partition(|&i| !until.contains_key(&upstreams[i]));
        fine.extend(suspect);
        fine
    }

    /// Marks `addr` suspect until `end`.
    pub(crate) fn mark(&self, addr: SocketAddr, end: Instant) {
        let mut until = lock(&self.until);
        until.insert(addr, end);
        self.count.store(until.len(), Ordering::Release);
    }

    /// `addr` answered: no longer suspect.
    pub(crate) fn clear(&self, addr: SocketAddr) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut until = lock(&self.until);
        if until.remove(&addr).is_some() {
            self.count.store(until.len(), Ordering::Release);
        }
    }
}

/// Whether connecting to `addr` gets the full connect timeout: on loopback (nothing can be lost
/// on the way), and for a request's last attempt, which has no other upstream to turn to: an
/// overloaded upstream whose accept queue dropped a SYN answers the retransmission a second
/// later, and a short timeout there would turn a slow answer into a 502.
pub(crate) fn patient(addr: SocketAddr, last: bool) -> bool {
    last || addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn suspects_are_tried_last_and_only_while_marked() {
        let addrs: Vec<SocketAddr> = (1..=4).map(|p| SocketAddr::from(([10, 0, 0, 1], p))).collect();
        let s = Suspects::default();
        let now = Instant::now();
        assert_eq!(s.order(&addrs, 5, || now), vec![1, 2, 3, 0]);
        s.mark(addrs[1], now + Duration::from_secs(2));
        s.mark(addrs[2], now + Duration::from_secs(1));
        assert_eq!(s.order(&addrs, 5, || now), vec![3, 0, 1, 2]);
        // Once its mark ends, an upstream takes its round-robin place again.
        let later = now + Duration::from_millis(1500);
        assert_eq!(s.order(&addrs, 5, || later), vec![2, 3, 0, 1]);
        s.clear(addrs[1]);
        assert_eq!(s.order(&addrs, 5, || later), vec![1, 2, 3, 0]);
        assert_eq!(s.count.load(Ordering::Acquire), 0);
    }

    #[test]
    fn only_remote_attempts_with_a_fallback_get_the_short_connect_timeout() {
        let remote = SocketAddr::from(([10, 231, 0, 3], 8080));
        let local = SocketAddr::from(([127, 0, 0, 1], 8080));
        assert!(!patient(remote, false));
        assert!(
            patient(remote, true),
            "the last resort waits for a retransmitted SYN"
        );
        assert!(patient(local, false));
    }
}

//! Generations: one immutable upstream set of a route, with its in-flight request count.
//!
//! Every [`crate::Router::switch`] creates a new generation; the previous one is marked
//! *retired* and handed back to the caller as a [`Generation`] handle, whose
//! [`Generation::drain`] waits for the requests it still serves.
//!
//! The admission protocol that makes "after `switch` returns no new request reaches the old
//! generation" and "drain sees every request that did" hold together (all `SeqCst`):
//!
//! * request: load the table → pick the generation → `in_flight += 1` → read `retired`; if it is
//!   set, undo the increment and look again (the new table is already published);
//! * switch: publish the new table → set `retired` on the old generation → (caller) drain reads
//!   `in_flight`.
//!
//! Either the request saw `retired` (and moved to the new generation) or its increment is
//! ordered before the drain's read (and drain waits for it). The count is held by an
//! [`InFlightGuard`] that lives inside the response body, so it drops when the body has been
//! streamed to the client (or dropped), not when the headers arrive.
//!
//! Rejected: a per-route `RwLock` held during dispatch (a slow upstream would block switches)
//! and counting at the connection level (keep-alive clients would pin old generations).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::uri::Authority;
use tokio::sync::Notify;

/// What a route sends traffic to: one application version on a set of upstream addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The full version (commit SHA) these upstreams run; sent as `X-Cutover-Version`.
    pub version: String,
    /// Upstream addresses, load-balanced round-robin.
    pub upstreams: Vec<SocketAddr>,
}

impl Backend {
    /// Convenience constructor.
    pub fn new(version: impl Into<String>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            version: version.into(),
            upstreams,
        }
    }
}

pub(crate) struct GenInner {
    pub(crate) id: u64,
    pub(crate) backend: Backend,
    pub(crate) version_header: HeaderValue,
    /// `backend.upstreams` pre-rendered as URI authorities (no formatting per request).
    pub(crate) authorities: Vec<Authority>,
    rr: AtomicUsize,
    in_flight: AtomicUsize,
    /// Requests admitted since the generation was created (the autoscaler's rate).
    admitted: AtomicU64,
    retired: AtomicBool,
    idle: Notify,
}

impl GenInner {
    pub(crate) fn new(id: u64, backend: Backend) -> Self {
        let version_header = HeaderValue::from_str(&backend.version).unwrap_or_else(|_| {
            tracing::warn!(version = %backend.version, "version is not a valid header value");
            HeaderValue::from_static("invalid")
        });
        let authorities = backend
            .upstreams
            .iter()
            .map(|a| {
                Authority::try_from(a.to_string().as_str()).expect("a socket address is a valid authority")
            })
            .collect();
        Self {
            id,
            backend,
            version_header,
            authorities,
            rr: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            idle: Notify::new(),
        }
    }

    /// Start index for round-robin.
    pub(crate) fn next_index(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }
}

/// Keeps one request counted as in flight on its generation until dropped.
pub(crate) struct InFlightGuard {
    generation: Arc<GenInner>,
}

impl InFlightGuard {
    /// Admits a request to `generation`, or returns `None` if it was retired meanwhile (the
    /// caller then re-reads the routing table).
    pub(crate) fn enter(generation: Arc<GenInner>) -> Option<Self> {
        generation.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = Self { generation };
        if guard.generation.retired.load(Ordering::SeqCst) {
            return None; // drop decrements
        }
        guard.generation.admitted.fetch_add(1, Ordering::Relaxed);
        Some(guard)
    }

    pub(crate) fn generation(&self) -> &Arc<GenInner> {
        &self.generation
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.generation.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.generation.idle.notify_waiters();
        }
    }
}

/// Handle on one generation of a route, typically the previous one returned by
/// [`crate::Router::switch`] or [`crate::Router::remove`].
#[derive(Clone)]
pub struct Generation {
    pub(crate) inner: Arc<GenInner>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.inner.id)
            .field("backend", &self.inner.backend)
            .field("in_flight", &self.in_flight())
            .field("retired", &self.is_retired())
            .finish()
    }
}

impl Generation {
    /// Router-unique, increasing id of this generation.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The backend this generation routes to.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Whether a later switch (or remove) replaced this generation.
    pub fn is_retired(&self) -> bool {
        self.inner.retired.load(Ordering::SeqCst)
    }

    /// Requests (and upgraded tunnels) currently being served by this generation; a request
    /// counts until its response body has been fully sent or dropped.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Requests this generation has admitted since it was created.
    pub fn admitted(&self) -> u64 {
        self.inner.admitted.load(Ordering::Relaxed)
    }

    /// Waits until this generation has no in-flight request, at most `timeout`. Returns how
    /// many were still running at the deadline (0 when fully drained). Meant for retired
    /// generations: a current one keeps admitting requests.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight();
            }
        }
    }
}

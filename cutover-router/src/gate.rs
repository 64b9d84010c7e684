//! Gates: an environment's public routes held (requests wait) or closed (503 + `Retry-After` +
//! a page), set per environment, beside the routing table.
//!
//! A migration-safe deploy sets a [`GateMode::Hold`] gate: new requests of every route of the
//! environment wait in the router (they are not admitted to any generation), the engine waits
//! with [`crate::Router::drain_env`] until the admitted ones are done, runs the install step,
//! switches the routes and clears the gate; the held requests then read the table again and go to
//! the new generation. A hold carries its bound (`until_ms`, wall clock so that a persisted gate
//! means the same in a restarted data plane): past it, held and new requests get `503` with
//! `Retry-After` and the gate's page, so a hold left behind by a dead control plane never holds
//! a client for longer than its bound. [`GateMode::Maintenance`] answers that 503 at once.
//!
//! Admission protocol (with the generation's, all `SeqCst`): a request increments its
//! generation's in-flight count, *then* reads [`Gates::active`]; setting a gate publishes it,
//! bumps `active`, and only then does a drain read the in-flight counts. Either the request sees
//! the gate (and leaves the generation again before waiting), or its increment is ordered before
//! the drain's read (and the drain waits for it). With no gate set (the normal case) a request
//! pays one atomic load.
//!
//! Rejected: a gate per route (an environment's storefront and API must hold and switch together,
//! like the switch itself) and answering held requests with a redirect or 503 at once (the point
//! is that they do not fail).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::watch;

use crate::RouteKey;
use crate::body::RouterBody;

/// What a gate does with an environment's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// Requests wait until the gate is cleared, or answer 503 past `until_ms`.
    Hold,
    /// Requests answer 503 with `Retry-After` and the page at once.
    Maintenance,
}

/// One environment's gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    pub mode: GateMode,
    /// For a hold: when waiting requests stop waiting and get 503 (unix milliseconds).
    pub until_ms: u64,
    /// `Retry-After` of a 503, in seconds.
    pub retry_after_secs: u32,
    /// The body of a 503 (HTML).
    pub page: String,
}

/// The built-in page of a 503 when no maintenance page is configured.
pub const DEFAULT_PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\n<body><h1>Back in a moment</h1><p>This service is being updated. Please retry shortly.</p></body></html>\n";

impl Gate {
    /// A hold for `bound` from now.
    pub fn hold(bound: Duration, retry_after_secs: u32, page: impl Into<String>) -> Self {
        Self {
            mode: GateMode::Hold,
            until_ms: now_ms().saturating_add(u64::try_from(bound.as_millis()).unwrap_or(u64::MAX)),
            retry_after_secs,
            page: page.into(),
        }
    }

    /// Maintenance mode.
    pub fn maintenance(retry_after_secs: u32, page: impl Into<String>) -> Self {
        Self {
            mode: GateMode::Maintenance,
            until_ms: 0,
            retry_after_secs,
            page: page.into(),
        }
    }

    /// Whether requests get the 503 now (maintenance, or a hold past its bound).
    pub fn closed_now(&self) -> bool {
        self.mode == GateMode::Maintenance || now_ms() >= self.until_ms
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type EnvKey = (String, String);

/// The gates of one router.
pub(crate) struct Gates {
    /// How many gates are set: requests look at the map only when it is not 0.
    active: AtomicUsize,
    map: Mutex<HashMap<EnvKey, Arc<Gate>>>,
    /// Bumped on every change; held requests wait on it.
    changed: watch::Sender<u64>,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            active: AtomicUsize::new(0),
            map: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

/// What an admitted-then-gated request does next.
pub(crate) enum Wait {
    /// The gate was cleared: read the table again.
    Go,
    /// Answer this (503).
    Answer(Box<Response<RouterBody>>),
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EnvKey, Arc<Gate>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (`Some`) or clears (`None`) an environment's gate; returns the previous one.
    pub(crate) fn set(&self, app: &str, env: &str, gate: Option<Gate>) -> Option<Gate> {
        let key = (app.to_ascii_lowercase(), env.to_ascii_lowercase());
        let previous = {
            let mut map = self.lock();
            let previous = match gate {
                Some(g) => map.insert(key, Arc::new(g)),
                None => map.remove(&key),
            };
            self.active.store(map.len(), Ordering::SeqCst);
            previous
        };
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        previous.map(|g| (*g).clone())
    }

    pub(crate) fn get(&self, app: &str, env: &str) -> Option<Gate> {
        if self.active.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.lock()
            .get(&(app.to_owned(), env.to_owned()))
            .map(|g| (**g).clone())
    }

    /// Every gate, sorted by application and environment.
    pub(crate) fn all(&self) -> Vec<(String, String, Gate)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|((a, e), g)| (a.clone(), e.clone(), (**g).clone()))
            .collect();
        out.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        out
    }

    /// The gate on the route's environment, if any (one atomic load when none is set).
    pub(crate) fn on(&self, key: &RouteKey) -> bool {
        self.active.load(Ordering::SeqCst) != 0
            && self
                .lock()
                .contains_key(&(key.app().to_owned(), key.env().to_owned()))
    }

    /// Waits while the environment is held; the answer once it is closed or its hold ran out.
    pub(crate) async fn wait(&self, app: &str, env: &str) -> Wait {
        let mut changes = self.changed.subscribe();
        loop {
            let Some(gate) = self.lock().get(&(app.to_owned(), env.to_owned())).cloned() else {
                return Wait::Go;
            };
            if gate.closed_now() {
                return Wait::Answer(Box::new(unavailable(&gate)));
            }
            let left = Duration::from_millis(gate.until_ms.saturating_sub(now_ms()));
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Wait::Go },
                () = tokio::time::sleep(left) => {}
            }
        }
    }
}

/// `503` with `Retry-After` and the gate's page.
fn unavailable(gate: &Gate) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::local(Bytes::from(gate.page.clone())));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(gate.retry_after_secs.max(1)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl crate::Router {
    /// Sets or clears the gate of an environment (`app`, `env` as in its route keys); returns the
    /// previous gate. Held requests wake at once on every change.
    pub fn set_gate(&self, app: &str, env: &str, gate: Option<Gate>) -> Option<Gate> {
        self.inner.gates.set(app, env, gate)
    }

    /// The environment's gate, if one is set.
    pub fn gate(&self, app: &str, env: &str) -> Option<Gate> {
        self.inner
            .gates
            .get(&app.to_ascii_lowercase(), &env.to_ascii_lowercase())
    }

    /// Every gate set: `(app, env, gate)`.
    pub fn gates(&self) -> Vec<(String, String, Gate)> {
        self.inner.gates.all()
    }

    /// Waits until no route of the environment has an admitted request in flight, at most
    /// `timeout`; returns how many were still running then. Meant while its gate holds new
    /// requests (without one, new requests keep coming).
    pub async fn drain_env(&self, app: &str, env: &str, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let (app, env) = (app.to_ascii_lowercase(), env.to_ascii_lowercase());
        let generations: Vec<_> = self
            .inner
            .table
            .load()
            .values()
            .filter(|e| e.key.app() == app && e.key.env() == env)
            .map(|e| crate::Generation {
                inner: Arc::clone(&e.generation),
            })
            .collect();
        let mut left = 0;
        for g in generations {
            let now = tokio::time::Instant::now();
            left += g.drain(deadline.saturating_duration_since(now)).await;
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_and_bounds() {
        let gates = Gates::default();
        let key = RouteKey::new("shop", "prod", "web").unwrap();
        assert!(!gates.on(&key));
        let hold = Gate::hold(Duration::from_secs(60), 5, "p");
        assert!(!hold.closed_now());
        assert!(gates.set("shop", "prod", Some(hold.clone())).is_none());
        assert!(gates.on(&key));
        assert!(!gates.on(&RouteKey::new("shop", "stage", "web").unwrap()));
        assert_eq!(gates.get("shop", "prod"), Some(hold.clone()));
        assert_eq!(gates.all().len(), 1);
        assert_eq!(gates.set("shop", "prod", None), Some(hold));
        assert!(!gates.on(&key));
        assert!(Gate::hold(Duration::ZERO, 5, "p").closed_now());
        assert!(Gate::maintenance(60, "p").closed_now());
    }

    #[tokio::test]
    async fn a_held_request_goes_on_when_cleared_and_gets_503_past_the_bound() {
        let gates = Arc::new(Gates::default());
        gates.set("shop", "prod", Some(Gate::hold(Duration::from_secs(60), 5, "p")));
        let waiter = {
            let gates = Arc::clone(&gates);
            tokio::spawn(async move { matches!(gates.wait("shop", "prod").await, Wait::Go) })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gates.set("shop", "prod", None);
        assert!(waiter.await.unwrap());

        gates.set(
            "shop",
            "prod",
            Some(Gate::hold(Duration::from_millis(1), 7, "sorry")),
        );
        let Wait::Answer(resp) = gates.wait("shop", "prod").await else {
            panic!("a hold past its bound must answer");
        };
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
    }
}

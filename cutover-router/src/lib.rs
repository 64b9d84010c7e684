//! Cutover's zero-downtime HTTP router.
//!
//! One job: route HTTP/1.1 requests by `Host` (`<service>.<env>.<app>.localhost`) — or, on a
//! fixed per-service listener, all requests — to the *current generation* (upstream set) of a
//! route, and replace that generation atomically with [`Router::switch`]. It knows nothing
//! about pipelines, git or databases; the engine calls `switch`, then
//! [`Generation::drain`] on the returned old generation, then stops the old instances.
//!
//! Guarantees:
//! * Each request picks its generation exactly once, when it is dispatched, from an atomically
//!   swapped routing table (`arc-swap`). Keep-alive client connections do not pin a generation.
//! * Once `switch` has returned, no request reaching the router afterwards is sent to the old
//!   generation; requests admitted before keep running on it and are counted until their
//!   response body is fully streamed or dropped, which is what `drain` waits for (see the
//!   admission protocol in the `generation` module).
//! * Round-robin within a generation; a connect failure (refused, unreachable, timed out: nothing
//!   was sent) moves on to the generation's other upstreams, each tried at most once per request
//!   (bounded by [`RouterConfig::max_connect_attempts`]); an upstream that failed to connect is
//!   *suspect* for [`RouterConfig::suspect_for`] (the picker tries it only after every other
//!   one), and connects to a non-loopback upstream are bounded by
//!   [`RouterConfig::remote_connect_timeout`] (a dead node answers nothing); other
//!   upstream failures answer `502`, an upstream that sends no response head within
//!   [`RouterConfig::response_header_timeout`] (from the end of the request's body) answers
//!   `504`.
//! * Slow clients are bounded, slow-but-steady ones are not cut: a request head within
//!   [`RouterConfig::client_header_timeout`] (an idle connection is closed after it), a request
//!   body that pauses past [`RouterConfig::client_body_timeout`] → `408`, a client that takes
//!   no byte of its answer for [`RouterConfig::client_send_timeout`] loses its connection
//!   (the `client_stream` module); at most [`RouterConfig::max_client_connections`] client
//!   connections are open at once, more wait in the listen backlog (the `limit` module).
//! * Unknown host → a plain `404` that names no route; a route without upstreams → `503`.
//! * Strict on public traffic: two `Host` headers → `400`; an absolute-form target's authority
//!   wins over `Host` (and replaces it upstream); a client body that cannot be read (an
//!   overflowing chunk size) → `400`, not `502`; `Connection` never removes `Host` or
//!   `Content-Length`.
//! * Bodies are streamed both ways (never buffered); hop-by-hop headers are removed;
//!   `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `Forwarded` are set,
//!   replacing a client's own unless it is a trusted proxy (the `forwarded` module); every
//!   proxied response carries `X-Cutover-Version: <sha>`. A request to an environment with
//!   feature flags carries them in `Cutover-Flags` (a client's own is always removed; the
//!   `flags` module). Upstream connections are kept alive and pooled per serving thread (the
//!   router's own HTTP/1.1 client for bodyless requests, `upstream`; hyper-util's legacy client
//!   for the rest).
//! * HTTP/1.1 heads from clients are read by the router itself (`fast`) as long as a
//!   connection's requests are plain (bodyless, origin form, HTTP/1.1); at its first other
//!   request the connection goes to hyper for good.
//! * WebSocket / `Upgrade` **is passed through**: a `101 Switching Protocols` answer turns the
//!   exchange into a byte tunnel (`hyper::upgrade::on` on both sides). A tunnel counts as in
//!   flight on its generation until either side closes it, so `drain` waits for it (bounded by
//!   its timeout); tunnels are cut when `serve` returns.
//! * Optional access log, one JSON line per request (the `access_log` module).
//! * Graceful shutdown: when the shutdown future resolves, `serve` stops accepting, lets
//!   in-flight requests finish for up to [`RouterConfig::shutdown_grace`], then returns.
//!
//! Rejected: pingora (it owns the process and its runtime, so it cannot be embedded in
//! `cutover serve`); HTTP/2 towards upstreams (apps behind Cutover speak HTTP/1.1, and h2 would
//! multiplex many requests on one connection, blurring per-generation draining); a mutex-held
//! table during dispatch (switches would wait behind slow requests).

mod access_log;
mod acme;
mod body;
mod chunked;
mod client_stream;
mod dispatch;
mod fast;
mod flags;
mod forwarded;
mod gate;
mod generation;
mod h2srv;
mod head;
mod hosts;
mod limit;
mod metrics;
mod outgoing;
mod plain;
mod proxy;
mod route;
mod serve;
mod stall;
mod suspects;
mod threads;
mod tls;
mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use access_log::{AccessLogError, AccessLogTarget};
pub use acme::{AcmeError, AcmeSettings, renew_at};
pub use flags::{FLAGS_HEADER, FlagsError};
pub use forwarded::{Cidr, CidrError, TrustedProxies};
pub use gate::{DEFAULT_PAGE, Gate, GateMode};
pub use generation::{Backend, Generation};
pub use hosts::HostError;
pub use route::{RouteKey, RouteKeyError};
pub use threads::{Listening, default_threads};
pub use tls::{CertFiles, RELOAD_EVERY, TlsCerts, TlsError, TlsOptions, server_config_with_alpn};

use access_log::AccessLog;
use generation::GenInner;

/// Settings of the router's public side that may change while it serves (the data plane gets
/// them from the control plane, see [`Router::set_edge`]). `Default`: no trusted proxy, no
/// access log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Peers whose forwarding headers are appended to rather than replaced.
    pub trusted_proxies: TrustedProxies,
    /// Where the access log goes; `None`: no access log.
    pub access_log: Option<AccessLogTarget>,
    /// Public host names (`www.example.com`, `*.example.com`) and the route each one serves,
    /// besides the routes' own `<service>.<env>.<app>.<base_domain>` names.
    pub hosts: Vec<(String, RouteKey)>,
    /// Certificates (and HSTS) of the listeners served by [`Router::serve_tls_configured`].
    pub tls: Option<EdgeTls>,
}

/// TLS settings carried with [`EdgeSettings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeTls {
    /// One entry per certificate.
    pub certificates: Vec<CertFiles>,
    /// `Strict-Transport-Security` value (e.g. `max-age=31536000`), `None`: no HSTS. Read when a
    /// TLS listener starts.
    pub hsts: Option<String>,
    /// Host names (`*.example.com` for one label) whose plain-HTTP requests are answered with a
    /// `308` to the same URL over HTTPS.
    pub redirect_hosts: Vec<String>,
    /// The HTTPS port named in those redirects (none when 443 or 0).
    pub https_port: u16,
    /// Certificates got automatically from an ACME server, served beside `certificates`.
    pub acme: Option<AcmeSettings>,
}

/// Why [`Router::set_edge`] refused new settings (the old ones stay).
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The access log cannot be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// A host name is invalid or given twice.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A certificate cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HSTS value is not a header value.
    #[error("the HSTS value {0:?} is not a valid header value; use e.g. max-age=31536000")]
    Hsts(String),
}

/// The live form of [`EdgeSettings`] (an open access log).
#[derive(Default)]
pub(crate) struct Edge {
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    pub(crate) hosts: hosts::HostMap,
    /// As given, for [`Router::edge`].
    pub(crate) host_list: Vec<(String, RouteKey)>,
    pub(crate) tls: Option<EdgeTls>,
}

/// Router settings. `Default` gives sensible values for local services.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Domain under which route hosts live: `<service>.<env>.<app>.<base_domain>`.
    pub base_domain: String,
    /// Time allowed for a TCP connect to an upstream on a loopback address.
    pub connect_timeout: Duration,
    /// Time allowed for a TCP connect to an upstream on another machine (a Swarm replica at its
    /// node's address) when the request has other upstreams left to try. Short: a node that
    /// died answers nothing, and every request waiting on it would pay this before moving on.
    /// A request's last attempt gets `connect_timeout`.
    pub remote_connect_timeout: Duration,
    /// How long an upstream that failed to connect is tried only after all the others (until
    /// health probes take it out of the route, or it answers again).
    pub suspect_for: Duration,
    /// Time allowed from sending a request upstream (the end of its body, when it has one) to
    /// receiving its response head.
    pub response_header_timeout: Duration,
    /// Time a client has to send a complete request head; also how long a connection may be
    /// without a request before it is closed (an idle HTTP/1.1 keep-alive connection, an HTTP/2
    /// connection without a stream).
    pub client_header_timeout: Duration,
    /// How long a client may take no byte of what the router writes it before its connection
    /// is closed (and the upstream call it holds dropped): a client that stops reading. A slow
    /// client that keeps taking bytes is never cut; over HTTP/2 a stream whose answer waits
    /// this long for the client's flow-control window is reset (`CANCEL`).
    pub client_send_timeout: Duration,
    /// How long a client may leave its request body without a byte before the request is
    /// answered `408` (and its upstream call dropped). An upstream's time to answer
    /// ([`Self::response_header_timeout`]) counts from the body's end: a long upload that keeps
    /// coming is never cut.
    pub client_body_timeout: Duration,
    /// Client connections open at once, across the router's listeners and threads; at the cap
    /// new ones wait in the listen backlog until one closes.
    pub max_client_connections: usize,
    /// How long idle pooled upstream connections are kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream address.
    pub pool_max_idle_per_upstream: usize,
    /// At most this many upstreams of one generation are tried per request when connecting
    /// fails (at least 1; each upstream at most once). The default covers any route's replicas.
    pub max_connect_attempts: usize,
    /// On shutdown, how long in-flight requests may still run.
    pub shutdown_grace: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            base_domain: "localhost".to_owned(),
            connect_timeout: Duration::from_secs(2),
            remote_connect_timeout: Duration::from_millis(500),
            suspect_for: Duration::from_secs(2),
            response_header_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(30),
            client_send_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            max_client_connections: 16_384,
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_upstream: 256,
            max_connect_attempts: 64,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Entry {
    pub(crate) key: RouteKey,
    pub(crate) generation: Arc<GenInner>,
    /// The route's metric handles (the same series across switches).
    pub(crate) metrics: Arc<metrics::RouteMetrics>,
}

/// Routing table: normalised host → current generation. Replaced whole on every change.
/// Looked up once per request: foldhash rather than SipHash (the keys are the router's own
/// route names; a client's `Host` only picks among them).
pub(crate) type Table = HashMap<String, Entry, foldhash::fast::RandomState>;

pub(crate) struct Inner {
    pub(crate) config: RouterConfig,
    pub(crate) table: ArcSwap<Table>,
    /// Serialises writers (switch/remove); readers never take it.
    write: Mutex<()>,
    next_id: AtomicU64,
    /// Per-environment holds and maintenance (`gate` module).
    pub(crate) gates: gate::Gates,
    /// Per-environment feature flags sent as `Cutover-Flags` (`flags` module).
    pub(crate) flags: flags::FlagHeaders,
    /// Upstreams that failed to connect lately.
    pub(crate) suspects: suspects::Suspects,
    /// Forwarding and logging settings, swapped whole by [`Router::set_edge`].
    pub(crate) edge: ArcSwap<Edge>,
    pub(crate) metrics: metrics::Metrics,
    /// Certificates of the listeners of [`Router::serve_tls_configured`] (empty until set).
    pub(crate) tls_certs: Arc<TlsCerts>,
    /// ACME's task and challenge answers (the `acme` module).
    pub(crate) acme: acme::Acme,
    /// The cap on open client connections (the `limit` module).
    pub(crate) conn_limit: Arc<limit::ConnLimit>,
}

/// The router: a routing table plus an upstream connection pool. Cheap to clone (an `Arc`);
/// clones share the table, so `switch` on one is seen by `serve` on another, and the pool.
/// Each thread of [`Router::serve_threads`] has a pool of its own: an upstream connection's
/// task lives on the runtime that opened it and ends with it.
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<Inner>,
    pub(crate) upstreams: Arc<proxy::Upstreams>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .field("routes", &self.inner.table.load().len())
            .finish()
    }
}

impl Router {
    /// Creates a router with an empty routing table.
    pub fn new(config: RouterConfig) -> Self {
        let metrics = metrics::Metrics::new();
        let conn_limit = Arc::new(limit::ConnLimit::new(
            config.max_client_connections,
            metrics.client_connections.clone(),
            metrics.connection_waits.clone(),
        ));
        Self {
            upstreams: Arc::new(proxy::Upstreams::new(&config)),
            inner: Arc::new(Inner {
                config,
                table: ArcSwap::from_pointee(Table::default()),
                write: Mutex::new(()),
                next_id: AtomicU64::new(1),
                gates: gate::Gates::default(),
                flags: flags::FlagHeaders::default(),
                suspects: suspects::Suspects::default(),
                edge: ArcSwap::from_pointee(Edge::default()),
                metrics,
                tls_certs: Arc::new(TlsCerts::empty()),
                acme: acme::Acme::default(),
                conn_limit,
            }),
        }
    }

    /// The settings this router was built with.
    pub fn config(&self) -> &RouterConfig {
        &self.inner.config
    }

    /// Replaces the forwarding and access-log settings; requests dispatched afterwards use the
    /// new ones. An access log whose target did not change is kept open (no line lost).
    pub fn set_edge(&self, settings: EdgeSettings) -> Result<(), EdgeError> {
        let hosts = hosts::HostMap::build(&settings.hosts, &self.inner.config.base_domain)?;
        if let Some(tls) = &settings.tls {
            if let Some(h) = &tls.hsts {
                http::HeaderValue::from_str(h).map_err(|_| EdgeError::Hsts(h.clone()))?;
            }
            if tls.certificates.is_empty() {
                self.inner.tls_certs.clear_files();
            } else if tls.certificates != self.inner.tls_certs.files() {
                self.inner.tls_certs.replace(tls.certificates.clone())?;
            }
        }
        let current = self.inner.edge.load_full();
        let access_log = match settings.access_log {
            None => None,
            Some(target) => match &current.access_log {
                Some(open) if *open.target() == target => Some(Arc::clone(open)),
                _ => Some(Arc::new(AccessLog::open(target)?)),
            },
        };
        self.inner.edge.store(Arc::new(Edge {
            trusted_proxies: settings.trusted_proxies,
            access_log,
            hosts,
            host_list: settings.hosts,
            tls: settings.tls,
        }));
        let acme = self.inner.edge.load();
        let acme = acme.tls.as_ref().and_then(|t| t.acme.as_ref());
        self.inner.acme.configure(acme, &self.inner.tls_certs);
        Ok(())
    }

    /// The forwarding and access-log settings in use.
    pub fn edge(&self) -> EdgeSettings {
        let edge = self.inner.edge.load();
        EdgeSettings {
            trusted_proxies: edge.trusted_proxies.clone(),
            access_log: edge.access_log.as_ref().map(|l| l.target().clone()),
            hosts: edge.host_list.clone(),
            tls: edge.tls.clone(),
        }
    }

    /// The host name `route` is served under by [`Router::serve`].
    pub fn host_of(&self, route: &RouteKey) -> String {
        route.host(&self.inner.config.base_domain)
    }

    /// Atomically replaces the route's backend (creating the route if needed). Returns the
    /// previous generation, now retired: nothing reaching the router after this returns is
    /// sent to it; [`Generation::drain`] waits for what it still serves.
    pub fn switch(&self, route: &RouteKey, backend: Backend) -> Option<Generation> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let generation = Arc::new(GenInner::new(id, backend));
        let host = self.host_of(route);
        let metrics = Arc::new(self.inner.metrics.route(route));
        self.update(|table| {
            table
                .insert(
                    host,
                    Entry {
                        key: route.clone(),
                        generation,
                        metrics,
                    },
                )
                .map(|e| e.generation)
        })
    }

    /// Removes the route (its host then answers 404). Returns its last generation, retired.
    pub fn remove(&self, route: &RouteKey) -> Option<Generation> {
        let host = self.host_of(route);
        self.update(|table| table.remove(&host).map(|e| e.generation))
    }

    /// The route's current backend.
    pub fn current(&self, route: &RouteKey) -> Option<Backend> {
        self.generation(route).map(|g| g.backend().clone())
    }

    /// The route's current generation (not retired).
    pub fn generation(&self, route: &RouteKey) -> Option<Generation> {
        let host = self.host_of(route);
        self.inner.table.load().get(&host).map(|e| Generation {
            inner: Arc::clone(&e.generation),
        })
    }

    /// All routes with their current backends, sorted by key.
    pub fn routes(&self) -> Vec<(RouteKey, Backend)> {
        let table = self.inner.table.load();
        let mut routes: Vec<_> = table
            .values()
            .map(|e| (e.key.clone(), e.generation.backend.clone()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }

    /// Copy-on-write update of the table under the writer lock; retires the generation the
    /// closure returns *after* the new table is published (see the `generation` module).
    fn update(&self, f: impl FnOnce(&mut Table) -> Option<Arc<GenInner>>) -> Option<Generation> {
        let _writer = self
            .inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.inner.table.load_full();
        let mut next: Table = current
            .iter()
            .map(|(host, e)| {
                (
                    host.clone(),
                    Entry {
                        key: e.key.clone(),
                        generation: Arc::clone(&e.generation),
                        metrics: Arc::clone(&e.metrics),
                    },
                )
            })
            .collect();
        let old = f(&mut next);
        self.inner.table.store(Arc::new(next));
        old.map(|inner| {
            inner.retire();
            Generation { inner }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_and_generation_are_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Router>();
        check::<Generation>();
        check::<Backend>();
        check::<RouteKey>();
    }

    #[test]
    fn switch_remove_and_listing() {
        let router = Router::new(RouterConfig::default());
        let yves = RouteKey::new("shop", "stage", "yves").unwrap();
        let zed = RouteKey::new("shop", "stage", "zed").unwrap();
        let addr = "127.0.0.1:9".parse().unwrap();
        assert!(router.switch(&zed, Backend::new("z", vec![addr])).is_none());
        assert!(router.switch(&yves, Backend::new("a", vec![addr])).is_none());
        let old = router.switch(&yves, Backend::new("b", vec![])).unwrap();
        assert_eq!(old.backend().version, "a");
        assert!(old.is_retired());
        assert!(old.id() < router.generation(&yves).unwrap().id());
        let keys: Vec<_> = router.routes().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![yves.clone(), zed.clone()]);
        assert_eq!(router.host_of(&yves), "yves.stage.shop.localhost");
        assert_eq!(router.remove(&yves).unwrap().backend().version, "b");
        assert!(router.current(&yves).is_none());
        assert!(router.remove(&yves).is_none());
    }
}

//! Forwarding one request: generation pick, header rewriting, upstream call with connect
//! retry, streamed bodies and `Upgrade` tunnels.
//!
//! Connect retry: a request whose connect fails (refused, unreachable, timed out) goes to the
//! generation's next upstream, each at most once, until one answers. An upstream that failed to
//! connect becomes *suspect* ([`Suspects`](crate::suspects::Suspects), keyed by address so a new generation with the same
//! replica inherits it) for [`RouterConfig::suspect_for`]: requests try it only after every
//! other upstream, so when a node dies with 3 of 4 replicas, one request per dead replica pays
//! for the discovery instead of every request until the health probes drop them. A successful
//! answer clears the mark. Connects to non-loopback upstreams use their own client with
//! [`RouterConfig::remote_connect_timeout`] (a dead machine sends no refusal), except a
//! request's last attempt: with nothing left to try it waits the full connect timeout (an
//! overloaded upstream drops SYNs when its accept queue is full and answers the retransmission a
//! second later; measured: 11 of 18,652 requests failed that way with the short timeout on every
//! attempt, while a node died and two busybox replicas took the load).
//!
//! The request body is handed to the upstream client through a shared slot
//! ([`UpstreamBody`]): if connecting fails, the client never polled it, so the body is still in
//! the slot and the request can go to the next upstream; once polled, bytes may have left and
//! no retry happens. Rejected: buffering request bodies to make every request retryable
//! (unbounded memory, breaks streaming uploads).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use hyper::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;

use crate::access_log::{Pending, Trace};
use crate::body::{ClientBody, RouterBody, UpstreamBody};
use crate::dispatch::{self, Dispatch};
use crate::forwarded::{client_address, set_forwarding_headers};
use crate::generation::InFlightGuard;
use crate::outgoing::{Outgoing, upstream_head};
use crate::route::normalize_host;
use crate::{Edge, Inner, RouterConfig};

pub(crate) type UpstreamClient = Client<HttpConnector, UpstreamBody>;

pub(crate) const X_CUTOVER_VERSION: HeaderName = HeaderName::from_static("x-cutover-version");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Times the table is re-read when the picked generation was retired in between (each retry
/// sees a table published after that retirement, so more than one is already rare).
const MAX_ADMIT_ATTEMPTS: usize = 16;

/// The upstream clients (each with its keep-alive pool) requests are sent with.
pub(crate) struct Upstreams {
    pub(crate) local: UpstreamClient,
    /// The same for non-loopback upstreams (shorter connect timeout).
    pub(crate) remote: UpstreamClient,
    /// The router's own client's pool, for requests without a body (`upstream`).
    pub(crate) pool: Arc<crate::upstream::Pool>,
}

impl Upstreams {
    pub(crate) fn new(config: &RouterConfig) -> Self {
        Self {
            local: build_client(config, config.connect_timeout),
            remote: build_client(config, config.remote_connect_timeout),
            pool: Arc::new(crate::upstream::Pool::new(
                config.pool_idle_timeout,
                config.pool_max_idle_per_upstream,
            )),
        }
    }
}

fn build_client(config: &RouterConfig, connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_upstream)
        .build(connector)
}

/// Which route a listener serves.
#[derive(Clone)]
pub(crate) enum Target {
    /// Pick the route from the `Host` header.
    ByHost,
    /// Always this normalised host (a fixed per-service port).
    Fixed(Arc<str>),
}

/// Per-connection context.
pub(crate) struct ConnCtx {
    pub(crate) inner: Arc<Inner>,
    /// The clients of the listener's thread (see [`crate::Router::serve_threads`]).
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) target: Target,
    pub(crate) peer: SocketAddr,
    /// The peer as the forwarding headers name it.
    pub(crate) hop: crate::forwarded::Hop,
    /// The scheme clients use on this listener (`http` or `https`), for `X-Forwarded-Proto`.
    pub(crate) proto: &'static str,
    /// Flips to `true` when `serve` returns; upgraded tunnels close then.
    pub(crate) hard_stop: watch::Receiver<bool>,
}

pub(crate) fn text_response(status: StatusCode, text: String) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::local(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An unknown host: a plain 404 that names nothing. Listing the routes told any visitor every
/// environment, branch-derived ones included.
fn not_found() -> Response<RouterBody> {
    text_response(
        StatusCode::NOT_FOUND,
        "cutover router: no route for this host\n".into(),
    )
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers that `Connection` may never name for removal: they are end-to-end by definition, and
/// dropping them changes where (`Host`) or how long (`Content-Length`) a message is.
const NEVER_HOP_BY_HOP: [HeaderName; 2] = [header::HOST, header::CONTENT_LENGTH];

/// The hop-by-hop headers of RFC 9110 section 7.6.1 and their historic companions.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those named by `Connection` (but never `Host` or
/// `Content-Length`). Most messages carry none: one pass over the names says so, and the
/// nine look-ups are skipped.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !NEVER_HOP_BY_HOP.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The `Location` of a plain-HTTP request to a host that is redirected to HTTPS.
fn https_redirect(tls: &crate::EdgeTls, host: &str, path: &str) -> Option<HeaderValue> {
    let wildcard = host.split_once('.').map(|(_, rest)| format!("*.{rest}"));
    let listed = tls
        .redirect_hosts
        .iter()
        .any(|h| h == host || Some(h) == wildcard.as_ref());
    if !listed {
        return None;
    }
    let port = match tls.https_port {
        0 | 443 => String::new(),
        p => format!(":{p}"),
    };
    HeaderValue::from_str(&format!("https://{host}{port}{path}")).ok()
}

/// hyper service entry point: never fails, errors become HTTP answers.
pub(crate) async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<ClientBody>,
) -> Result<Response<RouterBody>, Infallible> {
    let edge = ctx.inner.edge.load_full();
    let log = edge.access_log.clone();
    // The wall clock is for the access log's line only.
    let time = match log {
        Some(_) => std::time::SystemTime::now(),
        None => std::time::UNIX_EPOCH,
    };
    let start = std::time::Instant::now();
    let (client, method, path) = if log.is_some() {
        (
            client_address(req.headers(), ctx.peer, &edge.trusted_proxies),
            req.method().to_string(),
            req.uri().path().to_owned(),
        )
    } else {
        (ctx.peer.ip(), String::new(), String::new())
    };
    let mut trace = Trace::default();
    trace.logging = log.is_some();
    let mut resp = forward(&ctx, &edge, req, start, &mut trace).await;
    let status = resp.status().as_u16();
    let pending = Pending::new(&ctx, log, (time, start), trace, status, (client, method, path));
    attach(resp.body_mut(), pending);
    Ok(resp)
}

/// Gives an answer's body its access-log line and metrics, recorded when the body ends; an
/// empty body is never polled: they are recorded at once.
pub(crate) fn attach(body: &mut RouterBody, pending: Box<Pending>) {
    if !body.is_end_stream() {
        body.pending = Some(pending);
    }
    // else: `pending` is dropped here, which records it.
}

/// The host a request names, strictly: an absolute-form target's authority wins over `Host`
/// (RFC 9112 section 3.2.2: a server must ignore `Host` then); otherwise exactly one `Host`.
/// `Err` is the 400 answer.
fn request_host<B>(req: &Request<B>) -> Result<Option<HeaderValue>, &'static str> {
    let hosts = req.headers().get_all(header::HOST);
    if hosts.iter().nth(1).is_some() {
        return Err("cutover router: more than one Host header\n");
    }
    if let Some(authority) = req.uri().authority() {
        // `user@` is not part of the host; a target naming one is refused rather than guessed.
        if authority.as_str().contains('@') {
            return Err("cutover router: request target carries credentials\n");
        }
        return HeaderValue::from_str(authority.as_str())
            .map(Some)
            .map_err(|_| "cutover router: bad request target\n");
    }
    Ok(hosts.iter().next().cloned())
}

/// A request's route, picked and admitted to (see `route`).
pub(crate) struct Routed<'a> {
    /// The route's host (a public name resolved to the route's own).
    pub(crate) host: std::borrow::Cow<'a, str>,
    pub(crate) guard: InFlightGuard,
    /// The `Cutover-Flags` value of the route's environment.
    pub(crate) flags: Option<HeaderValue>,
}

impl Routed<'_> {
    /// The upstreams to try, in order (see `suspects`).
    pub(crate) fn order(&self, inner: &Inner) -> Vec<usize> {
        let generation = self.guard.generation();
        let mut order = inner.suspects.order(
            &generation.backend.upstreams,
            generation.next_index(),
            Instant::now,
        );
        order.truncate(inner.config.max_connect_attempts.max(1));
        order
    }
}

async fn forward(
    ctx: &ConnCtx,
    edge: &Edge,
    req: Request<ClientBody>,
    start: Instant,
    trace: &mut Trace,
) -> Response<RouterBody> {
    let inner = &*ctx.inner;
    // A tunnel through the router would carry bytes past routing, draining and the switch:
    // the router is a reverse proxy, not a forward one.
    if req.method() == http::Method::CONNECT {
        let mut answer = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "cutover router: CONNECT is not served\n".into(),
        );
        answer.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return answer;
    }
    let host_header = match request_host(&req) {
        Ok(h) => h,
        Err(why) => return text_response(StatusCode::BAD_REQUEST, why.into()),
    };
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let routed = match route(ctx, edge, host_header.as_ref(), target.as_str(), trace).await {
        Ok(routed) => routed,
        Err(answer) => return answer,
    };
    let order = routed.order(inner);
    let Routed { host, guard, flags } = routed;
    let generation = Arc::clone(guard.generation());

    let upgrade = wants_upgrade(req.headers());
    let (method, headers, head, slot, client_upgrade) = match &host_header {
        Some(host_header) if !upgrade && req.body().is_end_stream() => {
            // The common request: its upstream head written from the client's fields as they
            // are (`outgoing`), sent by the router's own client.
            let (parts, _) = req.into_parts();
            let mut headers = parts.headers;
            strip_hop_by_hop(&mut headers);
            let outgoing = Outgoing {
                method: &parts.method,
                target: &target,
                host: host_header.as_bytes(),
                hop: &ctx.hop,
                proto: ctx.proto,
                trusted: &edge.trusted_proxies,
                flags: flags.as_ref(),
            };
            let head = upstream_head(&outgoing, &headers);
            (parts.method, HeaderMap::new(), Some(head), None, None)
        }
        _ => {
            let (method, headers, slot, client_upgrade) =
                rewrite_in_place(ctx, edge, req, host_header.as_ref(), flags, upgrade);
            (method, headers, None, slot, client_upgrade)
        }
    };
    let dispatch = Dispatch {
        ctx,
        host: &host,
        generation,
        guard,
        order,
        method,
        path: target,
        headers,
        head,
    };
    if slot.is_none() && client_upgrade.is_none() {
        match dispatch::via_own_client(dispatch, start, trace).await {
            Ok(sent) => sent.into_response(),
            Err(answer) => answer,
        }
    } else {
        // Boxed: this path's future would otherwise make every request's future larger.
        Box::pin(dispatch::via_hyper(dispatch, slot, client_upgrade, trace)).await
    }
}

/// A request with a body or an upgrade (or without a host, on a fixed-route listener), its
/// headers rewritten in place for hyper's client: the route's host, hop-by-hop fields out, the
/// router's flags and forwarding fields in (what `outgoing` writes for the others). Returns
/// its method, headers, body slot (when it has a body) and the client's side of an upgrade.
fn rewrite_in_place(
    ctx: &ConnCtx,
    edge: &Edge,
    mut req: Request<ClientBody>,
    host_header: Option<&HeaderValue>,
    flags: Option<HeaderValue>,
    upgrade: bool,
) -> (
    http::Method,
    HeaderMap,
    Option<dispatch::BodySlot>,
    Option<hyper::upgrade::OnUpgrade>,
) {
    if let Some(h) = host_header {
        // The upstream sees the host the route was picked by.
        req.headers_mut().insert(header::HOST, h.clone());
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_value = req.headers().get(header::UPGRADE).cloned();
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // hyper answers `Expect: 100-continue` to the client itself when the body is first read
    // (i.e. when the upstream starts pulling it); forwarding it would ask twice.
    headers.remove(header::EXPECT);
    // Only the router says which flags are on (see the `flags` module).
    headers.remove(crate::FLAGS_HEADER);
    if let Some(flags) = flags {
        headers.insert(crate::FLAGS_HEADER, flags);
    }
    set_forwarding_headers(
        &mut headers,
        &ctx.hop,
        host_header,
        ctx.proto,
        &edge.trusted_proxies,
    );
    if let Some(up) = upgrade_value.filter(|_| upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
    // (slot, how the client's body is getting on): only for a request with a body.
    let slot = (!body.is_end_stream()).then(|| {
        let watch = crate::body::BodyWatch::new(ctx.inner.config.client_body_timeout);
        (Arc::new(Mutex::new(Some(body))), Arc::new(watch))
    });
    (parts.method, headers, slot, client_upgrade)
}

/// Picks a request's route and gets it admitted to the route's generation (see `generation`),
/// or answers it: an ACME challenge, no or a bad host, an HTTPS redirect, an unknown route, a
/// held or closed environment, a route without upstreams. `host_header`: the host the request
/// names; `target`: its path and query.
pub(crate) async fn route<'a>(
    ctx: &'a ConnCtx,
    edge: &'a Edge,
    host_header: Option<&'a HeaderValue>,
    target: &str,
    trace: &mut Trace,
) -> Result<Routed<'a>, Response<RouterBody>> {
    let inner = &*ctx.inner;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    // HTTP-01 challenges are the router's own (see the `acme` module): with ACME on, that path
    // never reaches an application, whatever the host.
    if edge.tls.as_ref().is_some_and(|t| t.acme.is_some())
        && let Some(token) = path.strip_prefix(crate::acme::CHALLENGE_PREFIX)
    {
        return Err(match inner.acme.challenges.answer(token) {
            Some(key_auth) => {
                let mut answer = text_response(StatusCode::OK, key_auth);
                answer.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                answer
            }
            None => text_response(
                StatusCode::NOT_FOUND,
                "cutover router: no such ACME challenge\n".into(),
            ),
        });
    }
    let host: std::borrow::Cow<'_, str> = match &ctx.target {
        Target::Fixed(h) => std::borrow::Cow::Borrowed(&**h),
        Target::ByHost => match host_header.and_then(|h| h.to_str().ok()).and_then(normalize_host) {
            Some(h) => h,
            None => {
                return Err(text_response(
                    StatusCode::BAD_REQUEST,
                    "cutover router: request has no Host\n".into(),
                ));
            }
        },
    };

    if trace.logging {
        trace.host = Some(host.to_string());
    }
    if ctx.proto == "http"
        && let Some(tls) = &edge.tls
        && matches!(ctx.target, Target::ByHost)
        && let Some(location) = https_redirect(tls, &host, target)
    {
        let mut answer = text_response(
            StatusCode::PERMANENT_REDIRECT,
            "cutover router: use HTTPS\n".into(),
        );
        answer.headers_mut().insert(header::LOCATION, location);
        return Err(answer);
    }
    // A public name (www.example.com) stands for its route's own name.
    let host: std::borrow::Cow<'_, str> = match &ctx.target {
        Target::ByHost if !edge.hosts.is_empty() => match edge.hosts.resolve(&host, path) {
            Some(internal) => std::borrow::Cow::Borrowed(internal),
            None => host,
        },
        _ => host,
    };
    // Pick the generation exactly once, and get admitted to it (see `generation`).
    let mut guard = None;
    let mut flags = None;
    for _ in 0..MAX_ADMIT_ATTEMPTS {
        let table = inner.table.load();
        let Some(entry) = table.get(&*host) else {
            return Err(not_found());
        };
        if let Some(g) = InFlightGuard::enter(Arc::clone(&entry.generation)) {
            // A held or closed environment (see the `gate` module): leave the generation, wait.
            if inner.gates.on(&entry.key) {
                let key = entry.key.clone();
                let metrics = Arc::clone(&entry.metrics);
                drop((g, table));
                // Boxed: rare, and kept out of every request's future (its size is copied around).
                match Box::pin(inner.gates.wait(key.app(), key.env())).await {
                    crate::gate::Wait::Go => continue,
                    crate::gate::Wait::Answer(answer) => {
                        // The gate's 503 is the route's answer: counted and logged as its own
                        // (the in-flight gauge goes down again when `trace` is dropped).
                        metrics.in_flight.inc();
                        trace.metrics = Some(metrics);
                        if trace.logging {
                            trace.route = Some(key);
                        }
                        return Err(*answer);
                    }
                }
            }
            entry.metrics.in_flight.inc();
            flags = inner.flags.header_for(&entry.key);
            trace.metrics = Some(Arc::clone(&entry.metrics));
            if trace.logging {
                trace.route = Some(entry.key.clone());
                trace.version = Some(g.generation().backend.version.clone());
            }
            guard = Some(g);
            break;
        }
    }
    let Some(guard) = guard else {
        return Err(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cutover router: route {host} is switching too fast\n"),
        ));
    };
    if guard.generation().backend.upstreams.is_empty() {
        return Err(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cutover router: route {host} has no upstreams\n"),
        ));
    }

    Ok(Routed { host, guard, flags })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        h.remove(header::UPGRADE);
        assert!(!wants_upgrade(&h));
    }
}

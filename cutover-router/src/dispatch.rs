//! Sending a routed request to its generation's upstreams, in the order the suspects allow,
//! with connect retry (see `proxy` for the rules): through the router's own client (`upstream`)
//! for a request without a body or upgrade, through hyper's client for the others.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{self, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::Inner;
use crate::access_log::Trace;
use crate::body::{BodyWatch, ClientBody, Fault, Kind, RouterBody, UpstreamBody, lock};
use crate::generation::{GenInner, InFlightGuard};
use crate::head::RawHead;
use crate::proxy::{ConnCtx, X_CUTOVER_VERSION, strip_hop_by_hop, text_response};
use crate::suspects::patient;
use crate::upstream::{self, Failure};

/// A client's body kept retrievable until first read, and how it is getting on (see `proxy`).
pub(crate) type BodySlot = (Arc<Mutex<Option<ClientBody>>>, Arc<BodyWatch>);

/// A routed request, admitted to `generation` (held by `guard`), ready to be sent.
pub(crate) struct Dispatch<'a> {
    pub(crate) ctx: &'a ConnCtx,
    /// The route's host, for messages.
    pub(crate) host: &'a str,
    pub(crate) generation: Arc<GenInner>,
    pub(crate) guard: InFlightGuard,
    /// Indexes of the upstreams to try, in order.
    pub(crate) order: Vec<usize>,
    pub(crate) method: Method,
    pub(crate) path: PathAndQuery,
    /// Rewritten for the upstream (hop-by-hop removed, forwarding headers set).
    pub(crate) headers: HeaderMap,
    /// The upstream request head already written (the router's own HTTP/1.1 path, `plain`):
    /// `headers` is not read then.
    pub(crate) head: Option<Vec<u8>>,
}

/// An upstream's answer to a request sent by the router's own client: its fields as they came
/// (hop-by-hop ones removed), and its body, which holds the request's in-flight guard.
pub(crate) struct Sent {
    pub(crate) status: StatusCode,
    pub(crate) head: RawHead,
    /// The generation's `X-Cutover-Version` value.
    pub(crate) version: HeaderValue,
    pub(crate) body: RouterBody,
}

impl Sent {
    /// As a `Response` for hyper to write.
    pub(crate) fn into_response(self) -> Response<RouterBody> {
        let Some(mut headers) = self.head.to_header_map(1) else {
            // (not reached: `upstream` refuses such fields)
            return text_response(
                StatusCode::BAD_GATEWAY,
                "cutover router: the upstream's answer has an invalid field\n".into(),
            );
        };
        headers.insert(X_CUTOVER_VERSION, self.version);
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// The common request, through the router's own client (see `upstream`); `Err`: the router's
/// own answer (no upstream reachable, a timeout, a malformed answer).
pub(crate) async fn via_own_client(
    d: Dispatch<'_>,
    start: Instant,
    trace: &mut Trace,
) -> Result<Sent, Response<RouterBody>> {
    let Dispatch {
        ctx,
        host,
        generation,
        guard,
        order,
        method,
        path,
        headers,
        head: ready_head,
    } = d;
    let inner = &*ctx.inner;
    let upstreams = &generation.backend.upstreams;
    let attempts = order.len();
    let mut last_err = String::new();
    let mut shared_head = ready_head;
    for (attempt, &index) in order.iter().enumerate() {
        let addr = upstreams[index];
        if trace.logging {
            trace.upstream = Some(addr);
        }
        let own_head;
        let head: &[u8] = if shared_head.is_some() || headers.contains_key(header::HOST) {
            shared_head.get_or_insert_with(|| upstream::request_head(&method, path.as_str(), "", &headers))
        } else {
            let authority = generation.authorities[index].as_str();
            own_head = upstream::request_head(&method, path.as_str(), authority, &headers);
            &own_head
        };
        let call = upstream::Call {
            pool: &ctx.upstreams.pool,
            addr,
            connect_timeout: if patient(addr, attempt + 1 == attempts) {
                inner.config.connect_timeout
            } else {
                inner.config.remote_connect_timeout
            },
            header_timeout: inner.config.response_header_timeout,
            method: &method,
            now: start,
        };
        match upstream::send(call, head).await {
            Ok(answer) => {
                inner.suspects.clear(addr);
                return Ok(Sent {
                    status: answer.status,
                    head: answer.head,
                    version: guard.generation().version_header.clone(),
                    body: RouterBody {
                        kind: Kind::Fast(answer.body),
                        guard: Some(guard),
                        pending: None,
                    },
                });
            }
            Err(Failure::Connect(e)) => {
                tracing::debug!(%addr, error = %e, "upstream connect failed");
                connect_failed(inner, trace, addr);
                last_err = format!("connect to {addr} failed");
            }
            Err(Failure::Timeout) => return Err(no_response_in_time(addr)),
            Err(Failure::Upstream(why)) => {
                tracing::debug!(%addr, error = %why, "upstream request failed");
                return Err(upstream_failed(addr));
            }
        }
    }
    Err(none_reachable(host, &last_err))
}

/// A request with a body or an upgrade, through hyper's client.
pub(crate) async fn via_hyper(
    d: Dispatch<'_>,
    slot: Option<BodySlot>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    trace: &mut Trace,
) -> Response<RouterBody> {
    let Dispatch {
        ctx,
        host,
        generation,
        guard,
        order,
        method,
        path,
        mut headers,
        head: _,
    } = d;
    let inner = &*ctx.inner;
    let upstreams = &generation.backend.upstreams;
    let attempts = order.len();
    let mut last_err = String::new();
    for (attempt, &index) in order.iter().enumerate() {
        let addr = upstreams[index];
        if trace.logging {
            trace.upstream = Some(addr);
        }
        let mut uri = uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(generation.authorities[index].clone());
        uri.path_and_query = Some(path.clone());
        let Ok(uri) = Uri::from_parts(uri) else {
            return text_response(StatusCode::BAD_REQUEST, "cutover router: bad path\n".into());
        };
        let last = attempt + 1 == attempts;
        let mut up_req = Request::new(match &slot {
            Some((s, watch)) => UpstreamBody::with_slot(s, watch),
            None => UpstreamBody::Empty,
        });
        *up_req.method_mut() = method.clone();
        *up_req.uri_mut() = uri;
        *up_req.headers_mut() = if last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let client = if patient(addr, last) {
            &ctx.upstreams.local
        } else {
            &ctx.upstreams.remote
        };
        let watch = slot.as_ref().map(|(_, w)| &**w);
        let sent = answer_in_time(
            client.request(up_req),
            inner.config.response_header_timeout,
            watch,
        )
        .await;
        let resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let body_untouched = slot.as_ref().is_none_or(|(s, _)| lock(s).is_some());
                tracing::debug!(%addr, error = ?e, "upstream request failed");
                match watch.map(BodyWatch::fault) {
                    Some(Fault::Malformed) => {
                        return text_response(
                            StatusCode::BAD_REQUEST,
                            "cutover router: malformed request body\n".into(),
                        );
                    }
                    Some(Fault::Stalled) => {
                        return text_response(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "cutover router: the request body stopped coming (no byte for {:?})\n",
                                inner.config.client_body_timeout
                            ),
                        );
                    }
                    Some(Fault::None) | None => {}
                }
                if e.is_connect() {
                    connect_failed(inner, trace, addr);
                }
                // A connect failure sent nothing: another upstream may take the request.
                if e.is_connect() && body_untouched {
                    last_err = format!("connect to {addr} failed");
                    continue;
                }
                return upstream_failed(addr);
            }
            Err(_) => return no_response_in_time(addr),
        };
        inner.suspects.clear(addr);
        return respond(ctx, resp, guard, client_upgrade);
    }
    none_reachable(host, &last_err)
}

/// `call` (an upstream's answer head) within `patience`, counted from the end of the request's
/// body when it has one (from its last move while it moves; not while it waits for the client,
/// whose body timeout governs then): a long upload is not a slow upstream.
async fn answer_in_time<F: std::future::Future>(
    call: F,
    patience: std::time::Duration,
    body: Option<&BodyWatch>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(call);
    let mut due = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(due, call.as_mut()).await {
            Ok(answer) => return Ok(answer),
            Err(elapsed) => {
                let now = tokio::time::Instant::now();
                match body.map(|b| b.answer_due(patience)) {
                    Some(None) => due = now + patience, // the client's turn
                    Some(Some(later)) if later > now => due = later,
                    _ => return Err(elapsed),
                }
            }
        }
    }
}

/// An upstream that failed to connect: suspect for a while, and counted.
fn connect_failed(inner: &Inner, trace: &Trace, addr: SocketAddr) {
    inner
        .suspects
        .mark(addr, Instant::now() + inner.config.suspect_for);
    if let Some(m) = &trace.metrics {
        m.connect_errors.inc();
    }
}

fn upstream_failed(addr: SocketAddr) -> Response<RouterBody> {
    text_response(
        StatusCode::BAD_GATEWAY,
        format!("cutover router: upstream {addr} failed\n"),
    )
}

fn no_response_in_time(addr: SocketAddr) -> Response<RouterBody> {
    text_response(
        StatusCode::GATEWAY_TIMEOUT,
        format!("cutover router: upstream {addr} sent no response in time\n"),
    )
}

fn none_reachable(host: &str, last_err: &str) -> Response<RouterBody> {
    tracing::warn!(route = %host, "{last_err}; no upstream reachable");
    text_response(
        StatusCode::BAD_GATEWAY,
        format!("cutover router: {last_err} (no upstream of {host} reachable)\n"),
    )
}

fn respond(
    ctx: &ConnCtx,
    mut resp: Response<Incoming>,
    guard: InFlightGuard,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RouterBody> {
    let version = guard.generation().version_header.clone();
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return text_response(
                StatusCode::BAD_GATEWAY,
                "cutover router: upstream switched protocols unasked\n".into(),
            );
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let mut hard_stop = ctx.hard_stop.clone();
        tokio::spawn(async move {
            let _guard = guard; // the tunnel counts as in flight until it closes
            let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    tracing::debug!(result = ?r, "tunnel closed");
                }
                () = async { let _ = hard_stop.wait_for(|stop| *stop).await; } => {}
            }
        });
        let (mut parts, _) = resp.into_parts();
        parts.headers.insert(X_CUTOVER_VERSION, version);
        return Response::from_parts(parts, RouterBody::local(Bytes::new()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(X_CUTOVER_VERSION, version);
    Response::from_parts(
        parts,
        RouterBody {
            kind: Kind::Upstream(body),
            guard: Some(guard),
            pending: None,
        },
    )
}

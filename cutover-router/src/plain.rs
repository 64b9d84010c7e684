//! A plain request (`fast`) through the router without `http` types: its head is relayed as
//! the fields that came, rewritten as a proxy must, and the upstream's answer comes back the
//! same way ([`Sent`]). Routing and admission are `proxy::route`, as for every request, and
//! every answer the router writes itself (a 404, a gate's 503, a redirect, a 502) is built as
//! before.
//!
//! The rewriting is `proxy::forward`'s: hop-by-hop fields and those `Connection` names go
//! (`RawHead::strip_hop_by_hop`), then `outgoing` writes the upstream head from the fields
//! left, as it does for `proxy::forward`'s bodyless requests (its unit tests compare it with
//! the `HeaderMap` path on the same requests).
//!
//! A request with an access log on, or without exactly one `Host`, takes `proxy::handle`
//! instead (the log needs the client address the forwarding headers give, and the host rules
//! answer the others).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};

use crate::access_log::{Pending, Trace};
use crate::body::{ClientBody, RouterBody};
use crate::dispatch::{self, Dispatch, Sent};
use crate::head::RawHead;
use crate::outgoing::{Outgoing, upstream_head};
use crate::proxy::{self, ConnCtx, Routed, attach, text_response};

/// A bodyless HTTP/1.1 request in origin form, as `fast` read it.
pub(crate) struct PlainRequest {
    pub(crate) method: Method,
    pub(crate) target: PathAndQuery,
    pub(crate) head: RawHead,
}

/// What the router answers a plain request with.
pub(crate) enum Reply {
    /// An upstream's answer, its fields as they came.
    Relayed(Sent),
    /// An answer built as a `Response` (the router's own, or `proxy::handle`'s).
    Answer(Response<RouterBody>),
}

impl PlainRequest {
    /// As a `Request` for `proxy::handle` (`None`: a field the `http` types refuse, which
    /// `fast` does not take).
    fn into_request(self) -> Option<Request<ClientBody>> {
        let headers = self.head.to_header_map(6)?;
        let mut req = Request::new(ClientBody::Empty);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.target.into();
        *req.headers_mut() = headers;
        Some(req)
    }
}

/// Routes and sends a plain request (see the module documentation).
pub(crate) async fn handle(ctx: &Arc<ConnCtx>, mut req: PlainRequest) -> Reply {
    // An `Arc`, not a guard: it is held while the upstream answers.
    let edge = ctx.inner.edge.load_full();
    let mut hosts = req
        .head
        .fields
        .iter()
        .filter(|f| req.head.name(f).eq_ignore_ascii_case(b"host"));
    let host_field = match (hosts.next(), hosts.next()) {
        (Some(f), None) if edge.access_log.is_none() => *f,
        _ => {
            drop(edge);
            return Reply::Answer(match req.into_request() {
                // Boxed: rare, and kept out of every plain request's future (copied per request).
                Some(r) => match Box::pin(proxy::handle(Arc::clone(ctx), r)).await {
                    Ok(resp) => resp,
                },
                None => text_response(
                    StatusCode::BAD_REQUEST,
                    "cutover router: bad header field\n".into(),
                ),
            });
        }
    };
    let start = Instant::now();
    let mut trace = Trace::default();
    let host_header = req.head.value_bytes(&host_field);
    let host_header = HeaderValue::from_maybe_shared(host_header).ok();
    let routed = match &host_header {
        Some(h) => match proxy::route(ctx, &edge, Some(h), req.target.as_str(), &mut trace).await {
            Ok(routed) => Ok((routed.order(&ctx.inner), routed)),
            Err(answer) => Err(answer),
        },
        None => Err(text_response(
            StatusCode::BAD_REQUEST,
            "cutover router: bad Host\n".into(),
        )),
    };
    let reply = match routed {
        Err(answer) => Reply::Answer(answer),
        Ok((order, Routed { host, guard, flags })) => {
            req.head.strip_hop_by_hop();
            let outgoing = Outgoing {
                method: &req.method,
                target: &req.target,
                host: host_header.as_ref().map_or(b"", HeaderValue::as_bytes),
                hop: &ctx.hop,
                proto: ctx.proto,
                trusted: &edge.trusted_proxies,
                flags: flags.as_ref(),
            };
            let head = upstream_head(&outgoing, &req.head);
            let dispatch = Dispatch {
                ctx,
                host: &host,
                generation: Arc::clone(guard.generation()),
                guard,
                order,
                method: req.method,
                path: req.target,
                headers: HeaderMap::new(),
                head: Some(head),
            };
            match dispatch::via_own_client(dispatch, start, &mut trace).await {
                Ok(sent) => Reply::Relayed(sent),
                Err(answer) => Reply::Answer(answer),
            }
        }
    };
    let record = |body: &mut RouterBody, status: StatusCode, trace: Trace| {
        let pending = Pending::new(
            ctx,
            None,
            (SystemTime::UNIX_EPOCH, start),
            trace,
            status.as_u16(),
            (ctx.peer.ip(), String::new(), String::new()),
        );
        attach(body, pending);
    };
    match reply {
        Reply::Relayed(mut sent) => {
            record(&mut sent.body, sent.status, trace);
            Reply::Relayed(sent)
        }
        Reply::Answer(mut resp) => {
            let status = resp.status();
            record(resp.body_mut(), status, trace);
            Reply::Answer(resp)
        }
    }
}

//! A plain request (`fast`) through the router without `http` types: its head is relayed as
//! the fields that came, rewritten as a proxy must, and the upstream's answer comes back the
//! same way ([`Sent`]). Routing and admission are `proxy::route`, as for every request, and
//! every answer the router writes itself (a 404, a gate's 503, a redirect, a 502) is built as
//! before.
//!
//! The rewriting is `proxy::forward`'s, field by field: hop-by-hop fields and those
//! `Connection` names go, a client's `Cutover-Flags` goes (the router's own goes in), and the
//! forwarding fields are appended to when the peer is a trusted proxy, else replaced
//! (`forwarded`). The unit tests compare the two on the same requests.
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
use crate::forwarded::{Hop, TrustedProxies, write_forwarded_element};
use crate::head::{RawHead, put_field};
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
            let head = upstream_head(
                &req,
                &ctx.hop,
                host_header.as_ref().map(HeaderValue::as_bytes),
                ctx.proto,
                &edge.trusted_proxies,
                flags.as_ref(),
            );
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

/// The forwarding fields `proxy::forward` rewrites (`forwarded::set_forwarding_headers`).
const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// A value as `HeaderValue::to_str` sees it: visible ASCII, space and tab only.
fn as_str(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// The upstream request head of a plain request whose hop-by-hop fields are gone: its other
/// fields as they came, less the client's `Cutover-Flags` and forwarding fields, then the
/// router's (see `forwarded`). `host`: the request's `Host` value.
fn upstream_head(
    req: &PlainRequest,
    hop: &Hop,
    host: Option<&[u8]>,
    proto: &'static str,
    trusted: &TrustedProxies,
    flags: Option<&HeaderValue>,
) -> Vec<u8> {
    let head = &req.head;
    let mut out = Vec::with_capacity(head.bytes.len() + 256);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let is = |n: &[u8], name: &str| n.eq_ignore_ascii_case(name.as_bytes());
    for (name, value) in head.iter() {
        if is(name, "cutover-flags") || is(name, "expect") || FORWARDING.iter().any(|f| is(name, f)) {
            continue;
        }
        put_field(&mut out, name, value);
    }
    if let Some(flags) = flags {
        put_field(&mut out, b"cutover-flags", flags.as_bytes());
    }
    let host_text = host.and_then(as_str);
    if trusted.contains(hop.ip) {
        // Appended to: the values before, joined as `forwarded::joined` does.
        let joined = |name: &str| {
            let parts: Vec<&str> = head
                .get_all(name)
                .filter_map(as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        let xff = match joined("x-forwarded-for") {
            Some(prev) => format!("{prev}, {}", hop.ip),
            None => hop.ip.to_string(),
        };
        put_field(&mut out, b"x-forwarded-for", xff.as_bytes());
        out.extend_from_slice(b"forwarded: ");
        if let Some(prev) = joined("forwarded") {
            out.extend_from_slice(prev.as_bytes());
            out.extend_from_slice(b", ");
        }
        write_forwarded_element(&mut out, &hop.for_param, host_text, proto);
        out.extend_from_slice(b"\r\n");
        // The proxy saw the original host and scheme; kept when it says so.
        for name in ["x-forwarded-host", "x-forwarded-proto"] {
            let mut any = false;
            for value in head.get_all(name) {
                put_field(&mut out, name.as_bytes(), value);
                any = true;
            }
            match (any, name) {
                (true, _) => {}
                (false, "x-forwarded-host") => {
                    if let Some(h) = host {
                        put_field(&mut out, name.as_bytes(), h);
                    }
                }
                (false, _) => put_field(&mut out, name.as_bytes(), proto.as_bytes()),
            }
        }
    } else {
        // Replaced: none of the client's values is left.
        put_field(&mut out, b"x-forwarded-for", hop.xff.as_bytes());
        out.extend_from_slice(b"forwarded: ");
        write_forwarded_element(&mut out, &hop.for_param, host_text, proto);
        out.extend_from_slice(b"\r\n");
        if let Some(h) = host {
            put_field(&mut out, b"x-forwarded-host", h);
        }
        put_field(&mut out, b"x-forwarded-proto", proto.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;
    use std::net::SocketAddr;

    fn plain(text: &[u8]) -> PlainRequest {
        let buf = bytes::Bytes::copy_from_slice(text);
        let mut fields = [const { MaybeUninit::uninit() }; 64];
        let mut parsed = httparse::Request::new(&mut []);
        parsed
            .parse_with_uninit_headers(&buf, &mut fields)
            .expect("a valid head");
        PlainRequest {
            method: Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes()).unwrap_or(Method::GET),
            target: PathAndQuery::try_from(parsed.path.unwrap_or("/")).expect("a path"),
            head: RawHead::parsed(&buf, parsed.headers),
        }
    }

    /// A request head's fields, sorted by name (values of one name in their order).
    fn fields_of(head: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut fields);
        parsed.parse(head).expect("a valid head");
        let line = format!("{} {}", parsed.method.unwrap_or(""), parsed.path.unwrap_or(""));
        let mut v: Vec<_> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        (line, v)
    }

    #[test]
    fn the_upstream_head_is_what_the_header_map_path_sends() {
        let requests: [&[u8]; 5] = [
            b"GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: h\r\nX-Forwarded-For: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\n\
             X-Forwarded-Host: evil\r\nx-forwarded-proto: https\r\nCutover-Flags: admin=on\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nhost: h\r\nconnection: keep-alive, x-secret, Host\r\nx-secret: 1\r\n\
             keep-alive: 5\r\nte: trailers\r\nproxy-authorization: basic x\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: h;x=\"y\"\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-for: , 10.0.0.2 \r\n\
             x-forwarded-for: \xff\r\nforwarded: for=a\r\nx-a: 1\r\nx-a: 2\r\nempty:\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: \xe9.example\r\n\r\n",
        ];
        let flags = [None, Some(HeaderValue::from_static("beta=on"))];
        for text in requests {
            for peer in ["127.0.0.1:9", "[::ffff:10.1.2.3]:9", "[2001:db8::1]:9"] {
                for trusted in [
                    vec![],
                    vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
                ] {
                    for flag in &flags {
                        let trusted = TrustedProxies::new(trusted.clone());
                        let peer: SocketAddr = peer.parse().unwrap();
                        let hop = Hop::new(peer);
                        let mut req = plain(text);
                        // The `HeaderMap` path, as `proxy::forward` takes it.
                        let mut map = req.head.to_header_map(6).expect("valid fields");
                        let host = map.get(http::header::HOST).cloned();
                        proxy::strip_hop_by_hop(&mut map);
                        map.remove(http::header::EXPECT);
                        map.remove(crate::FLAGS_HEADER);
                        if let Some(f) = flag {
                            map.insert(crate::FLAGS_HEADER, f.clone());
                        }
                        crate::forwarded::set_forwarding_headers(
                            &mut map,
                            &hop,
                            host.as_ref(),
                            "https",
                            &trusted,
                        );
                        let want = crate::upstream::request_head(&req.method, req.target.as_str(), "", &map);
                        req.head.strip_hop_by_hop();
                        let got = upstream_head(
                            &req,
                            &hop,
                            host.as_ref().map(HeaderValue::as_bytes),
                            "https",
                            &trusted,
                            flag.as_ref(),
                        );
                        assert_eq!(
                            fields_of(&got),
                            fields_of(&want),
                            "{:?} from {peer} (trusted: {trusted:?}, flags: {flag:?})",
                            String::from_utf8_lossy(text)
                        );
                    }
                }
            }
        }
    }
}

//! The head of a bodyless request as it goes to the upstream, written straight from the
//! client's fields without rewriting them in place: from a [`RawHead`] (`plain`, the router's
//! own HTTP/1.1 path) or from a `HeaderMap` (`proxy::forward`: HTTP/2, and HTTP/1.1 that hyper
//! served). Both come to the same fields as the in-place path that requests with a body take
//! (`proxy::strip_hop_by_hop`, `forwarded::set_forwarding_headers`, then
//! `upstream::request_head`); the unit tests compare the three on the same requests.
//!
//! The rules, field by field: the caller has removed hop-by-hop fields; the client's `Host`,
//! `Expect`, `Cutover-Flags` and forwarding fields go; the route's host, the router's
//! `Cutover-Flags` and forwarding fields (appended to when the peer is a trusted proxy, else
//! replaced; see `forwarded`) come in.

use http::Method;
use http::header::{HeaderMap, HeaderValue};
use http::uri::PathAndQuery;

use crate::forwarded::{Hop, TrustedProxies, write_forwarded_element};
use crate::head::{RawHead, put_field};

/// A request's fields, read by name (lower case) or in order.
pub(crate) trait Fields {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
    fn all<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl Fields for RawHead {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
    }

    fn all<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
    }
}

impl Fields for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn all<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).into_iter().map(HeaderValue::as_bytes)
    }
}

/// The fields the router writes itself (the client's are dropped): the host the route was
/// picked by, the flags, the forwarding fields, and `Expect` (answered by the router).
const OWN: [&str; 7] = [
    "host",
    "cutover-flags",
    "expect",
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

/// What a request's upstream head is made of besides its fields.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a Method,
    pub(crate) target: &'a PathAndQuery,
    /// The host the request names (`Host`, or the authority that wins over it).
    pub(crate) host: &'a [u8],
    /// The TCP peer.
    pub(crate) hop: &'a Hop,
    /// The scheme the client used.
    pub(crate) proto: &'static str,
    pub(crate) trusted: &'a TrustedProxies,
    /// The route's environment's `Cutover-Flags`.
    pub(crate) flags: Option<&'a HeaderValue>,
}

/// The upstream request head of a request whose hop-by-hop fields are gone (see the module
/// documentation).
pub(crate) fn upstream_head(req: &Outgoing<'_>, fields: &impl Fields) -> Vec<u8> {
    let host = req.host;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_field(&mut out, b"host", host);
    let is = |n: &[u8], name: &str| n.eq_ignore_ascii_case(name.as_bytes());
    for (name, value) in fields.each() {
        if OWN.iter().any(|f| is(name, f)) {
            continue;
        }
        put_field(&mut out, name, value);
    }
    if let Some(flags) = req.flags {
        put_field(&mut out, b"cutover-flags", flags.as_bytes());
    }
    let host_text = as_str(host);
    let hop = req.hop;
    if req.trusted.contains(hop.ip) {
        // Appended to: the values before, joined as `forwarded::joined` does.
        let joined = |name: &'static str| {
            let parts: Vec<&str> = fields
                .all(name)
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
        write_forwarded_element(&mut out, &hop.for_param, host_text, req.proto);
        out.extend_from_slice(b"\r\n");
        // The proxy saw the original host and scheme; kept when it says so.
        for name in ["x-forwarded-host", "x-forwarded-proto"] {
            let mut any = false;
            for value in fields.all(name) {
                put_field(&mut out, name.as_bytes(), value);
                any = true;
            }
            match (any, name) {
                (true, _) => {}
                (false, "x-forwarded-host") => put_field(&mut out, name.as_bytes(), host),
                (false, _) => put_field(&mut out, name.as_bytes(), req.proto.as_bytes()),
            }
        }
    } else {
        // Replaced: none of the client's values is left.
        put_field(&mut out, b"x-forwarded-for", hop.xff.as_bytes());
        out.extend_from_slice(b"forwarded: ");
        write_forwarded_element(&mut out, &hop.for_param, host_text, req.proto);
        out.extend_from_slice(b"\r\n");
        put_field(&mut out, b"x-forwarded-host", host);
        put_field(&mut out, b"x-forwarded-proto", req.proto.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use bytes::Bytes;

    /// `text`'s request line (method, target) and fields as a `RawHead`.
    fn raw(text: &[u8]) -> (Method, PathAndQuery, RawHead) {
        let buf = Bytes::copy_from_slice(text);
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut fields);
        parsed.parse(&buf).expect("a valid head");
        (
            Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes()).unwrap_or(Method::GET),
            PathAndQuery::try_from(parsed.path.unwrap_or("/")).expect("a path"),
            RawHead::parsed(&buf, parsed.headers),
        )
    }

    /// A request head's line and fields, sorted by name (values of one name in their order).
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

    /// The in-place path (what requests with a body take) for `req`: `host` replaces the
    /// client's `Host`, hop-by-hop fields go, `Expect` and the client's flags go, the router's
    /// flags and forwarding fields come in, then `upstream::request_head`.
    fn in_place(req: &Outgoing<'_>, mut map: HeaderMap, host: &HeaderValue) -> Vec<u8> {
        map.insert(http::header::HOST, host.clone());
        crate::proxy::strip_hop_by_hop(&mut map);
        map.remove(http::header::EXPECT);
        map.remove(crate::FLAGS_HEADER);
        if let Some(f) = req.flags {
            map.insert(crate::FLAGS_HEADER, f.clone());
        }
        crate::forwarded::set_forwarding_headers(&mut map, req.hop, Some(host), req.proto, req.trusted);
        crate::upstream::request_head(req.method, req.target.as_str(), "", &map)
    }

    const REQUESTS: [&[u8]; 6] = [
        b"GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: h\r\nX-Forwarded-For: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\n\
          X-Forwarded-Host: evil\r\nx-forwarded-proto: https\r\nCutover-Flags: admin=on\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\nhost: h\r\nconnection: keep-alive, x-secret, Host\r\nx-secret: 1\r\n\
          keep-alive: 5\r\nte: trailers\r\nproxy-authorization: basic x\r\ncontent-length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: h;x=\"y\"\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-for: , 10.0.0.2 \r\n\
          x-forwarded-for: \xff\r\nforwarded: for=a\r\nx-a: 1\r\nx-a: 2\r\nempty:\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: \xe9.example\r\nexpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nx-forwarded-host: a\r\nx-forwarded-host: b\r\nx-forwarded-proto: http\r\n\r\n",
    ];

    /// Every request of [`REQUESTS`] from every peer, trusted or not, with and without flags,
    /// through `f` (what goes upstream besides the fields, the raw head, the host the request
    /// names, a label for messages).
    fn each_case(mut f: impl FnMut(&Outgoing<'_>, &RawHead, &HeaderValue, &str)) {
        let flags = [None, Some(HeaderValue::from_static("beta=on"))];
        for text in REQUESTS {
            let (method, target, head) = raw(text);
            // Its `Host`; an HTTP/2 request's authority when it has none.
            let host = head
                .get_all("host")
                .next()
                .map_or(HeaderValue::from_static("authority.example"), |h| {
                    HeaderValue::from_bytes(h).expect("a valid value")
                });
            for peer in ["127.0.0.1:9", "[::ffff:10.1.2.3]:9", "[2001:db8::1]:9"] {
                for trusted in [
                    vec![],
                    vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
                ] {
                    for flag in &flags {
                        let trusted = TrustedProxies::new(trusted.clone());
                        let peer: SocketAddr = peer.parse().unwrap();
                        let label = format!(
                            "{:?} from {peer} (trusted: {trusted:?}, flags: {flag:?})",
                            String::from_utf8_lossy(text)
                        );
                        let req = Outgoing {
                            method: &method,
                            target: &target,
                            host: host.as_bytes(),
                            hop: &Hop::new(peer),
                            proto: "https",
                            trusted: &trusted,
                            flags: flag.as_ref(),
                        };
                        f(&req, &head, &host, &label);
                    }
                }
            }
        }
    }

    #[test]
    fn a_raw_head_goes_upstream_as_the_in_place_path_sends_it() {
        each_case(|req, head, host, label| {
            let want = in_place(req, head.to_header_map(6).unwrap(), host);
            let mut head = RawHead::new(head.bytes.clone(), head.fields.clone());
            head.strip_hop_by_hop();
            assert_eq!(fields_of(&upstream_head(req, &head)), fields_of(&want), "{label}");
        });
    }

    #[test]
    fn a_header_map_goes_upstream_as_the_in_place_path_sends_it() {
        each_case(|req, head, host, label| {
            let mut map = head.to_header_map(6).unwrap();
            let want = in_place(req, map.clone(), host);
            crate::proxy::strip_hop_by_hop(&mut map);
            let got = upstream_head(req, &map);
            assert_eq!(fields_of(&got), fields_of(&want), "{label}");
            // The host the route was picked by, once, whatever the client's `Host` said.
            let (_, fields) = fields_of(&got);
            let hosts: Vec<_> = fields.iter().filter(|(n, _)| n == "host").collect();
            assert_eq!(hosts, [&("host".to_owned(), host.as_bytes().to_vec())], "{label}");
        });
    }

    #[test]
    fn an_authority_wins_over_the_host_field() {
        // An HTTP/2 request (or an absolute-form target) names its host apart from `Host`.
        let mut map = HeaderMap::new();
        map.insert(http::header::HOST, HeaderValue::from_static("evil.example"));
        map.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        let hop = Hop::new("192.0.2.7:1".parse().unwrap());
        let req = Outgoing {
            method: &Method::GET,
            target: &PathAndQuery::from_static("/"),
            host: b"shop.example",
            hop: &hop,
            proto: "https",
            trusted: &TrustedProxies::new(vec![]),
            flags: None,
        };
        let text = String::from_utf8(upstream_head(&req, &map)).unwrap();
        assert!(
            text.starts_with("GET / HTTP/1.1\r\nhost: shop.example\r\n"),
            "{text}"
        );
        assert!(!text.contains("evil"), "{text}");
        assert!(text.contains("\r\nx-forwarded-host: shop.example\r\n"), "{text}");
        assert!(
            text.contains("\r\nforwarded: for=192.0.2.7;host=\"shop.example\";proto=https\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}

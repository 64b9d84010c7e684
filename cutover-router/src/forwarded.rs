//! Forwarding headers: `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto` and
//! `Forwarded` (RFC 7239), with a list of trusted proxies.
//!
//! A client talking to the router directly can write any of these headers; if the router
//! appended to them, an application reading "the first address of `X-Forwarded-For`" would take
//! the attacker's word for the client address. So the incoming values are kept only when the
//! peer (the TCP connection's address) is in [`TrustedProxies`], a load balancer in front of the
//! router: then the router appends its hop. From any other peer the incoming forwarding headers
//! are **replaced** by what the router saw itself. [`client_address`] then gives the address of
//! the real client: the rightmost address of the chain that is not a trusted proxy.
//!
//! Rejected: the `ipnet` crate for two dozen lines of prefix matching; trusting private address
//! ranges by default (a router on a shared network would believe every neighbour).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// One address range (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a [`Cidr`] could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{input:?} is not an address range: expected an IP address or ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32 ({why})"
)]
pub struct CidrError {
    /// The rejected text.
    pub input: String,
    /// What was wrong.
    pub why: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| CidrError {
            input: s.to_owned(),
            why,
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let p: u8 = p.parse().map_err(|_| err("bad prefix length"))?;
                if p > max {
                    return Err(err("prefix longer than the address"));
                }
                p
            }
        };
        if to_bits(addr) & !mask(prefix, max) != 0 {
            return Err(err("bits set after the prefix; write the network address"));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(prefix: u8, max: u8) -> u128 {
    let all = if max == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    if prefix == 0 { 0 } else { all & !(all >> prefix) }
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let max = if ip.is_ipv4() { 32 } else { 128 };
        to_bits(ip) & mask(self.prefix, max) == to_bits(self.addr)
    }
}

/// The peers whose forwarding headers are believed (load balancers in front of the router).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// From a list of ranges.
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(ranges)
    }

    /// Whether `ip` belongs to a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The configured ranges.
    pub fn ranges(&self) -> &[Cidr] {
        &self.0
    }
}

/// What the forwarding headers say about a connection's peer, worked out once when it is
/// accepted rather than on every request of the connection.
pub(crate) struct Hop {
    /// The peer's address (an IPv4-mapped IPv6 address as IPv4).
    pub(crate) ip: IpAddr,
    /// The address as an `X-Forwarded-For` element.
    pub(crate) xff: HeaderValue,
    /// The `for=` parameter of a `Forwarded` element.
    pub(crate) for_param: String,
}

impl Hop {
    pub(crate) fn new(peer: SocketAddr) -> Self {
        let ip = canonical(peer.ip());
        let text = ip.to_string();
        let for_param = match ip {
            IpAddr::V4(_) => format!("for={text}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\""),
        };
        Self {
            ip,
            // An address's text is always a valid header value.
            xff: HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            for_param,
        }
    }
}

/// Sets the forwarding headers of a request about to go upstream: `hop` is the TCP peer,
/// `host` the host the route was picked by, `proto` the scheme the client used (`http` or
/// `https`). Incoming forwarding headers are appended to when the peer is trusted, else replaced.
pub(crate) fn set_forwarding_headers(
    headers: &mut HeaderMap,
    hop: &Hop,
    host: Option<&HeaderValue>,
    proto: &'static str,
    trusted: &TrustedProxies,
) {
    let ip = hop.ip;
    let this_hop = forwarded_element(&hop.for_param, host.and_then(|h| h.to_str().ok()), proto);
    if trusted.contains(ip) {
        let xff = match joined(headers, &X_FORWARDED_FOR) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        let fwd = match joined(headers, &FORWARDED) {
            Some(prev) => format!("{prev}, {this_hop}"),
            None => this_hop,
        };
        insert(headers, X_FORWARDED_FOR, &xff);
        insert(headers, FORWARDED, &fwd);
        // The proxy saw the original host and scheme; keep them when it says so.
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(h) = host
        {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
    } else {
        // `insert` replaces every value the client sent under the name; what cannot be
        // inserted is removed, so none of the client's values is ever left.
        headers.insert(X_FORWARDED_FOR, hop.xff.clone());
        match HeaderValue::from_str(&this_hop) {
            Ok(v) => headers.insert(FORWARDED, v),
            Err(_) => headers.remove(&FORWARDED),
        };
        match host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
}

/// The client's address: `peer` itself unless it is a trusted proxy; then the rightmost
/// address of `X-Forwarded-For` that is not a trusted proxy (the leftmost one when all are).
/// Call it on the request's headers as received.
pub(crate) fn client_address(headers: &HeaderMap, peer: SocketAddr, trusted: &TrustedProxies) -> IpAddr {
    let ip = canonical(peer.ip());
    if !trusted.contains(ip) {
        return ip;
    }
    let chain: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    chain
        .iter()
        .rev()
        .find(|a| !trusted.contains(**a))
        .or_else(|| chain.first())
        .copied()
        .unwrap_or(ip)
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4 client) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// One `Forwarded` element: `for=...;host=...;proto=...` (IPv6 and any host quoted);
/// `for_param` is the peer's `for=...` ([`Hop`]).
fn forwarded_element(for_param: &str, host: Option<&str>, proto: &str) -> String {
    let mut out = Vec::with_capacity(for_param.len() + host.map_or(0, |h| h.len() + 8) + 16);
    write_forwarded_element(&mut out, for_param, host, proto);
    // Every part is text and the quoting adds ASCII only.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the `Forwarded` element of [`forwarded_element`] to `out`.
pub(crate) fn write_forwarded_element(out: &mut Vec<u8>, for_param: &str, host: Option<&str>, proto: &str) {
    out.extend_from_slice(for_param.as_bytes());
    if let Some(h) = host {
        // An RFC 7230 quoted-string (so a `;` or `,` in a client's `Host` cannot add parameters).
        out.extend_from_slice(b";host=\"");
        for &b in h.as_bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.1/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn untrusted_peer_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let peer: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let host = HeaderValue::from_static("www.example.com");
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(client_address(&h, peer, &t).to_string(), "203.0.113.5");
        set_forwarding_headers(&mut h, &Hop::new(peer), Some(&host), "http", &t);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.5");
        assert_eq!(h[&X_FORWARDED_HOST], "www.example.com");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(
            h[&FORWARDED],
            "for=203.0.113.5;host=\"www.example.com\";proto=http"
        );
    }

    #[test]
    fn every_value_an_untrusted_peer_sent_is_replaced() {
        let mut h = HeaderMap::new();
        for v in ["6.6.6.6", "7.7.7.7"] {
            h.append(X_FORWARDED_FOR, HeaderValue::from_static(v));
            h.append(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
            h.append(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
            h.append(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        }
        let peer: SocketAddr = "[::ffff:203.0.113.5]:4000".parse().unwrap();
        set_forwarding_headers(&mut h, &Hop::new(peer), None, "http", &TrustedProxies::default());
        let all = |n: &HeaderName| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&X_FORWARDED_FOR), ["203.0.113.5"]);
        assert_eq!(all(&FORWARDED), ["for=203.0.113.5;proto=http"]);
        assert_eq!(all(&X_FORWARDED_PROTO), ["http"]);
        assert!(
            all(&X_FORWARDED_HOST).is_empty(),
            "no host: the client's X-Forwarded-Host goes"
        );
    }

    #[test]
    fn trusted_peer_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            FORWARDED,
            HeaderValue::from_static("for=198.51.100.1;proto=https"),
        );
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(client_address(&h, peer, &t).to_string(), "198.51.100.1");
        set_forwarding_headers(&mut h, &Hop::new(peer), None, "http", &t);
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.1, 10.0.0.2");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(
            h[&FORWARDED],
            "for=198.51.100.1;proto=https, for=10.0.0.2;proto=http"
        );
    }

    #[test]
    fn ipv6_peer_and_hostile_host_are_quoted() {
        let mut h = HeaderMap::new();
        let peer: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let host = HeaderValue::from_static("a\";for=1.2.3.4");
        set_forwarding_headers(
            &mut h,
            &Hop::new(peer),
            Some(&host),
            "https",
            &TrustedProxies::default(),
        );
        assert_eq!(
            h[&FORWARDED],
            "for=\"[2001:db8::1]\";host=\"a\\\";for=1.2.3.4\";proto=https"
        );
    }
}

//! HTTP/1.1 heads kept as the bytes that came: a field list of ranges into the head, read by
//! name without building a `HeaderMap` (no hashing, no allocation per field).
//!
//! The router's own HTTP/1.1 path (`fast`) relays a plain request's fields to the upstream and
//! the upstream's answer fields to the client through these, rewriting only what a proxy must
//! (hop-by-hop fields out, forwarding fields and `X-Cutover-Version` in). A head that hyper
//! serves instead becomes a `HeaderMap` ([`RawHead::to_header_map`]); the field rules are the
//! same either way, which the unit tests check against the `HeaderMap` versions.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// One header field: its name and value as ranges of the head's bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    name_at: u32,
    name_len: u32,
    value_at: u32,
    value_len: u32,
}

impl Field {
    fn name_range(&self) -> std::ops::Range<usize> {
        self.name_at as usize..(self.name_at + self.name_len) as usize
    }

    fn value_range(&self) -> std::ops::Range<usize> {
        self.value_at as usize..(self.value_at + self.value_len) as usize
    }
}

/// A parsed head's bytes and its fields, in the order they came.
#[derive(Debug)]
pub(crate) struct RawHead {
    pub(crate) bytes: Bytes,
    pub(crate) fields: Vec<Field>,
}

/// Whether a header value is valid for the `http` types (visible ASCII, obs-text, space, tab).
pub(crate) fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

impl RawHead {
    /// A head of `bytes` with these fields (made by [`RawHead::field`] from the same bytes).
    pub(crate) fn new(bytes: Bytes, fields: Vec<Field>) -> Self {
        Self { bytes, fields }
    }

    /// A field from slices of `base` (the buffer httparse parsed; `bytes` is its front).
    pub(crate) fn field(base: &[u8], name: &[u8], value: &[u8]) -> Field {
        let start = base.as_ptr() as usize;
        let at = |s: &[u8]| {
            if s.is_empty() {
                0
            } else {
                (s.as_ptr() as usize - start) as u32
            }
        };
        Field {
            name_at: at(name),
            name_len: name.len() as u32,
            value_at: at(value),
            value_len: value.len() as u32,
        }
    }

    pub(crate) fn name(&self, f: &Field) -> &[u8] {
        &self.bytes[f.name_range()]
    }

    pub(crate) fn value(&self, f: &Field) -> &[u8] {
        &self.bytes[f.value_range()]
    }

    /// A field's value, sharing the head's bytes.
    pub(crate) fn value_bytes(&self, f: &Field) -> Bytes {
        self.bytes.slice(f.value_range())
    }

    /// The fields as (name, value) pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|f| (self.name(f), self.value(f)))
    }

    /// Every value of the field `name` (lower case), in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.get_all(name).next().is_some()
    }

    /// Whether a comma-separated field `name` lists `token` (case-insensitive).
    pub(crate) fn lists(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| has_token(v, token))
    }

    /// Removes the hop-by-hop fields, and those `Connection` names (never `Host` or
    /// `Content-Length`), as `proxy::strip_hop_by_hop` does for a `HeaderMap`.
    pub(crate) fn strip_hop_by_hop(&mut self) {
        let hop = |n: &[u8]| {
            crate::proxy::HOP_BY_HOP
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h.as_str().as_bytes()))
        };
        if !self.iter().any(|(n, _)| hop(n)) {
            return;
        }
        let named: Vec<Vec<u8>> = self
            .get_all("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t != b"host" && t != b"content-length")
            .collect();
        let bytes = &self.bytes;
        self.fields.retain(|f| {
            let n = &bytes[f.name_range()];
            !hop(n) && !named.iter().any(|t| n.eq_ignore_ascii_case(t))
        });
    }

    /// A head of `bytes` with the fields httparse found in them (tests).
    #[cfg(test)]
    pub(crate) fn parsed(bytes: &Bytes, headers: &[httparse::Header<'_>]) -> Self {
        let list = headers
            .iter()
            .map(|h| Self::field(bytes, h.name.as_bytes(), h.value))
            .collect();
        Self::new(bytes.clone(), list)
    }

    /// The fields as a `HeaderMap` (`None`: a field the `http` types refuse).
    pub(crate) fn to_header_map(&self, room: usize) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.fields.len() + room);
        for f in &self.fields {
            let name = HeaderName::from_bytes(self.name(f)).ok()?;
            let range = f.value_range();
            let value = if range.is_empty() {
                HeaderValue::from_static("")
            } else {
                HeaderValue::from_maybe_shared(self.bytes.slice(range)).ok()?
            };
            map.append(name, value);
        }
        Some(map)
    }
}

/// Whether the comma-separated `value` lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Appends `name: value\r\n`.
pub(crate) fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    /// Parses `text` as a response head.
    pub(crate) fn parse(text: &str) -> RawHead {
        let buf = Bytes::copy_from_slice(text.as_bytes());
        let mut fields = [const { MaybeUninit::uninit() }; 64];
        let mut resp = httparse::Response::new(&mut []);
        httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, &buf, &mut fields)
            .expect("a valid head");
        RawHead::parsed(&buf, resp.headers)
    }

    fn sorted(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = map
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0)); // stable: values of one name keep their order
        v
    }

    #[test]
    fn hop_by_hop_removal_matches_the_header_map_version() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-type: a\r\nx: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nx-secret: 1\r\nKeep-Alive: t=5\r\nx: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nconnection: host, content-length\r\ncontent-length: 0\r\nhost: h\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nTE: trailers\r\nupgrade: x\r\nx: a\r\nx: b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nconnection: ,, x-a ,X-B\r\nconnection: x-c\r\nx-a: 1\r\nx-b: 2\r\nx-c: 3\r\nx-d: 4\r\nempty:\r\n\r\n",
        ] {
            let mut raw = parse(text);
            let mut map = raw.to_header_map(0).expect("valid fields");
            crate::proxy::strip_hop_by_hop(&mut map);
            raw.strip_hop_by_hop();
            let stripped = raw.to_header_map(0).expect("valid fields");
            assert_eq!(sorted(&stripped), sorted(&map), "{text:?}");
        }
    }

    #[test]
    fn fields_are_read_by_name_whatever_their_case() {
        let raw = parse("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert!(raw.lists("connection", "close"));
        assert!(!raw.lists("connection", "upgrade"));
        assert_eq!(raw.get_all("x-a").collect::<Vec<_>>(), [b"1", b"2"]);
        assert!(raw.has("CONNECTION".to_ascii_lowercase().as_str()));
        assert!(!raw.has("date"));
        assert!(valid_value(b"a\tb \x80") && !valid_value(b"a\x7f") && !valid_value(b"a\x01"));
    }
}

//! The one way Cutover builds outgoing HTTP clients (webhooks, the RabbitMQ management API,
//! the registry, and the CLI's client of the server).
//!
//! reqwest is built with rustls but without a compiled-in crypto provider
//! (`rustls-no-provider`), and panics when a client is built before one is installed; the
//! ring provider is installed here once per process. Rejected: reqwest's default
//! `rustls` feature (pulls aws-lc-rs, a long C build) and native-tls (needs OpenSSL's
//! headers on every machine). `clippy.toml` forbids `reqwest::Client::builder` elsewhere.
//!
//! Redirects are followed only within the origin (scheme, host and port) of the first request,
//! and no `Referer` is sent: a 307 would otherwise re-send a request body (a broker password, a
//! webhook event) to whatever host the answer names, and the `Referer` would carry the URL's
//! query token there. A redirect elsewhere is returned as the 3xx answer it is.
//!
//! The platform's certificate roots are loaded only for a client that may speak https:
//! loading them parses every system CA (milliseconds, on every CLI call) and fails on a
//! machine without any, which must not break plain-http use.
//!
//! [`encode_segment`] is the one percent-encoder of a URL path segment (the `percent-encoding`
//! crate with RFC 3986's unreserved set), for the broker's API, the CLI and the log masker.

use std::sync::Once;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` as one URL path segment (or query value): `/`, `?`, `#`, `%`, spaces and
/// every non-ASCII byte become `%XX` (upper-case hex), so the value cannot change the path.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-encodes raw bytes the same way (for values that need not be UTF-8).
pub fn encode_segment_bytes(raw: &[u8]) -> String {
    percent_encoding::percent_encode(raw, SEGMENT).to_string()
}

/// A `reqwest::ClientBuilder` for requests to `url`'s scheme: for `https://`, trusting the
/// platform's roots; for anything else, with no roots loaded (plain http needs none).
pub fn client_builder(url: &str) -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err: another provider was installed first (by an embedding program); use that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    #[allow(clippy::disallowed_methods)] // this is the sanctioned place
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::custom(same_origin_only))
        .referer(false);
    if url.starts_with("https://") {
        builder
    } else {
        builder.tls_certs_only(Vec::new())
    }
}

/// At most 10 redirects, each within the origin of the first request.
fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    let same = attempt.url().scheme() == first.scheme()
        && attempt.url().host_str() == first.host_str()
        && attempt.url().port_or_known_default() == first.port_or_known_default();
    if attempt.previous().len() > 10 {
        attempt.error("more than 10 redirects")
    } else if same {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_cannot_change_the_path_or_query() {
        assert_eq!(encode_segment("shop-prod_1.a~"), "shop-prod_1.a~");
        assert_eq!(
            encode_segment("a b/../ü?x=1#f%+"),
            "a%20b%2F..%2F%C3%BC%3Fx%3D1%23f%25%2B"
        );
        assert_eq!(encode_segment_bytes(&[0xff, b'/']), "%FF%2F");
    }
}

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

use std::sync::Once;

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

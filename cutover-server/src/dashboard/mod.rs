//! The web dashboard: one HTML page, two scripts and one stylesheet, embedded
//! in the binary and served at `/`. The page is a small single-page app over
//! the JSON API (`/api/v1/...`); it holds no logic the API lacks. `live.js`
//! reads the event stream (`GET /api/v1/events`) with `fetch()` and re-reads
//! what a view shows when it says something changed; it polls only while the
//! stream is down.
//!
//! Every call sends the API token (`Authorization: Bearer`) the user signed in
//! with, kept in the tab's sessionStorage (not localStorage: it should not
//! outlive the tab); a `#token=...` fragment hands one over once. The page
//! itself and its assets are public: they hold no data.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const LIVE_JS: &str = include_str!("live.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Only this origin's script, style and API; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/live.js",
            get(|| async { asset("text/javascript; charset=utf-8", LIVE_JS) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

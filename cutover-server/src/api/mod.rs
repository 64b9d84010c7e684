//! The JSON HTTP API, version 1. Handlers parse and validate the request at
//! the edge, call the engine, and serialize its typed answer; they hold no
//! domain rules and never retry.

mod environments;
mod ops;
mod params;
mod runs;
mod tokens;

use axum::Json;
use axum::Router;
use axum::routing::get;
use cutover_engine::Engine;
use serde_json::{Value, json};

use crate::auth::AuthState;

/// Every route of the API, behind the token check (`auth`), which lets
/// `GET /api/v1/health` and `GET /metrics` through without a token.
pub fn routes(auth: AuthState) -> Router {
    let engine = auth.engine.clone();
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/config", get(config))
        .route("/metrics", get(metrics))
        .merge(environments::routes())
        .merge(params::routes())
        .merge(runs::routes())
        .merge(ops::routes())
        .merge(tokens::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::middleware,
        ))
        .with_state(engine)
}

async fn health(axum::extract::State(engine): axum::extract::State<Engine>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "app": engine.config().app,
        "cutover_version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn config(axum::extract::State(engine): axum::extract::State<Engine>) -> Json<Value> {
    Json(json!(engine.config()))
}

/// Prometheus metrics (text exposition format).
async fn metrics(
    axum::extract::State(engine): axum::extract::State<Engine>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        engine.metrics_text().await,
    )
}

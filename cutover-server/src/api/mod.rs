//! The JSON HTTP API, version 1. Handlers parse and validate the request at
//! the edge, call the engine, and serialize its typed answer; they hold no
//! domain rules and never retry.

mod environments;
mod ops;
mod params;
mod runs;

use axum::Json;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use cutover_core::Actor;
use cutover_engine::Engine;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Header that names who makes a change, until API tokens exist.
pub const ACTOR_HEADER: &str = "x-cutover-actor";

pub fn routes(engine: Engine) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/config", get(config))
        .route("/metrics", get(metrics))
        .merge(environments::routes())
        .merge(params::routes())
        .merge(runs::routes())
        .merge(ops::routes())
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
    Json(json!(*engine.config()))
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

/// The actor of a change, from the `X-Cutover-Actor` header.
fn actor(headers: &HeaderMap) -> Result<Actor, ApiError> {
    let raw = headers
        .get(ACTOR_HEADER)
        .ok_or_else(|| {
            ApiError::bad_request(
                "changes need an actor: send the X-Cutover-Actor header (the CLI sends your OS user, or --as NAME)",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Cutover-Actor must be plain ASCII"))?;
    let actor = Actor::parse(raw)?;
    if actor.as_str() == cutover_engine::SYSTEM_ACTOR {
        return Err(ApiError::bad_request(format!(
            "the actor name {:?} is reserved for Cutover's own writes; act under your own name (--as NAME)",
            actor.as_str()
        )));
    }
    Ok(actor)
}

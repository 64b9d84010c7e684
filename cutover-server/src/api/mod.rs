//! The JSON HTTP API, version 1. Handlers parse and validate the request at
//! the edge, call the engine, and serialize its typed answer; they hold no
//! domain rules and never retry.

mod environments;
mod ops;
mod params;
mod runs;
mod scale;

use std::sync::OnceLock;

use axum::Json;
use axum::Router;
use axum::http::HeaderMap;
use cutover_core::Actor;
use cutover_engine::Engine;
use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

/// Header that names who makes a change, until API tokens exist.
pub const ACTOR_HEADER: &str = "x-cutover-actor";

/// The document's frame: title, description and tags; paths and schemas come from the
/// handlers' `#[utoipa::path]` attributes as they are registered (so a route cannot be
/// added through [`api_router`] without appearing in the document).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Cutover API",
        description = "The HTTP API of a Cutover server: environments and their versions, the \
            parameter store, pipeline runs (release, rollback, promote, approve), what runs, \
            the scheduler and the audit log. Errors are `{\"error\": {\"kind\", \"message\"}}`. \
            Changes name who makes them in the `X-Cutover-Actor` header.",
    ),
    tags(
        (name = "environments", description = "Environments and their versions"),
        (name = "parameters", description = "The parameter store, with history and compare-and-set"),
        (name = "runs", description = "Pipeline runs: release, rollback, promote, logs, approvals"),
        (name = "operations", description = "What runs: instances, versions, service logs"),
        (name = "scheduler", description = "Cron jobs per environment"),
        (name = "scale", description = "Replica counts: applied on dev, change requests on fixed-size tiers"),
        (name = "audit", description = "The append-only audit log"),
        (name = "server", description = "Health, configuration, metrics and this document"),
    )
)]
struct ApiDoc;

/// Every API route, with its OpenAPI description.
fn api_router() -> OpenApiRouter<Engine> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(config))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(environments::routes())
        .merge(params::routes())
        .merge(runs::routes())
        .merge(ops::routes())
        .merge(scale::routes())
}

/// The OpenAPI 3.1 description of the API, as served at `/api/v1/openapi.json`.
pub fn openapi() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = api_router().split_for_parts().1;
        doc.merge(params::WildcardPaths::openapi());
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc
    })
}

pub fn routes(engine: Engine) -> Router {
    api_router().split_for_parts().0.with_state(engine)
}

/// Liveness and what this server is.
#[utoipa::path(get, path = "/api/v1/health", tag = "server",
    responses((status = 200, description = "`{status: \"ok\", app, cutover_version}`", body = Object)))]
async fn health(axum::extract::State(engine): axum::extract::State<Engine>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "app": engine.config().app,
        "cutover_version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The validated `cutover.yml` the server runs with, defaults filled in.
#[utoipa::path(get, path = "/api/v1/config", tag = "server",
    responses((status = 200, description = "The configuration as JSON", body = Object)))]
async fn config(axum::extract::State(engine): axum::extract::State<Engine>) -> Json<Value> {
    Json(json!(*engine.config()))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)))]
async fn openapi_json() -> Json<&'static OpenApi> {
    Json(openapi())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
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

#[cfg(test)]
mod tests;

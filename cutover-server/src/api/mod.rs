//! The JSON HTTP API, version 1. Handlers parse and validate the request at
//! the edge, call the engine, and serialize its typed answer; they hold no
//! domain rules and never retry.

mod environments;
mod events;
mod flags;
mod maintenance;
mod ops;
mod params;
pub(crate) mod queries;
mod redact;
mod runs;
mod scale;
mod source;
pub(crate) mod system;
mod tokens;

use std::sync::OnceLock;

use axum::Json;
use axum::Router;
use cutover_engine::Engine;
use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthState;
use crate::error::ApiError;

/// The document's frame: title, description and tags; paths and schemas come from the
/// handlers' `#[utoipa::path]` attributes as they are registered (so a route cannot be
/// added through [`api_router`] without appearing in the document).
#[derive(utoipa::OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    info(
        title = "Cutover API",
        description = "The HTTP API of a Cutover server: environments and their versions, the \
            parameter store, pipeline runs (release, rollback, promote, approve), what runs, \
            the scheduler, scale changes, API tokens and the audit log. Errors are \
            `{\"error\": {\"kind\", \"message\"}}`. Every route but `GET /api/v1/health` and \
            `GET /metrics` needs `Authorization: Bearer <token>`; the token's name is the actor \
            of every change it makes, and its role per environment (viewer < deployer < \
            approver < admin) decides what it may do.",
    ),
    tags(
        (name = "environments", description = "Environments and their versions"),
        (name = "parameters", description = "The parameter store, with history and compare-and-set"),
        (name = "runs", description = "Pipeline runs: release, rollback, promote, logs, approvals"),
        (name = "operations", description = "What runs: instances, versions, service logs"),
        (name = "scheduler", description = "Cron jobs per environment"),
        (name = "scale", description = "Replica counts: applied on dev, change requests on fixed-size tiers"),
        (name = "flags", description = "Feature flags per environment, delivered to running instances without a restart"),
        (name = "maintenance", description = "Maintenance mode per environment: the router answers 503 with Retry-After and a page"),
        (name = "tokens", description = "API tokens and who the caller is"),
        (name = "audit", description = "The append-only audit log"),
        (name = "server", description = "Health, configuration, metrics and this document"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` scheme every operation but the open ones requires.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API token (`cutover token create`, or `<data-dir>/admin.token`)",
                        ))
                        .build(),
                ),
            );
    }
}

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
        .merge(flags::routes())
        .merge(maintenance::routes())
        .merge(tokens::routes())
        .merge(system::routes())
        .merge(events::routes())
        .merge(source::routes())
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

/// Every route of the API, behind the token check (`auth`), which lets
/// `GET /api/v1/health` and `GET /metrics` through without a token.
pub fn routes(auth: AuthState) -> Router {
    let engine = auth.engine.clone();
    api_router()
        .split_for_parts()
        .0
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::middleware,
        ))
        .with_state(engine)
}

/// Liveness and what this server is.
#[utoipa::path(get, path = "/api/v1/health", operation_id = "health", tag = "server", security(()),
    responses((status = 200, description = "`{status: \"ok\", app, cutover_version}`", body = Object)))]
async fn health(axum::extract::State(engine): axum::extract::State<Engine>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "app": engine.config().app,
        "cutover_version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The validated `cutover.yml` the server runs with, defaults filled in: only the
/// environments the token may see, and URLs (webhooks, registry) without credentials.
#[utoipa::path(get, path = "/api/v1/config", operation_id = "show_config", tag = "server",
    responses((status = 200, description = "The configuration as JSON", body = Object)))]
async fn config(
    axum::extract::State(engine): axum::extract::State<Engine>,
    axum::Extension(principal): axum::Extension<cutover_engine::Principal>,
) -> Json<Value> {
    let mut v = json!(*engine.config());
    if let Some(envs) = v.get_mut("environments").and_then(Value::as_object_mut) {
        envs.retain(|name, _| crate::auth::may_view(&principal, name));
    }
    redact::config_urls(&mut v);
    Json(v)
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi_document", tag = "server", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)))]
async fn openapi_json() -> Json<&'static OpenApi> {
    Json(openapi())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "server", security(()),
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
async fn metrics(
    axum::extract::State(engine): axum::extract::State<Engine>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            // The router's series live in the data plane (they outlive server restarts).
            let text = engine.metrics_text().await;
            match engine.data_plane().router_metrics().await {
                Some(router) => cutover_engine::dataplane::merge_exposition(text, &router),
                None => text,
            }
        },
    )
}

/// The largest page a list route answers.
pub(crate) const MAX_LIST_LIMIT: u32 = 1000;

/// The longest free text (comments, reasons) a request may carry, in characters.
pub(crate) const MAX_COMMENT_CHARS: usize = 4096;

/// A list's `limit`: `default` when absent, else 1..=[`MAX_LIST_LIMIT`] or a 400.
fn list_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}, not {n}; page with a smaller limit"
        ))),
    }
}

/// A comment or reason, refused (400) over [`MAX_COMMENT_CHARS`].
fn comment(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > MAX_COMMENT_CHARS => Err(ApiError::bad_request(format!(
            "{field} is {} characters long; at most {MAX_COMMENT_CHARS} are kept: shorten it",
            v.chars().count()
        ))),
        v => Ok(v),
    }
}

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))
}

#[cfg(test)]
mod tests;

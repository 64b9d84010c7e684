//! `/api/v1/params`: the parameter store with history and compare-and-set.
//!
//! Keys are paths (`/shop-prod/desired_version`); in URLs the leading slash is
//! the one after `params`, so `GET /api/v1/params/shop-prod/desired_version`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Extension, Json};
use cutover_engine::{Engine, Principal};
use cutover_store::ParamVersion;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::queries::ParamListQuery;
use crate::error::{ApiError, ErrorBody};

/// Keys contain slashes, so `{*key}` routes are registered as plain axum routes (an OpenAPI
/// path cannot hold a wildcard) and their operations are listed in [`WildcardPaths`].
pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .route("/api/v1/params/{*key}", get(get_one).put(put))
        .route("/api/v1/history/{*key}", get(history))
}

/// The operations of the `{*key}` routes, documented with `{key}` (which may contain `/`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_one, put, history))]
pub struct WildcardPaths;

/// The newest version of every key under a prefix that the token may read: those of
/// environments it may see, and shared ones outside every environment's prefix (secrets as
/// `****`); Cutover's own records (`/<app>/…`, `/_cutover/…`) only with viewer on every
/// environment.
#[utoipa::path(get, path = "/api/v1/params", operation_id = "list_params", tag = "parameters", params(ParamListQuery),
    responses((status = 200, description = "The newest version of every key under the prefix the token may read", body = Vec<ParamVersion>),
        (status = 400, description = "Bad prefix", body = ErrorBody)))]

async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ParamListQuery>,
) -> Result<Json<Vec<ParamVersion>>, ApiError> {
    let prefix = q.prefix.unwrap_or_else(|| "/".to_owned());
    let mut all = engine.param_list(&prefix).await?;
    all.retain(|p| crate::auth::may_read_key(&engine, &principal, &p.key));
    Ok(Json(all))
}

fn key_of(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// The newest version of one key.
#[utoipa::path(get, path = "/api/v1/params/{key}", operation_id = "show_param", tag = "parameters",
    params(("key" = String, Path, description = "The key without its leading slash, e.g. shop-prod/desired_version; may contain /")),
    responses((status = 200, description = "The newest version of the key", body = ParamVersion),
        (status = 404, description = "Never written", body = ErrorBody)))]
async fn get_one(
    State(engine): State<Engine>,
    Path(key): Path<String>,
) -> Result<Json<ParamVersion>, ApiError> {
    Ok(Json(engine.param_get(&key_of(&key)).await?))
}

/// Every version of one key, oldest first.
#[utoipa::path(get, path = "/api/v1/history/{key}", operation_id = "param_history", tag = "parameters",
    params(("key" = String, Path, description = "The key without its leading slash; may contain /")),
    responses((status = 200, description = "Every version of the key, oldest first", body = Vec<ParamVersion>),
        (status = 404, description = "Never written", body = ErrorBody)))]
async fn history(
    State(engine): State<Engine>,
    Path(key): Path<String>,
) -> Result<Json<Vec<ParamVersion>>, ApiError> {
    Ok(Json(engine.param_history(&key_of(&key)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
    /// Compare-and-set: the version the caller last saw (0: the key must not exist yet).
    expect_version: Option<i64>,
}

/// Writes the next version of a key (`desired_version` values are resolved to a full SHA).
#[utoipa::path(put, path = "/api/v1/params/{key}", operation_id = "put_param", tag = "parameters",
    params(("key" = String, Path, description = "The key without its leading slash; may contain /")),
    request_body = PutBody,
    responses((status = 200, description = "The version written", body = ParamVersion),
        (status = 400, description = "Invalid key or value", body = ErrorBody),
        (status = 409, description = "expect_version did not match the current version", body = ErrorBody)))]
async fn put(
    State(engine): State<Engine>,
    Path(key): Path<String>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<PutBody>, JsonRejection>,
) -> Result<Json<ParamVersion>, ApiError> {
    let actor = principal.name;
    let Json(body) =
        body.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    Ok(Json(
        engine
            .param_put(&key_of(&key), &body.value, &actor, body.expect_version)
            .await?,
    ))
}

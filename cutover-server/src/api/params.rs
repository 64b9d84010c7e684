//! `/api/v1/params`: the parameter store with history and compare-and-set.
//!
//! Keys are paths (`/shop-prod/desired_version`); in URLs the leading slash is
//! the one after `params`, so `GET /api/v1/params/shop-prod/desired_version`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use cutover_engine::{Engine, Principal};
use cutover_store::ParamVersion;
use serde::Deserialize;

use crate::error::ApiError;

pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/api/v1/params", get(list))
        .route("/api/v1/params/{*key}", get(get_one).put(put))
        .route("/api/v1/history/{*key}", get(history))
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
}

/// The keys under a prefix that the token may read: those of environments it
/// may see, and those outside every environment's prefix.
async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ParamVersion>>, ApiError> {
    let prefix = q.prefix.unwrap_or_else(|| "/".to_owned());
    let mut all = engine.param_list(&prefix).await?;
    all.retain(|p| {
        engine
            .env_of_key(&p.key)
            .is_none_or(|env| crate::auth::may_view(&principal, env.as_str()))
    });
    Ok(Json(all))
}

fn key_of(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

async fn get_one(
    State(engine): State<Engine>,
    Path(key): Path<String>,
) -> Result<Json<ParamVersion>, ApiError> {
    Ok(Json(engine.param_get(&key_of(&key)).await?))
}

async fn history(
    State(engine): State<Engine>,
    Path(key): Path<String>,
) -> Result<Json<Vec<ParamVersion>>, ApiError> {
    Ok(Json(engine.param_history(&key_of(&key)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
    /// Compare-and-set: the version the caller last saw (0: the key must not exist yet).
    expect_version: Option<i64>,
}

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

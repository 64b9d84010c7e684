//! `/api/v1/environments`: environments at a glance and their versions;
//! integration environments created (POST) and deleted (DELETE).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use cutover_engine::{CreateRequest, Created, Engine, EnvironmentSummary, LifecycleRecord, VersionsReport};
use serde::Deserialize;

use crate::error::ApiError;

pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/api/v1/environments", get(list).post(create))
        .route("/api/v1/environments/{env}", get(show).delete(delete))
        .route("/api/v1/environments/{env}/versions", get(versions))
}

async fn list(State(engine): State<Engine>) -> Result<Json<Vec<EnvironmentSummary>>, ApiError> {
    Ok(Json(engine.environments().await?))
}

async fn show(
    State(engine): State<Engine>,
    Path(env): Path<String>,
) -> Result<Json<EnvironmentSummary>, ApiError> {
    Ok(Json(engine.environment(&env).await?))
}

#[derive(Deserialize)]
struct VersionsQuery {
    limit: Option<usize>,
}

async fn versions(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Query(q): Query<VersionsQuery>,
) -> Result<Json<VersionsReport>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and 500, not {limit}"
        )));
    }
    Ok(Json(engine.versions(&env, limit).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The integration-tier entry of cutover.yml to instantiate.
    template: String,
    branch: String,
    #[serde(default)]
    deploy: bool,
}

async fn create(
    State(engine): State<Engine>,
    headers: HeaderMap,
    b: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let actor = super::actor(&headers)?;
    let Json(b) = b.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    let req = CreateRequest {
        template: b.template,
        branch: b.branch,
        deploy: b.deploy,
        actor,
    };
    Ok((StatusCode::CREATED, Json(engine.env_create(req).await?)))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> Result<Json<LifecycleRecord>, ApiError> {
    let actor = super::actor(&headers)?;
    Ok(Json(engine.env_delete(&env, q.force, &actor).await?))
}

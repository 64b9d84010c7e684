//! `/api/v1/environments`: environments at a glance and their versions.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use cutover_engine::{Engine, EnvironmentSummary, Principal, VersionsReport};
use serde::Deserialize;

use crate::error::ApiError;

pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/api/v1/environments", get(list))
        .route("/api/v1/environments/{env}", get(show))
        .route("/api/v1/environments/{env}/versions", get(versions))
}

/// The environments the token may see.
async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<EnvironmentSummary>>, ApiError> {
    let mut all = engine.environments().await?;
    all.retain(|e| crate::auth::may_view(&principal, e.name.as_str()));
    Ok(Json(all))
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

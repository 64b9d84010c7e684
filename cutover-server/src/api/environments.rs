//! `/api/v1/environments`: environments at a glance and their versions.

use axum::Json;
use axum::extract::{Path, Query, State};
use cutover_engine::{Engine, EnvironmentSummary, VersionsReport};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(versions))
}

/// Every environment of `cutover.yml` with its tier, branch and version facts.
#[utoipa::path(get, path = "/api/v1/environments", tag = "environments",
    responses((status = 200, body = Vec<EnvironmentSummary>)))]

async fn list(State(engine): State<Engine>) -> Result<Json<Vec<EnvironmentSummary>>, ApiError> {
    Ok(Json(engine.environments().await?))
}

/// One environment.
#[utoipa::path(get, path = "/api/v1/environments/{env}", tag = "environments",
    params(("env" = String, Path, description = "Environment name, e.g. staging")),
    responses((status = 200, body = EnvironmentSummary),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn show(
    State(engine): State<Engine>,
    Path(env): Path<String>,
) -> Result<Json<EnvironmentSummary>, ApiError> {
    Ok(Json(engine.environment(&env).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionsQuery {
    /// How many recent commits of the environment's branch (1..500, default 20).
    limit: Option<usize>,
}

/// Recent commits of the environment's branch, marked built / desired / deployed.
#[utoipa::path(get, path = "/api/v1/environments/{env}/versions", tag = "environments",
    params(("env" = String, Path, description = "Environment name"), VersionsQuery),
    responses((status = 200, body = VersionsReport),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]

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

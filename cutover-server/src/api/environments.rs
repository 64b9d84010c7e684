//! `/api/v1/environments`: environments at a glance and their versions;
//! integration environments created (POST) and deleted (DELETE).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cutover_engine::{
    CreateRequest, Created, Engine, EnvironmentSummary, LifecycleRecord, Principal, VersionsReport,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, delete))
        .routes(routes!(versions))
}

/// The environments the token may see (those of `cutover.yml` and the live integration
/// environments), with tier, branch, lifecycle and version facts.
#[utoipa::path(get, path = "/api/v1/environments", operation_id = "list_environments", tag = "environments",
    responses((status = 200, description = "The environments the token may see, with tier, branch, lifecycle and versions", body = Vec<EnvironmentSummary>)))]
async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<EnvironmentSummary>>, ApiError> {
    let mut all = engine.environments().await?;
    all.retain(|e| crate::auth::may_view(&principal, e.name.as_str()));
    Ok(Json(all))
}

/// One environment.
#[utoipa::path(get, path = "/api/v1/environments/{env}", operation_id = "show_environment", tag = "environments",
    params(("env" = String, Path, description = "Environment name, e.g. staging")),
    responses((status = 200, description = "The environment", body = EnvironmentSummary),
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
#[utoipa::path(get, path = "/api/v1/environments/{env}/versions", operation_id = "list_versions", tag = "environments",
    params(("env" = String, Path, description = "Environment name"), VersionsQuery),
    responses((status = 200, description = "Recent commits of the branch, marked built, desired and deployed", body = VersionsReport),
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The integration-tier entry of cutover.yml to instantiate.
    template: String,
    /// The branch it runs (must exist in the repository).
    branch: String,
    /// Also queue a release of the branch head.
    #[serde(default)]
    deploy: bool,
}

/// Creates an integration environment for a branch from an integration-tier template.
#[utoipa::path(post, path = "/api/v1/environments", operation_id = "create_environment", tag = "environments",
    request_body = CreateBody,
    responses((status = 201, description = "The new environment (and the run, with deploy)", body = Created),
        (status = 400, description = "Bad body, unknown template or branch", body = ErrorBody),
        (status = 409, description = "The branch has one already, or max_active is reached", body = ErrorBody)))]
async fn create(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let actor = principal.name;
    let Json(b) = b.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    let req = CreateRequest {
        template: b.template,
        branch: b.branch,
        deploy: b.deploy,
        actor,
    };
    Ok((StatusCode::CREATED, Json(engine.env_create(req).await?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Cancel an active run first instead of refusing.
    #[serde(default)]
    force: bool,
}

/// Deletes an integration environment: stops its services and scheduler, removes its routes
/// and directory; run history and audit stay.
#[utoipa::path(delete, path = "/api/v1/environments/{env}", operation_id = "delete_environment", tag = "environments",
    params(("env" = String, Path, description = "Environment name"), DeleteQuery),
    responses((status = 200, description = "Its final lifecycle record", body = LifecycleRecord),
        (status = 400, description = "Not an integration environment", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "A run is active (use force)", body = ErrorBody)))]
async fn delete(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Query(q): Query<DeleteQuery>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<LifecycleRecord>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.env_delete(&env, q.force, &actor).await?))
}

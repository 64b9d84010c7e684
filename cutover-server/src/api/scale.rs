//! `/api/v1/.../scale`, `/api/v1/scale-requests`: replica counts per service, applied at once
//! on dev and integration environments, approved by someone else on fixed-size tiers.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cutover_engine::{Engine, Principal, ScaleAnswer, ScaleRequest};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(scale))
        .routes(routes!(list))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    /// The new replica count (1..32; on prod with autoscale, within min..max).
    replicas: u32,
    /// Why: shown to whoever approves it.
    comment: Option<String>,
}

/// Changes a service's replica count: applied now on dev and integration environments
/// (200), recorded as a change request on fixed-size tiers (202).
#[utoipa::path(post, path = "/api/v1/environments/{env}/services/{service}/scale", operation_id = "scale_service", tag = "scale",
    params(("env" = String, Path, description = "Environment name"),
        ("service" = String, Path, description = "Service name")),
    request_body = ScaleBody,
    responses((status = 200, description = "Applied: the new instances serve", body = ScaleAnswer),
        (status = 202, description = "A change request waiting for approval", body = ScaleAnswer),
        (status = 400, description = "Unknown service, a count out of range, or nothing deployed", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "Applying failed; the previous instances still serve", body = ErrorBody)))]
async fn scale(
    State(engine): State<Engine>,
    Path((env, service)): Path<(String, String)>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<ScaleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ScaleAnswer>), ApiError> {
    let actor = principal.name;
    let b = super::body(b)?;
    let comment = super::comment("comment", b.comment)?;
    let answer = engine.scale(&env, &service, b.replicas, comment, &actor).await?;
    let status = if answer.applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this environment's requests.
    env: Option<String>,
}

/// Scale changes (applied, pending, rejected, failed) of the environments the token may see,
/// newest first.
#[utoipa::path(get, path = "/api/v1/scale-requests", operation_id = "list_scale_requests", tag = "scale", params(ListQuery),
    responses((status = 200, description = "Scale change requests, newest first", body = Vec<ScaleRequest>),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ScaleRequest>>, ApiError> {
    let mut all = engine.scale_requests(q.env.as_deref()).await?;
    all.retain(|r| crate::auth::may_view(&principal, &r.env));
    Ok(Json(all))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Recorded with the decision; required to reject.
    comment: Option<String>,
}

/// Approves a pending scale request (not your own; admin on its environment) and applies it.
#[utoipa::path(post, path = "/api/v1/scale-requests/{id}/approve", operation_id = "approve_scale_request", tag = "scale",
    params(("id" = i64, Path, description = "Scale request id")),
    request_body = DecisionBody,
    responses((status = 200, description = "Approved and applied", body = ScaleAnswer),
        (status = 400, description = "Unknown request, or your own", body = ErrorBody),
        (status = 409, description = "Already decided, or applying failed", body = ErrorBody)))]
async fn approve(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<ScaleAnswer>, ApiError> {
    decide(&engine, id, principal, true, b).await
}

/// Rejects a pending scale request; the count stays.
#[utoipa::path(post, path = "/api/v1/scale-requests/{id}/reject", operation_id = "reject_scale_request", tag = "scale",
    params(("id" = i64, Path, description = "Scale request id")),
    request_body = DecisionBody,
    responses((status = 200, description = "Rejected", body = ScaleAnswer),
        (status = 400, description = "Unknown request, your own, or no comment", body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody)))]
async fn reject(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<ScaleAnswer>, ApiError> {
    decide(&engine, id, principal, false, b).await
}

async fn decide(
    engine: &Engine,
    id: i64,
    principal: Principal,
    approve: bool,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<ScaleAnswer>, ApiError> {
    let b = super::body(b)?;
    let comment = super::comment("comment", b.comment)?;
    Ok(Json(
        engine.scale_decide(id, &principal.name, approve, comment).await?,
    ))
}

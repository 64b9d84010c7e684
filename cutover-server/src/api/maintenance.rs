//! `/api/v1/environments/{env}/maintenance`: maintenance mode per environment (the router
//! answers 503 with `Retry-After` and a page). Viewers read it; turning it on or off needs
//! deployer on a non-production environment and approver on a `prod` one (it takes the
//! environment away from its users).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use cutover_engine::{Engine, Maintenance, Principal};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new().routes(routes!(show, set))
}

/// Whether an environment is in maintenance mode.
#[utoipa::path(get, path = "/api/v1/environments/{env}/maintenance", operation_id = "show_maintenance",
    tag = "maintenance",
    params(("env" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The environment's maintenance mode", body = Maintenance),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn show(State(engine): State<Engine>, Path(env): Path<String>) -> Result<Json<Maintenance>, ApiError> {
    Ok(Json(engine.maintenance_status(&env).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    /// `true` turns maintenance on, `false` off.
    on: bool,
    /// The HTML page to answer with (at most 64 KiB; only with `on`). Default: the
    /// environment's `maintenance_page`, else a built-in page.
    #[serde(default)]
    page: Option<String>,
}

/// Turns maintenance mode on or off; the router answers accordingly when this returns.
#[utoipa::path(put, path = "/api/v1/environments/{env}/maintenance", operation_id = "set_maintenance",
    tag = "maintenance",
    params(("env" = String, Path, description = "Environment name")),
    request_body = MaintenanceBody,
    responses((status = 200, description = "Set and in force at the router", body = Maintenance),
        (status = 400, description = "A page over 64 KiB, or a page with `on: false`", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn set(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<MaintenanceBody>, JsonRejection>,
) -> Result<Json<Maintenance>, ApiError> {
    let b = super::body(b)?;
    Ok(Json(
        engine
            .maintenance_set(&env, b.on, b.page, &principal.name)
            .await?,
    ))
}

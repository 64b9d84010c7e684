//! `/api/v1/environments/{env}/flags`: feature flags per environment, read by running
//! instances from their flags file (no restart). Viewers list them; deployers set them.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use cutover_engine::{Engine, Flag, Principal};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(set))
}

/// The flags of an environment, by name.
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags", operation_id = "list_flags", tag = "flags",
    params(("env" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The environment's flags, by name", body = Vec<Flag>),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn list(State(engine): State<Engine>, Path(env): Path<String>) -> Result<Json<Vec<Flag>>, ApiError> {
    Ok(Json(engine.flag_list(&env).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FlagBody {
    /// `on`, `off`, or a whole percentage from `0%` to `100%` (on for the users whose bucket,
    /// SHA-256 of `<flag>:<user id>`, first four bytes big-endian, modulo 100, is below it).
    value: String,
}

/// Turns a flag on or off (or on for a share of users); running instances see it in their
/// flags file and the `Cutover-Flags` request header at once.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flags/{name}", operation_id = "set_flag", tag = "flags",
    params(("env" = String, Path, description = "Environment name"),
        ("name" = String, Path, description = "Flag name: [a-z][a-z0-9_-]*, at most 63 characters")),
    request_body = FlagBody,
    responses((status = 200, description = "Set; the flags file is rewritten", body = Flag),
        (status = 400, description = "A bad flag name or a value other than on, off or 0%..100%", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn set(
    State(engine): State<Engine>,
    Path((env, name)): Path<(String, String)>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<FlagBody>, JsonRejection>,
) -> Result<Json<Flag>, ApiError> {
    let b = super::body(b)?;
    Ok(Json(
        engine.flag_set(&env, &name, &b.value, &principal.name).await?,
    ))
}

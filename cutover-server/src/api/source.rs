//! `/api/v1/source/fetch`: fetch a remote `repo:` into Cutover's mirror now (`cutover fetch`),
//! rather than waiting for the next release request, run or auto-deploy pass.

use axum::extract::State;
use axum::{Extension, Json};
use cutover_engine::{Engine, Principal};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new().routes(routes!(fetch))
}

/// Fetches the branches and tags of the remote repository into the server's mirror; audited.
#[utoipa::path(post, path = "/api/v1/source/fetch", operation_id = "fetch_source", tag = "environments",
    responses((status = 200, description = "`{refs, updated}`: refs the mirror keeps, and how many moved", body = cutover_git::FetchOutcome),
        (status = 400, description = "`repo:` is a local repository, or a credential secret `source:` names is not set", body = ErrorBody),
        (status = 409, description = "The git host refused or did not answer within source.fetch_timeout; the message is the host's", body = ErrorBody)))]
async fn fetch(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<cutover_git::FetchOutcome>, ApiError> {
    Ok(Json(engine.fetch_on_demand(&principal.name).await?))
}

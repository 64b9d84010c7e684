//! `/api/v1/source/fetch`: fetch a remote `repo:` into Cutover's mirror now (`cutover fetch`),
//! rather than waiting for the next release request, run or auto-deploy pass; and
//! `/api/v1/hooks/git`: the git host's push webhook, authenticated by its signature.

use axum::extract::State;
use axum::{Extension, Json};
use cutover_engine::{Engine, Principal};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(fetch))
        .routes(routes!(git_hook))
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

/// A push delivery from the git host (GitHub, GitLab or the generic signed form): fetches at
/// once and runs the auto-deploy check of the environments that follow the pushed branch.
#[utoipa::path(post, path = "/api/v1/hooks/git", operation_id = "git_push_hook", tag = "environments", security(()),
    request_body(content = Object, description = "The host's push event (`ref: refs/heads/<branch>`, or `branch` in the generic form)"),
    responses((status = 202, description = "Verified: `{provider, branch, result, environments}`; result is accepted, not_watched, replayed or ignored", body = cutover_engine::source_hook::HookOutcome),
        (status = 401, description = "No signature, a wrong one, or a generic delivery whose timestamp is more than 5 minutes away", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody)))]
async fn git_hook(
    State(engine): State<Engine>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<
    (
        axum::http::StatusCode,
        Json<cutover_engine::source_hook::HookOutcome>,
    ),
    ApiError,
> {
    use cutover_engine::source_hook::{HOOK_BODY_LIMIT, HookError, HookHeaders};
    let body = axum::body::to_bytes(body, HOOK_BODY_LIMIT).await.map_err(|_| {
        ApiError::payload_too_large(format!(
            "a push webhook body may be at most {HOOK_BODY_LIMIT} bytes"
        ))
    })?;
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let hook = HookHeaders {
        github_signature: h("x-hub-signature-256"),
        github_delivery: h("x-github-delivery"),
        github_event: h("x-github-event"),
        gitlab_token: h("x-gitlab-token"),
        gitlab_delivery: h("x-gitlab-event-uuid"),
        cutover_signature: h("x-cutover-signature"),
        cutover_timestamp: h("x-cutover-timestamp"),
        cutover_delivery: h("x-cutover-delivery"),
    };
    match engine.git_hook(&hook, &body).await {
        Ok(outcome) => Ok((axum::http::StatusCode::ACCEPTED, Json(outcome))),
        Err(HookError::Unauthorized(message)) => Err(ApiError::unauthorized(message)),
        Err(HookError::Engine(e)) => Err(e.into()),
    }
}

//! `/api/v1/tokens` (admin): create, list and revoke API tokens; and
//! `/api/v1/whoami` (any token): the caller's name and grants.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cutover_core::Grants;
use cutover_engine::{Engine, IssuedToken, Principal, TokenRequest};
use cutover_store::TokenRecord;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// Who the token is: its name (the actor of its changes) and its grants.
#[utoipa::path(get, path = "/api/v1/whoami", operation_id = "whoami", tag = "tokens",
    responses((status = 200, description = "The token's name and grants", body = Principal)))]
async fn whoami(Extension(principal): Extension<Principal>) -> Json<Principal> {
    Json(principal)
}

/// Every token, live and revoked (never a secret; admin on every environment).
#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens",
    responses((status = 200, description = "Every token, live and revoked, without secrets", body = Vec<TokenRecord>)))]
async fn list(State(engine): State<Engine>) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    Ok(Json(engine.token_list().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The token's name: the actor its changes are recorded under.
    name: String,
    /// A role per environment, and an optional default role for every environment.
    grants: Grants,
    /// Seconds from now; absent: never expires.
    expires_in_secs: Option<u64>,
}

/// Creates a token: 201 with its secret, which is not stored and cannot be shown again.
#[utoipa::path(post, path = "/api/v1/tokens", operation_id = "create_token", tag = "tokens",
    request_body = CreateBody,
    responses((status = 201, description = "The token and its secret, shown once", body = IssuedToken),
        (status = 400, description = "Bad name, grants or expiry", body = ErrorBody),
        (status = 409, description = "A live token has this name", body = ErrorBody)))]
async fn create(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let Json(b) = body.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    let req = TokenRequest {
        name: b.name,
        grants: b.grants,
        expires_in_secs: b.expires_in_secs,
    };
    Ok((
        StatusCode::CREATED,
        Json(engine.token_create(req, &principal.name).await?),
    ))
}

/// Revokes the live token of a name; it stops working at once.
#[utoipa::path(post, path = "/api/v1/tokens/{name}/revoke", operation_id = "revoke_token", tag = "tokens",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 200, description = "The revoked token", body = TokenRecord),
        (status = 400, description = "Not a valid token name", body = ErrorBody),
        (status = 404, description = "No live token of that name", body = ErrorBody)))]
async fn revoke(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    Ok(Json(engine.token_revoke(&name, &principal.name).await?))
}

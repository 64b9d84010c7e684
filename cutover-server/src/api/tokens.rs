//! `/api/v1/tokens` (admin): create, list and revoke API tokens; and
//! `/api/v1/whoami` (any token): the caller's name and grants.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cutover_core::Grants;
use cutover_engine::{Engine, IssuedToken, Principal, TokenRequest};
use cutover_store::TokenRecord;
use serde::Deserialize;

use crate::error::ApiError;

pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tokens", get(list).post(create))
        .route("/api/v1/tokens/{name}/revoke", post(revoke))
}

async fn whoami(Extension(principal): Extension<Principal>) -> Json<Principal> {
    Json(principal)
}

async fn list(State(engine): State<Engine>) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    Ok(Json(engine.token_list().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    grants: Grants,
    /// Seconds from now; absent: never expires.
    expires_in_secs: Option<u64>,
}

/// 201 with the token and its secret; the secret is not stored and cannot be
/// shown again.
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

async fn revoke(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    Ok(Json(engine.token_revoke(&name, &principal.name).await?))
}

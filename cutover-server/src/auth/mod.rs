//! Token authentication and per-environment roles for `/api/v1`.
//!
//! Every API route but `GET /api/v1/health` and `GET /metrics` (kept open for
//! load balancers and Prometheus scrapers) needs `Authorization: Bearer
//! <token>`. The middleware here finds the token's principal (the engine
//! looks the secret's hash up), works out which role the request needs on
//! which environment from the one table in [`policy`], and either refuses
//! (401: no usable token; 403: the role held is too low) or hands the
//! [`Principal`] to the handler as a request extension. The actor of every
//! change is the principal's name; a request that names another actor in
//! `X-Cutover-Actor` is refused.
//!
//! Rejected: checks inside each handler (easy to forget one; here a route
//! without a rule needs admin) and cookies/sessions for the dashboard (it
//! sends the same bearer token as the CLI, kept in the tab's sessionStorage).

pub mod policy;

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cutover_core::Role;
use cutover_engine::{AuthError, Engine, Principal};

use crate::error::ApiError;
use policy::Rule;

/// Header that named who made a change before tokens existed; now it must
/// match the token's name if sent at all.
pub const ACTOR_HEADER: &str = "x-cutover-actor";

/// Largest promotion body read to find its environments.
const PROMOTION_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AuthState {
    pub engine: Engine,
    /// Where the first start wrote the admin token, for the 401 message.
    pub admin_token_file: PathBuf,
}

/// What a principal may see: for filtering lists.
pub fn may_view(principal: &Principal, env: &str) -> bool {
    principal.grants.role_on(env) >= Some(Role::Viewer)
}

pub async fn middleware(
    State(state): State<AuthState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    // Set for every matched route (this is a route layer); empty without parameters.
    let params: Vec<(String, String)> = params
        .map(|p| p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default();
    match authorize(&state, params, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn authorize(
    state: &AuthState,
    params: Vec<(String, String)>,
    mut req: Request,
) -> Result<Request, ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let rule = policy::rule(req.method(), &route);
    if rule == Rule::Open {
        return Ok(req);
    }
    let principal = principal(state, req.headers().clone()).await?;
    if let Some(sent) = req.headers().get(ACTOR_HEADER) {
        let sent = sent.to_str().unwrap_or("");
        if sent != principal.name.as_str() {
            return Err(ApiError::bad_request(format!(
                "X-Cutover-Actor says {sent:?}, but this request's token is {:?}: the actor of a change is the \
                 name of the API token it is made with. Drop the header (the CLI no longer takes --as); to act \
                 as someone else, use their token",
                principal.name.as_str()
            )));
        }
    }
    let what = format!("{} {}", req.method(), req.uri().path());
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let engine = &state.engine;
    match rule {
        Rule::Open | Rule::Authenticated => {}
        Rule::PathEnv(role) => {
            let env = param("env").unwrap_or_default();
            need_on(&principal, role, &env, &what)?;
        }
        Rule::AnyEnv(role) => need_somewhere(&principal, role, &what)?,
        Rule::Everywhere(role) => need_everywhere(&principal, role, &what)?,
        Rule::Run(role) => {
            let id = id_param(param("id"))?;
            let env = engine.run_env(id).await?;
            need_on(&principal, role, &env, &what)?;
        }
        Rule::JobRun(role) => {
            let id = id_param(param("id"))?;
            let env = engine.job_run_env(id).await?;
            need_on(&principal, role, &env, &what)?;
        }
        Rule::ScaleRequest(role) => {
            let id = id_param(param("id"))?;
            let env = engine.scale_request_env(id).await?;
            need_on(&principal, role, &env, &what)?;
        }
        Rule::Param { write } => {
            let key = format!("/{}", param("key").unwrap_or_default().trim_start_matches('/'));
            match (engine.env_of_key(&key), write) {
                (Some(env), false) => need_on(&principal, Role::Viewer, env.as_str(), &what)?,
                (Some(env), true) => need_on(&principal, Role::Deployer, env.as_str(), &what)?,
                (None, false) => need_somewhere(&principal, Role::Viewer, &what)?,
                (None, true) => need_everywhere(
                    &principal,
                    Role::Admin,
                    &format!("{what} (a key outside every environment's prefix)"),
                )?,
            }
        }
        Rule::ParamList => match query_value(&req, "prefix").and_then(|p| engine.env_of_key(&p)) {
            Some(env) => need_on(&principal, Role::Viewer, env.as_str(), &what)?,
            None => need_somewhere(&principal, Role::Viewer, &what)?,
        },
        Rule::RunList => match query_value(&req, "env") {
            Some(env) => need_on(&principal, Role::Viewer, &env, &what)?,
            None => need_somewhere(&principal, Role::Viewer, &what)?,
        },
        Rule::Promotion => {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, PROMOTION_BODY_LIMIT)
                .await
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            // A body without both names is refused by the handler, which
            // then does nothing.
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && let (Some(from), Some(to)) = (v["from"].as_str(), v["to"].as_str())
            {
                need_on(&principal, Role::Deployer, to, &what)?;
                need_on(&principal, Role::Viewer, from, &what)?;
            }
            req = Request::from_parts(parts, Body::from(bytes));
        }
    }
    req.extensions_mut().insert(principal);
    Ok(req)
}

async fn principal(state: &AuthState, headers: axum::http::HeaderMap) -> Result<Principal, ApiError> {
    let how = format!(
        "Get a token from an admin (`cutover token create NAME --role ROLE [--env ENV]`), or use the admin \
         token the server wrote on first start to {} on its host; then `cutover login --server URL` \
         (or --token / CUTOVER_TOKEN), and send it as `Authorization: Bearer <token>`",
        state.admin_token_file.display()
    );
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(format!(
            "this request needs an API token. {how}"
        )));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "the Authorization header must be `Bearer <token>`. {how}"
            ))
        })?;
    state.engine.authenticate(secret).await.map_err(|e| match e {
        AuthError::Store(msg) => {
            tracing::error!(error = %msg, "checking a token failed");
            ApiError::internal("the token could not be checked; see the server log")
        }
        e @ (AuthError::Expired { .. } | AuthError::Revoked { .. }) => {
            ApiError::unauthorized(format!("{e}; ask an admin for a new one. {how}"))
        }
        e @ AuthError::Unknown => ApiError::unauthorized(format!("{e}. {how}")),
    })
}

fn id_param(raw: Option<String>) -> Result<i64, ApiError> {
    let raw = raw.unwrap_or_default();
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{raw:?} is not an id (a number)")))
}

fn query_value(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v)).filter(|v| !v.is_empty())
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn held(principal: &Principal, env: &str) -> String {
    match principal.grants.role_on(env) {
        Some(r) => format!("holds {r} there"),
        None => "holds no role there".to_owned(),
    }
}

fn need_on(principal: &Principal, role: Role, env: &str, what: &str) -> Result<(), ApiError> {
    if principal.grants.role_on(env) >= Some(role) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{what} needs the role {role} on environment {env:?}; token {:?} {} (its grants: {}). \
         An admin can grant it: `cutover token create NAME --role {role} --env {env}`",
        principal.name.as_str(),
        held(principal, env),
        principal.grants.describe()
    )))
}

fn need_somewhere(principal: &Principal, role: Role, what: &str) -> Result<(), ApiError> {
    if principal.grants.highest() >= Some(role) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{what} needs the role {role} on at least one environment; token {:?} holds {}",
        principal.name.as_str(),
        principal.grants.describe()
    )))
}

fn need_everywhere(principal: &Principal, role: Role, what: &str) -> Result<(), ApiError> {
    if principal.grants.default >= Some(role) {
        return Ok(());
    }
    let held = match principal.grants.default {
        Some(r) => format!("holds {r} on every environment"),
        None => "holds no role on every environment (`*`)".to_owned(),
    };
    Err(ApiError::forbidden(format!(
        "{what} needs the role {role} on every environment (`*`); token {:?} {held} (its grants: {}). \
         An admin can grant it: `cutover token create NAME --role {role}`",
        principal.name.as_str(),
        principal.grants.describe()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let req = Request::builder()
            .uri("/api/v1/params?x=1&prefix=%2Fshop-prod%2Fenv&y")
            .body(Body::empty())
            .unwrap();
        assert_eq!(query_value(&req, "prefix").as_deref(), Some("/shop-prod/env"));
        assert_eq!(query_value(&req, "y"), None);
        assert_eq!(query_value(&req, "z"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a+b%41"), "a bA");
    }
}

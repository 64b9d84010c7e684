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
//! A request whose authorization depends on its query (`?env=`, `?prefix=`) is decided
//! on the query decoded by the handler's own extractor ([`crate::api::queries`]), and
//! every list is filtered by what the token may see. Failed authentications are logged
//! (source address and route, never the token) and limited per source ([`limit`]).
//!
//! Rejected: checks inside each handler (easy to forget one; here a route
//! without a rule needs admin) and cookies/sessions for the dashboard (it
//! sends the same bearer token as the CLI, kept in the tab's sessionStorage).

pub mod limit;
pub mod policy;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cutover_core::Role;
use cutover_engine::{AuthError, Engine, Principal};

use crate::api::queries::{self, ParamListQuery, RunListQuery};
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
    /// Failed authentications per source address.
    pub limiter: Arc<limit::FailureLimiter>,
}

/// What a principal may see: for filtering lists.
pub fn may_view(principal: &Principal, env: &str) -> bool {
    principal.grants.role_on(env) >= Some(Role::Viewer)
}

/// Whose a parameter key is, for reading and listing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// Under an environment's prefix (`/<app>-<env>/...`).
    Env(cutover_core::EnvName),
    /// Cutover's own records: `/<app>/...` (lifecycle records, scale requests) and
    /// `/_cutover/...` (failed authentications); they span environments, so only a
    /// viewer of every environment reads them.
    Internal,
    /// Anything else: shared settings, readable by any viewer.
    Shared,
}

pub fn key_scope(engine: &Engine, key: &str) -> KeyScope {
    if let Some(env) = engine.env_of_key(key) {
        return KeyScope::Env(env);
    }
    let app = format!("/{}", engine.config().app);
    let under = |prefix: &str| {
        let key = key.trim_end_matches('/');
        key == prefix || key.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
    };
    if under(&app) || under("/_cutover") {
        KeyScope::Internal
    } else {
        KeyScope::Shared
    }
}

/// Whether `principal` may read the parameter `key` (lists are filtered with this).
pub fn may_read_key(engine: &Engine, principal: &Principal, key: &str) -> bool {
    match key_scope(engine, key) {
        KeyScope::Env(env) => may_view(principal, env.as_str()),
        KeyScope::Internal => principal.grants.default >= Some(Role::Viewer),
        KeyScope::Shared => principal.grants.highest() >= Some(Role::Viewer),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub async fn middleware(
    State(state): State<AuthState>,
    params: Result<Path<Vec<(String, String)>>, PathRejection>,
    req: Request,
    next: Next,
) -> Response {
    // Percent-decoded by the same `Path` extractor the handlers use: the policy must see
    // `shop-staging` where the handler does, not `shop-st%61ging` (which names no
    // environment). Set for every matched route (this is a route layer); a path that does not
    // decode (invalid UTF-8) has no parameters here, and its handler refuses it.
    let params: Vec<(String, String)> = params.map(|Path(p)| p).unwrap_or_default();
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
    let what = format!("{} {}", req.method(), req.uri().path());
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(addr) = source
        && let Some(secs) = state.limiter.locked(addr, now_ms())
    {
        return Err(locked_out(addr, secs));
    }
    let principal = match principal(state, req.headers()).await {
        Ok(p) => p,
        Err(failure) => return Err(failed(state, source, &what, failure).await),
    };
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
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let engine = &state.engine;
    match rule {
        Rule::Open | Rule::Authenticated => {}
        Rule::PathEnv(role) => {
            let env = param("env").unwrap_or_default();
            need_on(&principal, role, &env, &what)?;
        }
        Rule::PathEnvByTier { prod, other } => {
            let env = param("env").unwrap_or_default();
            let is_prod = engine
                .config()
                .environment(&env)
                .is_some_and(|(_, e)| e.tier == cutover_core::config::Tier::Prod);
            need_on(&principal, if is_prod { prod } else { other }, &env, &what)?;
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
            match (key_scope(engine, &key), write) {
                (KeyScope::Env(env), false) => need_on(&principal, Role::Viewer, env.as_str(), &what)?,
                (KeyScope::Env(env), true) => need_on(&principal, Role::Deployer, env.as_str(), &what)?,
                (KeyScope::Shared, false) => need_somewhere(&principal, Role::Viewer, &what)?,
                (KeyScope::Internal, false) => need_everywhere(
                    &principal,
                    Role::Viewer,
                    &format!("{what} (Cutover's own records, which span environments)"),
                )?,
                (KeyScope::Shared | KeyScope::Internal, true) => need_everywhere(
                    &principal,
                    Role::Admin,
                    &format!("{what} (a key outside every environment's prefix)"),
                )?,
            }
        }
        Rule::ParamList => {
            // The handler filters the list with `may_read_key`; a prefix inside one
            // environment needs viewer there, so a refusal says so instead of an empty list.
            let q: ParamListQuery = queries::parse(req.uri())?;
            match q.prefix.map(|p| key_scope(engine, &p)) {
                Some(KeyScope::Env(env)) => need_on(&principal, Role::Viewer, env.as_str(), &what)?,
                _ => need_somewhere(&principal, Role::Viewer, &what)?,
            }
        }
        Rule::RunList => {
            let q: RunListQuery = queries::parse(req.uri())?;
            match q.env.filter(|e| !e.is_empty()) {
                Some(env) => need_on(&principal, Role::Viewer, &env, &what)?,
                None => need_somewhere(&principal, Role::Viewer, &what)?,
            }
        }
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
                // Carrying every flag at once onto production is an approver's decision (as
                // maintenance there is); elsewhere a deployer's, as one flag is.
                let flags_to_prod = v["flags"] == serde_json::Value::Bool(true)
                    && engine
                        .config()
                        .environment(to)
                        .is_some_and(|(_, e)| e.tier == cutover_core::config::Tier::Prod);
                let role = if flags_to_prod {
                    Role::Approver
                } else {
                    Role::Deployer
                };
                need_on(&principal, role, to, &what)?;
                need_on(&principal, Role::Viewer, from, &what)?;
            }
            req = Request::from_parts(parts, Body::from(bytes));
        }
    }
    req.extensions_mut().insert(principal);
    Ok(req)
}

/// Why a request got no principal: the answer, and whether it counts as a guess.
struct Failure {
    error: ApiError,
    /// Logged (never the token).
    reason: &'static str,
    /// An unknown or malformed token: counted against the source's limit.
    counts: bool,
}

async fn principal(state: &AuthState, headers: &axum::http::HeaderMap) -> Result<Principal, Failure> {
    let how = format!(
        "Get a token from an admin (`cutover token create NAME --role ROLE [--env ENV]`), or use the admin \
         token the server wrote on first start to {} on its host; then `cutover login --server URL` \
         (or --token / CUTOVER_TOKEN), and send it as `Authorization: Bearer <token>`",
        state.admin_token_file.display()
    );
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Failure {
            error: ApiError::unauthorized(format!("this request needs an API token. {how}")),
            reason: "no token",
            counts: false,
        });
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| Failure {
            error: ApiError::unauthorized(format!(
                "the Authorization header must be `Bearer <token>`. {how}"
            )),
            reason: "malformed Authorization header",
            counts: true,
        })?;
    state.engine.authenticate(secret).await.map_err(|e| match e {
        AuthError::Store(msg) => {
            tracing::error!(error = %msg, "checking a token failed");
            Failure {
                error: ApiError::internal("the token could not be checked; see the server log"),
                reason: "store error",
                counts: false,
            }
        }
        e @ AuthError::Expired { .. } => Failure {
            error: ApiError::unauthorized(format!("{e}; ask an admin for a new one. {how}")),
            reason: "expired token",
            counts: false,
        },
        e @ AuthError::Revoked { .. } => Failure {
            error: ApiError::unauthorized(format!("{e}; ask an admin for a new one. {how}")),
            reason: "revoked token",
            counts: false,
        },
        e @ AuthError::Unknown => Failure {
            error: ApiError::unauthorized(format!("{e}. {how}")),
            reason: "unknown token",
            counts: true,
        },
    })
}

/// Logs a failed authentication (source and route, never the token) and counts it
/// against the source when it was a guess.
async fn failed(state: &AuthState, source: Option<IpAddr>, what: &str, f: Failure) -> ApiError {
    let shown = source.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    match f.reason {
        "no token" => {
            tracing::debug!(source = %shown, route = %what, "request without a token refused");
            return f.error;
        }
        // Not the client's failure; logged as an error where it happened.
        "store error" => return f.error,
        _ => {}
    }
    tracing::warn!(source = %shown, route = %what, reason = f.reason, "failed authentication");
    if f.counts
        && let Some(addr) = source
        && let Some(secs) = state.limiter.failed(addr, now_ms()).await
    {
        tracing::warn!(
            source = %shown,
            lockout_secs = secs,
            "too many failed authentications from this source; it is refused until the lockout ends"
        );
        return locked_out(addr, secs);
    }
    f.error
}

fn locked_out(addr: IpAddr, secs: u64) -> ApiError {
    ApiError::too_many_requests(
        format!(
            "too many failed authentications from {addr}; try again in {secs} s with a valid token. \
             (The limit is per source address: {} and {} on the server change it)",
            limit::MAX_FAILURES_VAR,
            limit::LOCKOUT_VAR
        ),
        secs,
    )
}

fn id_param(raw: Option<String>) -> Result<i64, ApiError> {
    let raw = raw.unwrap_or_default();
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{raw:?} is not an id (a number)")))
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

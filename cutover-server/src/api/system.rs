//! `/api/v1/system`: the two planes of this installation, and the two operations that act on
//! them as a whole: stopping everything on purpose, and replacing the data plane.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::{Extension, Json};
use cutover_engine::{Engine, Principal};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::plane::DataPlaneMode;

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(system))
        .routes(routes!(stop))
        .routes(routes!(upgrade))
        .routes(routes!(reload))
}

/// What the server's exit should do, and the way to ask for it over the API.
#[derive(Clone, Debug)]
pub struct SystemControl {
    data_dir: PathBuf,
    mode: DataPlaneMode,
    stop_all: Arc<AtomicBool>,
    stop: Arc<tokio::sync::Notify>,
    upgrading: Arc<tokio::sync::Mutex<()>>,
}

impl SystemControl {
    pub(crate) fn new(data_dir: PathBuf, mode: DataPlaneMode, stop_on_exit: bool) -> Self {
        Self {
            data_dir,
            mode,
            stop_all: Arc::new(AtomicBool::new(stop_on_exit || mode == DataPlaneMode::Embedded)),
            stop: Arc::new(tokio::sync::Notify::new()),
            upgrading: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Resolves once `POST /api/v1/system/stop` was accepted.
    pub(crate) async fn stop_requested(&self) {
        self.stop.notified().await;
    }

    /// Whether the exit stops every instance and the data plane (`--stop-on-exit`, the
    /// embedded router, or `cutover stop --all`) rather than leaving them serving.
    pub(crate) fn stops_everything(&self) -> bool {
        self.stop_all.load(Ordering::SeqCst)
    }
}

/// The control plane (this server) and the data plane (the router process): pids, since when,
/// restarts, and how many instances this server adopted at start.
#[utoipa::path(get, path = "/api/v1/system", operation_id = "show_system", tag = "server",
    responses((status = 200, description = "`{control_plane: {pid, started_at_ms, adopted_instances}, data_plane: {mode, up, pid, restarts}}`", body = Object)))]
async fn system(State(engine): State<Engine>, Extension(control): Extension<SystemControl>) -> Json<Value> {
    let health = engine.data_plane_health();
    let embedded = control.mode == DataPlaneMode::Embedded;
    Json(json!({
        "control_plane": {
            "pid": std::process::id(),
            "started_at_ms": engine.started_at_ms(),
            "adopted_instances": health.adopted.load(Ordering::Relaxed),
            "stops_everything_on_exit": control.stops_everything(),
        },
        "data_plane": {
            "mode": if embedded { "embedded" } else { "process" },
            "up": embedded || health.up.load(Ordering::Relaxed),
            "pid": if embedded { std::process::id() } else { health.pid.load(Ordering::Relaxed) },
            "restarts": health.restarts.load(Ordering::Relaxed),
        },
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StopBody {
    /// Must be `true`: stop every instance of every environment and the data plane, then this
    /// server. (A plain SIGTERM leaves them serving for the next server.)
    all: bool,
}

/// Stops everything on purpose: every instance of every environment, the data plane, and this
/// server. Audited.
#[utoipa::path(post, path = "/api/v1/system/stop", operation_id = "stop_system", tag = "server",
    request_body = StopBody,
    responses((status = 202, description = "`{stopping: \"everything\"}`", body = Object),
        (status = 400, description = "`all` is not true, or a bad body", body = ErrorBody)))]
async fn stop(
    State(engine): State<Engine>,
    Extension(control): Extension<SystemControl>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<StopBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let Json(body) =
        body.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    if !body.all {
        return Err(ApiError::bad_request(
            "`all` must be true: this stops every instance of every environment and the data plane \
             (to restart only the control plane, send it SIGTERM and start it again)",
        ));
    }
    engine
        .audit_system(&principal, "system.stop", json!({ "all": true }))
        .await;
    control.stop_all.store(true, Ordering::SeqCst);
    control.stop.notify_one();
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "stopping": "everything" })),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpgradeBody {
    /// Must be `true`: replace the data plane with a new process of the `cutover` binary now at
    /// this server's path, handing the listening sockets over without dropping a connection.
    data_plane: bool,
}

/// Replaces the data plane process without dropping a connection: the new one (the binary
/// at this server's path, e.g. a newer build installed over it) takes the listening sockets
/// and the routing table over, the old one drains and exits. Audited.
#[utoipa::path(post, path = "/api/v1/system/upgrade", operation_id = "upgrade_data_plane", tag = "server",
    request_body = UpgradeBody,
    responses((status = 200, description = "`{data_plane: {pid, took_over_from, version}}`", body = Object),
        (status = 400, description = "Nothing to upgrade (`data_plane` not true, a bad body, or the router is embedded)", body = ErrorBody),
        (status = 500, description = "The new data plane did not take over (the old one keeps serving)", body = ErrorBody)))]
async fn upgrade(
    State(engine): State<Engine>,
    Extension(control): Extension<SystemControl>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<UpgradeBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) =
        body.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    if !body.data_plane {
        return Err(ApiError::bad_request("`data_plane` must be true"));
    }
    if control.mode == DataPlaneMode::Embedded {
        return Err(ApiError::bad_request(
            "this server runs the router embedded (--data-plane embedded); restart it to upgrade",
        ));
    }
    let _one = control.upgrading.lock().await;
    let hello = crate::plane::upgrade(&control.data_dir)
        .await
        .map_err(|e| ApiError::internal(format!("the data plane was not upgraded: {e}")))?;
    engine
        .audit_system(
            &principal,
            "system.upgrade",
            json!({ "data_plane": { "pid": hello.pid, "took_over_from": hello.took_over_from } }),
        )
        .await;
    Ok(Json(json!({
        "data_plane": {
            "pid": hello.pid,
            "took_over_from": hello.took_over_from,
            "version": hello.version,
        }
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    /// Environments removed from the file whose instances may be stopped (else a removed
    /// environment that still runs anything refuses the reload).
    tear_down: Vec<String>,
}

/// Reads the server's own `cutover.yml` again and swaps it in without a restart: environments
/// added or changed, the file's application part; a file with errors, or a change only a
/// restart can apply, is refused and changes nothing. Audited. (SIGHUP does the same.)
#[utoipa::path(post, path = "/api/v1/config/reload", tag = "server", operation_id = "reload_config",
    request_body = ReloadBody,
    responses((status = 200, description = "What changed", body = cutover_engine::ReloadReport),
        (status = 400, description = "The file has errors (file:line:column), a removed environment still runs, or a change needs a restart", body = ErrorBody)))]
async fn reload(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<ReloadBody>, JsonRejection>,
) -> Result<Json<cutover_engine::ReloadReport>, ApiError> {
    let Json(body) =
        body.map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))?;
    Ok(Json(
        engine.reload_config(&principal.name, &body.tear_down).await?,
    ))
}

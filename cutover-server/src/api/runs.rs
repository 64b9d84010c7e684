//! `/api/v1/.../releases`, `/api/v1/runs`: starting, reading, following,
//! cancelling, approving and rejecting pipeline runs; rollback and promote.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cutover_engine::{Engine, LogEvent, PolicyOverride, Principal, ReleaseRequest, RunView};
use cutover_store::{Decision, RunLogLine, RunRecord};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::queries::RunListQuery;
use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(release))
        .routes(routes!(rollback))
        .routes(routes!(promote))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(logs))
        .routes(routes!(cancel))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    /// Sets desired_version first: a full or short SHA, a branch, a tag or `latest`.
    /// Absent: deploy the current desired_version.
    version: Option<String>,
    /// Run the destructive pipeline (resets data; refused on prod and prod-like).
    #[serde(default)]
    destructive: bool,
    /// Confirms a destructive run.
    #[serde(default)]
    confirm: bool,
    /// Admins only: deploy although the version has not succeeded on the environments
    /// this one `requires:`; the reason is recorded on the run and audited.
    override_policy: Option<String>,
}

/// The override a request asks for, with the grants the engine checks it against.
fn policy_override(reason: Option<String>, principal: &Principal) -> Option<PolicyOverride> {
    reason.map(|reason| PolicyOverride {
        reason,
        grants: principal.grants.clone(),
    })
}

/// Queues a run of the normal (or destructive) pipeline.
#[utoipa::path(post, path = "/api/v1/environments/{env}/releases", operation_id = "release", tag = "runs",
    params(("env" = String, Path, description = "Environment name")),
    request_body = ReleaseBody,
    responses((status = 202, description = "The queued run, with the SHA it deploys fixed (`target_version`)", body = RunRecord),
        (status = 400, description = "Bad body, unknown version, nothing built for `latest`, a refused destructive run, or a `requires:` refusal", body = ErrorBody),
        (status = 403, description = "A policy override by someone who is not an admin of the environment", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]

async fn release(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<ReleaseBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let b = super::body(b)?;
    let req = ReleaseRequest {
        env,
        version: b.version,
        destructive: b.destructive,
        confirmed: b.confirm,
        override_policy: policy_override(b.override_policy, &principal),
        actor: principal.name,
    };
    Ok((StatusCode::ACCEPTED, Json(engine.release(req).await?)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// The version to go back to (default: the one deployed before the current one).
    to: Option<String>,
    /// Switch traffic back to the warm previous release (no `to`).
    #[serde(default)]
    fast: bool,
    /// With `fast`: switch even though the version left ran an install step since the warm
    /// release served (audited as `rollback.fast` with `force: true`).
    #[serde(default)]
    force: bool,
    /// Admins only: as for a release.
    override_policy: Option<String>,
}

/// Rolls an environment back: a pipeline run to an earlier version, or with `fast` an
/// immediate switch to the warm previous release (recorded as a run).
#[utoipa::path(post, path = "/api/v1/environments/{env}/rollback", operation_id = "rollback", tag = "runs",
    params(("env" = String, Path, description = "Environment name")),
    request_body = RollbackBody,
    responses((status = 202, description = "The rollback run", body = RunRecord),
        (status = 400, description = "Nothing to roll back to, a bad body, or a `requires:` refusal", body = ErrorBody),
        (status = 403, description = "A policy override by someone who is not an admin of the environment", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "No warm release for a fast rollback, or (without `force`) the version left ran an install step since the warm release served", body = ErrorBody)))]

async fn rollback(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<RollbackBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let actor = principal.name.clone();
    let b = super::body(b)?;
    let over = policy_override(b.override_policy, &principal);
    let run = if b.fast {
        if b.to.is_some() {
            return Err(ApiError::bad_request(
                "--fast switches to the warm previous release; it takes no --to (use a full rollback for another version)",
            ));
        }
        engine.fast_rollback(&env, &actor, b.force).await?
    } else {
        engine
            .rollback(&env, b.to.as_deref(), &actor, over.as_ref())
            .await?
    };
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    /// The environment whose deployed version is copied.
    from: String,
    /// The environment that gets it (a release run is queued there).
    to: String,
    /// Admins only: as for a release (`from` counts as passed).
    override_policy: Option<String>,
    /// Also copy every feature flag of `from` onto `to` (each audited as `flag.set` with the
    /// promote as its reason; flags only `to` has stay). Needs approver on a production `to`.
    #[serde(default)]
    flags: bool,
}

/// Copies the version deployed in `from` to `to` and queues a release there.
#[utoipa::path(post, path = "/api/v1/promotions", operation_id = "promote", tag = "runs",
    request_body = PromoteBody,
    responses((status = 202, description = "The release run in `to`", body = RunRecord),
        (status = 400, description = "Nothing deployed in `from`, or a policy refusal", body = ErrorBody),
        (status = 403, description = "A policy override by someone who is not an admin of the environment", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]

async fn promote(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<PromoteBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let b = super::body(b)?;
    let over = policy_override(b.override_policy, &principal);
    Ok((
        StatusCode::ACCEPTED,
        Json(
            engine
                .promote(&b.from, &b.to, &principal.name, over.as_ref(), b.flags)
                .await?,
        ),
    ))
}

/// Runs of the environments the token may see, newest first.
#[utoipa::path(get, path = "/api/v1/runs", operation_id = "list_runs", tag = "runs", params(RunListQuery),
    responses((status = 200, description = "Runs, newest first", body = Vec<RunRecord>),
        (status = 400, description = "Bad query (e.g. a limit over 1000)", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]

async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<RunListQuery>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let limit = super::list_limit(q.limit, 20)?;
    // The policy decided on the same decoded `env`; the answer is filtered anyway, so
    // no decoding difference can ever show another environment's runs.
    let sees_all = principal.grants.default.is_some();
    let mut runs = if q.env.is_some() || sees_all {
        engine.runs(q.env.as_deref(), limit).await?
    } else {
        // Filtered after reading: read deeper so the page is still full.
        engine
            .runs(None, limit.saturating_mul(10).clamp(limit, 1000))
            .await?
    };
    runs.retain(|r| crate::auth::may_view(&principal, &r.env));
    runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(runs))
}

/// One run with its stages and approvals.
#[utoipa::path(get, path = "/api/v1/runs/{id}", operation_id = "show_run", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "The run with its stages and approvals", body = RunView),
        (status = 404, description = "No such run", body = ErrorBody)))]
async fn show(State(engine): State<Engine>, Path(id): Path<i64>) -> Result<Json<RunView>, ApiError> {
    Ok(Json(engine.run(id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Only this stage's lines (its slug, e.g. `deploy_services`).
    stage: Option<String>,
    /// Only lines with a larger `seq` (resume after a line already seen).
    #[serde(default)]
    after: i64,
    /// Stream new lines as they are written (NDJSON) until the run ends.
    #[serde(default)]
    follow: bool,
}

/// A run's log. Without `follow`: a JSON array. With `follow`: newline-delimited JSON, one
/// object per line as it is written, closed by `{"end": true, "state": ...}`.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", operation_id = "run_logs", tag = "runs",
    params(("id" = i64, Path, description = "Run id"), LogsQuery),
    responses((status = 200, description = "The lines (a JSON array, or NDJSON with follow=true)",
            content((Vec<RunLogLine> = "application/json"), (RunLogLine = "application/x-ndjson"))),
        (status = 404, description = "No such run", body = ErrorBody)))]
async fn logs(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    if !q.follow {
        return Ok(Json(engine.run_logs(id, q.stage.as_deref(), q.after).await?).into_response());
    }
    // Subscribe before reading, so nothing written in between is missed.
    let mut live = engine.follow_run(id);
    let backlog = engine.run_logs(id, q.stage.as_deref(), q.after).await?;
    let stage = match q.stage.as_deref() {
        Some(s) => Some(cutover_core::Stage::parse(s).map_err(ApiError::bad_request)?),
        None => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(256);
    tokio::spawn(async move {
        let mut last = q.after;
        let send_line = |l: &RunLogLine| format!("{}\n", json!(l));
        for l in &backlog {
            last = last.max(l.seq);
            if tx.send(Ok(send_line(l))).await.is_err() {
                return;
            }
        }
        loop {
            let ended = match engine.run(id).await {
                Ok(v) => v.run.state.is_terminal(),
                Err(_) => true,
            };
            if ended {
                // Lines written just before the end may not have been seen live.
                if let Ok(rest) = engine.run_logs(id, stage.map(|s| s.slug()), last).await {
                    for l in &rest {
                        last = last.max(l.seq);
                        let _ = tx.send(Ok(send_line(l))).await;
                    }
                }
                let state = engine
                    .run(id)
                    .await
                    .map(|v| v.run.state.to_string())
                    .unwrap_or_default();
                let _ = tx
                    .send(Ok(format!("{}\n", json!({ "end": true, "state": state }))))
                    .await;
                return;
            }
            match live.recv().await {
                Ok(LogEvent::Line(l)) => {
                    if l.seq > last && stage.is_none_or(|s| s == l.stage) {
                        last = l.seq;
                        if tx.send(Ok(send_line(&l))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(LogEvent::End) | Err(RecvError::Closed) => {
                    live = engine.follow_run(id);
                    // Loop round: the state check above ends the stream.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(RecvError::Lagged(_)) => {
                    if let Ok(rest) = engine.run_logs(id, stage.map(|s| s.slug()), last).await {
                        for l in &rest {
                            last = last.max(l.seq);
                            if tx.send(Ok(send_line(l))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Cancels a queued, waiting or running run (a running one restores the serving version).
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "The run, cancelled", body = RunRecord),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody)))]
async fn cancel(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<RunRecord>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.cancel(id, &actor).await?))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Recorded with the decision; required to reject (say what to fix).
    comment: Option<String>,
    /// The SHA (or a prefix of 7+ characters) the decision is about: refused
    /// (409) if the run deploys another one. The dashboard always sends it.
    version: Option<String>,
}

/// Approves the SHA of a run waiting in its Approval stage (fixed when the run was
/// requested). Four-eyes on production tiers: not by who requested the run, nor by who
/// chose its version (wrote the desired_version it was resolved from).
#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", operation_id = "approve_run", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    request_body = DecisionBody,
    responses((status = 200, description = "The run, approved (it continues)", body = RunView),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 403, description = "Four-eyes: the requester or the chooser of the version of a production run", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is not waiting for approval, or deploys another SHA than `version`", body = ErrorBody)))]

async fn approve(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    let actor = principal.name;
    let b = super::body(b)?;
    let comment = super::comment("comment", b.comment)?;
    Ok(Json(
        engine
            .decide(id, &actor, Decision::Approve, comment, b.version.as_deref())
            .await?,
    ))
}

/// Rejects a run waiting for approval; it ends as rejected and nothing is deployed.
#[utoipa::path(post, path = "/api/v1/runs/{id}/reject", operation_id = "reject_run", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    request_body = DecisionBody,
    responses((status = 200, description = "The run, rejected", body = RunView),
        (status = 400, description = "No comment: a rejection says why", body = ErrorBody),
        (status = 403, description = "Four-eyes: the requester or the chooser of the version of a production run", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is not waiting for approval, or deploys another SHA than `version`", body = ErrorBody)))]
async fn reject(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    let actor = principal.name;
    let b = super::body(b)?;
    let comment = super::comment("comment", b.comment)?;
    Ok(Json(
        engine
            .decide(id, &actor, Decision::Reject, comment, b.version.as_deref())
            .await?,
    ))
}

//! `/api/v1/.../releases`, `/api/v1/runs`: starting, reading, following,
//! cancelling, approving and rejecting pipeline runs; rollback and promote.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cutover_engine::{Engine, LogEvent, Principal, ReleaseRequest, RunView};
use cutover_store::{Decision, RunLogLine, RunRecord};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;

pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/api/v1/environments/{env}/releases", post(release))
        .route("/api/v1/environments/{env}/rollback", post(rollback))
        .route("/api/v1/promotions", post(promote))
        .route("/api/v1/runs", get(list))
        .route("/api/v1/runs/{id}", get(show))
        .route("/api/v1/runs/{id}/logs", get(logs))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/runs/{id}/approve", post(approve))
        .route("/api/v1/runs/{id}/reject", post(reject))
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|r| ApiError::bad_request(format!("bad request body: {}", r.body_text())))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    version: Option<String>,
    #[serde(default)]
    destructive: bool,
    #[serde(default)]
    confirm: bool,
}

async fn release(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<ReleaseBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let actor = principal.name;
    let b = body(b)?;
    let req = ReleaseRequest {
        env,
        version: b.version,
        destructive: b.destructive,
        confirmed: b.confirm,
        actor,
    };
    Ok((StatusCode::ACCEPTED, Json(engine.release(req).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: Option<String>,
    #[serde(default)]
    fast: bool,
}

async fn rollback(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<RollbackBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let actor = principal.name;
    let b = body(b)?;
    let run = if b.fast {
        if b.to.is_some() {
            return Err(ApiError::bad_request(
                "--fast switches to the warm previous release; it takes no --to (use a full rollback for another version)",
            ));
        }
        engine.fast_rollback(&env, &actor).await?
    } else {
        engine.rollback(&env, b.to.as_deref(), &actor).await?
    };
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    from: String,
    to: String,
}

async fn promote(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<PromoteBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let actor = principal.name;
    let b = body(b)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(engine.promote(&b.from, &b.to, &actor).await?),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    env: Option<String>,
    limit: Option<u32>,
}

/// Recent runs of the environments the token may see.
async fn list(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    let sees_all = principal.grants.default.is_some();
    if q.env.is_some() || sees_all {
        return Ok(Json(engine.runs(q.env.as_deref(), limit).await?));
    }
    // Filtered after reading: read deeper so the page is still full.
    let mut runs = engine
        .runs(None, limit.saturating_mul(10).clamp(limit, 1000))
        .await?;
    runs.retain(|r| crate::auth::may_view(&principal, &r.env));
    runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(runs))
}

async fn show(State(engine): State<Engine>, Path(id): Path<i64>) -> Result<Json<RunView>, ApiError> {
    Ok(Json(engine.run(id).await?))
}

#[derive(Deserialize)]
struct LogsQuery {
    stage: Option<String>,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    follow: bool,
}

/// Without `follow`: a JSON array. With `follow`: newline-delimited JSON, one
/// object per line as it is written, closed by `{"end": true, "state": ...}`.
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

async fn cancel(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<RunRecord>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.cancel(id, &actor).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

async fn approve(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    let actor = principal.name;
    let b = body(b)?;
    Ok(Json(
        engine.decide(id, &actor, Decision::Approve, b.comment).await?,
    ))
}

async fn reject(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Extension(principal): Extension<Principal>,
    b: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    let actor = principal.name;
    let b = body(b)?;
    Ok(Json(
        engine.decide(id, &actor, Decision::Reject, b.comment).await?,
    ))
}

//! `/api/v1/environments/{env}/status`, the scheduler, service logs and the
//! audit log.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cutover_engine::{Engine, EnvStatus, Principal, SchedulerStatus};
use cutover_store::{AuditEntry, JobRun};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/api/v1/environments/{env}/status", get(status))
        .route(
            "/api/v1/environments/{env}/services/{service}/logs",
            get(service_logs),
        )
        .route("/api/v1/environments/{env}/scheduler", get(scheduler))
        .route("/api/v1/environments/{env}/scheduler/suspend", post(suspend))
        .route("/api/v1/environments/{env}/scheduler/resume", post(resume))
        .route(
            "/api/v1/environments/{env}/scheduler/jobs/{job}/run",
            post(run_job),
        )
        .route("/api/v1/environments/{env}/scheduler/runs", get(job_runs))
        .route("/api/v1/job-runs/{id}/logs", get(job_log))
        .route("/api/v1/audit", get(audit))
}

async fn status(State(engine): State<Engine>, Path(env): Path<String>) -> Result<Json<EnvStatus>, ApiError> {
    Ok(Json(engine.status(&env).await?))
}

#[derive(Deserialize)]
struct LinesQuery {
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// The last lines of every instance of a service; with `follow`, an NDJSON
/// stream of new lines (`{"instance", "at_ms", "stream", "text"}`) until the
/// instances stop or the client goes away.
async fn service_logs(
    State(engine): State<Engine>,
    Path((env, service)): Path<(String, String)>,
    Query(q): Query<LinesQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if q.follow {
        let receivers = engine.follow_service(&env, &service).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(256);
        for (instance, mut live) in receivers {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match live.recv().await {
                        Ok(line) => {
                            let at_ms = line.at;
                            let v = json!({ "instance": instance, "at_ms": at_ms, "stream": format!("{:?}", line.stream).to_lowercase(), "text": line.text });
                            if tx.send(Ok(format!("{v}\n"))).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let v = json!({ "instance": instance, "lagged": n });
                            let _ = tx.send(Ok(format!("{v}\n"))).await;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        drop(tx);
        let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    let status = engine.status(&env).await?;
    let svc = status
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| {
            let known: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown service {service:?}; services are: {}",
                known.join(", ")
            ))
        })?;
    let lines = q.lines.unwrap_or(100).clamp(1, 10_000);
    let mut out = Vec::new();
    for inst in &svc.instances {
        let tail = engine.instance_log_tail(&env, &inst.id, lines).await?;
        out.push(json!({ "instance": inst.id, "version": inst.version, "role": inst.role, "lines": tail }));
    }
    Ok(Json(json!({ "env": env, "service": service, "instances": out })).into_response())
}

async fn scheduler(
    State(engine): State<Engine>,
    Path(env): Path<String>,
) -> Result<Json<SchedulerStatus>, ApiError> {
    Ok(Json(engine.scheduler_status(&env).await?))
}

async fn suspend(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SchedulerStatus>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.scheduler_suspend(&env, &actor).await?))
}

async fn resume(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SchedulerStatus>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.scheduler_resume(&env, &actor).await?))
}

async fn run_job(
    State(engine): State<Engine>,
    Path((env, job)): Path<(String, String)>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<JobRun>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.scheduler_run_now(&env, &job, &actor).await?))
}

#[derive(Deserialize)]
struct JobRunsQuery {
    job: Option<String>,
    limit: Option<u32>,
}

async fn job_runs(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Query(q): Query<JobRunsQuery>,
) -> Result<Json<Vec<JobRun>>, ApiError> {
    Ok(Json(
        engine
            .job_runs(&env, q.job.as_deref(), q.limit.unwrap_or(20))
            .await?,
    ))
}

#[derive(Deserialize)]
struct AfterQuery {
    #[serde(default)]
    after: i64,
}

async fn job_log(
    State(engine): State<Engine>,
    Path(id): Path<i64>,
    Query(q): Query<AfterQuery>,
) -> Result<Json<Value>, ApiError> {
    let lines = engine.job_log(id, q.after).await?;
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|(seq, at_ms, line)| json!({"seq": seq, "at_ms": at_ms, "line": line}))
        .collect();
    Ok(Json(json!(lines)))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn audit(
    State(engine): State<Engine>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    Ok(Json(engine.audit_log(q.limit.unwrap_or(50), q.before).await?))
}

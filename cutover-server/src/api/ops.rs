//! `/api/v1/environments/{env}/status`, the scheduler, service logs and the
//! audit log.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use cutover_engine::{Engine, EnvStatus, Principal, SchedulerStatus};
use cutover_store::{AuditEntry, JobRun};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(service_logs))
        .routes(routes!(scheduler))
        .routes(routes!(suspend))
        .routes(routes!(resume))
        .routes(routes!(run_job))
        .routes(routes!(job_runs))
        .routes(routes!(job_log))
        .routes(routes!(audit))
}

/// What runs: per service its router URL and every instance with the version its process
/// really runs (read from the runtime), health, pid, port, restarts and uptime.
#[utoipa::path(get, path = "/api/v1/environments/{env}/status", operation_id = "environment_status", tag = "operations",
    params(("env" = String, Path, description = "Environment name")),
    responses((status = 200, description = "Per service its router URL and every instance with the version it really runs", body = EnvStatus),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn status(State(engine): State<Engine>, Path(env): Path<String>) -> Result<Json<EnvStatus>, ApiError> {
    Ok(Json(engine.status(&env).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LinesQuery {
    /// Last lines per instance (1..10000, default 100).
    lines: Option<usize>,
    /// Stream new lines (NDJSON) instead.
    #[serde(default)]
    follow: bool,
}

/// The last lines of every instance of a service; with `follow`, an NDJSON
/// stream of new lines (`{"instance", "at_ms", "stream", "text"}`) until the
/// instances stop or the client goes away.
#[utoipa::path(get, path = "/api/v1/environments/{env}/services/{service}/logs", operation_id = "service_logs", tag = "operations",
    params(("env" = String, Path, description = "Environment name"),
        ("service" = String, Path, description = "Service name"), LinesQuery),
    responses((status = 200,
            description = "`{env, service, instances: [{instance, version, role, lines}]}`, or NDJSON with follow=true",
            content((Object = "application/json"), (Object = "application/x-ndjson"))),
        (status = 400, description = "Unknown service", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn service_logs(
    State(engine): State<Engine>,
    Path((env, service)): Path<(String, String)>,
    Query(q): Query<LinesQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if q.follow {
        let follow = engine.follow_service(&env, &service).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(256);
        for (instance, mut live) in follow.receivers {
            let tx = tx.clone();
            let masker = follow.masker.clone();
            tokio::spawn(async move {
                loop {
                    match live.recv().await {
                        Ok(line) => {
                            let at_ms = line.at;
                            let text = masker.mask(&line.text);
                            let v = json!({ "instance": instance, "at_ms": at_ms, "stream": format!("{:?}", line.stream).to_lowercase(), "text": text });
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

/// The environment's scheduler: suspended or not, and each job with its next and last run.
#[utoipa::path(get, path = "/api/v1/environments/{env}/scheduler", operation_id = "show_scheduler", tag = "scheduler",
    params(("env" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The environment's cron jobs and whether the scheduler is suspended", body = SchedulerStatus),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn scheduler(
    State(engine): State<Engine>,
    Path(env): Path<String>,
) -> Result<Json<SchedulerStatus>, ApiError> {
    Ok(Json(engine.scheduler_status(&env).await?))
}

/// Suspends the scheduler (no new job starts); it stays suspended across restarts and
/// pipelines until resumed.
#[utoipa::path(post, path = "/api/v1/environments/{env}/scheduler/suspend", operation_id = "suspend_scheduler", tag = "scheduler",
    params(("env" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The scheduler, suspended", body = SchedulerStatus),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn suspend(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SchedulerStatus>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.scheduler_suspend(&env, &actor).await?))
}

/// Resumes a suspended scheduler.
#[utoipa::path(post, path = "/api/v1/environments/{env}/scheduler/resume", operation_id = "resume_scheduler", tag = "scheduler",
    params(("env" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The scheduler, resumed", body = SchedulerStatus),
        (status = 404, description = "No such environment", body = ErrorBody)))]
async fn resume(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SchedulerStatus>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.scheduler_resume(&env, &actor).await?))
}

/// Starts one job now, from the serving release.
#[utoipa::path(post, path = "/api/v1/environments/{env}/scheduler/jobs/{job}/run", operation_id = "run_job", tag = "scheduler",
    params(("env" = String, Path, description = "Environment name"),
        ("job" = String, Path, description = "Job name")),
    responses((status = 200, description = "The started job run", body = JobRun),
        (status = 400, description = "Unknown job", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "Nothing deployed yet, or the job is running and may not overlap", body = ErrorBody)))]
async fn run_job(
    State(engine): State<Engine>,
    Path((env, job)): Path<(String, String)>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<JobRun>, ApiError> {
    let actor = principal.name;
    Ok(Json(engine.scheduler_run_now(&env, &job, &actor).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct JobRunsQuery {
    /// Only this job's runs.
    job: Option<String>,
    /// Newest first, at most this many (1..1000, default 20).
    limit: Option<u32>,
}

/// Job runs of the environment, newest first.
#[utoipa::path(get, path = "/api/v1/environments/{env}/scheduler/runs", operation_id = "list_job_runs", tag = "scheduler",
    params(("env" = String, Path, description = "Environment name"), JobRunsQuery),
    responses((status = 200, description = "Job runs, newest first", body = Vec<JobRun>),
        (status = 404, description = "No such environment", body = ErrorBody)))]

async fn job_runs(
    State(engine): State<Engine>,
    Path(env): Path<String>,
    Query(q): Query<JobRunsQuery>,
) -> Result<Json<Vec<JobRun>>, ApiError> {
    Ok(Json(
        engine
            .job_runs(&env, q.job.as_deref(), super::list_limit(q.limit, 20)?)
            .await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AfterQuery {
    /// Only lines with a larger `seq`.
    #[serde(default)]
    after: i64,
}

/// One job run's log: `[{seq, at_ms, line}]`.
#[utoipa::path(get, path = "/api/v1/job-runs/{id}/logs", operation_id = "job_run_logs", tag = "scheduler",
    params(("id" = i64, Path, description = "Job run id"), AfterQuery),
    responses((status = 200, description = "`[{seq, at_ms, line}]`", body = Vec<Object>),
        (status = 404, description = "No such job run", body = ErrorBody)))]

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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Newest first, at most this many (1..1000, default 50).
    limit: Option<u32>,
    /// Only entries with a smaller id (paging backwards).
    before: Option<i64>,
}

/// The append-only audit log, newest first. Setting values are never kept in it.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "list_audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Audit entries, newest first", body = Vec<AuditEntry>)))]

async fn audit(
    State(engine): State<Engine>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    Ok(Json(
        engine
            .audit_log(super::list_limit(q.limit, 50)?, q.before)
            .await?,
    ))
}

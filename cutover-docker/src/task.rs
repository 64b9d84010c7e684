//! One-shot tasks (hooks, scheduler jobs) in a one-off container, with the
//! process runtime's contract ([`cutover_runtime::task`]): output lines
//! streamed as they come, an outcome, and nothing left behind.
//!
//! - **Image**: the task's [`TASK_IMAGE_VAR`] variable in
//!   [`TaskSpec::env_vars`] names it (the engine sets it per call, e.g.
//!   `shop-prod-backoffice:<sha>`, the image of the configured task service
//!   at the version being deployed), else
//!   [`DockerConfig::default_task_image`](crate::DockerConfig::default_task_image).
//!   Per call, not per runtime: hooks of a pipeline and scheduler jobs of
//!   the same environment may run at the same time at different versions.
//!   Rejected: a `set_task_image` method (shared mutable state, racy) and a
//!   new `TaskSpec` field (the trait's types stay backend-neutral).
//! - **Run**: `sh -c <command>` as the container's entrypoint, the image's
//!   working directory (the release is *in* the image; [`TaskSpec::dir`]
//!   is a host path and is not used), `env_vars` as its environment, no
//!   published port, no restart, labelled `cutover.task` with the owner
//!   labels so [`recover`](cutover_runtime::Runtime::recover) removes a
//!   task container a crashed server left behind.
//! - **Output**: `logs?follow=1` from the start, so no line is lost, split
//!   into lines of at most [`MAX_TASK_LINE`] bytes.
//! - **End**: the exit code from `wait`; on timeout or cancel (or runtime
//!   shutdown) the container is stopped (SIGTERM, SIGKILL after the stop
//!   grace); in every case it is removed. If the `run_task` future is
//!   dropped, a background task force-removes the container.
//!   Docker reports a shell killed by a signal as `128 + signal`, so a
//!   task's exit is always [`TaskExit::Code`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use cutover_runtime::task::MAX_TASK_LINE;
use cutover_runtime::{LogStream, RuntimeError, TaskExit, TaskLine, TaskOutcome, TaskSpec};
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::container::owner_labels;
use crate::error::{DockerError, chain, is_not_found};
use crate::logs::LineSplitter;
use crate::{DockerRuntime, labels, random_hex};

/// The `env_vars` key naming the image a task runs in.
pub const TASK_IMAGE_VAR: &str = "CUTOVER_TASK_IMAGE";

/// How long the output may take to reach its end once the container exited.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Counts one task for as long as it lives.
struct ActiveTask<'a>(&'a AtomicUsize);

impl<'a> ActiveTask<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for ActiveTask<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Force-removes the container if `run` is dropped before it cleaned up.
struct ContainerGuard {
    docker: Docker,
    container: Option<String>,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(container) = self.container.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let docker = self.docker.clone();
            handle.spawn(async move {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = docker.remove_container(&container, Some(options)).await;
            });
        }
    }
}

enum Ended {
    Exited(i64),
    TimedOut,
    Cancelled,
}

fn note(lines: &UnboundedSender<TaskLine>, label: &str, text: String) {
    tracing::info!(label, "{text}");
    let _ = lines.send(TaskLine {
        at: SystemTime::now(),
        stream: LogStream::Cutover,
        text,
    });
}

pub(crate) async fn run(
    rt: &DockerRuntime,
    spec: TaskSpec,
    lines: UnboundedSender<TaskLine>,
    cancel: CancellationToken,
) -> Result<TaskOutcome, RuntimeError> {
    let inner = &rt.inner;
    let _active = ActiveTask::enter(&inner.active_tasks);
    if inner.closed.load(Ordering::SeqCst) {
        return Err(RuntimeError::ShutDown);
    }
    let action = format!("run the {}", spec.label);
    let image = spec
        .env_vars
        .iter()
        .rev()
        .find(|(k, _)| k == TASK_IMAGE_VAR)
        .map(|(_, v)| v.clone())
        .or_else(|| inner.config.default_task_image.clone())
        .ok_or_else(|| {
            DockerError::NoTaskImage {
                label: spec.label.clone(),
                var: TASK_IMAGE_VAR,
            }
            .into_runtime(action.clone())
        })?;
    if !rt
        .image_exists(&image)
        .await
        .map_err(|e| e.into_runtime(action.clone()))?
    {
        return Err(DockerError::ImageMissing { tag: image }.into_runtime(action));
    }
    if cancel.is_cancelled() || inner.tasks_shutdown.is_cancelled() {
        return Ok(TaskOutcome {
            exit: TaskExit::Cancelled,
            duration: Duration::ZERO,
        });
    }
    let docker = inner.docker.clone();
    let mut task_labels: HashMap<String, String> = owner_labels(inner).into_iter().collect();
    task_labels.insert(labels::TASK.to_owned(), spec.label.clone());
    let env: Vec<String> = spec.env_vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: Some(vec!["sh".to_owned(), "-c".to_owned(), spec.command.clone()]),
        env: Some(env.clone()),
        labels: Some(task_labels),
        host_config: Some(HostConfig {
            init: Some(inner.config.init),
            binds: crate::container::env_dir_binds(&env),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!("cutover-task-{}", random_hex(12));
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| {
            DockerError::api(format!("create task container {name} from {image}"))(e)
                .into_runtime(action.clone())
        })?;
    let container = created.id;
    let mut guard = ContainerGuard {
        docker: docker.clone(),
        container: Some(container.clone()),
    };
    let started = Instant::now();
    docker.start_container(&container, None).await.map_err(|e| {
        DockerError::api(format!("start task container {name}"))(e).into_runtime(action.clone())
    })?;
    tracing::debug!(label = %spec.label, %name, %image, "task started: sh -c {:?}", spec.command);
    let reader = pump(docker.clone(), container.clone(), lines.clone());

    let wait = async {
        match docker.wait_container(&container, None).next().await {
            Some(Ok(answer)) => Ok(answer.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => Err(err),
            None => Err(bollard::errors::Error::IOError {
                err: std::io::Error::other("the engine closed the wait stream without an exit code"),
            }),
        }
    };
    let ended = tokio::select! {
        biased;
        code = wait => match code {
            Ok(code) => Ended::Exited(code),
            Err(err) => {
                return Err(RuntimeError::TaskWait { label: spec.label.clone(), source: std::io::Error::other(chain(&err)) });
            }
        },
        () = cancel.cancelled() => Ended::Cancelled,
        () = inner.tasks_shutdown.cancelled() => Ended::Cancelled,
        () = tokio::time::sleep(spec.timeout) => Ended::TimedOut,
    };
    let exit = match ended {
        Ended::Exited(code) => TaskExit::Code(i32::try_from(code).unwrap_or(-1)),
        Ended::TimedOut | Ended::Cancelled => {
            let exit = match ended {
                Ended::TimedOut => TaskExit::TimedOut { after: spec.timeout },
                _ => TaskExit::Cancelled,
            };
            let grace = inner.config.stop_grace;
            note(
                &lines,
                &spec.label,
                format!(
                    "{exit}: stopping the {}'s container {name} (SIGTERM, SIGKILL after {})",
                    spec.label,
                    humantime::format_duration(grace)
                ),
            );
            let secs = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::new().t(secs).build();
            if let Err(err) = docker.stop_container(&container, Some(options)).await
                && !is_not_found(&err)
            {
                note(
                    &lines,
                    &spec.label,
                    format!("could not stop container {name}: {}", chain(&err)),
                );
            }
            exit
        }
    };
    drain(reader).await;
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(&container, Some(options)).await {
        Ok(()) => guard.container = None,
        Err(err) if is_not_found(&err) => guard.container = None,
        Err(err) => note(
            &lines,
            &spec.label,
            format!(
                "could not remove container {name}; retrying in the background: {}",
                chain(&err)
            ),
        ),
    }
    Ok(TaskOutcome {
        exit,
        duration: started.elapsed(),
    })
}

/// Streams the container's output, from its start, into `lines`.
fn pump(docker: Docker, container: String, lines: UnboundedSender<TaskLine>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = docker.logs(&container, Some(options));
        let mut out = LineSplitter::new(MAX_TASK_LINE);
        let mut err = LineSplitter::new(MAX_TASK_LINE);
        let send = |stream: LogStream, text: String| {
            let _ = lines.send(TaskLine {
                at: SystemTime::now(),
                stream,
                text,
            });
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(LogOutput::StdErr { message }) => {
                    for line in err.push(&message) {
                        send(LogStream::Stderr, line);
                    }
                }
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    for line in out.push(&message) {
                        send(LogStream::Stdout, line);
                    }
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    send(
                        LogStream::Cutover,
                        format!("reading the output failed: {}", chain(&e)),
                    );
                    break;
                }
            }
        }
        if let Some(line) = out.finish() {
            send(LogStream::Stdout, line);
        }
        if let Some(line) = err.finish() {
            send(LogStream::Stderr, line);
        }
    })
}

/// Waits for the reader to reach the end (every line delivered), but not
/// forever.
async fn drain(reader: JoinHandle<()>) {
    let abort = reader.abort_handle();
    if tokio::time::timeout(DRAIN_LIMIT, reader).await.is_err() {
        abort.abort();
    }
}

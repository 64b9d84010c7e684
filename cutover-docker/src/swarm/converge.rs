//! Non-public services through Swarm's native update (see the [module
//! documentation](super) for why public services are not).
//!
//! [`SwarmRuntime::converge`] creates `<app>-<env>-<service>` or updates it
//! to the new image (start-first, parallelism 1, failure action rollback
//! after `monitor`), then watches until it converged:
//!
//! - **created**: every replica's task of the image runs, without a break,
//!   for the monitor window; three failed tasks of the image end the wait
//!   with [`DockerError::TasksFailing`] (there is nothing to roll back to;
//!   Swarm keeps restarting them);
//! - **updated**: Swarm reports the update `completed` (it has monitored
//!   each new task itself) and every replica's task of the image runs; an
//!   update state `rollback_completed`/`rollback_paused` is
//!   [`DockerError::RolledBack`], `paused` is [`DockerError::UpdatePaused`],
//!   both with the failed task's error;
//! - **unchanged** (same image, command, environment, placement, replicas): every
//!   replica's task of the image runs for the monitor window.
//!
//! The update state of a *previous* update is told from this one's by its
//! start time. Progress goes to `lines` ("2/2 tasks of 3f9a1c2b running").
//! Reaching `timeout` ends the wait with [`DockerError::ConvergeTimeout`];
//! Swarm's update is left to go on (rolling back is Swarm's decision).

use std::time::Duration;

use bollard::models::{Service, ServiceUpdateStatusStateEnum as U, Task, TaskState};
use bollard::query_parameters::UpdateServiceOptionsBuilder;
use cutover_core::{AppName, EnvName, ServiceName, Version};
use cutover_runtime::InstanceStatus;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::service::{self, converged_name, describe_task_end, is_failure, task_image, task_state};
use super::{POLL, SwarmRuntime};
use crate::error::{DockerError, is_not_found};
use crate::{image_tag, labels};

/// Failed tasks of a newly created service that end the wait.
const CREATE_FAILURES: usize = 3;

/// What to run for one non-public service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeSpec {
    pub app: AppName,
    pub env: EnvName,
    pub service: ServiceName,
    /// The image is `<app>-<env>-<service>:<version>`; it must exist.
    pub version: Version,
    pub replicas: u32,
    /// Extra environment (as [`InstanceSpec::env_vars`](cutover_runtime::InstanceSpec::env_vars));
    /// `CUTOVER_APP`, `CUTOVER_ENV`, `CUTOVER_SERVICE`, `CUTOVER_VERSION`,
    /// `CUTOVER_INSTANCE` (the task's name) and `CUTOVER_REPLICA` (Swarm's
    /// 1-based slot) are set after these and win.
    pub env_vars: Vec<(String, String)>,
    /// `sh -c <run>` as the command; `None` keeps the image's.
    pub run: Option<String>,
    /// How long each new task must run before Swarm counts it updated
    /// (failures within it roll the update back).
    pub monitor: Duration,
    /// Give up waiting after this long.
    pub timeout: Duration,
    /// The service's `placement` (with `spread=node.id` last). A change of
    /// placement alone updates a running service (Swarm moves its tasks).
    pub placement: cutover_core::config::Placement,
}

/// What [`SwarmRuntime::converge`] did to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvergeAction {
    Created,
    Updated,
    /// Only the replica count changed: Swarm adds or removes tasks without a rolling update
    /// (so there is no update state to wait for, only the task count).
    Scaled,
    /// It already ran this spec; nothing was changed.
    Unchanged,
}

/// A converged service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeOutcome {
    /// The Swarm service's full id.
    pub service_id: String,
    /// `<app>-<env>-<service>`.
    pub name: String,
    pub action: ConvergeAction,
    /// Tasks of the version running at the end (= replicas).
    pub running: u32,
    pub took: Duration,
}

/// The service a converge watches.
struct Target<'a> {
    name: &'a str,
    service_id: &'a str,
    image: &'a str,
    action: ConvergeAction,
    /// For an update: the start time of the update before it (`None`
    /// inside when there was none).
    previous: Option<Option<String>>,
}

impl SwarmRuntime {
    /// Creates or updates the service and waits until it converged (see the
    /// module documentation). Progress lines go to `lines` (a dropped
    /// receiver is not an error).
    pub async fn converge(
        &self,
        spec: ConvergeSpec,
        lines: mpsc::UnboundedSender<String>,
    ) -> Result<ConvergeOutcome, DockerError> {
        let began = Instant::now();
        let image = image_tag(&spec.app, &spec.env, &spec.service, &spec.version);
        if !self.containers().image_exists(&image).await? {
            return Err(DockerError::ImageMissing { tag: image });
        }
        let name = converged_name(&spec.app, &spec.env, &spec.service);
        // Through the registry when there is one: the tasks may land on any node.
        let image = self.config().image_reference(&image);
        let wanted = service::converged_service(&self.containers().inner, &spec, &image);
        let sha8 = &spec.version.as_str()[..8];
        let (service_id, action, previous) = match self.converged_service(&name).await? {
            None => {
                let created = self
                    .docker()
                    .create_service(wanted, self.registry_auth())
                    .await
                    .map_err(DockerError::api(format!("create service {name} from {image}")))?;
                let _ = lines.send(format!(
                    "created Swarm service {name}: {} replica(s) of {image}",
                    spec.replicas
                ));
                (created.id.unwrap_or_default(), ConvergeAction::Created, None)
            }
            Some(current) => {
                let id = current.id.clone().unwrap_or_default();
                let unchanged = current
                    .spec
                    .as_ref()
                    .is_some_and(|s| service::same_deployment(s, &wanted));
                if unchanged {
                    let _ = lines.send(format!("{name} already runs {image}; checking its tasks"));
                    (id, ConvergeAction::Unchanged, None)
                } else {
                    let rescaled = current.spec.as_ref().is_some_and(|s| {
                        service::same_task(s, &wanted) && service::same_placement(s, &wanted)
                    });
                    let moved = !rescaled
                        && current
                            .spec
                            .as_ref()
                            .is_some_and(|s| service::same_task(s, &wanted));
                    let version = current
                        .version
                        .as_ref()
                        .and_then(|v| v.index)
                        .and_then(|i| i32::try_from(i).ok())
                        .unwrap_or(0);
                    let options = UpdateServiceOptionsBuilder::new().version(version).build();
                    self.docker()
                        .update_service(&id, wanted, options, self.registry_auth())
                        .await
                        .map_err(DockerError::api(format!("update service {name} to {image}")))?;
                    if rescaled {
                        let _ = lines.send(format!("scaling {name} to {} replica(s)", spec.replicas));
                        (id, ConvergeAction::Scaled, None)
                    } else {
                        let _ = lines.send(if moved {
                            format!(
                                "placement of {name} changed: moving its tasks, start-first, one at a \
                                 time, rollback on failure within {}",
                                humantime::format_duration(spec.monitor)
                            )
                        } else {
                            format!(
                                "updating {name} to {sha8}: start-first, one task at a time, \
                                 rollback on failure within {}",
                                humantime::format_duration(spec.monitor)
                            )
                        });
                        let previous = current.update_status.and_then(|u| u.started_at);
                        (id, ConvergeAction::Updated, Some(previous))
                    }
                }
            }
        };
        let target = Target {
            name: &name,
            service_id: &service_id,
            image: &image,
            action,
            previous,
        };
        let running = self.watch(&spec, &target, &lines).await?;
        let took = began.elapsed();
        let _ = lines.send(format!(
            "{name} converged: {running}/{} tasks of {sha8} running ({})",
            spec.replicas,
            humantime::format_duration(Duration::from_millis(
                u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
            ))
        ));
        Ok(ConvergeOutcome {
            service_id,
            name,
            action,
            running,
            took,
        })
    }

    /// This owner's converged service of that name, if it exists.
    async fn converged_service(&self, name: &str) -> Result<Option<Service>, DockerError> {
        let current = match self.docker().inspect_service(name, None).await {
            Ok(s) => s,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(DockerError::api(format!("inspect service {name}"))(err)),
        };
        let labels = service::service_labels(&current);
        let ours = current.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name)
            && labels.get(labels::OWNER).map(String::as_str) == Some(self.owner())
            && labels.contains_key(labels::CONVERGED);
        if ours {
            Ok(Some(current))
        } else {
            Err(DockerError::NotOurs {
                service: name.to_owned(),
            })
        }
    }

    /// Polls until converged; returns the running count (see module docs).
    async fn watch(
        &self,
        spec: &ConvergeSpec,
        target: &Target<'_>,
        lines: &mpsc::UnboundedSender<String>,
    ) -> Result<u32, DockerError> {
        let Target {
            name,
            service_id,
            image,
            action,
            ref previous,
        } = *target;
        let sha8 = &spec.version.as_str()[..8];
        let until = Instant::now() + spec.timeout;
        let mut steady_since: Option<Instant> = None;
        let mut said_running = None;
        let mut said_state = None;
        loop {
            let service = self
                .docker()
                .inspect_service(service_id, None)
                .await
                .map_err(DockerError::api(format!("inspect service {name}")))?;
            let tasks = self
                .tasks_of(service_id)
                .await
                .map_err(DockerError::api(format!("list the tasks of {name}")))?;
            let of_image = |t: &&Task| task_image(t) == Some(image);
            let running = tasks
                .iter()
                .filter(of_image)
                .filter(|t| t.desired_state == Some(TaskState::RUNNING))
                .filter(|t| task_state(t) == Some(TaskState::RUNNING))
                .count();
            let running = u32::try_from(running).unwrap_or(u32::MAX);
            if said_running != Some(running) {
                let _ = lines.send(format!("{running}/{} tasks of {sha8} running", spec.replicas));
                said_running = Some(running);
            }
            // This update's state (not a previous update's).
            let update = service.update_status.clone().filter(|u| match &previous {
                Some(before) => u.started_at != *before,
                None => false,
            });
            let state = update.as_ref().and_then(|u| u.state);
            let message = update
                .as_ref()
                .and_then(|u| u.message.clone())
                .unwrap_or_default();
            if state.is_some() && said_state != state {
                let _ = lines.send(format!(
                    "Swarm update state: {}{}",
                    state.map(|s| s.to_string()).unwrap_or_default(),
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({message})")
                    }
                ));
                said_state = state;
            }
            let failed: Vec<&Task> = tasks
                .iter()
                .filter(of_image)
                .filter(|t| is_failure(task_state(t)))
                .collect();
            match state {
                Some(U::ROLLBACK_COMPLETED | U::ROLLBACK_PAUSED) => {
                    let reason = failure_reason(&message, &tasks, &failed);
                    let _ = lines.send(format!("update rolled back: {reason}"));
                    return Err(DockerError::RolledBack {
                        service: name.to_owned(),
                        version: spec.version.to_string(),
                        state: state.map(|s| s.to_string()).unwrap_or_default(),
                        reason,
                    });
                }
                Some(U::PAUSED) => {
                    let reason = failure_reason(&message, &tasks, &failed);
                    let _ = lines.send(format!("update paused: {reason}"));
                    return Err(DockerError::UpdatePaused {
                        service: name.to_owned(),
                        version: spec.version.to_string(),
                        reason,
                    });
                }
                _ => {}
            }
            if action == ConvergeAction::Created && failed.len() >= CREATE_FAILURES {
                return Err(DockerError::TasksFailing {
                    service: name.to_owned(),
                    version: spec.version.to_string(),
                    failures: failed.len(),
                    reason: failure_reason("", &tasks, &failed),
                });
            }
            let all_up = running >= spec.replicas;
            let done = match action {
                ConvergeAction::Updated => all_up && state == Some(U::COMPLETED),
                ConvergeAction::Created | ConvergeAction::Scaled | ConvergeAction::Unchanged => {
                    let since = if all_up {
                        *steady_since.get_or_insert_with(Instant::now)
                    } else {
                        steady_since = None;
                        Instant::now()
                    };
                    all_up && since.elapsed() >= spec.monitor
                }
            };
            if done {
                return Ok(running);
            }
            if Instant::now() >= until {
                let mut detail = format!("{running}/{} tasks of {sha8} running", spec.replicas);
                if let Some(state) = state {
                    detail.push_str(&format!("; Swarm update state {state}"));
                }
                if let Some(last) = failed.iter().max_by_key(|t| t.created_at.clone()) {
                    detail.push_str(&format!("; last failed task: {}", describe_task_end(last)));
                }
                return Err(DockerError::ConvergeTimeout {
                    service: name.to_owned(),
                    after: humantime::format_duration(spec.timeout).to_string(),
                    detail,
                });
            }
            tokio::time::sleep(POLL.max(Duration::from_millis(250))).await;
        }
    }

    /// Removes the converged service `<app>-<env>-<service>` and waits
    /// (bounded) for its containers to be gone; `false` when there was none.
    pub async fn remove_converged(
        &self,
        app: &AppName,
        env: &EnvName,
        service: &ServiceName,
    ) -> Result<bool, DockerError> {
        let name = converged_name(app, env, service);
        match self.converged_service(&name).await? {
            None => Ok(false),
            Some(s) => {
                self.remove_service(&s).await?;
                Ok(true)
            }
        }
    }

    /// The tasks that should be running of every converged service of
    /// `app`/`env`, one [`InstanceStatus`] each: id = the task's short id,
    /// replica = Swarm's slot - 1, version from the task's image tag, no
    /// port (`port` 0). Sorted by service and replica.
    pub async fn converged_status(
        &self,
        app: &AppName,
        env: &EnvName,
    ) -> Result<Vec<InstanceStatus>, DockerError> {
        let extra = [format!("{}={app}", labels::APP), format!("{}={env}", labels::ENV)];
        let services = self
            .list_services(labels::CONVERGED, &extra)
            .await
            .map_err(DockerError::api("list services"))?;
        let mut out = Vec::new();
        for s in &services {
            let Some(id) = s.id.as_deref() else { continue };
            let tasks = self
                .tasks_of(id)
                .await
                .map_err(DockerError::api(format!("list the tasks of service {id}")))?;
            out.extend(service::converged_statuses(s, &tasks));
        }
        out.sort_by(|a, b| (&a.service, a.replica, &a.id).cmp(&(&b.service, b.replica, &b.id)));
        Ok(out)
    }
}

/// Why an update failed: Swarm's message, and the failed task's error
/// (the message names it: "… due to failure or early termination of task
/// <id>"), else the newest failed task of the new image.
fn failure_reason(message: &str, tasks: &[Task], failed: &[&Task]) -> String {
    let named = tasks.iter().find(|t| {
        t.id.as_deref()
            .is_some_and(|id| !message.is_empty() && message.contains(id))
    });
    let task = named.or_else(|| failed.iter().copied().max_by_key(|t| t.created_at.clone()));
    match (message.is_empty(), task) {
        (false, Some(t)) => format!("{message}: {}", describe_task_end(t)),
        (false, None) => message.to_owned(),
        (true, Some(t)) => describe_task_end(t),
        (true, None) => "no task failure was recorded".to_owned(),
    }
}

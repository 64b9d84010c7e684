//! Start-up clean-up and the engine-side health check.
//!
//! **Recovery**: containers labelled with this server's state directory
//! (`cutover.owner`) but another `cutover.runtime` were left by a previous
//! server process (killed before it stopped them). They are stopped
//! (SIGTERM, SIGKILL after the grace) and removed, instances and task
//! containers alike: the same decision as the process runtime (clean up,
//! do not adopt: nobody follows their logs or health, and the engine
//! re-deploys the last deployed version). Containers of other servers
//! (other state directories) are never touched. Each one is reported as a
//! [`RecoveredInstance`] whose `file` names the container (`docker:<name>`)
//! and whose `state` describes an instance container in the process
//! runtime's [`StateFile`] shape (`None` for a task container).
//!
//! **HEALTHCHECK**: when an image declares one, `wait_healthy` also waits
//! for Docker to call the container healthy, within the same deadline, after
//! the HTTP check of the configured path passed.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::query_parameters::ListContainersOptionsBuilder;
use cutover_runtime::{
    HealthSettings, RecoveredInstance, RecoveryAction, RecoveryReport, RuntimeError, StateFile,
};

use crate::container::{self, labels_of};
use crate::error::chain;
use crate::runtime::engine_err;
use crate::{DockerRuntime, labels};

impl DockerRuntime {
    /// See the module documentation.
    pub(crate) async fn recover_leftovers(&self) -> Result<RecoveryReport, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{}={}", labels::OWNER, self.inner.owner)])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(engine_err("list containers left by a previous server"))?;
        let mut report = RecoveryReport::default();
        for summary in listed {
            let labels = summary.labels.clone().unwrap_or_default();
            if labels.get(labels::RUNTIME) == Some(&self.inner.runtime_id) {
                continue;
            }
            let Some(container) = summary.id.clone() else {
                continue;
            };
            let name = summary
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| container.clone());
            let inspected = self.inner.docker.inspect_container(&container, None).await.ok();
            let running = inspected
                .as_ref()
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.running)
                .unwrap_or(false);
            let state = inspected.as_ref().and_then(leftover_state);
            let action = match self.stop_container(&container, running).await {
                Ok((graceful, _)) if running => RecoveryAction::Terminated { graceful },
                Ok(_) => RecoveryAction::AlreadyGone,
                Err(err) => RecoveryAction::KillFailed { error: chain(&err) },
            };
            let action = match self.remove(&container).await {
                Ok(()) => action,
                Err(err) => RecoveryAction::KillFailed {
                    error: format!("remove container {name}: {}", chain(&err)),
                },
            };
            tracing::info!(container = %name, ?action, "recovered a leftover container");
            report.instances.push(RecoveredInstance {
                file: PathBuf::from(format!("docker:{name}")),
                state,
                action,
            });
        }
        Ok(report)
    }
}

impl DockerRuntime {
    /// After the HTTP check passed: when the image has a HEALTHCHECK, waits
    /// (within the same deadline) for Docker to call the container healthy.
    pub(crate) async fn wait_engine_healthcheck(
        &self,
        container: &str,
        settings: &HealthSettings,
        began: tokio::time::Instant,
    ) -> Result<(), (u32, String)> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let c = self
                .inner
                .docker
                .inspect_container(container, None)
                .await
                .map_err(|e| (attempts, format!("inspect failed: {}", chain(&e))))?;
            let health = c.state.and_then(|s| s.health);
            let Some(status) = health.as_ref().and_then(|h| h.status) else {
                return Ok(());
            };
            use bollard::models::HealthStatusEnum as H;
            match status {
                H::HEALTHY | H::NONE | H::EMPTY => return Ok(()),
                H::STARTING | H::UNHEALTHY => {}
            }
            if began.elapsed() + settings.interval >= settings.deadline {
                let output = health
                    .and_then(|h| h.log)
                    .and_then(|l| l.last().and_then(|r| r.output.clone()))
                    .unwrap_or_default();
                return Err((
                    attempts,
                    format!("Docker HEALTHCHECK: {status} {}", output.trim()),
                ));
            }
            tokio::time::sleep(settings.interval).await;
        }
    }
}

/// A leftover instance container described in the process runtime's
/// [`StateFile`] shape (`pid`/`pgid` are the container's main process on
/// the host, 0 when it was not running; `release_dir` is empty).
fn leftover_state(c: &bollard::models::ContainerInspectResponse) -> Option<StateFile> {
    let labels = labels_of(c);
    let state = c.state.clone().unwrap_or_default();
    let pid = state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
    Some(StateFile {
        id: container::instance_id(c.id.as_deref()?)?,
        pid,
        pgid: pid,
        port: container::host_port(c).unwrap_or(0),
        app: labels.get(labels::APP)?.parse().ok()?,
        env: labels.get(labels::ENV)?.parse().ok()?,
        service: labels.get(labels::SERVICE)?.parse().ok()?,
        version: labels.get(labels::VERSION)?.parse().ok()?,
        replica: labels
            .get(labels::REPLICA)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        release_dir: PathBuf::new(),
        started_at: container::engine_ms(state.started_at.as_deref()),
        proc_start_time: None,
        server_pid: 0,
    })
}

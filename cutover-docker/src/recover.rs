//! Start-up adoption and clean-up, and the engine-side health check.
//!
//! **Recovery** ([`DockerRuntime::recover_adopting`], behind
//! [`Runtime::recover`](cutover_runtime::Runtime::recover)): containers
//! labelled with this server's state directory (`cutover.owner`) but another
//! `cutover.runtime` were left by a previous server process (restarted,
//! upgraded, or killed). A control plane's restart must not touch
//! production, so:
//!
//! - an **instance container that runs** (or that Docker's restart policy
//!   is restarting after a crash) and whose labels name its app,
//!   environment, service, version and replica is **adopted**: it enters
//!   this runtime's table *unclaimed*, listed by `status` with
//!   `owner = this_process(<adoption time>, adopted: true)`, its port from
//!   its create-time binding, its version from its image tag. It is not
//!   stopped, restarted or re-created; its logs are followed from now on and
//!   its exits watched (Docker's restart policy still restarts it). The
//!   engine then claims it with [`Runtime::adopt`](cutover_runtime::Runtime::adopt)
//!   (the spec must match the labels; the spec's health path starts the
//!   health monitor) or stops it.
//! - every **other** leftover is stopped (SIGTERM, SIGKILL after the grace)
//!   and removed: instance containers that exited, were stopped or lost a
//!   label, and **one-off task containers** (hooks, jobs): a run ends with
//!   the server that ran it. Under the Swarm runtime, whose instances are
//!   services, an instance container is nobody's and is removed too.
//!
//! Containers of other servers (other state directories) are never touched.
//! A removed container is reported as a [`RecoveredInstance`] whose `file`
//! names it (`docker:<name>`) and whose `state` describes an instance in
//! the process runtime's [`StateFile`] shape (`None` for a task container);
//! adopted ones are logged and listed in [`Recovery::adopted`] (the trait's
//! [`RecoveryReport`] has no word for them yet).
//!
//! Rejected: removing running instances (the old behaviour: a restart of
//! `cutover serve` was an outage of every container), and adopting task
//! containers (nobody waits for their outcome any more).
//!
//! **HEALTHCHECK**: when an image declares one, `wait_healthy` also waits
//! for Docker to call the container healthy, within the same deadline, after
//! the HTTP check of the configured path passed.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::query_parameters::ListContainersOptionsBuilder;
use cutover_runtime::{
    HealthSettings, InstanceOwner, InstanceSpec, InstanceStatus, RecoveredInstance, RecoveryAction,
    RecoveryReport, RuntimeError, StateFile,
};

use crate::container::{self, labels_of};
use crate::error::{DockerError, chain};
use crate::runtime::engine_err;
use crate::{DockerRuntime, labels};

/// What [`DockerRuntime::recover_adopting`] (and
/// [`SwarmRuntime::recover_adopting`](crate::SwarmRuntime::recover_adopting))
/// did: the trait's report of what was removed, and what was adopted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Leftovers stopped and removed (as [`Runtime::recover`](cutover_runtime::Runtime::recover) returns it).
    pub report: RecoveryReport,
    /// Instances of a previous server that run and are now in this
    /// runtime's table, unclaimed (`pid`/`pgid`: the main process on the
    /// host, 0 for a Swarm service; `release_dir` empty).
    pub adopted: Vec<StateFile>,
}

/// An instance `recover` took over from a previous server.
#[derive(Debug)]
pub(crate) struct Adoption {
    /// When (unix ms).
    pub(crate) since: u64,
    /// The spec it was claimed with (`None`: unclaimed).
    pub(crate) spec: Option<Box<InstanceSpec>>,
}

/// Who supervises an instance: adopted at `adopted_since`, else started by
/// this runtime object (`started_here`, since its creation), else nobody
/// (pid 0: a previous server's container `recover` has not looked at).
pub(crate) fn owner(adopted_since: Option<u64>, started_here: bool, created_at: u64) -> InstanceOwner {
    match adopted_since {
        Some(since) => InstanceOwner::this_process(since, true),
        None if started_here => InstanceOwner::this_process(created_at, false),
        None => InstanceOwner::default(),
    }
}

/// `shop-prod-web@<sha> replica 0`.
fn identity(app: &str, env: &str, service: &str, version: &str, replica: u32) -> String {
    format!("{app}-{env}-{service}@{version} replica {replica}")
}

/// What both backends check before a claim touches anything: the runtime still takes work,
/// the health path is one the probe can send, and `recover` found the instance.
pub(crate) fn claim_preconditions(
    closed: bool,
    id: &cutover_runtime::InstanceId,
    spec: &InstanceSpec,
    adopted: bool,
) -> Result<(), cutover_runtime::RuntimeError> {
    if closed {
        return Err(cutover_runtime::RuntimeError::ShutDown);
    }
    if let Some(path) = &spec.health_path
        && !cutover_runtime::health::valid_path(path)
    {
        return Err(cutover_runtime::RuntimeError::BadHealthPath { path: path.clone() });
    }
    if !adopted {
        return Err(
            DockerError::NotAdoptable { id: id.to_string() }.into_runtime(format!("adopt instance {id}"))
        );
    }
    Ok(())
}

/// Refuses a claim whose spec names another app, env, service, version or
/// replica than the instance's labels.
pub(crate) fn check_claim(status: &InstanceStatus, spec: &InstanceSpec) -> Result<(), DockerError> {
    let found = identity(
        status.app.as_str(),
        status.env.as_str(),
        status.service.as_str(),
        status.requested_version.as_str(),
        status.replica,
    );
    let wanted = identity(
        spec.app.as_str(),
        spec.env.as_str(),
        spec.service.as_str(),
        spec.version.as_str(),
        spec.replica,
    );
    if found == wanted {
        Ok(())
    } else {
        Err(DockerError::AdoptMismatch {
            id: status.id.to_string(),
            found,
            wanted,
        })
    }
}

impl DockerRuntime {
    /// See the module documentation.
    pub async fn recover_adopting(&self) -> Result<Recovery, RuntimeError> {
        self.recover_with(true).await
    }

    /// `adopt_instances: false` for the Swarm runtime, whose instances are
    /// services: an instance container there is nobody's (a data directory
    /// that ran the docker runtime before) and is removed with the tasks.
    pub(crate) async fn recover_with(&self, adopt_instances: bool) -> Result<Recovery, RuntimeError> {
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
        let mut recovery = Recovery::default();
        for summary in listed {
            let labels = summary.labels.clone().unwrap_or_default();
            if labels.get(labels::RUNTIME) == Some(&self.inner.runtime_id) {
                continue;
            }
            let Some(container) = summary.id.clone() else {
                continue;
            };
            if container::instance_id(&container).is_some_and(|id| self.is_in_table(&id)) {
                continue; // adopted by an earlier call
            }
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
            // Between a crash and Docker's restart (policy on-failure) it
            // is `restarting`, not running: still alive, and kept.
            let restarting = inspected
                .as_ref()
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.restarting)
                .unwrap_or(false);
            let alive = adopt_instances && (running || restarting);
            let state = inspected.as_ref().and_then(leftover_state);
            let named = labels.contains_key(labels::INSTANCE)
                && labels
                    .get(labels::REPLICA)
                    .is_some_and(|r| r.parse::<u32>().is_ok());
            if let Some(state) = state.clone().filter(|s| alive && named && s.port > 0) {
                // `false`: a concurrent call took it; it is adopted either way.
                if self.take_over(&state.id, &container, state.port) {
                    tracing::info!(
                        container = %name, instance = %state.id, port = state.port,
                        version = %state.version,
                        "adopted a running container of a previous server (unclaimed)"
                    );
                    recovery.adopted.push(state);
                }
                continue;
            }
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
            tracing::info!(container = %name, ?action, "removed a leftover container");
            recovery.report.instances.push(RecoveredInstance {
                file: PathBuf::from(format!("docker:{name}")),
                state,
                action,
            });
        }
        Ok(recovery)
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use cutover_core::{AppName, EnvName, ServiceName, Version};
    use cutover_runtime::{InstanceId, InstanceState, VersionSource};

    use super::*;

    fn spec(replica: u32, version: &str) -> InstanceSpec {
        InstanceSpec {
            app: AppName::parse("shop").unwrap(),
            env: EnvName::parse("prod").unwrap(),
            service: ServiceName::parse("web").unwrap(),
            version: Version::parse(version).unwrap(),
            release_dir: PathBuf::new(),
            run: String::new(),
            env_vars: Vec::new(),
            replica,
            health_path: None,
            placement: Default::default(),
        }
    }

    fn status_of(spec: &InstanceSpec) -> InstanceStatus {
        InstanceStatus {
            id: InstanceId::parse("0123456789ab").unwrap(),
            app: spec.app.clone(),
            env: spec.env.clone(),
            service: spec.service.clone(),
            replica: spec.replica,
            requested_version: spec.version.clone(),
            version: Some(spec.version.clone()),
            version_source: VersionSource::ImageTag,
            pid: None,
            port: 1,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            healthy: None,
            restarts: 0,
            started_at: 0,
            created_at: 0,
            state: InstanceState::Running,
            last_exit: None,
            owner: InstanceOwner::default(),
            node: None,
        }
    }

    #[test]
    fn a_claim_must_name_what_runs() {
        let a = "a".repeat(40);
        let running = status_of(&spec(0, &a));
        assert!(check_claim(&running, &spec(0, &a)).is_ok());
        let text = check_claim(&running, &spec(1, &a)).unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "is shop-prod-web@{a} replica 0, not shop-prod-web@{a} replica 1"
            )),
            "{text}"
        );
        assert!(check_claim(&running, &spec(0, &"b".repeat(40))).is_err());
        let mut other = spec(0, &a);
        other.service = ServiceName::parse("api").unwrap();
        assert!(check_claim(&running, &other).is_err());
    }

    #[test]
    fn owners_say_who_and_since_when() {
        let me = std::process::id();
        assert_eq!(
            owner(Some(7), false, 3),
            InstanceOwner {
                pid: me,
                since: 7,
                adopted: true
            }
        );
        assert_eq!(
            owner(None, true, 3),
            InstanceOwner {
                pid: me,
                since: 3,
                adopted: false
            }
        );
        assert_eq!(
            owner(None, false, 3).pid,
            0,
            "a previous server's, not looked at yet"
        );
    }
}

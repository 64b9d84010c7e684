//! Swarm service specs (a public instance, a converged non-public service)
//! and how a service and its tasks, as the engine reports them, become
//! [`InstanceStatus`]es.
//!
//! - **Environment**: the spec's variables, then the runtime's own (they
//!   win, as in the docker backend). Swarm expands Go templates
//!   (`{{.Task.Slot}}`) in a container's environment, so every value that
//!   did not come from this runtime has its `{{` escaped: a branch name
//!   with braces must reach the task verbatim, and must not fail the task
//!   with a template error.
//! - **Versions** come from the image reference of the task
//!   (`Spec.ContainerSpec.Image`), with a digest Swarm may have pinned
//!   (`@sha256:…`) stripped: [`VersionSource::ImageTag`].
//! - **Restarts** are the tasks of a slot that failed (`failed`,
//!   `rejected`, `orphaned`): Swarm replaces a failed task with a new one.
//!   Tasks shut down on purpose (an update, a removal) are not restarts.
//!   Swarm keeps a bounded task history (5 per slot by default), so the
//!   count saturates there.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    Mount, MountType, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use cutover_core::config::Placement;
use cutover_core::{AppName, EnvName, ServiceName, Version};
use cutover_runtime::{InstanceId, InstanceSpec, InstanceState, InstanceStatus, VersionSource};

use crate::container::{describe_exit, engine_ms};
use crate::swarm::ConvergeSpec;
use crate::{CONTAINER_PORT_VAR, Inner, labels, random_hex, version_of_image};

/// Swarm service names are DNS labels: at most 63 characters.
const MAX_NAME: usize = 63;

/// Pause before Swarm replaces a failed task.
const RESTART_DELAY: Duration = Duration::from_secs(1);

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Escapes `{{` so Swarm's templating passes `value` through unchanged.
pub(crate) fn escape_template(value: &str) -> String {
    value.replace("{{", "{{\"{{\"}}")
}

/// `<app>-<env>-<service>-<sha8>-r<replica>-<6hex>`, the prefix shortened
/// when the whole would exceed 63 characters.
pub(crate) fn instance_name(spec: &InstanceSpec) -> String {
    let suffix = format!(
        "-{}-r{}-{}",
        &spec.version.as_str()[..8],
        spec.replica,
        random_hex(6)
    );
    let mut prefix = format!("{}-{}-{}", spec.app, spec.env, spec.service);
    prefix.truncate(MAX_NAME.saturating_sub(suffix.len()));
    let prefix = prefix.trim_end_matches('-');
    format!("{prefix}{suffix}")
}

/// `<app>-<env>-<service>`, the one Swarm service of a converged service.
pub(crate) fn converged_name(app: &AppName, env: &EnvName, service: &ServiceName) -> String {
    format!("{app}-{env}-{service}")
}

/// The spec's variables (escaped, those the runtime sets dropped), then
/// the runtime's own.
pub(crate) fn task_env(user: &[(String, String)], own: &[(&str, String)]) -> Vec<String> {
    let mut env: Vec<String> = user
        .iter()
        .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
        .map(|(k, v)| format!("{k}={}", escape_template(v)))
        .collect();
    env.extend(own.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

fn container_spec(
    inner: &Inner,
    image: &str,
    run: &str,
    env: Vec<String>,
    labels: HashMap<String, String>,
) -> TaskSpecContainerSpec {
    // The environment's directory, bind-mounted at the same path (on the node that runs the
    // task: on a multi-node swarm that is the manager's path, see ARCHITECTURE.md).
    let mounts = crate::container::env_dir(&env).map(|d| {
        vec![Mount {
            target: Some(d.to_owned()),
            source: Some(d.to_owned()),
            typ: Some(MountType::BIND),
            ..Default::default()
        }]
    });
    TaskSpecContainerSpec {
        mounts,
        image: Some(image.to_owned()),
        // An empty `run` keeps the image's own ENTRYPOINT/CMD.
        command: (!run.trim().is_empty()).then(|| vec!["sh".to_owned(), "-c".to_owned(), run.to_owned()]),
        env: Some(env),
        labels: Some(labels),
        init: Some(inner.config.init),
        stop_grace_period: Some(ns(inner.config.stop_grace)),
        ..Default::default()
    }
}

fn restart_on_failure() -> TaskSpecRestartPolicy {
    TaskSpecRestartPolicy {
        condition: Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
        delay: Some(ns(RESTART_DELAY)),
        max_attempts: None,
        window: None,
    }
}

fn replicated(replicas: u32) -> ServiceSpecMode {
    ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(i64::from(replicas)),
        }),
        ..Default::default()
    }
}

/// A public instance: one replica, one host-mode port, on any node
/// (spread over the nodes; see the module documentation of `swarm`).
pub(crate) fn instance_service(
    inner: &Inner,
    spec: &InstanceSpec,
    image: &str,
    name: &str,
    container_port: u16,
    host_port: u16,
) -> ServiceSpec {
    let identity = HashMap::from([
        (labels::APP.to_owned(), spec.app.to_string()),
        (labels::ENV.to_owned(), spec.env.to_string()),
        (labels::SERVICE.to_owned(), spec.service.to_string()),
        (labels::VERSION.to_owned(), spec.version.to_string()),
        (labels::REPLICA.to_owned(), spec.replica.to_string()),
        (labels::INSTANCE.to_owned(), name.to_owned()),
    ]);
    let mut service_labels = identity.clone();
    service_labels.insert(labels::OWNER.to_owned(), inner.owner.clone());
    service_labels.insert(labels::RUNTIME.to_owned(), inner.runtime_id.clone());
    let own = [
        ("PORT", container_port.to_string()),
        ("CUTOVER_APP", spec.app.to_string()),
        ("CUTOVER_ENV", spec.env.to_string()),
        ("CUTOVER_SERVICE", spec.service.to_string()),
        ("CUTOVER_VERSION", spec.version.to_string()),
        ("CUTOVER_INSTANCE", name.to_owned()),
        ("CUTOVER_REPLICA", spec.replica.to_string()),
    ];
    ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(service_labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec(
                inner,
                image,
                &spec.run,
                task_env(&spec.env_vars, &own),
                identity,
            )),
            restart_policy: Some(restart_on_failure()),
            // Any node: the router reaches the task at its node's address. Swarm
            // already prefers the node with the fewest tasks; the preference keeps the
            // replicas of one service apart when nodes carry other work.
            placement: Some(placement(&spec.placement)),
            ..Default::default()
        }),
        mode: Some(replicated(1)),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(container_port)),
                published_port: Some(i64::from(host_port)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The service's constraints, its spread preferences, then spread over `node.id`.
pub(crate) fn placement(wanted: &Placement) -> TaskSpecPlacement {
    let spread = |descriptor: &str| TaskSpecPlacementPreferences {
        spread: Some(TaskSpecPlacementSpread {
            spread_descriptor: Some(descriptor.to_owned()),
        }),
    };
    let mut preferences: Vec<_> = wanted
        .preferences
        .iter()
        .filter_map(|p| p.strip_prefix("spread="))
        .map(spread)
        .collect();
    preferences.push(spread("node.id"));
    TaskSpecPlacement {
        constraints: (!wanted.constraints.is_empty()).then(|| wanted.constraints.clone()),
        preferences: Some(preferences),
        ..Default::default()
    }
}

/// A converged (non-public) service: `replicas` tasks, updated start-first
/// with rollback on failure.
pub(crate) fn converged_service(inner: &Inner, spec: &ConvergeSpec, image: &str) -> ServiceSpec {
    let name = converged_name(&spec.app, &spec.env, &spec.service);
    let identity = HashMap::from([
        (labels::APP.to_owned(), spec.app.to_string()),
        (labels::ENV.to_owned(), spec.env.to_string()),
        (labels::SERVICE.to_owned(), spec.service.to_string()),
        (labels::VERSION.to_owned(), spec.version.to_string()),
    ]);
    let mut service_labels = identity.clone();
    service_labels.insert(labels::OWNER.to_owned(), inner.owner.clone());
    service_labels.insert(labels::CONVERGED.to_owned(), "true".to_owned());
    let mut own = vec![
        ("CUTOVER_APP", spec.app.to_string()),
        ("CUTOVER_ENV", spec.env.to_string()),
        ("CUTOVER_SERVICE", spec.service.to_string()),
        ("CUTOVER_VERSION", spec.version.to_string()),
        // Swarm templates: the task's name and its 1-based slot.
        ("CUTOVER_INSTANCE", "{{.Task.Name}}".to_owned()),
        ("CUTOVER_REPLICA", "{{.Task.Slot}}".to_owned()),
    ];
    if let Some((_, port)) = spec.env_vars.iter().rev().find(|(k, _)| k == CONTAINER_PORT_VAR) {
        own.push(("PORT", escape_template(port)));
    }
    let monitor = ns(spec.monitor);
    ServiceSpec {
        name: Some(name),
        labels: Some(service_labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec(
                inner,
                image,
                spec.run.as_deref().unwrap_or(""),
                task_env(&spec.env_vars, &own),
                identity,
            )),
            restart_policy: Some(restart_on_failure()),
            placement: Some(placement(&spec.placement)),
            ..Default::default()
        }),
        mode: Some(replicated(spec.replicas)),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(monitor),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(monitor),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
        }),
        ..Default::default()
    }
}

/// What a converge would change in a running service: the parts Cutover
/// sets (Swarm fills defaults into the rest).
pub(crate) fn same_deployment(current: &ServiceSpec, wanted: &ServiceSpec) -> bool {
    let replicas = |s: &ServiceSpec| s.mode.as_ref().and_then(|m| m.replicated.as_ref()?.replicas);
    same_task(current, wanted) && same_placement(current, wanted) && replicas(current) == replicas(wanted)
}

/// The same placement rules (constraints, spread preferences in order): a
/// change of `placement:` alone is an update of the service, whose tasks
/// Swarm then moves one at a time.
pub(crate) fn same_placement(current: &ServiceSpec, wanted: &ServiceSpec) -> bool {
    let rules = |s: &ServiceSpec| {
        let p = s.task_template.as_ref().and_then(|t| t.placement.as_ref());
        let constraints = p.and_then(|p| p.constraints.clone()).unwrap_or_default();
        let spread: Vec<String> = p
            .and_then(|p| p.preferences.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.spread.as_ref()?.spread_descriptor.clone())
            .collect();
        (constraints, spread)
    };
    rules(current) == rules(wanted)
}

/// The same tasks (image, command, environment, labels), whatever the replica count.
pub(crate) fn same_task(current: &ServiceSpec, wanted: &ServiceSpec) -> bool {
    let container = |s: &ServiceSpec| {
        s.task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .map(|c| {
                (
                    c.image.clone().map(|i| strip_digest(&i).to_owned()),
                    c.command.clone(),
                    c.env.clone(),
                )
            })
    };
    container(current) == container(wanted) && current.labels == wanted.labels
}

/// `name:tag` of `name:tag@sha256:…`.
pub(crate) fn strip_digest(reference: &str) -> &str {
    reference.split('@').next().unwrap_or(reference)
}

/// The image reference a task runs.
pub(crate) fn task_image(task: &Task) -> Option<&str> {
    task.spec
        .as_ref()?
        .container_spec
        .as_ref()?
        .image
        .as_deref()
        .map(strip_digest)
}

/// The version a task runs, from its image tag.
pub(crate) fn task_version(task: &Task) -> (Option<Version>, VersionSource) {
    match task_image(task).and_then(version_of_image) {
        Some(v) => (Some(v), VersionSource::ImageTag),
        None => (None, VersionSource::Unavailable),
    }
}

pub(crate) fn task_state(task: &Task) -> Option<TaskState> {
    task.status.as_ref()?.state
}

pub(crate) fn is_failure(state: Option<TaskState>) -> bool {
    matches!(
        state,
        Some(TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED)
    )
}

pub(crate) fn is_ended(state: Option<TaskState>) -> bool {
    is_failure(state)
        || matches!(
            state,
            Some(TaskState::COMPLETE | TaskState::SHUTDOWN | TaskState::REMOVE)
        )
}

/// The short id (12 characters, as `docker service ls` and `docker ps`
/// show them) of a Swarm object.
pub(crate) fn short_id(full: &str) -> Option<InstanceId> {
    InstanceId::parse(full.get(..12).unwrap_or(full))
}

fn task_ms(task: &Task) -> u64 {
    engine_ms(task.created_at.as_deref())
}

/// The task that is (or should be) running: the newest whose desired
/// state is `running`, else the newest.
pub(crate) fn current_task(tasks: &[Task]) -> Option<&Task> {
    let wanted = tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .max_by_key(|t| task_ms(t));
    wanted.or_else(|| tasks.iter().max_by_key(|t| task_ms(t)))
}

/// `failed: exit status 1: task: non-zero exit (1)`.
pub(crate) fn describe_task_end(task: &Task) -> String {
    let status = task.status.clone().unwrap_or_default();
    let state = status
        .state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "ended".to_owned());
    let err = status.err.filter(|e| !e.is_empty());
    // A rejected task never ran (a failed pull): its exit code means nothing.
    let ran = status.state != Some(TaskState::REJECTED);
    match status.container_status.and_then(|c| c.exit_code).filter(|_| ran) {
        Some(code) => format!("{state}: {}", describe_exit(code, None, err.as_deref())),
        None => format!("{state}: {}", err.or(status.message).unwrap_or_default()),
    }
}

/// How the newest ended task of `tasks` ended.
pub(crate) fn last_exit(tasks: &[Task]) -> Option<String> {
    tasks
        .iter()
        .filter(|t| is_ended(task_state(t)))
        .max_by_key(|t| task_ms(t))
        .map(describe_task_end)
}

pub(crate) fn service_labels(service: &Service) -> HashMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default()
}

/// The host port of a public instance's service.
pub(crate) fn published_port(service: &Service) -> Option<u16> {
    let ports = service.spec.as_ref()?.endpoint_spec.as_ref()?.ports.as_ref()?;
    ports.iter().find_map(|p| u16::try_from(p.published_port?).ok())
}

struct Identity {
    app: AppName,
    env: EnvName,
    service: ServiceName,
    requested_version: Version,
}

fn identity(labels: &HashMap<String, String>) -> Option<Identity> {
    Some(Identity {
        app: AppName::parse(labels.get(labels::APP)?).ok()?,
        env: EnvName::parse(labels.get(labels::ENV)?).ok()?,
        service: ServiceName::parse(labels.get(labels::SERVICE)?).ok()?,
        requested_version: Version::parse(labels.get(labels::VERSION)?).ok()?,
    })
}

/// Where an instance sits: what its task does not say itself.
struct Place {
    id: InstanceId,
    replica: u32,
    port: u16,
    created_at: u64,
}

/// One task as an instance.
fn task_instance(
    who: Identity,
    place: Place,
    task: Option<&Task>,
    tasks: &[Task],
    healthy: Option<bool>,
) -> InstanceStatus {
    let Place {
        id,
        replica,
        port,
        created_at,
    } = place;
    let status = task.and_then(|t| t.status.clone()).unwrap_or_default();
    let running = status.state == Some(TaskState::RUNNING);
    let stopping = task.is_some_and(|t| {
        matches!(
            t.desired_state,
            Some(TaskState::SHUTDOWN | TaskState::REMOVE | TaskState::COMPLETE)
        )
    });
    let state = if running && !stopping {
        InstanceState::Running
    } else if stopping {
        InstanceState::Stopping
    } else {
        InstanceState::Backoff
    };
    let (version, version_source) = task.map_or((None, VersionSource::Unavailable), task_version);
    let pid = status
        .container_status
        .as_ref()
        .and_then(|c| c.pid)
        .filter(|p| running && *p > 0)
        .and_then(|p| u32::try_from(p).ok());
    let restarts = tasks.iter().filter(|t| is_failure(task_state(t))).count();
    InstanceStatus {
        id,
        app: who.app,
        env: who.env,
        service: who.service,
        replica,
        requested_version: who.requested_version,
        version,
        version_source,
        pid,
        port,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        healthy: if running { healthy } else { None },
        restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
        started_at: if running {
            engine_ms(status.timestamp.as_deref())
        } else {
            0
        },
        created_at,
        state,
        last_exit: last_exit(tasks),
        owner: cutover_runtime::InstanceOwner::this_process(0, false),
        node: None,
    }
}

/// A public instance (one service of this owner with `cutover.instance`)
/// and its tasks; `None` when the service is not one.
pub(crate) fn instance_status(
    owner: &str,
    service: &Service,
    tasks: &[Task],
    healthy: Option<bool>,
) -> Option<InstanceStatus> {
    let labels = service_labels(service);
    if labels.get(labels::OWNER).map(String::as_str) != Some(owner) || !labels.contains_key(labels::INSTANCE)
    {
        return None;
    }
    let id = short_id(service.id.as_deref()?)?;
    let replica = labels
        .get(labels::REPLICA)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let port = published_port(service).unwrap_or(0);
    let place = Place {
        id,
        replica,
        port,
        created_at: engine_ms(service.created_at.as_deref()),
    };
    Some(task_instance(
        identity(&labels)?,
        place,
        current_task(tasks),
        tasks,
        healthy,
    ))
}

/// The tasks of a converged service that should be running, one instance
/// each (id: the task's short id; replica: its slot - 1; no port).
pub(crate) fn converged_statuses(service: &Service, tasks: &[Task]) -> Vec<InstanceStatus> {
    let labels = service_labels(service);
    let mut out = Vec::new();
    for task in tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
    {
        let (Some(who), Some(id)) = (identity(&labels), task.id.as_deref().and_then(short_id)) else {
            continue;
        };
        let slot = task.slot.unwrap_or(1);
        let same_slot: Vec<Task> = tasks.iter().filter(|t| t.slot == task.slot).cloned().collect();
        let replica = u32::try_from(slot.saturating_sub(1)).unwrap_or(0);
        let place = Place {
            id,
            replica,
            port: 0,
            created_at: task_ms(task),
        };
        out.push(task_instance(who, place, Some(task), &same_slot, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_in_user_values_are_escaped() {
        let env = task_env(
            &[
                ("BRANCH".into(), "feat/{{.Node.ID}}".into()),
                ("PORT".into(), "1".into()),
            ],
            &[
                ("PORT", "8080".into()),
                ("CUTOVER_REPLICA", "{{.Task.Slot}}".into()),
            ],
        );
        assert_eq!(
            env,
            [
                "BRANCH=feat/{{\"{{\"}}.Node.ID}}",
                "PORT=8080",
                "CUTOVER_REPLICA={{.Task.Slot}}"
            ]
        );
    }

    #[test]
    fn digests_are_not_versions_but_tags_are() {
        let sha = "ab".repeat(20);
        let task = Task {
            spec: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(format!("shop-prod-worker:{sha}@sha256:{}", "0".repeat(64))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (version, source) = task_version(&task);
        assert_eq!(version.map(|v| v.to_string()), Some(sha));
        assert_eq!(source, VersionSource::ImageTag);
    }

    #[test]
    fn placement_keeps_the_services_rules_and_spreads_over_nodes_last() {
        let spread = |p: &TaskSpecPlacement| -> Vec<String> {
            p.preferences
                .iter()
                .flatten()
                .filter_map(|p| p.spread.as_ref()?.spread_descriptor.clone())
                .collect()
        };
        let none = placement(&Placement::default());
        assert_eq!(none.constraints, None, "no pin to a node any more");
        assert_eq!(spread(&none), ["node.id"]);
        let some = placement(&Placement {
            constraints: vec!["node.labels.zone==eu-1".into()],
            preferences: vec!["spread=node.labels.rack".into()],
        });
        assert_eq!(some.constraints, Some(vec!["node.labels.zone==eu-1".to_owned()]));
        assert_eq!(spread(&some), ["node.labels.rack", "node.id"]);
    }

    #[test]
    fn a_placement_change_alone_is_a_change_of_the_deployment() {
        let spec = |placement: Placement| ServiceSpec {
            task_template: Some(TaskSpec {
                placement: Some(super::placement(&placement)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let eu = Placement {
            constraints: vec!["node.labels.zone==eu-1".into()],
            preferences: Vec::new(),
        };
        let us = Placement {
            constraints: vec!["node.labels.zone==us-1".into()],
            preferences: Vec::new(),
        };
        let racks = Placement {
            constraints: eu.constraints.clone(),
            preferences: vec!["spread=node.labels.rack".into()],
        };
        assert!(same_deployment(&spec(eu.clone()), &spec(eu.clone())));
        assert!(!same_deployment(&spec(eu.clone()), &spec(us)));
        assert!(!same_deployment(&spec(eu.clone()), &spec(racks)));
        assert!(!same_deployment(&spec(eu), &spec(Placement::default())));
        // What Swarm gives back for "no constraints" may be an empty list rather than none.
        let mut empty = spec(Placement::default());
        if let Some(p) = empty.task_template.as_mut().and_then(|t| t.placement.as_mut()) {
            p.constraints = Some(Vec::new());
        }
        assert!(same_deployment(&empty, &spec(Placement::default())));
    }

    #[test]
    fn long_names_fit_a_dns_label() {
        let spec = InstanceSpec {
            app: AppName::parse(&"a".repeat(40)).unwrap_or_else(|_| AppName::parse("a").unwrap()),
            env: EnvName::parse("production").unwrap(),
            service: ServiceName::parse("storefront").unwrap(),
            version: Version::parse(&"cd".repeat(20)).unwrap(),
            release_dir: std::path::PathBuf::new(),
            run: String::new(),
            env_vars: Vec::new(),
            replica: 12,
            health_path: None,
            placement: Default::default(),
        };
        let name = instance_name(&spec);
        assert!(name.len() <= MAX_NAME, "{name}");
        assert!(name.contains("-cdcdcdcd-r12-"), "{name}");
        assert_eq!(
            short_id("t1zqyvu9c8gyag33svuaa37sn").unwrap().as_str(),
            "t1zqyvu9c8gy"
        );
    }
}

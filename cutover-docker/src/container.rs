//! How an instance becomes a container (create body, labels, environment,
//! port binding) and how a container, as the engine reports it, becomes an
//! [`InstanceStatus`].
//!
//! The host port is chosen here (bind `127.0.0.1:0`, close, publish that
//! port explicitly) rather than left to Docker: Docker re-allocates a
//! dynamically published port when a container restarts, which would move
//! an instance away from the address the router holds. The tiny race
//! (another program takes the port in between) is the process runtime's,
//! with the same outcome: the container fails to start or its health check
//! fails, and the old version keeps serving.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use cutover_core::{AppName, EnvName, ServiceName, Version};
use cutover_runtime::{InstanceId, InstanceSpec, InstanceState, InstanceStatus};

use crate::error::DockerError;
use crate::{CONTAINER_PORT_VAR, Inner, labels};

/// The runtime's own variables; they are set after the spec's and win.
pub(crate) fn instance_env(spec: &InstanceSpec, name: &str, container_port: u16) -> Vec<String> {
    let own = [
        ("PORT", container_port.to_string()),
        ("CUTOVER_APP", spec.app.to_string()),
        ("CUTOVER_ENV", spec.env.to_string()),
        ("CUTOVER_SERVICE", spec.service.to_string()),
        ("CUTOVER_VERSION", spec.version.to_string()),
        ("CUTOVER_INSTANCE", name.to_owned()),
        ("CUTOVER_REPLICA", spec.replica.to_string()),
    ];
    let mut env: Vec<String> = spec
        .env_vars
        .iter()
        .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend(own.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

/// The environment's persistent directory: `CUTOVER_ENV_DIR` among `vars` ("K=V", the last
/// one wins), when it is an absolute host path. Containers get it bind-mounted at the same
/// path, so the variable means the same inside as on the host.
pub(crate) fn env_dir(vars: &[String]) -> Option<&str> {
    vars.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("CUTOVER_ENV_DIR="))
        .filter(|p| p.starts_with('/') && !p.contains(':'))
}

/// `HostConfig.binds` for [`env_dir`]: `<dir>:<dir>`.
pub(crate) fn env_dir_binds(vars: &[String]) -> Option<Vec<String>> {
    env_dir(vars).map(|d| vec![format!("{d}:{d}")])
}

/// The port the service listens on inside: [`CONTAINER_PORT_VAR`] in the
/// spec, else the configured default.
pub(crate) fn container_port(spec: &InstanceSpec, default: u16) -> Result<u16, DockerError> {
    match spec.env_vars.iter().rev().find(|(k, _)| k == CONTAINER_PORT_VAR) {
        None => Ok(default),
        Some((_, value)) => {
            value
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| DockerError::BadContainerPort {
                    var: CONTAINER_PORT_VAR,
                    value: value.clone(),
                })
        }
    }
}

/// The create body of one instance.
pub(crate) fn instance_body(
    inner: &Inner,
    spec: &InstanceSpec,
    image: &str,
    name: &str,
    container_port: u16,
    host_port: u16,
) -> ContainerCreateBody {
    let mut labels = HashMap::from([
        (labels::APP.to_owned(), spec.app.to_string()),
        (labels::ENV.to_owned(), spec.env.to_string()),
        (labels::SERVICE.to_owned(), spec.service.to_string()),
        (labels::VERSION.to_owned(), spec.version.to_string()),
        (labels::REPLICA.to_owned(), spec.replica.to_string()),
        (labels::INSTANCE.to_owned(), name.to_owned()),
    ]);
    labels.extend(owner_labels(inner));
    let port_key = format!("{container_port}/tcp");
    let binding = PortBinding {
        host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
        host_port: Some(host_port.to_string()),
    };
    // An empty `run` keeps the image's own ENTRYPOINT/CMD.
    let entrypoint =
        (!spec.run.trim().is_empty()).then(|| vec!["sh".to_owned(), "-c".to_owned(), spec.run.clone()]);
    let env = instance_env(spec, name, container_port);
    ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(env.clone()),
        entrypoint,
        labels: Some(labels),
        exposed_ports: Some(vec![port_key.clone()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(port_key, Some(vec![binding]))])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(0),
            }),
            init: Some(inner.config.init),
            binds: env_dir_binds(&env),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `cutover.owner` and `cutover.runtime`.
pub(crate) fn owner_labels(inner: &Inner) -> [(String, String); 2] {
    [
        (labels::OWNER.to_owned(), inner.owner.clone()),
        (labels::RUNTIME.to_owned(), inner.runtime_id.clone()),
    ]
}

/// A container's labels.
pub(crate) fn labels_of(c: &ContainerInspectResponse) -> HashMap<String, String> {
    c.config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

/// The host port published for the container (from the create-time
/// binding, so it is known while the container waits to restart).
pub(crate) fn host_port(c: &ContainerInspectResponse) -> Option<u16> {
    let bindings = c.host_config.as_ref()?.port_bindings.as_ref()?;
    bindings
        .values()
        .flatten()
        .flatten()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// `InstanceId` of a container: its short id.
pub(crate) fn instance_id(full_id: &str) -> Option<InstanceId> {
    InstanceId::parse(full_id.get(..12)?)
}

/// Parses an RFC 3339 engine time into unix ms (0 for Docker's "zero"
/// time or garbage).
pub(crate) fn engine_ms(text: Option<&str>) -> u64 {
    text.and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(crate::ms_of)
        .unwrap_or(0)
}

/// What the engine says about one instance container; `None` when it is
/// not an instance of this runtime's owner (a task, or labels tampered
/// with).
pub(crate) fn status_of(
    owner: &str,
    c: &ContainerInspectResponse,
    healthy: Option<bool>,
    watched_exit: Option<String>,
) -> Option<InstanceStatus> {
    let labels = labels_of(c);
    if labels.get(labels::OWNER).map(String::as_str) != Some(owner) || !labels.contains_key(labels::INSTANCE)
    {
        return None;
    }
    let id = instance_id(c.id.as_deref()?)?;
    let app = AppName::parse(labels.get(labels::APP)?).ok()?;
    let env = EnvName::parse(labels.get(labels::ENV)?).ok()?;
    let service = ServiceName::parse(labels.get(labels::SERVICE)?).ok()?;
    let requested_version = Version::parse(labels.get(labels::VERSION)?).ok()?;
    let replica = labels
        .get(labels::REPLICA)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let image = c.config.as_ref().and_then(|c| c.image.as_deref());
    let (version, version_source) = crate::observed_version(image);
    let port = host_port(c).unwrap_or(0);
    let state = c.state.clone().unwrap_or_default();
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    let instance_state = match status {
        ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED => InstanceState::Running,
        ContainerStateStatusEnum::REMOVING => InstanceState::Stopping,
        _ => InstanceState::Backoff,
    };
    let running = instance_state == InstanceState::Running;
    let last_exit = watched_exit.or_else(|| {
        (!running && status != ContainerStateStatusEnum::CREATED).then(|| {
            describe_exit(
                state.exit_code.unwrap_or(-1),
                state.oom_killed,
                state.error.as_deref(),
            )
        })
    });
    Some(InstanceStatus {
        id,
        app,
        env,
        service,
        replica,
        requested_version,
        version,
        version_source,
        pid: state.pid.filter(|p| *p > 0).and_then(|p| u32::try_from(p).ok()),
        port,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        healthy: if running { healthy } else { None },
        restarts: c.restart_count.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        started_at: engine_ms(state.started_at.as_deref()),
        created_at: engine_ms(c.created.as_deref()),
        state: instance_state,
        last_exit,
        owner: cutover_runtime::InstanceOwner::this_process(0, false),
        node: None,
    })
}

/// `exit status 3`, `exit status 137 (killed by signal 9)`, plus OOM and
/// the engine's error text.
pub(crate) fn describe_exit(code: i64, oom: Option<bool>, error: Option<&str>) -> String {
    let mut text = format!("exit status {code}");
    if (129..=159).contains(&code) {
        text.push_str(&format!(" (killed by signal {})", code - 128));
    }
    if oom == Some(true) {
        text.push_str(", out of memory");
    }
    if let Some(error) = error.filter(|e| !e.is_empty()) {
        text.push_str(&format!(": {error}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_well() {
        assert_eq!(describe_exit(3, None, None), "exit status 3");
        assert_eq!(
            describe_exit(137, Some(true), Some("")),
            "exit status 137 (killed by signal 9), out of memory"
        );
        assert_eq!(
            describe_exit(127, Some(false), Some("exec: not found")),
            "exit status 127: exec: not found"
        );
    }

    #[test]
    fn ids_are_short_container_ids() {
        let full = "37fec9acee96fa5731196106b4f567e38a87f082ddc3a35daa60caa17973a6e8";
        assert_eq!(instance_id(full).unwrap().as_str(), "37fec9acee96");
        assert!(instance_id("abc").is_none());
        assert_eq!(engine_ms(Some("0001-01-01T00:00:00Z")), 0);
    }
}

//! Errors of the docker runtime. [`DockerError`] is what the inherent
//! methods ([`connect`](crate::DockerRuntime::connect),
//! [`build_image`](crate::DockerRuntime::build_image)) return; behind the
//! [`Runtime`](cutover_runtime::Runtime) trait it travels as the source of
//! [`RuntimeError::Engine`], whose message says what was being done.
//! Per the workspace convention the source is not repeated in `Display`.

use std::io;
use std::path::PathBuf;

use cutover_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "Docker is not running or not reachable at unix://{}: start the engine \
         (as root: scripts/docker-setup, which installs docker.io and starts dockerd; \
         or `systemctl start docker`) and check this user may open the socket",
        socket.display()
    )]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("could not create the state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the Docker engine refused to {action}")]
    Api {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("release directory {path} does not exist or is not a directory")]
    ReleaseDirMissing { path: PathBuf },

    #[error(
        "Dockerfile {path} does not exist: the service's `dockerfile` path is relative to the release directory"
    )]
    DockerfileMissing { path: PathBuf },

    #[error("invalid Dockerfile path {path:?}: it must be relative and stay inside the release directory")]
    BadDockerfilePath { path: String },

    #[error("the docker configuration {path} {problem}")]
    DockerConfig {
        path: PathBuf,
        problem: String,
        #[source]
        source: Option<io::Error>,
    },

    #[error("the credential helper {helper} (for {host}) {problem}")]
    CredentialHelper {
        helper: String,
        host: String,
        problem: String,
    },

    #[error("could not pack the build context {path}")]
    Context {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "building {tag} failed: {message} (base images must exist locally, nothing is pulled: \
         see `docker images`, and scripts/docker-setup for cutover-base:latest)"
    )]
    Build { tag: String, message: String },

    #[error(
        "image {tag} does not exist: build it first (DockerRuntime::build_image), \
         or check the app, environment, service and version"
    )]
    ImageMissing { tag: String },

    #[error(
        "no image for the {label}: put the image tag in the task's {var} variable \
         (or set DockerConfig::default_task_image)"
    )]
    NoTaskImage { label: String, var: &'static str },

    #[error("invalid {var} value {value:?}: expected a port number 1-65535")]
    BadContainerPort { var: &'static str, value: String },

    #[error("container {container} publishes no host port for {port}/tcp")]
    NoPublishedPort { container: String, port: u16 },

    #[error(
        "this Docker engine is not a swarm manager (Swarm.LocalNodeState = {state:?}, \
         ControlAvailable = {control}): run `docker swarm init --advertise-addr 127.0.0.1` \
         (or, as root, scripts/docker-setup), or point the socket at a manager"
    )]
    NotSwarmManager { state: String, control: bool },

    #[error("Swarm rejected the task of service {service}: {reason}")]
    TaskRejected { service: String, reason: String },

    #[error("service {service} ran no task within {after}: {detail}")]
    StartTimeout {
        service: String,
        after: String,
        detail: String,
    },

    #[error(
        "the update of {service} to {version} failed and Swarm rolled it back \
         (update state {state}): {reason}"
    )]
    RolledBack {
        service: String,
        version: String,
        state: String,
        reason: String,
    },

    #[error("Swarm paused the update of {service} to {version}: {reason}")]
    UpdatePaused {
        service: String,
        version: String,
        reason: String,
    },

    #[error(
        "the tasks of {service} at {version} keep failing ({failures} failed): {reason}; \
         Swarm keeps restarting them (remove_converged removes the service)"
    )]
    TasksFailing {
        service: String,
        version: String,
        failures: usize,
        reason: String,
    },

    #[error(
        "Swarm service {service} exists but was not created by this Cutover server \
         (no cutover.converged label with this owner): remove or rename it"
    )]
    NotOurs { service: String },

    #[error(
        "instance {id} was not found by recover (it was started by this server, or is not \
         one of this data directory's): only what a previous server left can be adopted"
    )]
    NotAdoptable { id: String },

    #[error(
        "instance {id} is {found}, not {wanted}: adopt it with the spec it was started with \
         (app, environment, service, version, replica), or stop it"
    )]
    AdoptMismatch {
        id: String,
        found: String,
        wanted: String,
    },

    #[error("{service} did not converge within {after}: {detail}")]
    ConvergeTimeout {
        service: String,
        after: String,
        detail: String,
    },
}

impl DockerError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }

    /// Wraps this error for the [`Runtime`](cutover_runtime::Runtime)
    /// trait: `action` says what was being done ("start shop-prod-web").
    pub(crate) fn into_runtime(self, action: impl Into<String>) -> RuntimeError {
        RuntimeError::Engine {
            action: action.into(),
            source: Box::new(self),
        }
    }
}

/// A 404 from the engine (no such container or image).
pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}

/// The error and its sources, `: `-joined, for log lines.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_swarm_says_how_to_make_one() {
        let text = DockerError::NotSwarmManager {
            state: "inactive".into(),
            control: false,
        }
        .to_string();
        assert!(
            text.contains("docker swarm init --advertise-addr 127.0.0.1"),
            "{text}"
        );
        assert!(text.contains("scripts/docker-setup"), "{text}");
    }
}

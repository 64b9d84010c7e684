//! The `swarm` runtime: services of an environment run as Docker Swarm
//! services, driven through the same Engine API client (bollard) as the
//! docker runtime, whose code it reuses for images, one-off task
//! containers, logs formatting and health.
//!
//! Two facts of a single-node swarm without the kernel's IPVS shape it:
//! the routing mesh does not work (ingress-published ports refuse
//! connections), and a host-mode published port admits one task per node,
//! so Swarm's own start-first update of a service with a published port
//! never gets its new task placed ("host-mode port already in use on 1
//! node") and a stop-first update drops every request in between.
//! Therefore two kinds of services:
//!
//! - **Public services: blue-green by Cutover, across Swarm services**
//!   (the [`Runtime`](cutover_runtime::Runtime) trait, so the engine's one
//!   rollout code drives them like processes and containers). `start`
//!   creates one Swarm service per replica,
//!   `<app>-<env>-<service>-<sha8>-r<n>-<6hex>`, with one replica of the
//!   image `<app>-<env>-<service>:<sha>`, restart policy `on-failure`, and
//!   one host-mode published port picked by Cutover (bind `127.0.0.1:0`,
//!   read, close; unique across every instance of this runtime, so a task
//!   Swarm restarts on another node keeps its port), placed by Swarm on any
//!   node (spread over `node.id`; the image named in `registry` when one is
//!   set, so that every node can pull it). The router reaches it at its
//!   task's node address (`Status.Addr`; 127.0.0.1 in a swarm of one node),
//!   reported in the status with the node's name; when Swarm moves the task,
//!   the next status says where, and the health monitor follows it. One
//!   service per replica is what lets a public service have more replicas
//!   than the swarm has nodes: every replica has its own port. The
//!   [`InstanceId`](cutover_runtime::InstanceId) is the service's short id
//!   (as `docker service ls` shows it); `stop` removes the service and
//!   waits (bounded) for its container to be gone. Status is read from the
//!   engine: the service and its current task (state, pid, version from
//!   the task's image tag, restarts = failed tasks).
//!   Limit: Swarm's port config has no host IP, so a host-mode port is
//!   bound on every interface of the node, not on 127.0.0.1 only.
//! - **Non-public services (workers, scheduler): Swarm's native update**,
//!   [`SwarmRuntime::converge`]: one service `<app>-<env>-<service>`,
//!   image tag = SHA, update order start-first, parallelism 1, failure
//!   action rollback after a monitor window. Without a published port
//!   start-first works on one node, and Swarm's own rollback is the
//!   failure path. These services are not instances of the trait (no
//!   router, no per-replica ids to switch) and outlive the server: `recover`,
//!   `detach` and `shutdown` leave them; [`SwarmRuntime::remove_converged`]
//!   removes one.
//! - **A restart of the server touches no service**: `detach` leaves every
//!   public-instance service running; the next server's `recover` adopts
//!   those of a previous server (this state directory) that have a running
//!   task (or one Swarm is starting in place of a crashed one) and name
//!   their app, environment, service, version and replica, unclaimed until
//!   [`Runtime::adopt`](cutover_runtime::Runtime::adopt) or `stop`; a
//!   service whose task ended is removed, and so is every one-off task
//!   container (`instances.rs`). Rejected: removing them at start (the old
//!   behaviour: a restart of `cutover serve` dropped every public service).
//!
//! On a multi-node swarm with the routing mesh, public services could be
//! updated natively too (an ingress port is shared by all tasks, so
//! start-first does not clash). Rejected for public
//! services on this machine: Swarm's native update (deadlocks start-first,
//! drops traffic stop-first), and one service with N replicas and a
//! dynamic host port each (Swarm then gives the tasks of one service
//! distinct ports, but a restarted task gets a new one, which would move an
//! instance away from the address the router holds, the reason the docker
//! runtime picks ports itself).

mod converge;
mod instances;
mod service;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use bollard::models::Node;
use bollard::models::{LocalNodeState, Service, Task};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use cutover_runtime::{InstanceId, LogLine, RuntimeError};
use tokio::sync::broadcast;

pub use converge::{ConvergeAction, ConvergeOutcome, ConvergeSpec};

use crate::error::{DockerError, is_not_found};
use crate::recover::Adoption;
use crate::runtime::{AbortOnDrop, engine_err, free_port};
use crate::{DockerConfig, DockerRuntime, labels};

/// Pause between two looks at a service's tasks.
const POLL: Duration = Duration::from_millis(100);

/// The swarm runtime. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct SwarmRuntime {
    inner: Arc<SwarmInner>,
}

#[derive(Debug)]
struct SwarmInner {
    /// Images, task containers, owner and runtime id.
    docker: DockerRuntime,
    /// This engine's swarm node (the manager Cutover talks to).
    node_id: String,
    table: Mutex<Table>,
    /// Where each node is reached, by node id (see [`SwarmRuntime::node_place`]).
    nodes: Mutex<HashMap<String, NodePlace>>,
    closed: AtomicBool,
    /// The registry account services are created and updated with, so every node can pull.
    registry_auth: Mutex<RegistryAuth>,
}

/// A registry account (`X-Registry-Auth`); its Debug shows no password.
#[derive(Default, Clone)]
struct RegistryAuth(Option<bollard::auth::DockerCredentials>);

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "RegistryAuth({:?}, ****)", c.username),
            None => f.write_str("RegistryAuth(none)"),
        }
    }
}

/// How the router reaches the tasks of one node, and its name for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodePlace {
    pub ip: IpAddr,
    /// `<hostname>/<node id, 12 characters>`.
    pub name: String,
}

/// What only this server knows about the public instances it started.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<InstanceId, Entry>,
    /// Host ports handed out to starts not in `entries` yet.
    reserved: HashSet<u16>,
}

#[derive(Debug)]
struct Entry {
    port: u16,
    /// Where the instance's task answers now (its node's address); the
    /// health monitor probes whatever it holds at each probe.
    addr: Arc<Mutex<SocketAddr>>,
    healthy: Arc<Mutex<Option<bool>>>,
    logs: broadcast::Sender<LogLine>,
    /// The log follower.
    _tasks: Vec<AbortOnDrop>,
    /// The health monitor (with a `health_path`: from `start`, or from `adopt`).
    health: Option<AbortOnDrop>,
    /// Set when `recover` took the service over from a previous server.
    adoption: Option<Adoption>,
}

impl SwarmRuntime {
    /// Connects like [`DockerRuntime::connect`], then checks that the
    /// engine is an active swarm manager. Starts nothing; call
    /// [`Runtime::recover`](cutover_runtime::Runtime::recover) next.
    pub async fn connect(config: DockerConfig) -> Result<Self, DockerError> {
        let docker = DockerRuntime::connect(config).await?;
        let info = docker
            .docker()
            .info()
            .await
            .map_err(DockerError::api("read the swarm state (docker info)"))?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
        let control = swarm.control_available.unwrap_or(false);
        let node_id = swarm.node_id.unwrap_or_default();
        if state != LocalNodeState::ACTIVE || !control || node_id.is_empty() {
            return Err(DockerError::NotSwarmManager {
                state: state.to_string(),
                control,
            });
        }
        Ok(Self {
            inner: Arc::new(SwarmInner {
                docker,
                node_id,
                table: Mutex::new(Table::default()),
                nodes: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                registry_auth: Mutex::new(RegistryAuth::default()),
            }),
        })
    }

    /// The registry account (`server`, user, password) that Swarm service creations and
    /// updates carry (`with_registry_auth`), so nodes can pull from an authenticated
    /// registry; `None`: anonymous pulls.
    pub fn set_registry_auth(&self, account: Option<(String, String, String)>) {
        let auth = account.map(|(server, username, password)| bollard::auth::DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(server),
            ..Default::default()
        });
        *self.inner.registry_auth.lock().unwrap_or_else(|e| e.into_inner()) = RegistryAuth(auth);
    }

    pub(crate) fn registry_auth(&self) -> Option<bollard::auth::DockerCredentials> {
        self.inner
            .registry_auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    pub fn config(&self) -> &DockerConfig {
        self.inner.docker.config()
    }

    /// The bollard client, for callers that need more of the API.
    pub fn docker(&self) -> &Docker {
        self.inner.docker.docker()
    }

    /// The `cutover.owner` label value of this runtime's services.
    pub fn owner(&self) -> &str {
        self.inner.docker.owner()
    }

    /// The swarm node of the manager Cutover talks to.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The docker runtime beneath: image builds
    /// ([`DockerRuntime::build_image`], [`DockerRuntime::image_exists`])
    /// and the one-off containers of hooks and jobs.
    pub fn containers(&self) -> &DockerRuntime {
        &self.inner.docker
    }

    fn runtime_id(&self) -> &str {
        &self.inner.docker.inner.runtime_id
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reserve_port(&self) -> Result<u16, RuntimeError> {
        let mut table = self.table();
        let port = free_port(|port| {
            table.reserved.contains(&port) || table.entries.values().any(|e| e.port == port)
        })?;
        table.reserved.insert(port);
        Ok(port)
    }

    /// Reads every node's address from the swarm (`Status.Addr`, or the
    /// manager address when a manager reports `0.0.0.0`). A swarm of one
    /// node is reached on 127.0.0.1, as before nodes were told apart.
    async fn refresh_nodes(&self) -> Result<(), bollard::errors::Error> {
        let nodes = self.docker().list_nodes(None::<ListNodesOptions>).await?;
        let single = nodes.len() <= 1;
        let places: HashMap<String, NodePlace> = nodes
            .iter()
            .filter_map(|n| Some((n.id.clone()?, node_place(n, single)?)))
            .collect();
        *self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner()) = places;
        Ok(())
    }

    /// Where the tasks of `node_id` are reached (asks the swarm when the
    /// node is not known yet); 127.0.0.1 when the swarm does not say.
    pub(crate) async fn node_place(&self, node_id: Option<&str>) -> Option<NodePlace> {
        let node_id = node_id.filter(|n| !n.is_empty())?;
        let known = |this: &Self| {
            this.inner
                .nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(node_id)
                .cloned()
        };
        if let Some(place) = known(self) {
            return Some(place);
        }
        if let Err(err) = self.refresh_nodes().await {
            tracing::warn!(error = %crate::error::chain(&err), "could not list the swarm's nodes");
        }
        known(self)
    }

    /// The number of nodes last seen, and refreshes what is known of them.
    pub async fn node_count(&self) -> Result<usize, DockerError> {
        self.refresh_nodes()
            .await
            .map_err(DockerError::api("list the swarm's nodes"))?;
        Ok(self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    fn release(&self, port: u16) {
        self.table().reserved.remove(&port);
    }

    /// Services of this owner carrying `marker` plus `extra` label filters.
    async fn list_services(
        &self,
        marker: &str,
        extra: &[String],
    ) -> Result<Vec<Service>, bollard::errors::Error> {
        let mut wanted = vec![format!("{}={}", labels::OWNER, self.owner()), marker.to_owned()];
        wanted.extend(extra.iter().cloned());
        let filters = HashMap::from([("label", wanted)]);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        self.docker().list_services(Some(options)).await
    }

    /// Every task of one service (any state Swarm still remembers).
    async fn tasks_of(&self, service_id: &str) -> Result<Vec<Task>, bollard::errors::Error> {
        let filters = HashMap::from([("service", vec![service_id.to_owned()])]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        let tasks = self.docker().list_tasks(Some(options)).await?;
        // The filter also matches services whose name starts alike.
        Ok(tasks
            .into_iter()
            .filter(|t| t.service_id.as_deref() == Some(service_id))
            .collect())
    }

    /// One of this owner's public-instance services, by short id.
    async fn service_of(&self, id: &InstanceId) -> Result<Service, RuntimeError> {
        let service = match self.docker().inspect_service(id.as_str(), None).await {
            Ok(s) => s,
            Err(err) if is_not_found(&err) => return Err(RuntimeError::UnknownInstance { id: id.clone() }),
            Err(err) => return Err(engine_err(format!("inspect service {id}"))(err)),
        };
        let labels = service::service_labels(&service);
        let ours = service.id.as_deref().is_some_and(|s| s.starts_with(id.as_str()))
            && labels.get(labels::OWNER).map(String::as_str) == Some(self.owner())
            && labels.contains_key(labels::INSTANCE);
        if ours {
            Ok(service)
        } else {
            Err(RuntimeError::UnknownInstance { id: id.clone() })
        }
    }

    /// Removes a service and waits (bounded: stop grace + 15 s) until the
    /// containers of its tasks are gone, watching the current one's exit.
    async fn remove_service(&self, service: &Service) -> Result<Removed, DockerError> {
        let id = service.id.clone().unwrap_or_default();
        let tasks = self.tasks_of(&id).await.unwrap_or_default();
        let current = service::current_task(&tasks);
        let was_running = current.and_then(service::task_state) == Some(bollard::models::TaskState::RUNNING);
        let container_of = |t: &Task| t.status.as_ref()?.container_status.as_ref()?.container_id.clone();
        let main = current.and_then(container_of);
        let containers: Vec<String> = tasks.iter().filter_map(container_of).collect();
        match self.docker().delete_service(&id).await {
            Err(err) if !is_not_found(&err) => {
                return Err(DockerError::api(format!("remove service {id}"))(err));
            }
            _ => {}
        }
        let grace = self.config().stop_grace;
        let began = tokio::time::Instant::now();
        let until = began + grace + Duration::from_secs(15);
        let mut code = None;
        loop {
            let mut left = 0;
            for container in &containers {
                match self.docker().inspect_container(container, None).await {
                    Err(err) if is_not_found(&err) => {}
                    Ok(c) => {
                        left += 1;
                        let state = c.state.unwrap_or_default();
                        if main.as_deref() == Some(container.as_str()) && state.running == Some(false) {
                            code = state.exit_code.or(code);
                        }
                    }
                    Err(_) => left += 1,
                }
            }
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= until {
                tracing::warn!(service = %id, left, "containers of a removed service are still there");
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let killed =
            was_running && code == Some(137) && began.elapsed() + Duration::from_millis(200) >= grace;
        Ok(Removed {
            was_running,
            graceful: !killed,
            exit: match code {
                Some(code) => crate::container::describe_exit(code, None, None),
                None if was_running => "service removed (its exit was not seen)".to_owned(),
                None => "service removed (no task was running)".to_owned(),
            },
        })
    }
}

/// A node's address for the router: 127.0.0.1 in a swarm of one node,
/// else its `Status.Addr` (the manager's advertised address when a manager
/// reports `0.0.0.0`, which Docker does for managers on some setups).
fn node_place(node: &Node, single: bool) -> Option<NodePlace> {
    let id = node.id.as_deref()?;
    let hostname = node
        .description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .unwrap_or_default();
    let name = format!("{hostname}/{}", id.get(..12).unwrap_or(id));
    if single {
        return Some(NodePlace {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            name,
        });
    }
    let reported = node
        .status
        .as_ref()
        .and_then(|s| s.addr.as_deref())
        .and_then(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified());
    let manager = || {
        let addr = node.manager_status.as_ref()?.addr.as_deref()?;
        addr.parse::<SocketAddr>().ok().map(|a| a.ip())
    };
    Some(NodePlace {
        ip: reported.or_else(manager)?,
        name,
    })
}

/// What [`SwarmRuntime::remove_service`] saw.
#[derive(Debug)]
struct Removed {
    was_running: bool,
    graceful: bool,
    exit: String,
}

#[cfg(test)]
mod tests {
    use bollard::models::{ManagerStatus, NodeDescription, NodeStatus};

    use super::*;

    fn node(id: &str, addr: &str, manager: Option<&str>) -> Node {
        Node {
            id: Some(id.to_owned()),
            description: Some(NodeDescription {
                hostname: Some("vm".to_owned()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addr: Some(addr.to_owned()),
                ..Default::default()
            }),
            manager_status: manager.map(|m| ManagerStatus {
                addr: Some(m.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tasks_are_reached_at_their_nodes_address_or_on_loopback_in_a_swarm_of_one() {
        let ip = |n: &Node, single| node_place(n, single).map(|p| p.ip.to_string());
        let worker = node("pl7juqanetgqumt3iloukpf33", "10.231.0.3", None);
        assert_eq!(ip(&worker, false).as_deref(), Some("10.231.0.3"));
        assert_eq!(
            node_place(&worker, false).map(|p| p.name).as_deref(),
            Some("vm/pl7juqanetgq")
        );
        // A single node is reached on loopback, whatever it advertises.
        assert_eq!(ip(&worker, true).as_deref(), Some("127.0.0.1"));
        // A manager reporting 0.0.0.0: its manager address.
        let manager = node("qgw5nlqwwagj", "0.0.0.0", Some("10.231.0.2:2377"));
        assert_eq!(ip(&manager, false).as_deref(), Some("10.231.0.2"));
        // Nothing usable: no place (the caller falls back to loopback).
        let lost = node("x", "not an address", None);
        assert_eq!(ip(&lost, false), None);
    }

    #[test]
    fn a_registry_account_debugs_without_its_password() {
        let auth = RegistryAuth(Some(bollard::auth::DockerCredentials {
            username: Some("ci".into()),
            password: Some("hunter2-secret".into()),
            ..Default::default()
        }));
        let shown = format!("{auth:?}");
        assert!(shown.contains("ci") && !shown.contains("hunter2"), "{shown}");
    }
}

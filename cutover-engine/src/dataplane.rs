//! The engine's one door to the data plane: the router's routing table, wherever it lives.
//!
//! By default the router runs in its own long-lived process (`cutover data-plane`, crate
//! `cutover-dataplane`), so a restart, crash or upgrade of `cutover serve` never stops
//! traffic; the engine drives it over its unix socket ([`DataPlane::Remote`]). The embedded
//! router ([`DataPlane::Embedded`], `cutover serve --data-plane embedded`) is the earlier
//! in-process design, kept for the benchmark's comparison and for one-shot uses where nothing
//! should outlive the server.
//!
//! Every deploy path calls these methods, never a router directly, so both shapes behave the
//! same: `switch` returns the switched-out generation as an [`OldGeneration`] whose `drain`
//! waits for its in-flight requests in whichever process serves them.

use std::net::SocketAddr;
use std::time::Duration;

use cutover_router::{Backend, Gate, Generation, RouteKey, Router, RouterConfig};

/// Where the routing table lives.
#[derive(Clone, Debug)]
pub enum DataPlane {
    /// The router inside this process; it stops with it.
    Embedded(Router),
    /// The `cutover data-plane` process, driven over its unix socket, and the mirrors fed the
    /// same table.
    Remote(cutover_dataplane::Client, Mirrors),
}

/// More data planes fed the same routing table as the main one (the `mirrors` module).
pub use crate::mirrors::Mirrors;

/// A generation that no longer receives new requests, still finishing what it admitted.
pub enum OldGeneration {
    Local(Generation),
    Remote {
        client: cutover_dataplane::Client,
        id: u64,
    },
}

/// What a route serves now and how busy it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteState {
    pub generation: u64,
    /// `X-Cutover-Version` of the generation (`<sha>`, or `<old>+<new>` during a rolling update).
    pub version: String,
    pub upstreams: Vec<SocketAddr>,
    pub in_flight: usize,
    pub admitted: u64,
}

impl OldGeneration {
    /// Waits until its in-flight requests are done, at most `timeout`; returns how many were
    /// still running then. A data plane that cannot be asked counts as nothing left: its
    /// requests are no longer ours to wait for.
    pub async fn drain(&self, timeout: Duration) -> usize {
        match self {
            Self::Local(g) => g.drain(timeout).await,
            Self::Remote { client, id } => match client.drain(*id, timeout).await {
                Ok(left) => left,
                Err(e) => {
                    tracing::warn!(generation = id, error = %e, "could not wait for a generation to drain");
                    0
                }
            },
        }
    }
}

impl DataPlane {
    fn base_domain() -> String {
        RouterConfig::default().base_domain
    }

    /// `<service>.<env>.<app>.localhost`
    pub fn host_of(&self, route: &RouteKey) -> String {
        match self {
            Self::Embedded(r) => r.host_of(route),
            Self::Remote(..) => route.host(&Self::base_domain()),
        }
    }

    /// Points `route` at `backend` atomically; returns the generation switched out.
    pub async fn switch(&self, route: &RouteKey, backend: Backend) -> Result<Option<OldGeneration>, String> {
        match self {
            Self::Embedded(r) => Ok(r.switch(route, backend).map(OldGeneration::Local)),
            Self::Remote(c, mirrors) => {
                let id = c
                    .switch(
                        route.app(),
                        route.env(),
                        route.service(),
                        &backend.version,
                        backend.upstreams.clone(),
                    )
                    .await
                    .map_err(|e| format!("the data plane did not switch {}: {e}", route.service()))?;
                mirrors.switch(route, &backend).await;
                Ok(id.map(|id| OldGeneration::Remote {
                    client: c.clone(),
                    id,
                }))
            }
        }
    }

    /// Removes `route` (its host answers 404 from now on); returns the generation removed.
    pub async fn remove(&self, route: &RouteKey) -> Result<Option<OldGeneration>, String> {
        match self {
            Self::Embedded(r) => Ok(r.remove(route).map(OldGeneration::Local)),
            Self::Remote(c, mirrors) => {
                let id = c
                    .remove(route.app(), route.env(), route.service())
                    .await
                    .map_err(|e| format!("the data plane did not remove {}: {e}", route.service()))?;
                mirrors.remove(route).await;
                Ok(id.map(|id| OldGeneration::Remote {
                    client: c.clone(),
                    id,
                }))
            }
        }
    }

    /// The router's metrics (Prometheus text); `None` when the data plane cannot be asked (its
    /// absence shows in `cutover_data_plane_up`).
    pub async fn router_metrics(&self) -> Option<String> {
        match self {
            Self::Embedded(r) => Some(r.encode_metrics()),
            Self::Remote(c, _) => match c.metrics().await {
                Ok(text) => Some(text),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the router's metrics from the data plane");
                    None
                }
            },
        }
    }

    /// Sets (`Some`) or clears (`None`) the gate (hold or maintenance) of an environment's
    /// public routes.
    pub async fn set_gate(&self, app: &str, env: &str, gate: Option<Gate>) -> Result<(), String> {
        match self {
            Self::Embedded(r) => {
                r.set_gate(app, env, gate);
                Ok(())
            }
            Self::Remote(c, mirrors) => {
                let record = gate.map(|g| cutover_dataplane::GateRecord::new(app, env, &g));
                c.set_gate(app, env, record.clone())
                    .await
                    .map_err(|e| format!("the data plane did not change the gate of {env}: {e}"))?;
                mirrors.set_gate(app, env, record.as_ref()).await;
                Ok(())
            }
        }
    }

    /// Replaces an environment's feature flags, which the router sends to its instances in
    /// `Cutover-Flags` (empty: no header); mirrors get them too.
    pub async fn set_flags(
        &self,
        app: &str,
        env: &str,
        flags: std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        match self {
            Self::Embedded(r) => r.set_flags(app, env, flags).map_err(|e| e.to_string()),
            Self::Remote(c, mirrors) => {
                c.set_flags(app, env, flags.clone())
                    .await
                    .map_err(|e| format!("the data plane did not take the flags of {env}: {e}"))?;
                mirrors.set_flags(app, env, &flags).await;
                Ok(())
            }
        }
    }

    /// Every gate set: `(app, env, gate)`.
    pub async fn gates(&self) -> Result<Vec<(String, String, Gate)>, String> {
        match self {
            Self::Embedded(r) => Ok(r.gates()),
            Self::Remote(c, _) => c
                .gates()
                .await
                .map(|v| {
                    v.into_iter()
                        .map(|g| (g.app.clone(), g.env.clone(), g.gate()))
                        .collect()
                })
                .map_err(|e| format!("cannot read the gates of the data plane: {e}")),
        }
    }

    /// Waits (at most `timeout`) until no route of the environment has a request in flight;
    /// returns how many were still running. A data plane that cannot be asked counts as drained
    /// (its requests are no longer ours to wait for), as in [`OldGeneration::drain`].
    pub async fn drain_env(&self, app: &str, env: &str, timeout: Duration) -> usize {
        match self {
            Self::Embedded(r) => r.drain_env(app, env, timeout).await,
            Self::Remote(c, mirrors) => {
                let main = match c.drain_env(app, env, timeout).await {
                    Ok(left) => left,
                    Err(e) => {
                        tracing::warn!(env, error = %e, "could not wait for an environment to drain");
                        0
                    }
                };
                main + mirrors.drain_env(app, env, timeout).await
            }
        }
    }

    /// The route's current generation, if it has one (`None` also when the data plane cannot
    /// be asked; the caller treats the route as unknown).
    pub async fn route_state(&self, route: &RouteKey) -> Option<RouteState> {
        match self {
            Self::Embedded(r) => r.generation(route).map(|g| RouteState {
                generation: g.id(),
                version: g.backend().version.clone(),
                upstreams: g.backend().upstreams.clone(),
                in_flight: g.in_flight(),
                admitted: g.admitted(),
            }),
            Self::Remote(c, _) => match c.generation(route.app(), route.env(), route.service()).await {
                Ok(g) => g.map(|g| RouteState {
                    generation: g.id,
                    version: g.version,
                    upstreams: g.upstreams,
                    in_flight: g.in_flight,
                    admitted: g.admitted,
                }),
                Err(e) => {
                    tracing::warn!(route = %route.host(&Self::base_domain()), error = %e, "cannot read a route from the data plane");
                    None
                }
            },
        }
    }
}

/// `main` with `extra` (another exposition without `# EOF`) added before its `# EOF` line, if
/// it has one (OpenMetrics), else at its end.
pub fn merge_exposition(mut main: String, extra: &str) -> String {
    if !main.is_empty() && !main.ends_with('\n') {
        main.push('\n');
    }
    match main.strip_suffix("# EOF\n") {
        Some(head) => format!("{head}{extra}# EOF\n"),
        None => {
            main.push_str(extra);
            main
        }
    }
}

/// What the control plane knows about its data plane, for `/metrics` and the log.
#[derive(Debug, Default)]
pub struct DataPlaneHealth {
    /// The data plane answered its last check.
    pub up: std::sync::atomic::AtomicBool,
    /// Data planes started because the previous one had died.
    pub restarts: std::sync::atomic::AtomicU64,
    /// The serving data plane's pid.
    pub pid: std::sync::atomic::AtomicU32,
    /// Instances adopted at start from a previous control plane.
    pub adopted: std::sync::atomic::AtomicU64,
}

impl crate::Engine {
    /// The data plane's health record (written by the server's watcher).
    pub fn data_plane_health(&self) -> &DataPlaneHealth {
        &self.inner.data_plane_health
    }

    /// Audits an operation on the whole installation (`system.stop`, `system.upgrade`) as the
    /// principal that asked for it.
    pub async fn audit_system(&self, principal: &crate::Principal, action: &str, detail: serde_json::Value) {
        self.audit(&principal.name, action, "system", detail).await;
    }

    /// When this control plane started (unix ms).
    pub fn started_at_ms(&self) -> u64 {
        self.inner.started_at_ms
    }

    pub(crate) fn adopted_count(&self) -> u64 {
        self.inner
            .data_plane_health
            .adopted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Pushes every route this control plane serves to the data plane again: after a data
    /// plane died and a new one started. Instances are not touched (they never depended on it).
    /// Returns how many routes were set.
    pub async fn restore_routes(&self) -> usize {
        let envs: Vec<_> = {
            let map = self.deployments().lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(env, s)| (env.clone(), s.clone())).collect()
        };
        let mut set = 0;
        for (env, services) in envs {
            let def = services.def.clone().unwrap_or_else(|| self.base_definition());
            match self.switch_routes(&env, &def, &services.current).await {
                Ok(_) => {
                    set += services
                        .current
                        .keys()
                        .filter(|n| def.services.get(*n).is_some_and(|s| s.public))
                        .count()
                }
                Err(e) => {
                    tracing::error!(env = %env, error = ?e, "could not restore the routes of an environment")
                }
            }
        }
        // The integration environments' host names (the server pushed only cutover.yml's).
        self.push_public_hosts().await;
        // Maintenance too (a new data plane without the table would serve it); a hold it kept
        // from routes.json stays for its run to release. And the flags' header.
        let envs: Vec<_> = self.config().environments.keys().cloned().collect();
        for env in envs {
            if let Err(e) = self.push_flags(&env).await {
                tracing::error!(env = %env, error = %e, "could not restore the flags header");
            }
            if let Some(gate) = self.maintenance_gate(&env).await
                && let Err(e) = self
                    .data_plane()
                    .set_gate(self.config().app.as_str(), env.as_str(), Some(gate))
                    .await
            {
                tracing::error!(env = %env, error = %e, "could not restore maintenance mode");
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::merge_exposition;

    #[test]
    fn router_series_go_before_the_eof_line() {
        assert_eq!(
            merge_exposition("a 1\n# EOF\n".into(), "b 2\n"),
            "a 1\nb 2\n# EOF\n"
        );
        assert_eq!(merge_exposition("a 1".into(), "b 2\n"), "a 1\nb 2\n");
        assert_eq!(merge_exposition(String::new(), "b 2\n"), "b 2\n");
    }
}

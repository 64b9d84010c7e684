//! Mirror routers: more data planes fed the same routing table as the main one
//! (`CUTOVER_DATA_PLANE_MIRRORS`), on other machines or network namespaces, so a load balancer
//! in front can use any of them.
//!
//! Every switch, removal, gate, flag change and router-settings change goes to the main data
//! plane first, then to each mirror that is *in sync*; a mirror that fails one is logged and
//! marked out of sync (it never fails the change, and it serves its last table meanwhile).
//! [`Mirrors::check`], every second from the server's watcher, says hello to each mirror: a
//! mirror out of sync that answers again, or one that answers with another identity (pid, start
//! time: it was restarted, perhaps empty), is re-synced from the main data plane: the newest
//! router settings (trusted proxies, access log, public host names, certificates), its
//! listener, every route (removing those the main one no longer has), every gate (hold,
//! maintenance) and every environment's feature flags. Pushes and re-syncs take one lock, so a
//! re-sync never writes an older table over a switch that happened meanwhile. Holds wait for the
//! mirrors' in-flight requests too ([`Mirrors::drain_env`]).
//!
//! Rejected: re-syncing on the next push only (a mirror back between two deploys would serve
//! its old table until the next deploy) and pushing the whole table on every change (a
//! mirror's generations would all be replaced for one route's switch).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_dataplane::{Client, EdgeConfig, Error, GateRecord, ListenerKind};
use cutover_router::{Backend, RouteKey};

/// One mirror data plane.
#[derive(Debug)]
pub struct Mirror {
    client: Client,
    /// Where it listens for the router's traffic.
    listen: SocketAddr,
    /// (pid, start time) of the data plane holding the full table; `None`: it needs a re-sync.
    synced: Mutex<Option<(u32, u64)>>,
}

impl Mirror {
    fn synced(&self) -> Option<(u32, u64)> {
        *self.synced.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_synced(&self, to: Option<(u32, u64)>) -> Option<(u32, u64)> {
        std::mem::replace(&mut *self.synced.lock().unwrap_or_else(|e| e.into_inner()), to)
    }
}

/// The mirrors of the main data plane. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Mirrors {
    list: Arc<Vec<Mirror>>,
    /// The router settings mirrors get: `cutover.yml`'s, plus the integration environments'
    /// host names, replaced by each [`Mirrors::configure`].
    edge: Arc<Mutex<EdgeConfig>>,
    /// Orders pushes and re-syncs (see the module docs).
    order: Arc<tokio::sync::Mutex<()>>,
}

impl Mirrors {
    /// Mirrors reached by `clients`, each told to listen on its address; `edge` is what they
    /// are configured with. None is in sync before the first [`Mirrors::check`].
    pub fn new(clients: Vec<(Client, SocketAddr)>, edge: EdgeConfig) -> Self {
        Self {
            list: Arc::new(
                clients
                    .into_iter()
                    .map(|(client, listen)| Mirror {
                        client,
                        listen,
                        synced: Mutex::new(None),
                    })
                    .collect(),
            ),
            edge: Arc::new(Mutex::new(edge)),
            order: Arc::default(),
        }
    }

    /// Whether there is no mirror.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many mirrors are in sync now.
    pub fn in_sync(&self) -> usize {
        self.list.iter().filter(|m| m.synced().is_some()).count()
    }

    fn missed(m: &Mirror, what: &str, e: &Error) {
        m.set_synced(None);
        tracing::warn!(mirror = %m.client.target(), what, error = %e,
            "a mirror data plane missed a change; it is re-synced once it answers again");
    }

    pub(crate) async fn switch(&self, route: &RouteKey, backend: &Backend) {
        let _order = self.order.lock().await;
        for m in self.list.iter().filter(|m| m.synced().is_some()) {
            let done = m
                .client
                .switch(
                    route.app(),
                    route.env(),
                    route.service(),
                    &backend.version,
                    backend.upstreams.clone(),
                )
                .await;
            if let Err(e) = done {
                Self::missed(m, "switch", &e);
            }
        }
    }

    pub(crate) async fn remove(&self, route: &RouteKey) {
        let _order = self.order.lock().await;
        for m in self.list.iter().filter(|m| m.synced().is_some()) {
            if let Err(e) = m.client.remove(route.app(), route.env(), route.service()).await {
                Self::missed(m, "remove", &e);
            }
        }
    }

    pub(crate) async fn set_gate(&self, app: &str, env: &str, gate: Option<&GateRecord>) {
        let _order = self.order.lock().await;
        for m in self.list.iter().filter(|m| m.synced().is_some()) {
            if let Err(e) = m.client.set_gate(app, env, gate.cloned()).await {
                Self::missed(m, "gate", &e);
            }
        }
    }

    /// New router settings (a topology change or a reload changed the host names): kept for
    /// re-syncs and pushed to every mirror in sync.
    pub(crate) async fn configure(&self, edge: &EdgeConfig) {
        let _order = self.order.lock().await;
        *self.edge.lock().unwrap_or_else(|e| e.into_inner()) = edge.clone();
        for m in self.list.iter().filter(|m| m.synced().is_some()) {
            if let Err(e) = m.client.configure(edge).await {
                Self::missed(m, "settings", &e);
            }
        }
    }

    pub(crate) async fn set_flags(&self, app: &str, env: &str, flags: &BTreeMap<String, String>) {
        let _order = self.order.lock().await;
        for m in self.list.iter().filter(|m| m.synced().is_some()) {
            if let Err(e) = m.client.set_flags(app, env, flags.clone()).await {
                Self::missed(m, "flags", &e);
            }
        }
    }

    /// Waits for the environment's in-flight requests on every mirror in sync (at most
    /// `timeout` each); returns how many were still running.
    pub(crate) async fn drain_env(&self, app: &str, env: &str, timeout: Duration) -> usize {
        let mut left = 0;
        for m in self.list.iter().filter(|m| m.synced().is_some()) {
            match m.client.drain_env(app, env, timeout).await {
                Ok(n) => left += n,
                Err(e) => {
                    tracing::warn!(mirror = %m.client.target(), env, error = %e, "could not wait for an environment to drain on a mirror");
                }
            }
        }
        left
    }

    /// Says hello to every mirror and re-syncs from `main` each one that is out of sync or was
    /// restarted; returns how many were re-synced.
    pub async fn check(&self, main: &Client) -> usize {
        let mut resynced = 0;
        for m in self.list.iter() {
            let hello = match m.client.hello().await {
                Ok(h) => h,
                Err(e) => {
                    if m.set_synced(None).is_some() {
                        tracing::warn!(mirror = %m.client.target(), error = %e,
                            "a mirror data plane does not answer; it is re-synced once it does");
                    }
                    continue;
                }
            };
            let identity = (hello.pid, hello.started_at_ms);
            if m.synced() == Some(identity) {
                continue;
            }
            let _order = self.order.lock().await;
            match self.resync(main, m).await {
                Ok(routes) => {
                    m.set_synced(Some(identity));
                    resynced += 1;
                    tracing::info!(mirror = %m.client.target(), pid = hello.pid, routes,
                        "mirror data plane re-synced with the full routing table");
                }
                Err(e) => {
                    m.set_synced(None);
                    tracing::warn!(mirror = %m.client.target(), error = %e,
                        "could not re-sync a mirror data plane; trying again");
                }
            }
        }
        resynced
    }

    /// Gives `m` the settings, listener, routes, gates and flags of `main`; returns the route count.
    async fn resync(&self, main: &Client, m: &Mirror) -> Result<usize, Error> {
        let edge = self.edge.lock().unwrap_or_else(|e| e.into_inner()).clone();
        m.client.configure(&edge).await?;
        m.client.listen(ListenerKind::Main, m.listen).await?;
        let want = main.routes().await?;
        let have = m.client.routes().await?;
        for ((app, env, service), g) in &want {
            let same = have.iter().any(|(k, h)| {
                k == &(app.clone(), env.clone(), service.clone())
                    && h.version == g.version
                    && h.upstreams == g.upstreams
            });
            if !same {
                m.client
                    .switch(app, env, service, &g.version, g.upstreams.clone())
                    .await?;
            }
        }
        for ((app, env, service), _) in &have {
            if !want
                .iter()
                .any(|(k, _)| k.0 == *app && k.1 == *env && k.2 == *service)
            {
                m.client.remove(app, env, service).await?;
            }
        }
        let gates = main.gates().await?;
        for g in m.client.gates().await? {
            if !gates.iter().any(|w| w.app == g.app && w.env == g.env) {
                m.client.set_gate(&g.app, &g.env, None).await?;
            }
        }
        for g in gates {
            let (app, env) = (g.app.clone(), g.env.clone());
            m.client.set_gate(&app, &env, Some(g)).await?;
        }
        let flags = main.flags().await?;
        for f in m.client.flags().await? {
            if !flags.iter().any(|w| w.app == f.app && w.env == f.env) {
                m.client.set_flags(&f.app, &f.env, BTreeMap::new()).await?;
            }
        }
        for f in flags {
            m.client.set_flags(&f.app, &f.env, f.flags).await?;
        }
        Ok(want.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::DataPlane;
    use cutover_dataplane::{Options, SharedSecret, TcpControl};
    use cutover_router::{Gate, GateMode};

    fn free_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// A data plane on a runtime of its own (dropping it is a crash: no goodbye, no drain).
    fn start(dir: &std::path::Path, control_tcp: Option<TcpControl>) -> tokio::runtime::Runtime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(cutover_dataplane::run(Options {
            data_dir: dir.to_owned(),
            take_over: false,
            control_tcp,
        }));
        rt
    }

    fn kill(rt: tokio::runtime::Runtime) {
        std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(2)))
            .join()
            .unwrap();
    }

    async fn answers(client: &Client) {
        for _ in 0..500 {
            if client.hello().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} does not answer", client.target());
    }

    fn key(service: &str) -> RouteKey {
        RouteKey::new("shop", "prod", service).unwrap()
    }

    fn table(
        routes: Vec<((String, String, String), cutover_dataplane::GenerationInfo)>,
    ) -> Vec<(String, String, Vec<SocketAddr>)> {
        routes
            .into_iter()
            .map(|(k, g)| (k.2, g.version, g.upstreams))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mirror_over_tcp_killed_and_restarted_empty_gets_the_current_table_gates_and_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let main_rt = start(&tmp.path().join("main"), None);
        let main = Client::new(&tmp.path().join("main"));
        answers(&main).await;
        let control = free_port();
        let listen = free_port();
        let secret = SharedSecret::new(&[3; 32]).unwrap();
        let tcp = || {
            Some(TcpControl {
                addr: control,
                secret: secret.clone(),
            })
        };
        let mirror_rt = start(&tmp.path().join("mirror1"), tcp());
        let mirror = Client::tcp(control, secret.clone());
        answers(&mirror).await;
        let edge = EdgeConfig {
            trusted_proxies: vec!["10.0.0.0/8".to_owned()],
            ..EdgeConfig::default()
        };
        let mirrors = Mirrors::new(vec![(mirror.clone(), listen)], edge.clone());
        let plane = DataPlane::Remote(main.clone(), mirrors.clone());
        let a = "127.0.0.1:9001".parse().unwrap();
        let b = "127.0.0.1:9002".parse().unwrap();
        plane
            .switch(&key("web"), Backend::new("v1", vec![a]))
            .await
            .unwrap();
        assert_eq!(mirrors.check(&main).await, 1, "first contact: a full sync");
        assert_eq!(mirrors.check(&main).await, 0, "in sync: nothing to do");
        assert_eq!(
            table(mirror.routes().await.unwrap()),
            table(main.routes().await.unwrap())
        );
        plane
            .switch(&key("api"), Backend::new("v1", vec![b]))
            .await
            .unwrap();
        assert_eq!(
            mirror.routes().await.unwrap().len(),
            2,
            "a switch reaches the mirror"
        );

        // The mirror dies; changes go on without it.
        kill(mirror_rt);
        plane
            .switch(&key("web"), Backend::new("v2", vec![b]))
            .await
            .unwrap();
        plane.remove(&key("api")).await.unwrap();
        let gate = Gate {
            mode: GateMode::Maintenance,
            until_ms: 0,
            retry_after_secs: 30,
            page: "down".to_owned(),
        };
        plane.set_gate("shop", "prod", Some(gate)).await.unwrap();
        let flags = BTreeMap::from([("new-cart".to_owned(), "25%".to_owned())]);
        plane.set_flags("shop", "prod", flags.clone()).await.unwrap();
        // New router settings (a reload's host names, say) while it is away.
        let newer = EdgeConfig {
            trusted_proxies: vec!["192.168.0.0/16".to_owned()],
            ..EdgeConfig::default()
        };
        mirrors.configure(&newer).await;
        assert_eq!(mirrors.check(&main).await, 0);
        assert_eq!(mirrors.in_sync(), 0);

        // Back, on another machine's empty disk: the next check gives it everything.
        let mirror_rt = start(&tmp.path().join("mirror2"), tcp());
        answers(&mirror).await;
        assert!(mirror.routes().await.unwrap().is_empty());
        assert_eq!(mirrors.check(&main).await, 1);
        assert_eq!(
            table(mirror.routes().await.unwrap()),
            vec![("web".to_owned(), "v2".to_owned(), vec![b])]
        );
        let gates = mirror.gates().await.unwrap();
        assert_eq!(gates.len(), 1, "{gates:?}");
        assert_eq!(gates[0].page, "down");
        let got = mirror.flags().await.unwrap();
        assert_eq!(got.len(), 1, "the flags too: {got:?}");
        assert_eq!(got[0].flags, flags);
        let hello = mirror.hello().await.unwrap();
        assert!(
            hello
                .listeners
                .iter()
                .any(|l| l.kind == ListenerKind::Main && l.addr == listen),
            "{hello:?}"
        );
        let routes = std::fs::read_to_string(tmp.path().join("mirror2/dataplane/routes.json")).unwrap();
        assert!(
            routes.contains("192.168.0.0/16") && !routes.contains("10.0.0.0/8"),
            "the newest router settings too: {routes}"
        );

        // Someone without the secret is refused.
        let intruder = Client::tcp(control, SharedSecret::new(&[4; 32]).unwrap());
        assert!(matches!(
            intruder.remove("shop", "prod", "web").await,
            Err(Error::Refused { .. })
        ));
        assert_eq!(mirror.routes().await.unwrap().len(), 1);
        kill(mirror_rt);
        kill(main_rt);
    }
}

//! Shared fixtures: a runtime in a temporary state dir, a release dir with a
//! Dockerfile for a busybox-httpd test service, a minimal HTTP GET.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_core::{AppName, EnvName, ServiceName, Version};
use cutover_docker::{DockerConfig, DockerRuntime, image_tag};
use cutover_runtime::{HealthSettings, InstanceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub const SHA: &str = "d0c4e12a9b3f5e6d7c8b9a0f1e2d3c4b5a697887";

/// The test service: busybox httpd serving `/health` and `/version`.
pub const DOCKERFILE: &str = "FROM cutover-base:latest\n\
COPY www /www\n\
CMD [\"sh\", \"-c\", \"exec httpd -f -p \\\"$PORT\\\" -h /www\"]\n";

/// The `run` command the engine would pass (overrides the image's CMD).
pub const RUN: &str =
    "echo \"listening on $PORT as $CUTOVER_INSTANCE\"; exec httpd -f -vv -p \"$PORT\" -h /www";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rt: DockerRuntime,
    pub app: AppName,
}

/// Connects, or fails the test with what to do.
pub async fn connect(state_dir: &Path) -> DockerRuntime {
    let mut config = DockerConfig::new(state_dir);
    config.stop_grace = Duration::from_secs(2);
    config.health_interval = Duration::from_millis(200);
    match DockerRuntime::connect(config).await {
        Ok(rt) => rt,
        Err(err) => panic!(
            "Docker is unreachable, so the docker runtime cannot be tested: {}\n\
             Run scripts/docker-setup as root first (it installs docker.io, starts dockerd \
             and builds cutover-base:latest).",
            chain(&err)
        ),
    }
}

impl Fixture {
    /// A runtime for app `app` (one app per test, so tests may run in
    /// parallel), with the test image built (or already there).
    pub async fn new(app: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = connect(&dir.path().join("state")).await;
        assert!(
            rt.image_exists("cutover-base:latest").await.expect("inspect"),
            "cutover-base:latest is missing: run scripts/docker-setup as root first"
        );
        let fixture = Self {
            dir,
            rt,
            app: AppName::parse(app).unwrap(),
        };
        let (tx, _rx) = mpsc::unbounded_channel();
        fixture
            .rt
            .build_image(&fixture.release(), "Dockerfile", &fixture.tag(), tx)
            .await
            .expect("build the test image");
        fixture
    }

    /// The release directory (written on first use).
    pub fn release(&self) -> PathBuf {
        let release = self.dir.path().join("releases").join(SHA);
        if !release.exists() {
            std::fs::create_dir_all(release.join("www")).unwrap();
            std::fs::write(release.join("www/health"), "ok\n").unwrap();
            std::fs::write(release.join("www/version"), SHA).unwrap();
            std::fs::write(release.join("Dockerfile"), DOCKERFILE).unwrap();
        }
        release
    }

    pub fn tag(&self) -> String {
        image_tag(&self.app, &env(), &service(), &version())
    }

    pub fn spec(&self, replica: u32) -> InstanceSpec {
        InstanceSpec {
            app: self.app.clone(),
            env: env(),
            service: service(),
            version: version(),
            release_dir: self.release(),
            run: RUN.to_owned(),
            env_vars: vec![("CUTOVER_RUN_ID".into(), "42".into())],
            replica,
            health_path: Some("/health".into()),
            placement: Default::default(),
        }
    }
}

/// Removes every container of `owner`, also when a test panicked (it
/// runs on its own thread and tokio runtime: `Drop` cannot await).
pub fn remove_all_of(owner: String) {
    let cleanup = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Ok(docker) = bollard::Docker::connect_with_socket_defaults() else {
                return;
            };
            let filters = std::collections::HashMap::from([(
                "label",
                vec![format!("{}={owner}", cutover_docker::labels::OWNER)],
            )]);
            let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            for c in docker.list_containers(Some(options)).await.unwrap_or_default() {
                let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .build();
                if let Some(id) = c.id {
                    let _ = docker.remove_container(&id, Some(remove)).await;
                }
            }
        });
    });
    let _ = cleanup.join();
}

/// Removes the containers of an owner when dropped.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_all_of(self.0.clone());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        remove_all_of(self.rt.owner().to_owned());
    }
}

pub fn env() -> EnvName {
    EnvName::parse("test").unwrap()
}

pub fn service() -> ServiceName {
    ServiceName::parse("web").unwrap()
}

pub fn version() -> Version {
    Version::parse(SHA).unwrap()
}

pub fn quick_health() -> HealthSettings {
    HealthSettings {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(15),
    }
}

/// `GET path` → (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Labels of a container, straight from the engine.
pub async fn container_labels(rt: &DockerRuntime, id: &str) -> std::collections::HashMap<String, String> {
    let c = rt.docker().inspect_container(id, None).await.expect("inspect");
    c.config.and_then(|c| c.labels).unwrap_or_default()
}

/// Whether the engine still knows the container.
pub async fn container_exists(rt: &DockerRuntime, id: &str) -> bool {
    rt.docker().inspect_container(id, None).await.is_ok()
}

pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Removes an image tag when dropped (forced: a container still using it
/// only keeps the layers), also when a test panicked.
pub struct RemoveImage(pub String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let tag = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(docker) = bollard::Docker::connect_with_socket_defaults() else {
                    return;
                };
                let options = bollard::query_parameters::RemoveImageOptionsBuilder::new()
                    .force(true)
                    .build();
                let _ = docker.remove_image(&tag, Some(options), None).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// `GET /health` on one address back to back (10 ms apart) until
/// [`Load::finish`]; aborted when dropped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    pub fn start(addr: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let (mut ok, mut failures) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let result = cutover_runtime::health::probe(addr, "/health", Duration::from_secs(2)).await;
                if result.is_healthy() {
                    ok += 1;
                } else {
                    failures.push(format!("{result:?}"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failures)
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the load: (answered requests, failures).
    pub async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let handle = self.handle.take().expect("finished once");
        handle.await.expect("the load task")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

//! Upstreams, an HTTP client and in-process data planes for the tests, all on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cutover_dataplane::{Client, Error, Hello, Options};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upper bound for any single wait in the tests.
pub const STEP: Duration = Duration::from_secs(10);

/// A tiny HTTP upstream answering its name; `/hold` answers only once `release()` was called.
pub struct Upstream {
    pub addr: SocketAddr,
    gate: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, _) = watch::channel(false);
        let name: Arc<str> = name.into();
        let gate_rx = gate.subscribe();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = Arc::clone(&name);
                let gate = gate_rx.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let name = Arc::clone(&name);
                        let mut gate = gate.clone();
                        async move {
                            if req.uri().path() == "/hold" {
                                let _ = gate.wait_for(|open| *open).await;
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                name.to_string(),
                            ))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, gate, task }
    }

    pub fn release(&self) {
        let _ = self.gate.send(true);
    }
}

/// An HTTP answer: status, body, `X-Cutover-Version`.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub version: Option<String>,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, task })
    }

    /// Whether the server closed the connection (after a `Connection: close` answer): then the
    /// next request goes on a new connection, as any HTTP client does.
    pub async fn closed(&mut self) -> bool {
        self.sender.ready().await.is_err()
    }

    /// Sends one GET; `Err((message, sent))`: `sent` is false when the connection was already
    /// closed, so the request never left.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, (String, bool)> {
        self.sender
            .ready()
            .await
            .map_err(|e| (format!("not ready: {e}"), false))?;
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| (format!("request: {e}"), true))?;
        let status = resp.status().as_u16();
        let version = resp
            .headers()
            .get("x-cutover-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| (format!("body: {e}"), true))?
            .to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            version,
        })
    }
}

/// One GET on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Reply, String> {
    let mut conn = Conn::open(addr).await?;
    tokio::time::timeout(STEP, conn.get(host, path))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|(e, _)| e)
}

/// A data plane running `run` on a task of the test's runtime; aborted on drop.
pub struct Dp {
    pub client: Client,
    pub task: Option<JoinHandle<Result<(), Error>>>,
}

impl Drop for Dp {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Dp {
    pub async fn start(data_dir: &Path) -> (Dp, Hello) {
        Self::start_with(data_dir, false, |_| true).await
    }

    /// Starts `run` and waits until a data plane whose hello satisfies `ready` answers.
    pub async fn start_with(data_dir: &Path, take_over: bool, ready: impl Fn(&Hello) -> bool) -> (Dp, Hello) {
        Self::start_opts(
            Options {
                data_dir: data_dir.to_owned(),
                take_over,
                control_tcp: None,
            },
            ready,
        )
        .await
    }

    /// [`Dp::start_with`] with any options (a TCP control channel, say).
    pub async fn start_opts(opts: Options, ready: impl Fn(&Hello) -> bool) -> (Dp, Hello) {
        let data_dir = opts.data_dir.clone();
        let data_dir = data_dir.as_path();
        let task = tokio::spawn(cutover_dataplane::run(opts));
        let client = Client::new(data_dir);
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if task.is_finished() {
                panic!("the data plane stopped: {:?}", task.await);
            }
            if let Ok(hello) = client.hello().await
                && ready(&hello)
            {
                return (
                    Dp {
                        client,
                        task: Some(task),
                    },
                    hello,
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the data plane did not answer in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for `run` to return.
    pub async fn exited(&mut self) -> Result<(), Error> {
        let task = self.task.take().expect("already waited");
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .expect("the data plane did not exit in time")
            .expect("the data plane task panicked")
    }
}

/// A data plane on a runtime of its own, in its own thread: dropping the runtime drops every
/// task and socket at once without any graceful step, which is how these tests kill one.
pub struct KillableDp {
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableDp {
    pub fn start(data_dir: &Path) -> KillableDp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(cutover_dataplane::run(Options {
            data_dir: data_dir.to_owned(),
            take_over: false,
            control_tcp: None,
        }));
        KillableDp {
            runtime: Some(runtime),
        }
    }

    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // A runtime may not be dropped from async code: do it from a plain thread.
            std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(2)))
                .join()
                .unwrap();
        }
    }
}

impl Drop for KillableDp {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn dataplane_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dataplane")
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const HOST: &str = "web.prod.shop.localhost";

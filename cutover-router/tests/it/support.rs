//! Test upstreams, a router on port 0 and a keep-alive client, all on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cutover_router::{Backend, RouteKey, Router, RouterConfig};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, channel::Channel, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// Upper bound for any single await in tests.
pub const STEP: Duration = Duration::from_secs(10);

pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

pub fn key(service: &str) -> RouteKey {
    RouteKey::new("shop", "stage", service).unwrap()
}

/// A tiny upstream answering its version. Paths:
/// `/` → version; `/slow?ms=N` → version after N ms; `/headers` → request headers as text;
/// `/echo` → request body streamed back; `/stream` → "first\n", then waits for `release`, then
/// "second\n"; `/big?kb=N` → N KiB in 64 KiB chunks; `/endless` → 64 KiB chunks until the
/// router drops the body (counted in `ended`); any request with `Upgrade` → 101 then echoes bytes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub release: Arc<Notify>,
    /// `/endless` bodies the router dropped.
    pub ended: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn upstream(version: &str) -> Upstream {
    upstream_at(version, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`upstream`] on a given address (a port that was free, say).
pub async fn upstream_at(version: &str, addr: SocketAddr) -> Upstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let ended = Arc::new(AtomicUsize::new(0));
    let version: Arc<str> = version.into();
    let rel = Arc::clone(&release);
    let end = Arc::clone(&ended);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let version = Arc::clone(&version);
            let rel = Arc::clone(&rel);
            let end = Arc::clone(&end);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    upstream_handle(Arc::clone(&version), (Arc::clone(&rel), Arc::clone(&end)), req)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream {
        addr,
        release,
        ended,
        task,
    }
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn upstream_handle(
    version: Arc<str>,
    (release, ended): (Arc<Notify>, Arc<AtomicUsize>),
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(full(""))
            .unwrap();
        return Ok(resp);
    }
    let body = match req.uri().path() {
        "/slow" => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(version.to_string())
        }
        "/headers" => {
            let mut text = String::new();
            for (name, value) in req.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            full(text)
        }
        "/echo" => req.into_body().boxed(),
        "/big" | "/endless" => {
            let kb: Option<usize> = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("kb="))
                .and_then(|v| v.parse().ok());
            let endless = req.uri().path() == "/endless";
            let (mut tx, body) = Channel::<Bytes, hyper::Error>::new(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                let mut left = kb.unwrap_or(0) << 10;
                while endless || left > 0 {
                    let piece = if endless {
                        chunk.clone()
                    } else {
                        chunk.slice(..left.min(64 << 10))
                    };
                    left = left.saturating_sub(piece.len());
                    if tx.send_data(piece).await.is_err() {
                        if endless {
                            ended.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                }
            });
            body.boxed()
        }
        // Reads the whole body before answering (its length), as most applications do.
        "/collect" => match req.into_body().collect().await {
            Ok(b) => full(b.to_bytes().len().to_string()),
            Err(e) => full(format!("body error: {e}")),
        },
        "/stream" => {
            let (mut tx, body) = Channel::<Bytes, hyper::Error>::new(1);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"first\n")).await;
                release.notified().await;
                let _ = tx.send_data(Bytes::from_static(b"second\n")).await;
            });
            body.boxed()
        }
        _ => full(version.to_string()),
    };
    Ok(Response::new(body))
}

/// A router serving on 127.0.0.1:0 (host-routed), stopped by `stop()` or on drop.
pub struct TestRouter {
    pub router: Router,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestRouter {
    pub async fn start(config: RouterConfig) -> Self {
        let router = Router::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let r = router.clone();
        let task = tokio::spawn(async move {
            r.serve(listener, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            router,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn host(&self, service: &str) -> String {
        self.router.host_of(&key(service))
    }

    pub fn switch(&self, service: &str, version: &str, upstreams: &[&Upstream]) {
        let backend = Backend::new(version, upstreams.iter().map(|u| u.addr).collect());
        self.router.switch(&key(service), backend);
    }

    /// Triggers graceful shutdown and returns the serve task.
    pub fn stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("stopped twice")
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn version(&self) -> Option<&str> {
        self.headers
            .get("x-cutover-version")
            .and_then(|v| v.to_str().ok())
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Self { sender }
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> hyper::Result<Response<Incoming>> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    /// GET `path` with `Host: host`, body collected.
    pub async fn get(&mut self, host: &str, path: &str) -> hyper::Result<Answer> {
        let req = Request::get(path).header("host", host).body(full("")).unwrap();
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub fn body(text: impl Into<Bytes>) -> TestBody {
        full(text)
    }
}

/// A port on 127.0.0.1 that refuses connections: bound but not listening, and kept bound for
/// the rest of the test process. (Binding and closing left the port free for another test's
/// listener, which then answered for the "dead" upstream now and then.)
pub async fn dead_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// A port on 127.0.0.1 with nothing listening that a test may bind again (bound, then
/// closed: another listener may take it meanwhile, so use it only for a restart on the port).
pub async fn released_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Polls `cond` every 5 ms until it holds, at most `STEP`.
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(STEP, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

//! The router's request handling, end to end: a real `cutover_router::Router` serving a loopback
//! listener (by `Host`, and a fixed-route listener), with one route to a healthy in-process
//! upstream. Each input is written as the bytes of one client connection, followed by a last
//! request with `Connection: close`; the router's answer is read to the end.
//!
//! The first input byte picks the listener and a prefix, so most inputs reach the proxy rather
//! than hyper's request-head parser: raw bytes, a request head naming the route (the input adds
//! headers and a body), or a chunked POST to the route (the input is the chunked body).
//!
//! `CUTOVER_FUZZ_SHOW=1` prints each request and answer (to read an artifact or a corpus entry).
//!
//! Besides "never panics" (libFuzzer's panic hook aborts on a panic in any task), checks that the
//! router answers in time with an HTTP/1.x status line and never a 500 or 502: the upstream is
//! always healthy, so a 5xx other than a timeout is the router's own fault (e.g. a malformed
//! client body must be a 400, not a 502).
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use cutover_router::{Backend, RouteKey, Router, RouterConfig};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const HOST: &str = "web.dev.app.localhost";
const VERSION: &str = "0123456789abcdef0123456789abcdef01234567";

struct Harness {
    rt: Runtime,
    by_host: SocketAddr,
    fixed: SocketAddr,
}

/// The upstream: reads the whole body (up to 1 MiB), answers 200 with its length.
async fn upstream(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let len = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(body) => body.to_bytes().len().to_string(),
        Err(_) => "body error".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(len))))
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (by_host, fixed) = rt.block_on(async {
            let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let up_addr = up.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = up.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service_fn(upstream))
                            .with_upgrades()
                            .await;
                    });
                }
            });
            let router = Router::new(RouterConfig {
                connect_timeout: Duration::from_secs(1),
                response_header_timeout: Duration::from_secs(3),
                client_header_timeout: Duration::from_secs(3),
                shutdown_grace: Duration::from_secs(1),
                ..RouterConfig::default()
            });
            let route = RouteKey::new("app", "dev", "web").unwrap();
            router.switch(&route, Backend::new(VERSION, vec![up_addr]));
            let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
            let r1 = router.clone();
            tokio::spawn(async move { r1.serve(l1, std::future::pending()).await });
            tokio::spawn(async move { router.serve_fixed(route, l2, std::future::pending()).await });
            (a1, a2)
        });
        Harness { rt, by_host, fixed }
    })
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let rest = answer
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| answer.strip_prefix(b"HTTP/1.0 "))?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

fn memchr_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    (0..hay.len()).filter(move |&i| hay[i..].starts_with(needle))
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut request = Vec::with_capacity(rest.len() + 128);
    match mode & 3 {
        0 => {}
        1 => request.extend_from_slice(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes()),
        2 => request.extend_from_slice(
            format!("POST /p?q=1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes(),
        ),
        _ => request.extend_from_slice(b"GET "),
    }
    request.extend_from_slice(rest);
    let addr = if mode & 4 == 0 { h.by_host } else { h.fixed };

    // A last pipelined request with `Connection: close` makes the router close the connection
    // once it has answered everything before it. (Half-closing right after the input would not
    // do: hyper drops a request whose client half-closes, so nothing would reach the upstream.)
    request.extend_from_slice(
        format!("GET /end HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    );

    let answer = h.rt.block_on(async {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        // The router may answer and close before reading everything: write errors are fine.
        let _ = conn.write_all(&request).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        let mut half_closed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            // An input that leaves a body unfinished keeps the router waiting: after a quiet
            // moment, end the client's side (the router then answers or closes).
            let wait = if half_closed {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(50)
            };
            match tokio::time::timeout(wait, conn.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) if !half_closed => {
                    let _ = conn.shutdown().await;
                    half_closed = true;
                }
                Err(_) => break,
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the router did not finish answering within 10 s"
            );
        }
        answer
    });
    if std::env::var_os("CUTOVER_FUZZ_SHOW").is_some() {
        eprintln!(
            "request: {:?}\nanswer: {:?}",
            String::from_utf8_lossy(&request),
            String::from_utf8_lossy(&answer)
        );
    }
    if answer.is_empty() {
        return;
    }
    assert!(
        status_of(&answer).is_some(),
        "not an HTTP/1.x answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // Every status line (bodies here never contain one: the upstream answers a number).
    for at in memchr_all(&answer, b"HTTP/1.") {
        let status = status_of(&answer[at..]).unwrap_or_default();
        assert!(
            status != 500 && status != 502,
            "the router answered {status} with a healthy upstream: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
});

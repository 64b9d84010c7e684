//! Slow clients. One that stops reading what the router writes it: after the send timeout its
//! connection is closed and the upstream call it held is dropped, on the router's own HTTP/1.1
//! path and on hyper's; a slow client that keeps reading gets its whole answer. One whose
//! request body stops coming gets a 408 after the body timeout; an upload that keeps coming for
//! longer than the upstream's time to answer is not cut (that time counts from the body's
//! end). And many clients: past `max_client_connections` a new one waits in the listen backlog
//! until a connection (an upgraded tunnel too) closes. (HTTP/2 over TLS: `h2_frames.rs`.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cutover_router::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const TIMEOUT: Duration = Duration::from_millis(300);

async fn router(config: RouterConfig) -> (TestRouter, Upstream) {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(config).await;
    r.switch("yves", &sha('a'), &[&a]);
    (r, a)
}

fn send_timeout(t: Duration) -> RouterConfig {
    RouterConfig {
        client_send_timeout: t,
        ..RouterConfig::default()
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout_and_its_upstream_call_dropped() {
    let (r, a) = router(send_timeout(TIMEOUT)).await;
    let host = r.host("yves");
    // The router's own path (a bodyless GET), then hyper's (a POST with a body).
    let requests = [
        format!("GET /endless HTTP/1.1\r\nhost: {host}\r\n\r\n"),
        format!("POST /endless HTTP/1.1\r\nhost: {host}\r\ncontent-length: 1\r\n\r\nx"),
    ];
    for (n, request) in requests.iter().enumerate() {
        let mut client = TcpStream::connect(r.addr).await.unwrap();
        let began = Instant::now();
        client.write_all(request.as_bytes()).await.unwrap();
        // Not a byte read: the socket buffers fill, the router's writes wait.
        wait_until(|| a.ended.load(Ordering::SeqCst) == n + 1).await;
        let waited = began.elapsed();
        assert!(waited >= TIMEOUT, "{request:?}: dropped after {waited:?}");
        // What was written before is still there to read; then the connection ends.
        let mut sink = vec![0u8; 1 << 20];
        let ended = tokio::time::timeout(STEP, async {
            loop {
                match client.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "{request:?}: the connection stayed open");
    }
}

#[tokio::test]
async fn a_slow_client_that_keeps_reading_gets_its_whole_answer() {
    // A write waits until the kernel has room for more: half of what the router's socket
    // holds must drain first (up to 2 MB: its send buffer grows to 4 MB), a third of a second
    // at this pace. The timeout is longer than that and shorter than the router's writing
    // takes: the clock starts again with each byte taken, it does not bound the answer.
    let timeout = Duration::from_millis(1500);
    let (r, a) = router(send_timeout(timeout)).await;
    let host = r.host("yves");
    // A small receive buffer: the router's writes wait from the start, not once megabytes
    // are buffered on the way.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let mut client = socket.connect(r.addr).await.unwrap();
    let request = format!("GET /big?kb=24576 HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    // At most 64 KiB every 10 ms (about 6 MB/s): the router's writes wait often, never a
    // timeout long.
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let began = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match client.read(&mut chunk).await.unwrap() {
                0 => break,
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the answer came within 30 s");
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head")
        + 4;
    // (Chunk sizes are hex digits: no `x` among them.)
    let body = got[head_end..].iter().filter(|&&b| b == b'x').count();
    assert_eq!(body, 24 << 20, "the whole body, not cut");
    assert!(
        began.elapsed() > timeout,
        "the answer took longer than the send timeout"
    );
    assert_eq!(a.ended.load(Ordering::SeqCst), 0);
}

/// A router whose upstream must answer within 500 ms of the request's body and whose
/// clients may pause a body 300 ms.
async fn impatient() -> (TestRouter, Upstream) {
    router(RouterConfig {
        response_header_timeout: Duration::from_millis(500),
        client_body_timeout: TIMEOUT,
        ..RouterConfig::default()
    })
    .await
}

#[tokio::test]
async fn an_upload_that_takes_longer_than_the_upstreams_answer_time_is_not_cut() {
    let (r, _a) = impatient().await;
    let host = r.host("yves");
    let mut client = TcpStream::connect(r.addr).await.unwrap();
    // 30 pieces of 1 KiB, one every 50 ms: 1.5 s of body, three times the upstream's time to
    // answer, which counts from the body's end.
    let head = format!("POST /collect HTTP/1.1\r\nhost: {host}\r\ncontent-length: 30720\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&[b'u'; 1024]).await.unwrap();
    }
    let answer = answer_of(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n30720"),
        "the upstream read the whole body: {answer}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_after_the_body_timeout() {
    let (r, _a) = impatient().await;
    let host = r.host("yves");
    let mut client = TcpStream::connect(r.addr).await.unwrap();
    let head = format!("POST /collect HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2048\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&[b'u'; 1024]).await.unwrap();
    let began = Instant::now();
    let answer = answer_of(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body"), "says why: {answer}");
    let waited = began.elapsed();
    assert!(waited >= TIMEOUT && waited < STEP, "answered after {waited:?}");
}

/// The first answer on `stream`, whole (the router closes after these).
async fn answer_of(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(STEP, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&all);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if len.is_some_and(|n| all.len() >= end + 4 + n) {
                    break;
                }
            }
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let (r, _a) = router(RouterConfig {
        max_client_connections: 2,
        ..RouterConfig::default()
    })
    .await;
    let host = r.host("yves");
    // Two keep-alive clients, served and then idle: both places are taken.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Conn::connect(r.addr).await;
        assert_eq!(c.get(&host, "/").await.unwrap().status, 200);
        held.push(c);
    }
    let metrics = r.router.encode_metrics();
    assert!(
        metrics.contains("cutover_router_client_connections 2"),
        "{metrics}"
    );
    // A third connects (the kernel's backlog takes it) but is not served while both stay.
    let mut third = TcpStream::connect(r.addr).await.unwrap();
    third
        .write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "served past the cap: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let metrics = r.router.encode_metrics();
    assert!(
        metrics.contains("cutover_router_connection_limit_waits_total 1"),
        "{metrics}"
    );
    // One closes: the third is accepted and answered.
    drop(held.pop());
    tokio::time::timeout(STEP, third.read_to_end(&mut answer))
        .await
        .expect("the third is served once a place is free")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_upgraded_tunnel_keeps_its_place_under_the_cap() {
    let (r, _a) = router(RouterConfig {
        max_client_connections: 1,
        ..RouterConfig::default()
    })
    .await;
    let host = r.host("yves");
    let mut tunnel = TcpStream::connect(r.addr).await.unwrap();
    let head = format!("GET /ws HTTP/1.1\r\nhost: {host}\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
    tunnel.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 1024];
    let n = tokio::time::timeout(STEP, tunnel.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(
        got[..n].starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got[..n])
    );
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(STEP, tunnel.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    // The tunnel is all that is open: a new client waits.
    let mut next = TcpStream::connect(r.addr).await.unwrap();
    next.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), next.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "served past the cap while a tunnel is open");
    drop(tunnel);
    tokio::time::timeout(STEP, next.read_to_end(&mut answer))
        .await
        .expect("served once the tunnel closed")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

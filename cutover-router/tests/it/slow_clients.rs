//! Clients that stop reading what the router writes them: after the send timeout their
//! connection is closed and the upstream call they held is dropped, on the router's own
//! HTTP/1.1 path and on hyper's; a slow client that keeps reading gets its whole answer.
//! (HTTP/2 over TLS: `h2_frames.rs`.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cutover_router::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const TIMEOUT: Duration = Duration::from_millis(300);

async fn router(send_timeout: Duration) -> (TestRouter, Upstream) {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig {
        client_send_timeout: send_timeout,
        ..RouterConfig::default()
    })
    .await;
    r.switch("yves", &sha('a'), &[&a]);
    (r, a)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout_and_its_upstream_call_dropped() {
    let (r, a) = router(TIMEOUT).await;
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
    let send_timeout = Duration::from_millis(1500);
    let (r, a) = router(send_timeout).await;
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
        began.elapsed() > send_timeout,
        "the answer took longer than the send timeout"
    );
    assert_eq!(a.ended.load(Ordering::SeqCst), 0);
}

//! HTTP/2 from clients (the router's own stream layer, `h2srv`, on the TLS listener), through
//! hyper's and h2's clients: streams of one connection served
//! together, bodies both ways past the flow-control windows, a stream the client resets gives
//! its upstream call up, and every answer carries `Date` and the listener's HSTS and no
//! connection-specific field.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cutover_router::Backend;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;
use crate::tls::{Ca, TlsRouter, ca, handshake, leaf, tls_router};

const HOST: &str = "www.example.com";

/// A TLS router with `www.example.com` routed to `upstream`.
async fn h2_router(upstream: SocketAddr) -> (TlsRouter, Ca, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (files, _) = leaf(&ca, &[HOST], dir.path(), "www");
    let t = tls_router(vec![files]).await;
    t.router
        .switch(&key("yves"), Backend::new(sha('a'), vec![upstream]));
    t.router
        .set_edge(cutover_router::EdgeSettings {
            hosts: vec![(HOST.into(), key("yves"))],
            ..Default::default()
        })
        .unwrap();
    (t, ca, dir)
}

/// An HTTP/2 connection (hyper's client) whose streams get `window` bytes of flow control.
async fn h2_client<B>(t: &TlsRouter, ca: &Ca, window: u32) -> SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tls, _) = handshake(t.addr, ca, HOST, b"h2").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Reads a request head off `stream` (what a bodyless request is).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(n > 0, "the router closed before its request's head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn the_streams_of_one_connection_are_served_together() {
    // The upstream answers no request before it holds all of them: streams served one after
    // the other would never get an answer.
    const STREAMS: usize = 16;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let all_in = Arc::new(tokio::sync::Barrier::new(STREAMS));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let all_in = Arc::clone(&all_in);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                all_in.wait().await;
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\ntogether";
                stream.write_all(answer).await.unwrap();
                let _ = stream.read(&mut [0u8; 1]).await; // keep-alive until the router closes
            });
        }
    });
    let (t, ca, _dir) = h2_router(upstream).await;
    let client = h2_client::<Empty<Bytes>>(&t, &ca, 65_535).await;
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let mut client = client.clone();
        streams.spawn(async move {
            let req = Request::get(format!("https://{HOST}/"))
                .body(Empty::new())
                .unwrap();
            let resp = client.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.unwrap().to_bytes()
        });
    }
    let answers = tokio::time::timeout(STEP, streams.join_all())
        .await
        .expect("every stream answered: they were all at the upstream at once");
    assert!(answers.iter().all(|a| a.as_ref() == b"together"));
}

#[tokio::test]
async fn bodies_larger_than_the_windows_go_through_both_ways() {
    let up = upstream(&sha('a')).await;
    let (t, ca, _dir) = h2_router(up.addr).await;
    // The client grants 64 KiB per stream; the router 1 MiB: 3 MiB each way needs both sides
    // to give their windows back as the bytes are read.
    let mut client = h2_client::<Full<Bytes>>(&t, &ca, 65_535).await;
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let req = Request::post(format!("https://{HOST}/echo"))
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let resp = tokio::time::timeout(STEP, client.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echoed = tokio::time::timeout(STEP, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(echoed.len(), body.len());
    assert!(echoed.as_ref() == body.as_slice(), "the body came back as sent");

    // The upstream gets the client's Content-Length and the body framed by it, not chunked.
    let req = Request::post(format!("https://{HOST}/headers"))
        .header("content-length", 5)
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    let seen = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("content-length: 5\n"), "{seen}");
    assert!(!seen.contains("transfer-encoding"), "{seen}");
}

#[tokio::test]
async fn a_stream_the_client_resets_gives_its_upstream_call_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (t, ca, _dir) = h2_router(upstream).await;
    let (tls, _) = handshake(t.addr, &ca, HOST, b"h2").await.unwrap();
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://{HOST}/")).body(()).unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    // The upstream gets the request and does not answer.
    let (mut stream, _) = tokio::time::timeout(STEP, listener.accept())
        .await
        .unwrap()
        .unwrap();
    read_head(&mut stream).await;
    // Dropping the stream's last handle resets it (RST_STREAM, CANCEL).
    drop(answer);
    // The router drops its upstream call: the connection closes rather than wait for the
    // answer (its answer timeout is far longer than this).
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut [0u8; 64]))
        .await
        .expect("the router gave the upstream call up")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The connection itself serves on.
    let req = Request::get(format!("https://{HOST}/")).body(()).unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    let (mut stream, _) = listener.accept().await.unwrap();
    read_head(&mut stream).await;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    let resp = tokio::time::timeout(STEP, answer).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// The answer's own field is there, none of the connection-specific ones it came with.
fn relayed_without_connection_fields(h: &http::HeaderMap) {
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the client: {h:?}");
    }
    assert_eq!(h["x-kept"], "yes");
}

#[tokio::test]
async fn h2_answers_carry_date_and_hsts_and_no_connection_specific_field() {
    // An answer with every field HTTP/2 forbids (h2 would reset a stream that sent one).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let answer = "HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\n\
                              Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
                              Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n2\r\nok\r\n0\r\n\r\n";
                stream.write_all(answer.as_bytes()).await.unwrap();
                let _ = stream.read(&mut [0u8; 1]).await;
            });
        }
    });
    let (t, ca, _dir) = h2_router(upstream).await;
    let mut client = h2_client::<Empty<Bytes>>(&t, &ca, 65_535).await;
    let req = Request::get(format!("https://{HOST}/"))
        .body(Empty::new())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().as_ref(),
        b"ok"
    );
    relayed_without_connection_fields(&h);
    assert_eq!(h["strict-transport-security"], "max-age=600");
    assert_eq!(h.get_all("date").iter().count(), 1, "{h:?}");

    // A request with a body goes through hyper's client: the same.
    let mut client = h2_client::<Full<Bytes>>(&t, &ca, 65_535).await;
    let req = Request::post(format!("https://{HOST}/"))
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    relayed_without_connection_fields(&h);

    // The router's own answer (an unknown host) too.
    let req = Request::get("https://unknown.example.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=600");
    assert_eq!(resp.headers().get_all("date").iter().count(), 1);
}

#[tokio::test]
async fn an_h2_request_reaches_the_upstream_with_the_authority_and_the_routers_own_fields() {
    // An upstream that hands each request head it reads to the test.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (heads, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let heads = heads.clone();
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut stream).await;
                    let _ = heads.send(head);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (t, ca, _dir) = h2_router(upstream).await;
    let mut client = h2_client::<Full<Bytes>>(&t, &ca, 65_535).await;
    // Bodyless (the router's own client) and with a body (hyper's client): the same fields.
    for (method, body) in [("GET", ""), ("POST", "x")] {
        let req = Request::builder()
            .method(method)
            .uri(format!("https://{HOST}/p?q=1"))
            .header("host", "evil.example")
            .header("te", "trailers")
            .header("cutover-flags", "admin=on")
            .header("x-forwarded-for", "198.51.100.7")
            .header("x-forwarded-host", "bank.example")
            .header("forwarded", "for=198.51.100.7")
            .header("x-app", "kept")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
        let head = seen.recv().await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("{} /p?q=1 http/1.1\r\n", method.to_ascii_lowercase())),
            "{head}"
        );
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("host:")).count(),
            1,
            "{head}"
        );
        for want in [
            format!("host: {HOST}"),
            "x-forwarded-for: 127.0.0.1".to_owned(),
            format!("x-forwarded-host: {HOST}"),
            "x-forwarded-proto: https".to_owned(),
            format!("forwarded: for=127.0.0.1;host=\"{HOST}\";proto=https"),
            "x-app: kept".to_owned(),
        ] {
            assert!(lines.contains(&want.as_str()), "{method}: no {want:?} in {head}");
        }
        for gone in ["evil", "198.51.100.7", "bank.example", "\r\nte:", "cutover-flags"] {
            assert!(
                !head.contains(gone),
                "{method}: {gone:?} reached the upstream: {head}"
            );
        }
    }
}

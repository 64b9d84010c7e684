//! The router's own HTTP/1.1 client (bodyless requests) against raw upstreams that answer
//! exactly the bytes a test scripts: every framing of a body, pooled connections the upstream
//! closes, malformed answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cutover_router::{Backend, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What a scripted upstream does after reading a request head.
#[derive(Clone, Copy)]
enum Then {
    /// Keeps the connection for the next request.
    Stay,
    /// Closes the connection.
    Close,
    /// Answers after 300 ms and keeps the connection.
    SlowStay,
}

/// An upstream on 127.0.0.1 answering request `n` (counted over all connections) with
/// `script(n)`, written in pieces of at most 7 bytes so that every read boundary is met.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scripted(script: fn(usize) -> (Vec<u8>, Then)) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let all_requests = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let requests = Arc::clone(&requests);
            tokio::spawn(serve_scripted(stream, requests, script));
        }
    });
    Scripted {
        addr,
        connections,
        requests: all_requests,
        task,
    }
}

async fn serve_scripted(
    mut stream: TcpStream,
    requests: Arc<AtomicUsize>,
    script: fn(usize) -> (Vec<u8>, Then),
) {
    let mut seen = Vec::new();
    loop {
        // Read one request head (bodyless requests only here).
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        seen.drain(..end);
        let (answer, then) = script(requests.fetch_add(1, Ordering::SeqCst));
        if let Then::SlowStay = then {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for piece in answer.chunks(7) {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        if let Then::Close = then {
            return;
        }
    }
}

async fn router_to(upstream: &Scripted) -> TestRouter {
    let router = TestRouter::start(RouterConfig::default()).await;
    router
        .router
        .switch(&key("yves"), Backend::new(sha('a'), vec![upstream.addr]));
    router
}

fn answer(text: &str, then: Then) -> (Vec<u8>, Then) {
    (text.as_bytes().to_vec(), then)
}

#[tokio::test]
async fn every_body_framing_is_relayed_and_a_kept_connection_carries_the_next_request() {
    let upstream = scripted(|n| match n {
        0 => answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", Then::Stay),
        1 => answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=1\r\nchun\r\n3\r\nked\r\n0\r\nx-t: 1\r\n\r\n",
            Then::Stay,
        ),
        2 => answer("HTTP/1.1 204 No Content\r\n\r\n", Then::Stay),
        3 => answer("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", Then::Stay), // HEAD
        4 => answer("HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Stay),
        5 => answer("HTTP/1.1 200 OK\r\n\r\nuntil the end", Then::Close),
        _ => answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain", Then::Stay),
    })
    .await;
    let router = router_to(&upstream).await;
    let host = router.host("yves");
    let mut client = Conn::connect(router.addr).await;
    for (path, status, body) in [
        ("/length", 200, "hello"),
        ("/chunked", 200, "chunked"),
        ("/nothing", 204, ""),
    ] {
        let got = client.get(&host, path).await.unwrap();
        assert_eq!((got.status.as_u16(), got.body.as_str()), (status, body), "{path}");
        assert_eq!(got.version(), Some(sha('a').as_str()));
    }
    let head = http::Request::head("/head")
        .header("host", &host)
        .body(Conn::body(""))
        .unwrap();
    let got = client.send(head).await.unwrap();
    assert_eq!(got.headers()["content-length"], "9");
    let got = client.get(&host, "/hints").await.unwrap();
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "ok"));
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection carried the first five requests"
    );
    let got = client.get(&host, "/close").await.unwrap();
    assert_eq!(got.body, "until the end");
    let got = client.get(&host, "/again").await.unwrap();
    assert_eq!(got.body, "again");
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        2,
        "a body delimited by the connection's end is not followed by a reuse"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_each_connection_after_answering_costs_no_request() {
    // It even says keep-alive: the router finds out only from the connection's end.
    let upstream = scripted(|_| {
        answer(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            Then::Close,
        )
    })
    .await;
    let router = router_to(&upstream).await;
    let host = router.host("yves");
    let mut client = Conn::connect(router.addr).await;
    for i in 0..40 {
        if i % 2 == 0 {
            // A request that cannot be sent twice: the kept connection is checked before use
            // (its end has arrived by now).
            tokio::time::sleep(Duration::from_millis(5)).await;
            let post = http::Request::post("/")
                .header("host", &host)
                .header("content-length", "0")
                .body(Conn::body(""))
                .unwrap();
            let got = client.send(post).await.unwrap();
            assert_eq!(got.status().as_u16(), 200, "request {i}");
            continue;
        }
        // Right after the previous answer: the end may not be there yet; a GET is sent again
        // on a fresh connection when nothing comes back.
        let got = client.get(&host, "/").await.unwrap();
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, "ok"),
            "request {i}"
        );
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 40);
}

#[tokio::test]
async fn malformed_upstream_answers_are_a_502() {
    let upstream = scripted(|n| match n {
        0 => answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            Then::Close,
        ),
        1 => answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            Then::Close,
        ),
        2 => answer(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            Then::Close,
        ),
        3 => answer("HTTP/1.1 200 OK\r\nbad header\r\n\r\n", Then::Close),
        4 => (
            [
                b"HTTP/1.1 200 OK\r\n".to_vec(),
                b"x-big: ".to_vec(),
                vec![b'a'; 70 * 1024],
                b"\r\n\r\n".to_vec(),
            ]
            .concat(),
            Then::Close,
        ),
        5 => answer("HTTP/1.1 200 OK\r\ncontent-", Then::Close),
        _ => answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Stay),
    })
    .await;
    let router = router_to(&upstream).await;
    let host = router.host("yves");
    for case in [
        "length and encoding",
        "two lengths",
        "unasked 101",
        "bad field",
        "huge head",
        "cut head",
    ] {
        let mut client = Conn::connect(router.addr).await;
        let got = client.get(&host, "/").await.unwrap();
        assert_eq!(got.status.as_u16(), 502, "{case}: {}", got.body);
    }
    let mut client = Conn::connect(router.addr).await;
    assert_eq!(client.get(&host, "/").await.unwrap().body, "ok");
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_fails_the_client_connection() {
    let upstream = scripted(|n| match n {
        0 => answer("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf", Then::Close),
        1 => answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nhalf\r\n",
            Then::Close,
        ),
        2 => answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhalf\r\n",
            Then::Close,
        ),
        _ => answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Stay),
    })
    .await;
    let router = router_to(&upstream).await;
    let host = router.host("yves");
    for case in ["short length", "unfinished chunks", "bad chunk size"] {
        let mut client = Conn::connect(router.addr).await;
        // The head went out; the body cannot be completed: the client sees an error, never a
        // short body taken for a whole one.
        assert!(client.get(&host, "/").await.is_err(), "{case}");
    }
    let mut client = Conn::connect(router.addr).await;
    assert_eq!(client.get(&host, "/").await.unwrap().body, "ok");
}

#[tokio::test]
async fn an_upstream_that_stops_answering_gets_the_request_on_one_kept_connection_and_one_fresh_one() {
    let upstream = scripted(|n| match n {
        0..=4 => answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::SlowStay),
        _ => (Vec::new(), Then::Close), // reads the request, answers nothing, closes
    })
    .await;
    let router = router_to(&upstream).await;
    let host = router.host("yves");
    // Five requests at once leave five kept connections.
    let mut at_once = Vec::new();
    for _ in 0..5 {
        let (addr, host) = (router.addr, host.clone());
        at_once.push(tokio::spawn(async move {
            Conn::connect(addr).await.get(&host, "/").await.unwrap().status
        }));
    }
    for request in at_once {
        assert_eq!(request.await.unwrap().as_u16(), 200);
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 5);
    let mut client = Conn::connect(router.addr).await;
    let got = client.get(&host, "/").await.unwrap();
    assert_eq!(got.status.as_u16(), 502, "{}", got.body);
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        5 + 2,
        "sent on one kept connection, then on one fresh one, not on all five kept ones"
    );
}

#[tokio::test]
async fn an_answer_is_relayed_field_by_field_less_its_hop_by_hop_fields_with_one_length_and_version() {
    let upstream = scripted(|_| {
        answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nX-App-Field: Kept As Sent\r\n\
             Connection: keep-alive, X-Hop\r\nx-hop: secret\r\nKeep-Alive: timeout=5\r\n\
             Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Cutover-Version: not-what-runs\r\n\r\nhello",
            Then::Stay,
        )
    })
    .await;
    let router = router_to(&upstream).await;
    let host = router.host("yves");
    let mut client = TcpStream::connect(router.addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.ends_with(b"hello") {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the answer came in time");
    let text = String::from_utf8_lossy(&seen).into_owned();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "HTTP/1.1 200 OK", "{text}");
    let named = |name: &str| {
        lines
            .iter()
            .filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        named("content-length"),
        ["content-length: 5"],
        "one length: {text}"
    );
    assert_eq!(named("x-app-field"), ["X-App-Field: Kept As Sent"], "{text}");
    assert_eq!(
        named("set-cookie"),
        ["Set-Cookie: a=1", "set-cookie: b=2"],
        "{text}"
    );
    for hop in ["connection", "x-hop", "keep-alive"] {
        assert!(named(hop).is_empty(), "{hop} is the upstream's hop only: {text}");
    }
    assert_eq!(
        named("x-cutover-version"),
        [format!("x-cutover-version: {}", sha('a')).as_str()],
        "{text}"
    );
    assert_eq!(named("date").len(), 1, "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

//! Strict HTTP on public traffic (issue 11, finding 5), with raw requests over a TcpStream so
//! that nothing between the test and the router tidies them up.

use std::net::SocketAddr;
use std::time::Duration;

use cutover_router::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends `request` as it is and reads the answer until the router closes the connection
/// (every request here says `Connection: close`).
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the router answered and closed in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

/// A router with `yves` on version a and `zed` on version b.
async fn two_routes() -> (TestRouter, Upstream, Upstream) {
    let a = upstream(&sha('a')).await;
    let b = upstream(&sha('b')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    r.switch("zed", &sha('b'), &[&b]);
    (r, a, b)
}

#[tokio::test]
async fn two_host_headers_are_refused() {
    let (r, _a, _b) = two_routes().await;
    let answer = raw(
        r.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nHost: {}\r\nConnection: close\r\n\r\n",
            r.host("yves"),
            r.host("zed")
        ),
    )
    .await;
    assert!(status_line(&answer).contains(" 400 "), "{answer}");
    assert!(
        !answer.contains(&sha('a')) && !answer.contains(&sha('b')),
        "no route answered: {answer}"
    );
}

#[tokio::test]
async fn an_absolute_form_target_wins_over_host_and_replaces_it_upstream() {
    let (r, _a, _b) = two_routes().await;
    let answer = raw(
        r.addr,
        &format!(
            "GET http://{}/headers HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            r.host("zed"),
            r.host("yves")
        ),
    )
    .await;
    assert!(status_line(&answer).contains(" 200 "), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("x-cutover-version: {}", sha('b'))),
        "zed (the target's authority) answered: {answer}"
    );
    assert!(
        lower.contains(&format!("\nhost: {}\n", r.host("zed"))),
        "the upstream saw the target's host: {answer}"
    );

    let answer = raw(
        r.addr,
        &format!(
            "GET http://user:pw@{}/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            r.host("zed"),
            r.host("zed")
        ),
    )
    .await;
    assert!(
        status_line(&answer).contains(" 400 "),
        "credentials in the target are refused: {answer}"
    );
}

#[tokio::test]
async fn an_overflowing_chunk_size_is_a_400_not_a_502() {
    let (r, _a, _b) = two_routes().await;
    let answer = raw(
        r.addr,
        &format!(
            "POST /collect HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             FFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
            r.host("yves")
        ),
    )
    .await;
    assert!(status_line(&answer).contains(" 400 "), "{answer}");
    assert!(answer.contains("malformed request body"), "{answer}");

    // A well-formed chunked body still goes through.
    let answer = raw(
        r.addr,
        &format!(
            "POST /collect HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\n",
            r.host("yves")
        ),
    )
    .await;
    assert!(status_line(&answer).contains(" 200 "), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n3"),
        "the upstream read 3 bytes: {answer}"
    );
}

#[tokio::test]
async fn connection_naming_host_does_not_strip_host() {
    let (r, _a, _b) = two_routes().await;
    let answer = raw(
        r.addr,
        &format!(
            "GET /headers HTTP/1.1\r\nHost: {}\r\nConnection: close, Host\r\n\r\n",
            r.host("yves")
        ),
    )
    .await;
    assert!(status_line(&answer).contains(" 200 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("\nhost: {}\n", r.host("yves"))),
        "the upstream got the client's Host: {answer}"
    );
}

#[tokio::test]
async fn an_unknown_host_gets_a_plain_404() {
    let (r, _a, _b) = two_routes().await;
    let answer = raw(
        r.addr,
        "GET / HTTP/1.1\r\nHost: nope.stage.shop.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&answer).contains(" 404 "), "{answer}");
    assert!(
        !answer.contains("yves") && !answer.contains("zed"),
        "no route is named: {answer}"
    );
}

#[tokio::test]
async fn connect_is_refused_and_never_reaches_an_upstream() {
    let (r, _a, _b) = two_routes().await;
    let host = r.host("yves");
    let answer = raw(
        r.addr,
        &format!("CONNECT {host}:80 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(status_line(&answer).contains(" 405 "), "{answer}");
    assert!(!answer.contains(&sha('a')), "an upstream answered: {answer}");
}

//! The router's own HTTP/1.1 path on the plain listener, with raw bytes from the client side:
//! requests sent back to back, hand-over to hyper in the middle of a connection, framing of
//! answers, `Connection: close`, and the client header timeout.

use std::time::{Duration, Instant};

use cutover_router::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Reads from `stream` until `count` complete answers (heads and bodies framed by
/// `content-length` or chunked) are in, and returns their texts.
async fn read_answers(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while answers.len() < count {
            if let Some(len) = complete_answer(&seen) {
                answers.push(String::from_utf8_lossy(&seen[..len]).into_owned());
                seen.drain(..len);
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the router closed after {} answers: {:?}",
                answers.len(),
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the answers came in time");
    answers
}

/// The length of the first complete answer in `bytes`, if it is all there.
fn complete_answer(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304") {
        return Some(head_end);
    }
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return (bytes.len() >= head_end + len).then_some(head_end + len);
    }
    if head.contains("transfer-encoding: chunked") {
        let body = &bytes[head_end..];
        let end = body.windows(5).position(|w| w == b"0\r\n\r\n")? + 5;
        return Some(head_end + end);
    }
    None
}

async fn router_with_one() -> (TestRouter, Upstream) {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    (r, a)
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n")
}

#[tokio::test]
async fn requests_sent_back_to_back_are_answered_in_order_and_a_body_hands_over_to_hyper() {
    let (r, _a) = router_with_one().await;
    let host = r.host("yves");
    let mut stream = TcpStream::connect(r.addr).await.unwrap();
    // Three plain requests in one write, then one with a body (hyper's from here on), then a
    // plain one again: all on one connection, answered in order.
    let batch = format!(
        "{}{}{}POST /echo HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\n\r\nhello{}",
        get(&host, "/one"),
        get(&host, "/two"),
        get(&host, "/three"),
        get(&host, "/four"),
    );
    stream.write_all(batch.as_bytes()).await.unwrap();
    let answers = read_answers(&mut stream, 5).await;
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("x-cutover-version: {}", sha('a'))),
            "{answer}"
        );
        assert!(answer.to_ascii_lowercase().contains("\r\ndate: "), "{answer}");
    }
    // The test upstream echoes a request body and answers with its version otherwise.
    assert!(answers[3].ends_with("hello"), "{}", answers[3]);
    // Split in the middle of a head, a request still gets through.
    let text = get(&host, "/split");
    let (first, second) = text.split_at(10);
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(second.as_bytes()).await.unwrap();
    let answers = read_answers(&mut stream, 1).await;
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
}

#[tokio::test]
async fn connection_close_is_honoured_and_head_gets_no_body() {
    let (r, _a) = router_with_one().await;
    let host = r.host("yves");
    let mut stream = TcpStream::connect(r.addr).await.unwrap();
    let text = format!(
        "HEAD / HTTP/1.1\r\nhost: {host}\r\n\r\nGET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .expect("the router closed the connection after the close request")
        .unwrap();
    let all = String::from_utf8_lossy(&all);
    // The HEAD answer says the length of the body it does not send; the GET's body follows.
    let body = sha('a');
    assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
    assert_eq!(
        all.matches(body.as_str()).count(),
        2 + 1,
        "two version headers, one body: {all}"
    );
    assert!(all.to_ascii_lowercase().contains("connection: close"), "{all}");
    assert!(all.ends_with(body.as_str()), "{all}");
}

#[tokio::test]
async fn a_head_that_does_not_come_in_time_closes_the_connection_and_a_busy_one_stays() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig {
        client_header_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    })
    .await;
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    // A connection that sends a request every 100 ms for three timeouts' worth is never cut.
    let mut busy = TcpStream::connect(r.addr).await.unwrap();
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(1000) {
        busy.write_all(get(&host, "/").as_bytes()).await.unwrap();
        read_answers(&mut busy, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle for more than the timeout, it is closed too (a keep-alive client reconnects).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok_and(|r| r.is_ok()) && rest.is_empty(),
        "an idle connection stays open"
    );
    // Half a head, then nothing: closed after the timeout, not before.
    for (what, bytes) in [
        ("half a head", "GET / HTTP/1.1\r\nhost: "),
        ("an idle connection", ""),
    ] {
        let mut slow = TcpStream::connect(r.addr).await.unwrap();
        slow.write_all(bytes.as_bytes()).await.unwrap();
        let began = Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{what}: the connection stayed open");
        let waited = began.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "{what}: closed after {waited:?}, before the timeout"
        );
    }
}

#[tokio::test]
async fn a_smuggling_attempt_after_plain_requests_meets_hyper_and_ends_the_connection() {
    let (r, _a) = router_with_one().await;
    let host = r.host("yves");
    let mut stream = TcpStream::connect(r.addr).await.unwrap();
    // A plain request, then a request with both framings (hyper takes the connection: the
    // chunked framing wins and the connection ends after the answer), then a third request
    // that would be smuggled in if the two sides disagreed on where the second one ends.
    let text = format!(
        "{}POST /collect HTTP/1.1\r\nhost: {host}\r\ncontent-length: 30\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{}",
        get(&host, "/"),
        get(&host, "/smuggled")
    );
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .expect("closed")
        .unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert_eq!(
        all.matches("HTTP/1.1 ").count(),
        2,
        "the third request is not answered: {all}"
    );
    assert!(all.to_ascii_lowercase().contains("connection: close"), "{all}");
    assert!(all.ends_with("\r\n\r\n0"), "the body was empty (chunked): {all}");
}

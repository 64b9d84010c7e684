//! HTTP/2 frame by frame against the router's own stream layer (`h2srv`), as a hostile or
//! careless client sends them: malformed requests are reset and the connection serves on; a
//! body past its stream's window, its declared length or the connection's window is refused;
//! streams past the limit are refused and streams reset before their answer, past their limit,
//! close the connection; `100 Continue` comes when the body is first read; an oversized head
//! gets a 431; request trailers end a body, malformed ones are refused; an answer stays within
//! the client's window and goes on when its SETTINGS widen it; the graceful shutdown goes in
//! two steps and loses no stream; a connection without a stream (or with half a frame) is
//! closed after the client header timeout, its PINGs notwithstanding; an answer that waits for
//! a window the client never widens is reset after the send timeout, and a client that stops
//! reading the connection loses it; a request body that stops coming gets a 408. The client
//! writes
//! raw frames (HPACK literals of its own) and reads the router's with h2's codec.

use std::time::Duration;

use bytes::Bytes;
use cutover_router::Gate;
use futures_util::StreamExt;
use h2::frame::{Frame, Reason};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::*;
use crate::tls::{TlsRouter, handshake, leaf, tls_router_with};

const HOST: &str = "www.example.com";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// The router's windows (see `h2srv`): a stream's and the connection's.
const STREAM_WINDOW: usize = 1 << 20;
const CONN_WINDOW: usize = 2 << 20;

struct Setup {
    t: TlsRouter,
    ca: crate::tls::Ca,
    _dir: tempfile::TempDir,
    up: Upstream,
}

async fn setup() -> Setup {
    setup_with(cutover_router::RouterConfig::default()).await
}

async fn setup_with(config: cutover_router::RouterConfig) -> Setup {
    let up = upstream(&sha('a')).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::ca();
    let (files, _) = leaf(&ca, &[HOST], dir.path(), "www");
    let t = tls_router_with(vec![files], config).await;
    t.router.switch(
        &key("yves"),
        cutover_router::Backend::new(sha('a'), vec![up.addr]),
    );
    t.router
        .set_edge(cutover_router::EdgeSettings {
            hosts: vec![(HOST.into(), key("yves"))],
            ..Default::default()
        })
        .unwrap();
    Setup { t, ca, _dir: dir, up }
}

/// Requests of the route wait at a hold: nothing reads their bodies, nothing answers them.
fn hold(s: &Setup) {
    s.t.router.set_gate(
        "shop",
        "stage",
        Some(Gate::hold(Duration::from_secs(30), 5, "page")),
    );
}

/// A raw HTTP/2 client: frames written as bytes, the router's read with h2's codec.
struct Raw {
    codec: h2::Codec<TlsStream<TcpStream>, Bytes>,
}

impl Raw {
    async fn connect(s: &Setup) -> Self {
        Self::connect_with(s, &[]).await
    }

    /// With these SETTINGS (6-byte entries: id, value).
    async fn connect_with(s: &Setup, settings: &[(u16, u32)]) -> Self {
        let (tls, _) = handshake(s.t.addr, &s.ca, HOST, b"h2").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut raw = Raw {
            codec: h2::Codec::new(tls),
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let entries: Vec<u8> = settings
            .iter()
            .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
            .collect();
        hello.extend(frame(4, 0, 0, &entries)); // SETTINGS
        raw.send(&hello).await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        let io = self.codec.get_mut();
        io.write_all(bytes).await.unwrap();
        io.flush().await.unwrap();
    }

    /// The router's next frame other than SETTINGS and WINDOW_UPDATE; `None` when it closed.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.codec.next())
                .await
                .expect("the router answers within 10 s");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(Frame::Settings(_) | Frame::WindowUpdate(_))) => {}
                Some(Ok(f)) => return Some(f),
            }
        }
    }

    /// The status of stream `id`'s next HEADERS (frames of other streams are skipped).
    async fn status(&mut self, id: u32) -> u16 {
        loop {
            match self.next().await {
                Some(Frame::Headers(h)) if u32::from(h.stream_id()) == id => {
                    return h.into_parts().0.status.expect(":status").as_u16();
                }
                Some(Frame::Reset(r)) if u32::from(r.stream_id()) == id => {
                    panic!("stream {id} reset: {:?}", r.reason())
                }
                Some(_) => {}
                None => panic!("the router closed before answering stream {id}"),
            }
        }
    }

    /// The reason of stream `id`'s RST_STREAM.
    async fn reset(&mut self, id: u32) -> Reason {
        loop {
            match self.next().await {
                Some(Frame::Reset(r)) if u32::from(r.stream_id()) == id => return r.reason(),
                Some(Frame::Headers(h)) if u32::from(h.stream_id()) == id => {
                    panic!("stream {id} answered: {:?}", h.into_parts().0.status)
                }
                Some(_) => {}
                None => panic!("the router closed before resetting stream {id}"),
            }
        }
    }

    /// The GOAWAY's (last stream, reason).
    async fn go_away(&mut self) -> (u32, Reason) {
        loop {
            match self.next().await {
                Some(Frame::GoAway(g)) => return (u32::from(g.last_stream_id()), g.reason()),
                Some(_) => {}
                None => panic!("the router closed without GOAWAY"),
            }
        }
    }

    /// The connection still answers: a PING comes back.
    async fn alive(&mut self) {
        self.send(&frame(PING, 0, 0, b"stillup!")).await;
        loop {
            match self.next().await {
                Some(Frame::Ping(p)) if p.is_ack() && p.payload() == b"stillup!" => return,
                Some(Frame::GoAway(g)) => panic!("the connection went away: {:?}", g.reason()),
                Some(_) => {}
                None => panic!("the connection closed"),
            }
        }
    }
}

fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `first`.
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields, never indexed, no Huffman.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// HEADERS (and CONTINUATION frames past 16 KiB) for stream `id`.
fn headers(id: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let b = block(fields);
    let chunks: Vec<&[u8]> = b.chunks(16 << 10).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let flags = if last { END_HEADERS } else { 0 };
        if i == 0 {
            let end = if end_stream { END_STREAM } else { 0 };
            out.extend(frame(HEADERS, flags | end, id, chunk));
        } else {
            out.extend(frame(CONTINUATION, flags, id, chunk));
        }
    }
    out
}

fn request<'a>(method: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", HOST),
        (":path", path),
    ]
}

/// `len` bytes of DATA on stream `id` in 16 KiB frames.
fn data(id: u32, len: usize, end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(16 << 10);
        left -= n;
        let flags = if left == 0 && end_stream { END_STREAM } else { 0 };
        out.extend(frame(DATA, flags, id, &vec![b'x'; n]));
    }
    out
}

#[tokio::test]
async fn malformed_requests_are_reset_and_the_connection_serves_on_until_a_protocol_error() {
    let s = setup().await;
    let mut c = Raw::connect(&s).await;
    // No :path.
    let no_path = [(":method", "GET"), (":scheme", "https"), (":authority", HOST)];
    c.send(&headers(1, &no_path, true)).await;
    assert_eq!(c.reset(1).await, Reason::PROTOCOL_ERROR);
    // A connection-specific field.
    let mut with_connection = request("GET", "/");
    with_connection.push(("connection", "close"));
    c.send(&headers(3, &with_connection, true)).await;
    assert_eq!(c.reset(3).await, Reason::PROTOCOL_ERROR);
    // A bodyless request declaring a body; a :protocol without extended CONNECT.
    let mut declared = request("GET", "/");
    declared.push(("content-length", "4"));
    c.send(&headers(5, &declared, true)).await;
    assert_eq!(c.reset(5).await, Reason::PROTOCOL_ERROR);
    let mut protocol = request("CONNECT", "/");
    protocol.push((":protocol", "websocket"));
    c.send(&headers(7, &protocol, true)).await;
    assert_eq!(c.reset(7).await, Reason::PROTOCOL_ERROR);
    // The connection serves on.
    c.send(&headers(9, &request("GET", "/"), true)).await;
    assert_eq!(c.status(9).await, 200);
    // A stream id going back is refused as closed; an even one is a connection error.
    c.send(&headers(5, &request("GET", "/"), true)).await;
    assert_eq!(c.reset(5).await, Reason::STREAM_CLOSED);
    c.send(&headers(12, &request("GET", "/"), true)).await;
    assert_eq!(c.go_away().await, (9, Reason::PROTOCOL_ERROR));
    assert!(c.next().await.is_none(), "the connection closes");
}

#[tokio::test]
async fn a_body_is_held_to_its_length_and_its_streams_window() {
    let s = setup().await;
    let mut c = Raw::connect(&s).await;
    // Longer than declared.
    let mut post = request("POST", "/collect");
    post.push(("content-length", "3"));
    c.send(&headers(1, &post, false)).await;
    c.send(&frame(DATA, END_STREAM, 1, b"abcd")).await;
    assert_eq!(c.reset(1).await, Reason::PROTOCOL_ERROR);
    // Shorter than declared.
    c.send(&headers(3, &post, false)).await;
    c.send(&frame(DATA, END_STREAM, 3, b"ab")).await;
    assert_eq!(c.reset(3).await, Reason::PROTOCOL_ERROR);
    // As declared: through.
    c.send(&headers(5, &post, false)).await;
    c.send(&frame(DATA, END_STREAM, 5, b"abc")).await;
    assert_eq!(c.status(5).await, 200);
    // Nothing reads the next body (held): one byte past the stream's window is refused, the
    // connection goes on.
    hold(&s);
    c.send(&headers(7, &request("POST", "/collect"), false)).await;
    c.send(&data(7, STREAM_WINDOW, false)).await;
    c.alive().await;
    c.send(&frame(DATA, 0, 7, b"y")).await;
    assert_eq!(c.reset(7).await, Reason::FLOW_CONTROL_ERROR);
    c.alive().await;
}

#[tokio::test]
async fn bodies_past_the_connections_window_close_it() {
    let s = setup().await;
    hold(&s);
    let mut c = Raw::connect(&s).await;
    let streams = CONN_WINDOW / STREAM_WINDOW;
    for i in 0..streams {
        let id = 1 + 2 * i as u32;
        c.send(&headers(id, &request("POST", "/collect"), false)).await;
        c.send(&data(id, STREAM_WINDOW, false)).await;
    }
    c.alive().await;
    let id = 1 + 2 * streams as u32;
    c.send(&headers(id, &request("POST", "/collect"), false)).await;
    c.send(&frame(DATA, 0, id, b"z")).await;
    assert_eq!(c.go_away().await.1, Reason::FLOW_CONTROL_ERROR);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_and_rapid_resets_close_the_connection() {
    let s = setup().await;
    hold(&s);
    let mut c = Raw::connect(&s).await;
    let get = request("GET", "/");
    // 200 streams wait at the hold; the 201st is refused.
    let mut bytes = Vec::new();
    for i in 0..200u32 {
        bytes.extend(headers(1 + 2 * i, &get, true));
    }
    c.send(&bytes).await;
    c.alive().await;
    c.send(&headers(401, &get, true)).await;
    assert_eq!(c.reset(401).await, Reason::REFUSED_STREAM);
    // Resetting them frees their places (and their calls).
    let mut resets = Vec::new();
    for i in 0..200u32 {
        resets.extend(frame(RST_STREAM, 0, 1 + 2 * i, &8u32.to_be_bytes())); // CANCEL
    }
    c.send(&resets).await;
    c.alive().await;
    c.send(&headers(403, &get, true)).await;
    c.alive().await;
    // Opening and resetting streams before their answer, over and over: the connection closes.
    let mut id = 405u32;
    let mut burst = Vec::new();
    for _ in 0..300 {
        burst.extend(headers(id, &get, true));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        id += 2;
    }
    c.send(&burst).await;
    assert_eq!(c.go_away().await.1, Reason::ENHANCE_YOUR_CALM);
}

#[tokio::test]
async fn continue_comes_when_the_body_is_first_read_and_a_huge_head_gets_431() {
    let s = setup().await;
    let mut c = Raw::connect(&s).await;
    let mut post = request("POST", "/collect");
    post.push(("expect", "100-continue"));
    c.send(&headers(1, &post, false)).await;
    assert_eq!(c.status(1).await, 100, "asked to go on before any body was sent");
    c.send(&frame(DATA, END_STREAM, 1, b"hello")).await;
    assert_eq!(c.status(1).await, 200);
    let big = "v".repeat(20 << 10);
    let mut huge = request("GET", "/");
    huge.push(("x-big", &big));
    c.send(&headers(3, &huge, true)).await;
    assert_eq!(c.status(3).await, 431);
    c.send(&headers(5, &request("GET", "/"), true)).await;
    assert_eq!(c.status(5).await, 200);
}

#[tokio::test]
async fn the_graceful_shutdown_takes_streams_until_its_ping_comes_back() {
    let s = setup().await;
    let mut c = Raw::connect(&s).await;
    c.send(&headers(1, &request("GET", "/"), true)).await;
    assert_eq!(c.status(1).await, 200);
    let Setup { t, ca, _dir, up } = s;
    let TlsRouter { router, stop, .. } = t;
    drop(stop); // the listener stops
    // First GOAWAY: the highest id, with a PING.
    let (last, reason) = c.go_away().await;
    assert_eq!((last, reason), ((1 << 31) - 1, Reason::NO_ERROR));
    let ping = loop {
        match c.next().await {
            Some(Frame::Ping(p)) if !p.is_ack() => break *p.payload(),
            Some(_) => {}
            None => panic!("closed before the PING"),
        }
    };
    // A stream sent before the client saw the GOAWAY is still served.
    c.send(&headers(3, &request("GET", "/"), true)).await;
    assert_eq!(c.status(3).await, 200);
    c.send(&frame(PING, 0x1, 0, &ping)).await;
    assert_eq!(c.go_away().await, (3, Reason::NO_ERROR));
    assert!(c.next().await.is_none(), "then the connection closes");
    drop((router, ca, up));
}

#[tokio::test]
async fn request_trailers_end_a_body_and_trailers_with_pseudo_fields_are_refused() {
    let s = setup().await;
    let mut c = Raw::connect(&s).await;
    c.send(&headers(1, &request("POST", "/collect"), false)).await;
    c.send(&frame(DATA, 0, 1, b"hello")).await;
    c.send(&headers(1, &[("x-checksum", "5")], true)).await;
    assert_eq!(c.status(1).await, 200);
    let body = loop {
        match c.next().await {
            Some(Frame::Data(d)) if u32::from(d.stream_id()) == 1 => break d.into_payload(),
            Some(_) => {}
            None => panic!("closed before the body"),
        }
    };
    assert_eq!(
        &body[..],
        b"5",
        "the upstream read the 5 bytes before the trailers"
    );
    // Trailers must end the stream and carry no pseudo-field.
    c.send(&headers(3, &request("POST", "/collect"), false)).await;
    c.send(&headers(3, &[(":path", "/other")], true)).await;
    assert_eq!(c.reset(3).await, Reason::PROTOCOL_ERROR);
    c.send(&headers(5, &request("POST", "/collect"), false)).await;
    c.send(&headers(5, &[("x-checksum", "0")], false)).await;
    assert_eq!(c.reset(5).await, Reason::PROTOCOL_ERROR);
    c.alive().await;
}

#[tokio::test]
async fn an_answer_stays_within_the_clients_window_and_goes_on_when_settings_widen_it() {
    let s = setup().await;
    let mut c = Raw::connect(&s).await;
    // The client's streams get 10 bytes of window: the answer (the request's fields, well
    // over 10 bytes) stops after 10.
    c.send(&frame(4, 0, 0, &[0, 4, 0, 0, 0, 10])).await; // SETTINGS_INITIAL_WINDOW_SIZE = 10
    c.send(&headers(1, &request("GET", "/headers"), true)).await;
    assert_eq!(c.status(1).await, 200);
    let mut got = Vec::new();
    let mut ended = false;
    loop {
        match c.next().await {
            Some(Frame::Data(d)) => {
                ended = d.is_end_stream();
                got.extend_from_slice(d.payload());
                if ended {
                    break;
                }
            }
            Some(Frame::Ping(p)) if p.is_ack() => break,
            Some(_) => {}
            None => panic!("closed"),
        }
        if got.len() >= 10 {
            // Nothing more may come: a PING's answer comes first.
            c.send(&frame(PING, 0, 0, b"windowed")).await;
        }
    }
    assert!(!ended, "the answer was longer than the window");
    assert_eq!(got.len(), 10, "exactly the window's worth");
    // A wider initial window applies to the stream in flight: the rest comes.
    c.send(&frame(4, 0, 0, &[0, 4, 0, 0, 0x40, 0])).await; // 16 KiB
    loop {
        match c.next().await {
            Some(Frame::Data(d)) => {
                got.extend_from_slice(d.payload());
                if d.is_end_stream() {
                    break;
                }
            }
            Some(_) => {}
            None => panic!("closed before the answer's end"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
}

#[tokio::test]
async fn a_connection_without_a_stream_is_closed_after_the_header_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let s = setup_with(cutover_router::RouterConfig {
        client_header_timeout: TIMEOUT,
        ..Default::default()
    })
    .await;
    let closed_after = |began: std::time::Instant, what: &str| {
        let waited = began.elapsed();
        assert!(
            waited >= TIMEOUT && waited < TIMEOUT * 5,
            "{what}: closed after {waited:?}"
        );
    };
    // Never a stream, only PINGs every 100 ms: they do not keep it open.
    let began = std::time::Instant::now();
    let mut c = Raw::connect(&s).await;
    let gone = loop {
        c.send(&frame(PING, 0, 0, b"pingping")).await;
        let next = tokio::time::timeout(Duration::from_millis(100), c.next()).await;
        match next {
            Ok(Some(Frame::GoAway(g))) => break (u32::from(g.last_stream_id()), g.reason()),
            Ok(Some(Frame::Ping(_))) | Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
        assert!(
            began.elapsed() < TIMEOUT * 5,
            "still open after {:?}",
            began.elapsed()
        );
    };
    assert_eq!(gone, (0, Reason::NO_ERROR));
    closed_after(began, "PINGs only");
    assert!(c.next().await.is_none(), "then the connection closes");

    // A stream held longer than the timeout keeps its connection; once the client cancels it,
    // the timeout counts from then.
    hold(&s);
    let mut c = Raw::connect(&s).await;
    c.send(&headers(1, &request("GET", "/"), true)).await;
    // (Two and a half timeouts: the cancel comes between two checks of the idle timer.)
    tokio::time::sleep(TIMEOUT * 5 / 2).await;
    c.alive().await;
    c.send(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes())).await; // CANCEL
    let began = std::time::Instant::now();
    assert_eq!(c.go_away().await, (1, Reason::NO_ERROR));
    closed_after(began, "after its stream");
    assert!(c.next().await.is_none(), "then the connection closes");

    // Half a frame, then nothing.
    let began = std::time::Instant::now();
    let mut c = Raw::connect(&s).await;
    c.send(&frame(HEADERS, END_HEADERS, 1, &[0; 40])[..20]).await;
    assert_eq!(c.go_away().await, (0, Reason::NO_ERROR));
    closed_after(began, "half a frame");
}

#[tokio::test]
async fn an_answer_the_client_gives_no_window_is_reset_and_a_client_that_stops_reading_is_cut() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let s = setup_with(cutover_router::RouterConfig {
        client_send_timeout: TIMEOUT,
        ..Default::default()
    })
    .await;
    // A stream window of 0 that never widens: the answer's head comes, its body cannot.
    let mut c = Raw::connect_with(&s, &[(0x4, 0)]).await;
    let began = std::time::Instant::now();
    c.send(&headers(1, &request("GET", "/endless"), true)).await;
    assert_eq!(c.status(1).await, 200);
    assert_eq!(c.reset(1).await, Reason::CANCEL);
    let waited = began.elapsed();
    assert!(
        waited >= TIMEOUT && waited < TIMEOUT * 10,
        "reset after {waited:?}"
    );
    wait_until(|| s.up.ended.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
    c.alive().await; // the connection serves on
    c.send(&headers(3, &request("GET", "/"), true)).await;
    assert_eq!(c.status(3).await, 200);

    // Windows as wide as they go, and then the client reads nothing more: the router's writes
    // wait, and the connection ends after the send timeout.
    let mut c = Raw::connect_with(&s, &[(0x4, (1 << 31) - 1)]).await;
    let mut grow = frame(8, 0, 0, &((1u32 << 31) - 1 - 65_535).to_be_bytes()); // WINDOW_UPDATE
    grow.extend(headers(1, &request("GET", "/endless"), true));
    c.send(&grow).await;
    assert_eq!(c.status(1).await, 200);
    wait_until(|| s.up.ended.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
    // What the router wrote before it gave up is still in the socket; then the end.
    let rest = tokio::time::timeout(STEP, async {
        while let Some(f) = c.next().await {
            assert!(matches!(f, Frame::Data(_)), "{f:?}");
        }
    })
    .await;
    assert!(rest.is_ok(), "the connection stayed open");
}

#[tokio::test]
async fn a_request_body_that_stops_coming_gets_408_and_the_connection_serves_on() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let s = setup_with(cutover_router::RouterConfig {
        client_body_timeout: TIMEOUT,
        ..Default::default()
    })
    .await;
    let mut c = Raw::connect(&s).await;
    let mut post = request("POST", "/collect");
    post.push(("content-length", "10"));
    let mut sent = headers(1, &post, false);
    sent.extend(data(1, 5, false));
    c.send(&sent).await;
    let began = std::time::Instant::now();
    assert_eq!(c.status(1).await, 408);
    let waited = began.elapsed();
    assert!(waited >= TIMEOUT && waited < STEP, "answered after {waited:?}");
    c.send(&headers(3, &request("GET", "/"), true)).await;
    assert_eq!(c.status(3).await, 200);
}

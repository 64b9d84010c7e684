//! The router's own HTTP/1.1 client for the common request: no body, no upgrade.
//!
//! Why not hyper-util's client for these too: it hands every request to a connection task
//! through a channel and back through another (two task wake-ups per request), and its pool
//! spawns a task per checkout to watch the idle connection; measured with `router_overhead`,
//! that client was about a sixth of the router's user time. Here the request head is written and
//! the response head read inside the request's own task, and the response body is read by the
//! client connection's task as it streams it out ([`FastBody`]); a finished connection goes back
//! to a per-thread [`Pool`] as soon as its body's last byte is read.
//!
//! What it keeps of the client it replaces, for these requests: connect failures (refused,
//! unreachable, timed out) are [`Failure::Connect`], so the caller tries the next upstream and
//! marks the suspect; no response head in time is [`Failure::Timeout`]; every other fault is
//! [`Failure::Upstream`] (a 502). A kept connection the upstream closed while it was idle (an
//! application's own keep-alive timeout) costs no request: one that ends or fails before a
//! single byte of the answer came is replaced by a fresh connection when the request's method
//! is idempotent (RFC 9110 section 9.2.2); for the others (a `POST` may have been acted on) the
//! kept connection is checked before use instead (a non-blocking read sees the end), a system
//! call the common request does without. Responses are framed
//! strictly (RFC 9112 section 6.3): no body for `HEAD`, 204 and 304; `Transfer-Encoding` with
//! `Content-Length` is refused, as are differing lengths, a head over [`MAX_HEAD`] or more than
//! [`MAX_HEADERS`] fields; a body without length runs to the connection's end and that
//! connection is not reused. 1xx answers (103 Early Hints) are skipped; a 101 nobody asked for
//! is refused.
//!
//! Requests with a body or an upgrade still go through hyper-util's client (`proxy`): a body may
//! need streaming both ways at once and its retry depends on whether it was read.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::chunked::{Chunk, Step};
use crate::head::RawHead;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head accepted from an upstream.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted in a response head.
pub(crate) const MAX_HEADERS: usize = 128;

/// Errors of a response body (the body's error type).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response from an upstream.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connecting failed: nothing was sent, another upstream may take the request.
    Connect(io::Error),
    /// No response head within the response-header timeout.
    Timeout,
    /// Anything else (a reset, a malformed answer): the request may have been acted on.
    Upstream(String),
}

struct Idle {
    stream: TcpStream,
    /// The connection's read buffer, kept with it (allocating one per request cost more than
    /// the rest of the pool).
    buf: BytesMut,
    since: Instant,
}

/// The read buffer's size: a response head and a small body fit in one read.
const BUF: usize = 8 * 1024;

/// Idle keep-alive connections to upstreams, most recently used first. One per serving thread
/// (see `threads`): a connection is registered with the runtime it was opened on.
pub(crate) struct Pool {
    idle: Mutex<Idles>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Idles {
    by_addr: HashMap<SocketAddr, Vec<Idle>, foldhash::fast::RandomState>,
    /// When expired connections are dropped next (a pass over all of them, not per request).
    sweep_at: Option<Instant>,
}

impl Pool {
    pub(crate) fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        Self {
            idle: Mutex::new(Idles {
                by_addr: HashMap::default(),
                sweep_at: None,
            }),
            idle_timeout,
            max_idle,
        }
    }

    /// The most recently returned connection to `addr` that is not expired at `now`, with its
    /// (empty) read buffer. `check_open`: and that the upstream has not closed, at the cost of
    /// a read (for a request that cannot be sent again if the connection turns out closed).
    fn take(&self, addr: SocketAddr, now: Instant, check_open: bool) -> Option<(TcpStream, BytesMut)> {
        loop {
            let idle = crate::body::lock(&self.idle).by_addr.get_mut(&addr)?.pop()?;
            let fresh = now.saturating_duration_since(idle.since) < self.idle_timeout;
            if fresh && (!check_open || still_open(&idle.stream)) {
                return Some((idle.stream, idle.buf));
            }
        }
    }

    /// Keeps `stream` for the next request to `addr`, idle since `now` (the start of the
    /// request it carried: no clock read per request, and an idle time counted generously);
    /// expired ones go every half idle timeout (an address no longer used would otherwise keep
    /// its connections until the thread ends; `take` skips them meanwhile).
    fn put(&self, addr: SocketAddr, stream: TcpStream, buf: BytesMut, now: Instant) {
        let mut idle = crate::body::lock(&self.idle);
        let timeout = self.idle_timeout;
        if idle.sweep_at.is_none_or(|at| now >= at) {
            idle.sweep_at = Some(now + timeout / 2);
            idle.by_addr.retain(|_, conns| {
                conns.retain(|c| now.saturating_duration_since(c.since) < timeout);
                !conns.is_empty()
            });
        }
        let conns = idle.by_addr.entry(addr).or_default();
        if conns.len() < self.max_idle {
            conns.push(Idle {
                stream,
                buf,
                since: now,
            });
        }
    }

    /// Idle connections kept (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        crate::body::lock(&self.idle).by_addr.values().map(Vec::len).sum()
    }
}

/// Whether an idle connection may carry a request: the upstream has neither closed it nor sent
/// anything unasked (a read that would block says so; the reactor's readiness makes it free
/// when nothing arrived).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Writes the head of a bodyless request: `host` is written only when `headers` has none (an
/// HTTP/1.0 client may send none; hyper's client names the upstream then too).
pub(crate) fn request_head(method: &Method, target: &str, host: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(256 + headers.len() * 32);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(host.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// An upstream's answer: its status, its fields (hop-by-hop ones removed) and its body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) head: RawHead,
    pub(crate) body: FastBody,
}

/// How the rest of a request is sent.
pub(crate) struct Call<'a> {
    pub(crate) pool: &'a Arc<Pool>,
    pub(crate) addr: SocketAddr,
    pub(crate) connect_timeout: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) method: &'a Method,
    /// When the request began.
    pub(crate) now: Instant,
}

/// Sends a bodyless request's `head` to `call.addr` and reads the response head.
pub(crate) async fn send(call: Call<'_>, head: &[u8]) -> Result<Answer, Failure> {
    let exchange = async {
        // A kept connection first (a stale one is dropped), then a fresh one. One kept connection
        // that fails is enough: an upstream that closes every request unanswered must not have
        // the request sent on each of its kept connections in turn.
        let mut may_reuse = true;
        loop {
            // A request that may be sent again skips the check: if the kept connection turns out
            // closed, it goes to a fresh one (below).
            let check_open = !call.method.is_idempotent();
            let kept = match may_reuse {
                true => call.pool.take(call.addr, call.now, check_open),
                false => None,
            };
            let (mut stream, mut buf, reused) = match kept {
                Some((s, buf)) => (s, buf, true),
                None => {
                    // Boxed: rare (a kept connection is the rule), and large.
                    let s = Box::pin(connect(call.addr, call.connect_timeout)).await?;
                    (s, BytesMut::with_capacity(BUF), false)
                }
            };
            may_reuse = false;
            if let Err(e) = stream.write_all(head).await {
                if reused {
                    continue; // closed while idle: nothing reached an application
                }
                return Err(Failure::Upstream(format!("writing the request failed: {e}")));
            }
            match read_head(&mut stream, &mut buf, call.method).await {
                Ok(parsed) => return Ok(FastBody::respond(parsed, stream, buf, &call)),
                // Nothing came back on a kept connection: the upstream closed it while it was idle.
                Err(HeadError::ClosedBeforeAnswer | HeadError::ResetBeforeAnswer(_))
                    if reused && call.method.is_idempotent() => {}
                Err(e) => return Err(Failure::Upstream(e.to_string())),
            }
        }
    };
    // The answer is often there at the first look (an upstream on the same CPU runs as soon
    // as the request is written): only an exchange that has to wait gets a timer.
    let mut exchange = std::pin::pin!(exchange);
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(exchange.as_mut().poll(cx))).await {
        return done;
    }
    // From now, not from the request's start: a request held at a gate does not lose its time.
    tokio::time::timeout(call.header_timeout, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Connect(e)),
        Err(_) => {
            return Err(Failure::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?}"),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("the upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("the upstream closed the connection in the middle of its response head")]
    ClosedInHead,
    #[error("reading the response failed: {0}")]
    Io(#[from] io::Error),
    #[error("the connection failed before the upstream answered: {0}")]
    ResetBeforeAnswer(io::Error),
    #[error("the response head is malformed: {0}")]
    Parse(#[from] httparse::Error),
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("upstream switched protocols unasked")]
    UnaskedSwitch,
    #[error("the response has a field that is not a valid header")]
    BadField,
    #[error("the response has both Transfer-Encoding and Content-Length")]
    LengthAndEncoding,
    #[error("the response has an invalid or conflicting Content-Length")]
    BadLength,
}

/// A parsed response head and how its body is framed.
struct Parsed {
    status: StatusCode,
    head: RawHead,
    framing: Framing,
    keep_alive: bool,
}

async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut, method: &Method) -> Result<Parsed, HeadError> {
    loop {
        if !buf.is_empty() {
            if let Some(parsed) = take_head(buf, method)? {
                return Ok(parsed);
            }
            if buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
        }
        let had = buf.len();
        if buf.capacity() - had < 1024 {
            buf.reserve(BUF);
        }
        match stream.read_buf(buf).await {
            Ok(0) if had == 0 => return Err(HeadError::ClosedBeforeAnswer),
            Ok(0) => return Err(HeadError::ClosedInHead),
            Ok(_) => {}
            Err(e) if had == 0 => return Err(HeadError::ResetBeforeAnswer(e)),
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Parses the response head at the front of `buf` and takes it off (informational answers
/// are skipped); `Ok(None)`: not complete yet. The fields stay ranges of the head's bytes.
fn take_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, HeadError> {
    loop {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        )?;
        let httparse::Status::Complete(len) = status else {
            return Ok(None);
        };
        let code = response.code.unwrap_or(0);
        if code == 101 {
            return Err(HeadError::UnaskedSwitch);
        }
        if (100..200).contains(&code) {
            buf.advance(len); // informational: the final answer follows
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| HeadError::BadField)?;
        let http11 = response.version == Some(1);
        let mut list = Vec::with_capacity(response.headers.len());
        for field in response.headers.iter() {
            // httparse checked the name is a token; the value must suit the `http` types too.
            if !crate::head::valid_value(field.value) {
                return Err(HeadError::BadField);
            }
            list.push(RawHead::field(buf, field.name.as_bytes(), field.value));
        }
        let head = RawHead::new(buf.split_to(len).freeze(), list);
        return frame(status, http11, head, method).map(Some);
    }
}

/// How the body of an answer with this `head` is framed, and whether its connection may
/// carry another request (RFC 9112 sections 6.3 and 9.3).
fn frame(status: StatusCode, http11: bool, head: RawHead, method: &Method) -> Result<Parsed, HeadError> {
    let mut keep_alive = if http11 {
        !head.lists("connection", "close")
    } else {
        head.lists("connection", "keep-alive")
    };
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if head.has("transfer-encoding") {
        if head.has("content-length") {
            return Err(HeadError::LengthAndEncoding);
        }
        let last = head
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .last()
            .unwrap_or_default();
        if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else if head.has("content-length") {
        Framing::Length(content_length(&head)?)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Parsed {
        status,
        head,
        framing,
        keep_alive,
    })
}

/// The one length all `Content-Length` values (fields and comma-separated lists) agree on.
fn content_length(head: &RawHead) -> Result<u64, HeadError> {
    let mut length = None;
    for value in head.get_all("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or(HeadError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadLength);
            }
            length = Some(n);
        }
    }
    length.ok_or(HeadError::BadLength)
}

/// How a response body ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, decoding at this point.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    /// Read to its end.
    Done,
}

/// A response body read straight from its upstream connection, which goes back to the pool
/// the moment the body's last byte is read (before the client has it).
pub(crate) struct FastBody {
    stream: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
    addr: SocketAddr,
    began: Instant,
}

impl FastBody {
    fn respond(parsed: Parsed, stream: TcpStream, buf: BytesMut, call: &Call<'_>) -> Answer {
        let mut body = FastBody {
            stream: Some(stream),
            buf,
            framing: parsed.framing,
            keep_alive: parsed.keep_alive,
            pool: Arc::clone(call.pool),
            addr: call.addr,
            began: call.now,
        };
        if body.framing == Framing::Length(0) {
            body.finish();
        }
        let mut head = parsed.head;
        head.strip_hop_by_hop();
        Answer {
            status: parsed.status,
            head,
            body,
        }
    }

    /// The body is read: its connection goes back to the pool if nothing else came on it.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            let buf = std::mem::take(&mut self.buf);
            self.pool.put(self.addr, stream, buf, self.began);
        }
    }

    /// Reads more of the connection into `buf`; `Ok(0)` is its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(stream) = &self.stream else {
            return Poll::Ready(Ok(0));
        };
        self.buf.reserve(BUF);
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

impl Body for FastBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) if !this.buf.is_empty() => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(this.buf.len());
                    *left -= n as u64;
                    let data = this.buf.split_to(n).freeze();
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(chunk) => match chunk.step(&mut this.buf) {
                    Ok(Step::Data(data)) => {
                        // The terminating chunk may already be here: end the body with this frame.
                        if let Framing::Chunked(chunk) = &mut this.framing
                            && chunk.at_end(&mut this.buf)
                        {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(e) => {
                        this.stream = None;
                        this.framing = Framing::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                Framing::Close if !this.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
                }
                Framing::Length(_) | Framing::Close => {}
            }
            let read = ready!(this.poll_fill(cx));
            match read {
                Ok(0) if this.framing == Framing::Close => {
                    this.stream = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.stream = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(
                        "the upstream closed the connection before the body's end".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.stream = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn head(text: &str, method: &Method) -> Result<Parsed, HeadError> {
        let mut buf = BytesMut::from(text);
        let parsed = take_head(&mut buf, method).map(|p| p.expect("a complete head"));
        if parsed.is_ok() {
            assert!(buf.is_empty(), "the head is taken off the buffer");
        }
        parsed
    }

    #[test]
    fn responses_are_framed_as_rfc_9112_says() {
        let get = Method::GET;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                &get,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                &get,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                &get,
                Framing::Chunked(Chunk::Size),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                &get,
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", &get, Framing::Close, false),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                &get,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
                &get,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n",
                &get,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                &Method::HEAD,
                Framing::Length(0),
                true,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", &get, Framing::Length(0), true),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                &get,
                Framing::Length(0),
                true,
            ),
        ];
        for (text, method, framing, keep_alive) in cases {
            let parsed = head(text, method).unwrap();
            assert_eq!(
                (parsed.framing, parsed.keep_alive),
                (framing, keep_alive),
                "{text:?}"
            );
        }
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(head(bad, &get).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_request_head_names_the_upstream_only_without_a_host() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        let text = request_head(&Method::GET, "/p?q=1", "127.0.0.1:9", &headers);
        assert_eq!(
            text,
            b"GET /p?q=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-a: 1\r\n\r\n"
        );
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        let text = request_head(&Method::GET, "/", "127.0.0.1:9", &headers);
        assert_eq!(text, b"GET / HTTP/1.1\r\nx-a: 1\r\nhost: shop.example\r\n\r\n");
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(Duration::from_secs(60), 8);
        let closed = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        pool.put(addr, closed, BytesMut::new(), Instant::now());
        drop(server);
        let open = TcpStream::connect(addr).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        // The end reaches the connection through the reactor: let it run.
        tokio::time::sleep(Duration::from_millis(100)).await;
        pool.put(addr, open, BytesMut::new(), Instant::now());
        assert_eq!(pool.idle_count(), 2);
        assert!(
            pool.take(addr, Instant::now(), true).is_some(),
            "the open connection is handed out"
        );
        assert!(
            pool.take(addr, Instant::now(), true).is_none(),
            "the closed one is not"
        );
        assert_eq!(pool.idle_count(), 0);
        // Nor is one older than the idle timeout.
        let pool = Pool::new(Duration::from_millis(10), 8);
        let open = TcpStream::connect(addr).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        pool.put(addr, open, BytesMut::new(), Instant::now());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(pool.take(addr, Instant::now(), false).is_none());
    }

    #[tokio::test]
    async fn expired_connections_of_an_address_no_longer_used_go_at_the_next_sweep() {
        let (a, b) = (
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let pool = Pool::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        pool.put(
            addr_a,
            TcpStream::connect(addr_a).await.unwrap(),
            BytesMut::new(),
            t0,
        );
        // Before the next sweep (half the idle timeout later): nothing is swept.
        let early = t0 + Duration::from_secs(4);
        pool.put(
            addr_b,
            TcpStream::connect(addr_b).await.unwrap(),
            BytesMut::new(),
            early,
        );
        assert_eq!(pool.idle_count(), 2);
        // Past it, and past `addr_a`'s idle timeout: its connection goes, the fresh ones stay.
        let late = t0 + Duration::from_secs(11);
        pool.put(
            addr_b,
            TcpStream::connect(addr_b).await.unwrap(),
            BytesMut::new(),
            late,
        );
        assert_eq!(pool.idle_count(), 2, "addr_a's connection was swept");
        assert!(pool.take(addr_a, late, false).is_none());
    }
}

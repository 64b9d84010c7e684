//! The router's own HTTP/1.1 server path for the plain listener: bodyless HTTP/1.1 requests in
//! origin form are read, answered and written here; the first request that is anything else
//! (a body, `Upgrade`, `Expect`, `CONNECT`, HTTP/1.0, an absolute-form target, a head httparse
//! or the `http` types refuse, a head over [`MAX_HEAD`]) hands the connection to hyper, with
//! the bytes already read in front, for the rest of its life ([`crate::serve`]). So hyper keeps
//! judging everything unusual (its 400s and 431s, chunked request bodies, smuggling attempts),
//! and the common request skips its dispatcher, header maps on both sides and its encoder: its
//! fields stay ranges of the bytes read (`head`) and go upstream, and the answer's come back,
//! through `plain`. Measured with `router_overhead` (bench/README.md).
//!
//! What hyper did for these requests and this path does too: one `Host` is left to `forward`
//! (two are a 400 there, as before); a request head must arrive within the client header
//! timeout, counted from when the router starts waiting for it (an idle keep-alive connection
//! is closed then); requests sent back to back on one connection are answered in order; the
//! answer is framed by its `Content-Length`, else by its body's known size, else chunked; no
//! body after `HEAD`, 1xx, 204 or 304; a `Date` is added when the answer has none; the client's
//! `Connection: close` is honoured; a body that fails or ends short closes the connection. On
//! the listener's stop: a connection with a request on its way (bytes of a head read) is served
//! and closed; an idle one gets the last call ([`crate::serve::LAST_CALL`]) for a request, which
//! is answered with `Connection: close`, and is closed otherwise.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::RouterBody;
use crate::dispatch::Sent;
use crate::head::{self, RawHead};
use crate::plain::{self, PlainRequest, Reply};
use crate::serve::Conn;

/// The largest request head read here; a larger one goes to hyper (which allows more).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The most header fields read here (hyper's default limit too).
const MAX_FIELDS: usize = 100;
/// Read buffer size of a client connection.
const BUF: usize = 8 * 1024;
/// Response bytes gathered before a write.
const FLUSH_AT: usize = 64 * 1024;

/// What reading the next request gave.
// Returned once per request and taken apart at once: boxing the request would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A plain request; `close`: answer it with `Connection: close` and close.
    Request(PlainRequest, bool),
    /// Not for this path: hyper takes the connection, these bytes first.
    HandOff,
    /// The client left, the head timed out, or the last call passed.
    Close,
}

/// Serves one plain client connection (see the module documentation).
pub(crate) async fn serve_conn(conn: Conn) {
    let (conn, stream) = conn.into_stream(None);
    serve_stream(conn, stream).await;
}

/// A client connection's settings, whatever carries its bytes.
pub(crate) struct Stream {
    pub(crate) ctx: Arc<crate::proxy::ConnCtx>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) requests: Arc<crate::serve::Requests>,
    pub(crate) last_call: Duration,
    pub(crate) header_timeout: Duration,
    /// How long a write may wait for the client (the connection's stream enforces it; over
    /// HTTP/2 also a stream's wait for window).
    pub(crate) send_timeout: Duration,
    /// `Strict-Transport-Security` for every answer (an HTTPS listener's HSTS).
    pub(crate) hsts: Option<HeaderValue>,
}

/// Serves an HTTP/1.1 connection over `stream` (plain TCP, or TLS after its handshake).
pub(crate) async fn serve_stream<IO>(conn: Stream, mut stream: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(BUF);
    let mut out = Vec::with_capacity(1024);
    let mut stopping = false;
    // One timer for the connection's life, moved only when it fires early (see `next_request`).
    let timer = tokio::time::sleep(conn.header_timeout);
    tokio::pin!(timer);
    // The listener's stop, watched by one registration for the connection's life.
    let mut stop = conn.stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let next = next_request(
            &mut stream,
            &mut buf,
            (stopped.as_mut(), &mut stopping),
            timer.as_mut(),
            conn.last_call,
            conn.header_timeout,
        )
        .await;
        let (req, close) = match next {
            Next::Request(req, close) => (req, close),
            Next::Close => return,
            Next::HandOff => {
                let io = Prefixed {
                    prefix: buf.split().freeze(),
                    io: stream,
                };
                crate::serve::serve_hyper(conn, io).await;
                return;
            }
        };
        let head_request = req.method == Method::HEAD;
        let reply = plain::handle(&conn.ctx, req).await;
        // A stop while the request ran: this answer is the connection's last.
        let close = close || stopping || *conn.stop.borrow();
        let hsts = conn.hsts.as_ref();
        match write_response(&mut stream, &mut out, reply, (head_request, hsts), close).await {
            Ok(true) if !close => {}
            Ok(true) => {
                // The last answer is complete: end the stream cleanly (TLS says close_notify).
                let _ = tokio::time::timeout(conn.last_call, stream.shutdown()).await;
                return;
            }
            _ => return,
        }
    }
}

/// Reads until a complete request head is buffered and returns it, or says why not.
///
/// Bytes that are there already are read at once, with neither timer nor stop signal polled
/// (a client under load sends its next request as soon as it has its answer). Only a wait
/// reads the clock: the head's deadline counts from then. `timer` is the connection's: its
/// deadline only ever moves later, when it fires before the current one (a request's head
/// deadline is later than the previous request's), or earlier for the last call. So a request
/// costs at most a clock read, not a timer registration. `stopped` is the connection's stop
/// signal, made once per connection and done once the listener stops.
async fn next_request(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    (mut stopped, stopping): (Pin<&mut impl Future<Output = ()>>, &mut bool),
    mut timer: Pin<&mut tokio::time::Sleep>,
    last_call: Duration,
    header_timeout: Duration,
) -> Next {
    let mut deadline: Option<Instant> = None;
    let mut last_call_ends: Option<Instant> = None;
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Plain(req, close) => return Next::Request(req, close || *stopping),
                Parsed::Other => return Next::HandOff,
                Parsed::Partial if buf.len() > MAX_HEAD => return Next::HandOff,
                Parsed::Partial => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(BUF);
        }
        let ready = {
            let mut read = std::pin::pin!(stream.read_buf(buf));
            poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
        };
        match ready {
            Poll::Ready(Ok(0) | Err(_)) => return Next::Close,
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending => {}
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + header_timeout);
        // Nothing of a request yet: the stop (and then the last call) may end the connection.
        let idle = buf.is_empty();
        let until = match last_call_ends {
            Some(end) if idle => end.min(deadline),
            _ => deadline,
        };
        if timer.deadline() > until {
            timer.as_mut().reset(until);
        }
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            },
            () = stopped.as_mut(), if idle && !*stopping => {
                *stopping = true;
                last_call_ends = Some(Instant::now() + last_call);
            }
            () = timer.as_mut() => {
                if Instant::now() >= until {
                    return Next::Close;
                }
                timer.as_mut().reset(until); // an earlier request's deadline
            }
        }
    }
}

#[allow(clippy::large_enum_variant)] // as `Next`
enum Parsed {
    Plain(PlainRequest, bool),
    Partial,
    Other,
}

/// Parses the head at the front of `buf`; a plain request's head is taken off it. Its fields
/// stay ranges of the head's bytes (`head`).
fn parse(buf: &mut BytesMut) -> Parsed {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == Method::CONNECT || !path.starts_with('/') {
        return Parsed::Other;
    }
    let path_range = {
        let at = path.as_ptr() as usize - buf.as_ptr() as usize;
        at..at + path.len()
    };
    let mut list = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("transfer-encoding")
            || is("upgrade")
            || is("expect")
            || (is("content-length") && field.value != b"0")
            // (httparse checked the name is a token; the value must suit the `http` types too)
            || !head::valid_value(field.value)
        {
            return Parsed::Other;
        }
        list.push(RawHead::field(buf, name, field.value));
    }
    let bytes = buf.split_to(len).freeze();
    let Ok(target) = PathAndQuery::from_maybe_shared(bytes.slice(path_range)) else {
        // Not valid for the `http` types after all: this head goes to hyper as it came.
        let mut whole = BytesMut::from(&bytes[..]);
        whole.extend_from_slice(buf);
        *buf = whole;
        return Parsed::Other;
    };
    let head = RawHead::new(bytes, list);
    let close = head.lists("connection", "close");
    Parsed::Plain(PlainRequest { method, target, head }, close)
}

/// How an answer's body is written.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes `reply`; `Ok(true)`: the connection may carry the next request.
async fn write_response(
    stream: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    reply: Reply,
    (head_request, hsts): (bool, Option<&HeaderValue>),
    close: bool,
) -> io::Result<bool> {
    out.clear();
    let (framing, mut body) = match reply {
        Reply::Relayed(sent) => {
            let framing = relayed_head(out, &sent, (head_request, hsts), close);
            (framing, sent.body)
        }
        Reply::Answer(resp) => {
            let (parts, body) = resp.into_parts();
            let framing = answer_head(out, &parts, &body, (head_request, hsts), close);
            (framing, body)
        }
    };
    let mut sent = 0u64;
    if !matches!(framing, Framing::None) {
        while !body.is_end_stream() {
            // Whatever is ready goes out in one write; a body that waits gets the head sent first.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    flush(stream, out).await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers: not relayed
                },
            };
            sent += data.len() as u64;
            match framing {
                Framing::Length(n) if sent > n => {
                    return Err(io::Error::other("the body is longer than its Content-Length"));
                }
                Framing::Chunked if !data.is_empty() => {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    push(stream, out, data).await?;
                    out.extend_from_slice(b"\r\n");
                }
                _ => push(stream, out, data).await?,
            }
            if out.len() >= FLUSH_AT {
                flush(stream, out).await?;
            }
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if sent != n => {
            flush(stream, out).await?;
            return Ok(false); // ended short: the client must not wait for the rest
        }
        _ => {}
    }
    drop(body); // the access-log line is written and the request leaves its generation
    flush(stream, out).await?;
    Ok(true)
}

/// Writes the status line; the framing an answer with this status gets, given its known size.
fn status_line(out: &mut Vec<u8>, status: StatusCode, head_request: bool, size: Option<u64>) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if head_request || status.is_informational() || status.as_u16() == 204 || status.as_u16() == 304 {
        Framing::None
    } else if let Some(n) = size {
        Framing::Length(n)
    } else {
        Framing::Chunked
    }
}

/// Writes `content-length: n`.
fn content_length(out: &mut Vec<u8>, n: u64) {
    head::put_field(out, b"content-length", itoa::Buffer::new().format(n).as_bytes());
}

/// Writes the fields every answer ends with: HSTS, `Date`, `Connection: close`, the blank line.
fn last_fields(out: &mut Vec<u8>, hsts: Option<&HeaderValue>, has_date: bool, close: bool) {
    if let Some(hsts) = hsts {
        head::put_field(out, b"strict-transport-security", hsts.as_bytes());
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of an upstream's answer, its fields as they came (less an application's HSTS when
/// the listener has its own, and any `X-Cutover-Version` of its own); its length is the one
/// its framing gave (`upstream`), written once by the router.
fn relayed_head(
    out: &mut Vec<u8>,
    sent: &Sent,
    (head_request, hsts): (bool, Option<&HeaderValue>),
    close: bool,
) -> Framing {
    let framing = status_line(out, sent.status, head_request, sent.body.size_hint().exact());
    let mut has_date = false;
    for (name, value) in sent.head.iter() {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        // (only the router says which version answered)
        if (hsts.is_some() && is("strict-transport-security"))
            || (!matches!(framing, Framing::None) && is("content-length"))
            || is("x-cutover-version")
        {
            continue;
        }
        has_date = has_date || is("date");
        head::put_field(out, name, value);
    }
    match framing {
        Framing::Length(n) => {
            content_length(out, n);
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    head::put_field(out, b"x-cutover-version", sent.version.as_bytes());
    last_fields(out, hsts, has_date, close);
    framing
}

/// The head of an answer built as a `Response`: framed by its `Content-Length`, else its
/// body's known size, else chunked.
fn answer_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &RouterBody,
    (head_request, hsts): (bool, Option<&HeaderValue>),
    close: bool,
) -> Framing {
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let framing = status_line(
        out,
        parts.status,
        head_request,
        length.or(body.size_hint().exact()),
    );
    if length.is_none() {
        match framing {
            Framing::Length(n) => {
                content_length(out, n);
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::None => {}
        }
    }
    for (name, value) in &parts.headers {
        if hsts.is_some() && name == header::STRICT_TRANSPORT_SECURITY {
            continue; // the listener's own replaces an application's
        }
        head::put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    last_fields(out, hsts, parts.headers.contains_key(header::DATE), close);
    framing
}

/// Appends `data` to `out`, or writes both when `data` is large (no copy of big bodies).
async fn push(stream: &mut (impl AsyncWrite + Unpin), out: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if data.len() < 16 * 1024 {
        out.extend_from_slice(&data);
        return Ok(());
    }
    flush(stream, out).await?;
    stream.write_all(&data).await
}

async fn flush(stream: &mut (impl AsyncWrite + Unpin), out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// A connection handed to hyper: the bytes already read come first.
pub(crate) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The `Date` value, formatted once a second per thread.
pub(crate) mod date {
    use std::cell::RefCell;
    use std::time::{Duration, SystemTime};

    struct Cached {
        text: String,
        until: SystemTime,
    }

    thread_local! {
        static CACHED: RefCell<Cached> = const {
            RefCell::new(Cached { text: String::new(), until: SystemTime::UNIX_EPOCH })
        };
    }

    pub(crate) fn extend(out: &mut Vec<u8>) {
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            let now = SystemTime::now();
            if now >= cached.until {
                cached.text = httpdate::fmt_http_date(now);
                let into_second = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos();
                cached.until = now + Duration::from_secs(1) - Duration::from_nanos(u64::from(into_second));
            }
            out.extend_from_slice(cached.text.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Parsed {
        parse(&mut BytesMut::from(text))
    }

    #[test]
    fn only_plain_requests_are_taken() {
        for other in [
            "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nhost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nhost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\ncontent-length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nx: a\r\n b\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nhost: a\r\n\r\n",
        ] {
            assert!(matches!(parse_text(other), Parsed::Other), "{other:?}");
        }
        assert!(matches!(
            parse_text("GET / HTTP/1.1\r\nhost: a\r\n"),
            Parsed::Partial
        ));
        let mut buf = BytesMut::from("GET /p?q HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\nGET /");
        let Parsed::Plain(req, close) = parse(&mut buf) else {
            panic!("a plain request");
        };
        assert_eq!((req.target.as_str(), close), ("/p?q", true));
        assert_eq!(&buf[..], b"GET /", "the next request stays buffered");
        assert!(matches!(
            parse_text("DELETE /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"),
            Parsed::Plain(_, false)
        ));
    }
}

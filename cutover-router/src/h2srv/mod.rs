//! The router's HTTP/2 server: h2's frame codec (`h2::Codec`: framing, HPACK, CONTINUATION,
//! frame-level checks; the crate's `unstable` feature) under a stream layer of the router's
//! own, in the connection's task.
//!
//! hyper's HTTP/2 server on h2's stream layer cost ~5.5–7 µs of CPU per request more than the
//! router's HTTP/1.1 over TLS, most of it in that layer (a store, queues and a lock per stream
//! operation, a `HeaderMap` round trip per answer) — bench/README.md, "HTTP/2 through an own
//! stream layer". Here a HEADERS frame becomes the same `proxy::handle` call as any request,
//! polled in this task; its answer goes out as HEADERS and DATA.
//!
//! What the layer keeps (RFC 9113): stream states and ids (client streams odd and rising; a
//! closed stream's frames get `STREAM_CLOSED`, an idle one's a connection error); flow control
//! both ways (a request body never has more than one window unread here: the memory bound; an
//! answer never sends past the client's windows); `SETTINGS` (initial window, frame size, header
//! table) applied and acknowledged; at most [`MAX_STREAMS`] streams, more are refused; request
//! bodies with trailers, `content-length` checked; `100 Continue` when the body is first read;
//! answers streamed with trailers; resets both ways (a reset stream's upstream call is dropped);
//! the graceful shutdown in two steps (GOAWAY with the highest id and a PING, then GOAWAY with the
//! last stream taken once the PING comes back, so no request in flight is lost); limits on
//! streams reset by the client before their answer (rapid reset) and on the streams the router
//! itself resets for errors; a connection without a stream for the client header timeout is
//! closed (GOAWAY, as an idle HTTP/1.1 keep-alive connection is closed: a client cannot hold a
//! connection, or half a frame, open forever; its PINGs do not count as use); a stream whose
//! answer has waited for the client's window for the send timeout is reset (`CANCEL`: a client
//! that opens streams with a window it never widens holds no upstream call for long).

mod cancel;
mod recv;
mod send;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::frame::{
    self, Frame, GoAway, Headers, Ping, Pseudo, Reason, Reset, Settings, StreamId, WindowUpdate,
};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::body::{ClientBody, RouterBody};
use crate::proxy::{self, ConnCtx};
use crate::serve::Requests;

use cancel::{Cancel, Cancellable, alone};

pub(crate) use recv::RecvBody;
use send::NextFrame;

/// Streams open at once; more are refused (`REFUSED_STREAM`, the client may retry them).
pub(crate) const MAX_STREAMS: u32 = 200;
/// The receive window of each stream: what a request body may have unread here.
const WINDOW: u32 = 1 << 20;
/// The receive window of the connection: what its request bodies may have unread here.
const CONN_WINDOW: u32 = 2 << 20;
/// The largest request head (decoded), as hyper's server had it; larger ones get a 431.
const MAX_HEADER_LIST: usize = 16 << 10;
/// Streams the router may reset for the client's errors before it closes the connection.
const MAX_LOCAL_RESETS: u32 = 1024;
/// Streams the client may reset before their answer within [`RAPID_RESET_SPAN`].
const MAX_RAPID_RESETS: u32 = 400;
const RAPID_RESET_SPAN: Duration = Duration::from_secs(10);
/// Frames waiting to be written above which no more are read or produced.
const OUT_HIGH: usize = 64;
/// The largest window RFC 9113 allows.
const MAX_WINDOW: i64 = (1 << 31) - 1;
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one HTTP/2 connection (ALPN chose h2) to its end, like `serve::drive` serves the
/// others: on `stop` the last call, then the graceful shutdown.
pub(crate) async fn serve<T>(conn: crate::fast::Stream, mut io: T)
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let crate::fast::Stream {
        ctx,
        stop,
        requests,
        last_call,
        hsts,
        header_timeout,
        send_timeout,
        ..
    } = conn;
    let mut preface = [0u8; 24];
    match tokio::time::timeout(header_timeout, io.read_exact(&mut preface)).await {
        Ok(Ok(_)) if &preface == PREFACE => {}
        _ => return, // not HTTP/2, or too slow
    }
    let timeouts = Timeouts {
        idle: header_timeout,
        send: send_timeout,
    };
    let conn = Conn::new(io, ctx, Arc::clone(&requests), hsts, timeouts);
    let ended = crate::serve::drive(
        conn,
        |c| c.get_mut().graceful_shutdown(),
        stop,
        &requests,
        last_call,
    )
    .await;
    if let Err(e) = ended {
        tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
    }
}

/// A request's handling: its stream and its answer (`None`: it panicked).
type Call = Pin<Box<dyn Future<Output = (u32, Option<Response<RouterBody>>)> + Send>>;
type Answering = Cancellable<Call>;

/// Where a stream's answer is.
enum Phase {
    /// The request is on its way (its future is in `answering`).
    Answering,
    /// The body's next frame is awaited (in `sending`).
    Polling,
    /// Data waits for window (the stream's or the connection's) since then.
    /// (Boxed: rare, and every stream's entry would be its size.)
    Blocked(Box<(RouterBody, Bytes, tokio::time::Instant)>),
    /// END_STREAM sent.
    Done,
}

struct Entry {
    /// The request body, while the stream has one.
    recv: Option<Arc<recv::Shared>>,
    /// The client has not ended its side yet.
    recv_open: bool,
    /// What the client may still send on this stream.
    recv_window: i64,
    /// Bytes read (or dropped) and not given back as this stream's window yet.
    unacked: u32,
    length: Option<u64>,
    received: u64,
    /// What the router may still send on this stream.
    send_window: i64,
    send: Phase,
    /// A HEAD request: its answer has no body.
    head: bool,
    /// In `blocked` (once at most: a client's WINDOW_UPDATEs cannot grow it).
    queued: bool,
    cancel: Arc<Cancel>,
}

enum Shutdown {
    No,
    /// GOAWAY with the highest id and a PING sent; streams are still taken.
    Pinged,
    /// GOAWAY with the last stream taken sent; streams above it are ignored.
    Final(u32),
}

/// One HTTP/2 connection (see the module documentation).
pub(crate) struct Conn<T> {
    codec: h2::Codec<T, Bytes>,
    ctx: Arc<ConnCtx>,
    begun: Arc<Requests>,
    hsts: Option<HeaderValue>,
    notify: Arc<recv::Notify>,
    /// The waker `notify` has.
    waker: Option<std::task::Waker>,
    streams: HashMap<u32, Entry, foldhash::fast::RandomState>,
    answering: FuturesUnordered<Answering>,
    sending: FuturesUnordered<Cancellable<NextFrame>>,
    out: VecDeque<Frame<Bytes>>,
    /// Streams whose data waits for the connection's window.
    blocked: VecDeque<u32>,
    last_id: u32,
    send_window: i64,
    /// The client's initial stream window (its SETTINGS).
    peer_window: i64,
    max_frame: usize,
    recv_window: i64,
    /// Bytes read (or dropped) and not given back as the connection's window yet.
    unacked: u32,
    local_resets: u32,
    rapid_resets: (u32, Instant),
    shutdown: Shutdown,
    /// The client sent GOAWAY: no new streams; the connection ends with its last one.
    peer_gone: bool,
    /// The connection ends once what is queued is written: how.
    closing: Option<io::Result<()>>,
    timeouts: Timeouts,
    /// Since when it has been without a stream.
    idle_from: tokio::time::Instant,
    /// Fires when the connection may have been idle, or a stream blocked, too long; checked
    /// then (not reset per request).
    timer: Pin<Box<tokio::time::Sleep>>,
}

#[derive(Clone, Copy)]
struct Timeouts {
    /// How long the connection may be without a stream.
    idle: Duration,
    /// How long a stream's answer may wait for the client's window.
    send: Duration,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    /// A connection whose preface was read.
    fn new(
        io: T,
        ctx: Arc<ConnCtx>,
        begun: Arc<Requests>,
        hsts: Option<HeaderValue>,
        timeouts: Timeouts,
    ) -> Self {
        let mut codec = h2::Codec::new(io);
        codec.set_max_recv_header_list_size(MAX_HEADER_LIST);
        let mut ours = Settings::default();
        ours.set_max_concurrent_streams(Some(MAX_STREAMS));
        ours.set_initial_window_size(Some(WINDOW));
        ours.set_max_header_list_size(Some(MAX_HEADER_LIST as u32));
        let default_window = i64::from(frame::DEFAULT_INITIAL_WINDOW_SIZE);
        let mut out = VecDeque::new();
        out.push_back(ours.into());
        out.push_back(
            WindowUpdate::new(StreamId::zero(), CONN_WINDOW - frame::DEFAULT_INITIAL_WINDOW_SIZE).into(),
        );
        Self {
            codec,
            ctx,
            begun,
            hsts,
            notify: Arc::default(),
            waker: None,
            streams: HashMap::default(),
            answering: FuturesUnordered::new(),
            sending: FuturesUnordered::new(),
            out,
            blocked: VecDeque::new(),
            last_id: 0,
            send_window: default_window,
            peer_window: default_window,
            max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            recv_window: i64::from(CONN_WINDOW),
            unacked: 0,
            local_resets: 0,
            rapid_resets: (0, Instant::now()),
            shutdown: Shutdown::No,
            peer_gone: false,
            closing: None,
            timeouts,
            idle_from: tokio::time::Instant::now(),
            timer: Box::pin(tokio::time::sleep(timeouts.idle)),
        }
    }

    /// The timer fired: streams blocked for the send timeout are reset; the connection closes
    /// if it has been without a stream for the idle timeout; the timer is set to the next time
    /// either could be due.
    fn on_timer(&mut self) {
        let now = tokio::time::Instant::now();
        let mut next = now + self.timeouts.idle;
        let mut stalled = Vec::new();
        for (&id, e) in &self.streams {
            if let Phase::Blocked(b) = &e.send {
                let due = b.2 + self.timeouts.send;
                if due <= now {
                    stalled.push(id);
                } else {
                    next = next.min(due);
                }
            }
        }
        for id in stalled {
            tracing::debug!(
                id,
                "an HTTP/2 answer waited {:?} for the client's window: reset",
                self.timeouts.send
            );
            self.out
                .push_back(Reset::new(StreamId::from(id), Reason::CANCEL).into());
            self.remove(id, Reason::CANCEL);
        }
        if self.streams.is_empty() {
            let due = self.idle_from + self.timeouts.idle;
            if due <= now {
                tracing::debug!("HTTP/2 connection idle for {:?}: closed", self.timeouts.idle);
                self.out
                    .push_back(GoAway::new(StreamId::from(self.last_id), Reason::NO_ERROR).into());
                self.closing = Some(Ok(()));
                return;
            }
            next = due;
        }
        self.timer.as_mut().reset(next);
    }

    /// A stream's answer waits for window from now: the timer fires by its send timeout.
    fn blocked_now(&mut self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let due = now + self.timeouts.send;
        if due < self.timer.deadline() {
            self.timer.as_mut().reset(due);
        }
        now
    }

    /// Starts the graceful shutdown (see the module documentation).
    pub(crate) fn graceful_shutdown(&mut self) {
        if matches!(self.shutdown, Shutdown::No) && self.closing.is_none() {
            self.out
                .push_back(GoAway::new(StreamId::MAX, Reason::NO_ERROR).into());
            self.out.push_back(Ping::new(Ping::SHUTDOWN).into());
            self.shutdown = Shutdown::Pinged;
        }
    }

    fn conn_error(&mut self, reason: Reason, why: &str) {
        if self.closing.is_none() {
            tracing::debug!(%reason, why, "HTTP/2 connection error");
            self.out
                .push_back(GoAway::new(StreamId::from(self.last_id), reason).into());
            self.closing = Some(Err(io::Error::other(format!(
                "HTTP/2 connection error {reason}: {why}"
            ))));
        }
    }

    /// Resets a stream for the client's error.
    fn stream_error(&mut self, id: u32, reason: Reason) {
        self.out.push_back(Reset::new(StreamId::from(id), reason).into());
        self.remove(id, reason);
        self.local_resets += 1;
        if self.local_resets > MAX_LOCAL_RESETS {
            self.conn_error(Reason::ENHANCE_YOUR_CALM, "too many malformed streams");
        }
    }

    /// Forgets a stream: its futures are cancelled, what its body holds is given back.
    fn remove(&mut self, id: u32, reason: Reason) {
        let Some(e) = self.streams.remove(&id) else {
            return;
        };
        if self.streams.is_empty() {
            self.idle_from = tokio::time::Instant::now();
        }
        if !matches!(e.send, Phase::Done) {
            e.cancel.cancel();
        }
        if let Some(shared) = e.recv {
            // A stream that ended both ways leaves its body to its reader (an upstream call
            // may still be sending it on after the answer came); any other fails it.
            let unread = if e.recv_open || reason != Reason::NO_ERROR {
                shared.fail(reason)
            } else {
                0
            };
            let (released, _, _) = shared.take_marks();
            self.release_conn(unread + released);
        }
    }

    /// Gives `n` bytes back to the client's connection window (in batches).
    fn release_conn(&mut self, n: usize) {
        self.unacked = self.unacked.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if self.unacked >= CONN_WINDOW / 2 {
            self.out
                .push_back(WindowUpdate::new(StreamId::zero(), self.unacked).into());
            self.recv_window += i64::from(self.unacked);
            self.unacked = 0;
        }
    }

    /// Gives `n` bytes back to a stream's window (in batches), while the client may send.
    fn release_stream(&mut self, id: u32, n: usize) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        if !e.recv_open {
            return;
        }
        e.unacked = e.unacked.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if e.unacked >= WINDOW / 2 {
            self.out
                .push_back(WindowUpdate::new(StreamId::from(id), e.unacked).into());
            e.recv_window += i64::from(e.unacked);
            e.unacked = 0;
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Headers(h) => self.on_headers(h),
            Frame::Data(d) => self.on_data(d),
            Frame::WindowUpdate(w) => self.on_window_update(w),
            Frame::Settings(s) => {
                if !s.is_ack() {
                    self.on_settings(&s);
                }
            }
            Frame::Ping(p) => {
                if !p.is_ack() {
                    self.out.push_back(Ping::pong(p.into_payload()).into());
                } else if *p.payload() == Ping::SHUTDOWN && matches!(self.shutdown, Shutdown::Pinged) {
                    self.out
                        .push_back(GoAway::new(StreamId::from(self.last_id), Reason::NO_ERROR).into());
                    self.shutdown = Shutdown::Final(self.last_id);
                }
            }
            Frame::Reset(r) => self.on_reset(&r),
            Frame::GoAway(_) => self.peer_gone = true,
            Frame::Priority(_) => {}
            Frame::PushPromise(_) => self.conn_error(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
        }
    }

    fn on_headers(&mut self, h: Headers) {
        let id = u32::from(h.stream_id());
        if id % 2 == 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "HEADERS on a server stream id");
        }
        if let Some(e) = self.streams.get_mut(&id) {
            // Trailers: the end of the request's body.
            if !e.recv_open {
                return self.stream_error(id, Reason::STREAM_CLOSED);
            }
            let whole = e.length.is_none_or(|n| n == e.received);
            if !h.is_end_stream() || !whole {
                return self.stream_error(id, Reason::PROTOCOL_ERROR);
            }
            let (pseudo, fields) = h.into_parts();
            if pseudo != Pseudo::default() {
                return self.stream_error(id, Reason::PROTOCOL_ERROR);
            }
            e.recv_open = false;
            if let Some(shared) = &e.recv {
                shared.push(hyper::body::Frame::trailers(fields), true);
            }
            return self.recv_ended(id);
        }
        if id <= self.last_id {
            // A stream that was closed (reset, or ended a moment ago).
            self.out
                .push_back(Reset::new(StreamId::from(id), Reason::STREAM_CLOSED).into());
            return;
        }
        self.last_id = id;
        if self.peer_gone || matches!(self.shutdown, Shutdown::Final(last) if id > last) {
            return; // not taken: the client retries it elsewhere
        }
        if self.streams.len() >= MAX_STREAMS as usize {
            self.out
                .push_back(Reset::new(StreamId::from(id), Reason::REFUSED_STREAM).into());
            return;
        }
        let end = h.is_end_stream();
        if h.is_over_size() {
            let mut answer = Headers::new(
                StreamId::from(id),
                Pseudo::response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                HeaderMap::new(),
            );
            answer.set_end_stream();
            self.out.push_back(answer.into());
            if !end {
                self.out
                    .push_back(Reset::new(StreamId::from(id), Reason::NO_ERROR).into());
            }
            return;
        }
        let (pseudo, fields) = h.into_parts();
        let req = match recv::request(pseudo, fields) {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(id, why, "malformed HTTP/2 request");
                return self.stream_error(id, Reason::PROTOCOL_ERROR);
            }
        };
        let length = match recv::content_length(req.headers()) {
            Ok(n) if !(end && n.is_some_and(|n| n > 0)) => n,
            _ => return self.stream_error(id, Reason::PROTOCOL_ERROR),
        };
        let (body, recv) = if end {
            (ClientBody::Empty, None)
        } else {
            let expect = req
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let shared = recv::Shared::new(id, &self.notify, expect);
            (
                ClientBody::H2(RecvBody::new(Arc::clone(&shared), length)),
                Some(shared),
            )
        };
        let head = req.method() == Method::HEAD;
        let req = req.map(|()| body);
        let cancel = Arc::new(Cancel::default());
        self.streams.insert(
            id,
            Entry {
                recv,
                recv_open: !end,
                recv_window: i64::from(WINDOW),
                unacked: 0,
                length,
                received: 0,
                send_window: self.peer_window,
                send: Phase::Answering,
                head,
                queued: false,
                cancel: Arc::clone(&cancel),
            },
        );
        self.begun.begin();
        let ctx = Arc::clone(&self.ctx);
        // Boxed: the request's future is large, and moved once here instead of by value
        // through the set.
        let call: Call = Box::pin(async move {
            let answer = alone(async move {
                let Ok(answer) = proxy::handle(ctx, req).await;
                answer
            })
            .await;
            (id, answer)
        });
        self.answering.push(Cancellable::new(cancel, call));
    }

    /// The client ended its side: the stream goes once its answer is sent too.
    fn recv_ended(&mut self, id: u32) {
        if self
            .streams
            .get(&id)
            .is_some_and(|e| matches!(e.send, Phase::Done))
        {
            self.remove(id, Reason::NO_ERROR);
        }
    }

    fn on_window_update(&mut self, w: WindowUpdate) {
        let id = u32::from(w.stream_id());
        let inc = i64::from(w.size_increment());
        if id == 0 {
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return self.conn_error(Reason::FLOW_CONTROL_ERROR, "connection window past 2^31-1");
            }
            while self.send_window > 0 {
                let Some(id) = self.blocked.pop_front() else { break };
                if let Some(e) = self.streams.get_mut(&id) {
                    e.queued = false;
                }
                self.resume(id);
            }
            return;
        }
        let Some(e) = self.streams.get_mut(&id) else {
            if id > self.last_id {
                self.conn_error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
            }
            return;
        };
        e.send_window += inc;
        if e.send_window > MAX_WINDOW {
            return self.stream_error(id, Reason::FLOW_CONTROL_ERROR);
        }
        self.resume(id);
    }

    fn on_settings(&mut self, s: &Settings) {
        if let Some(w) = s.initial_window_size() {
            let delta = i64::from(w) - self.peer_window;
            self.peer_window = i64::from(w);
            let mut overflow = false;
            for e in self.streams.values_mut() {
                e.send_window += delta;
                overflow |= e.send_window > MAX_WINDOW;
            }
            if overflow {
                return self.conn_error(Reason::FLOW_CONTROL_ERROR, "a stream window past 2^31-1");
            }
            if delta > 0 {
                let ids: Vec<u32> = self.streams.keys().copied().collect();
                for id in ids {
                    self.resume(id);
                }
            }
        }
        if let Some(size) = s.max_frame_size() {
            self.max_frame = size as usize;
            self.codec.set_max_send_frame_size(size as usize);
        }
        if let Some(size) = s.header_table_size() {
            self.codec.set_send_header_table_size(size as usize);
        }
        self.out.push_back(Settings::ack().into());
    }

    fn on_reset(&mut self, r: &Reset) {
        let id = u32::from(r.stream_id());
        if id > self.last_id {
            return self.conn_error(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream");
        }
        let unanswered = self
            .streams
            .get(&id)
            .is_some_and(|e| !matches!(e.send, Phase::Done));
        self.remove(id, r.reason());
        if unanswered {
            let (count, since) = &mut self.rapid_resets;
            if since.elapsed() > RAPID_RESET_SPAN {
                *count = 0;
                *since = Instant::now();
            }
            *count += 1;
            if *count > MAX_RAPID_RESETS {
                self.conn_error(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many streams reset before their answer",
                );
            }
        }
    }

    /// What request bodies' readers did: bytes read (window to give back), `100 Continue`
    /// wanted, a reader gone.
    fn on_marks(&mut self) -> bool {
        let marked = std::mem::take(&mut *crate::body::lock(&self.notify.dirty));
        let any = !marked.is_empty();
        for shared in marked {
            let (released, wants_continue, dropped) = shared.take_marks();
            let id = shared.id;
            let ours = self
                .streams
                .get(&id)
                .is_some_and(|e| e.recv.as_ref().is_some_and(|s| Arc::ptr_eq(s, &shared)));
            if ours {
                if wants_continue
                    && self
                        .streams
                        .get(&id)
                        .is_some_and(|e| matches!(e.send, Phase::Answering))
                {
                    let go_on = Headers::new(
                        StreamId::from(id),
                        Pseudo::response(StatusCode::CONTINUE),
                        HeaderMap::new(),
                    );
                    self.out.push_back(go_on.into());
                }
                self.release_stream(id, released);
                let done = self
                    .streams
                    .get(&id)
                    .is_some_and(|e| matches!(e.send, Phase::Done) && e.recv_open);
                if dropped && done {
                    self.out
                        .push_back(Reset::new(StreamId::from(id), Reason::NO_ERROR).into());
                    self.remove(id, Reason::NO_ERROR);
                }
            }
            self.release_conn(released);
        }
        any
    }

    /// Moves queued frames into the codec and writes them out.
    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.codec.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let frame = self.out.pop_front().expect("not empty");
                    self.codec.buffer(frame).map_err(io::Error::other)?;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        match self.codec.flush(cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(false),
        }
    }

    fn on_codec_error(&mut self, e: h2::proto::Error) {
        match e {
            h2::proto::Error::Reset(id, reason, _) => {
                let id = u32::from(id);
                if id > self.last_id && id % 2 == 1 {
                    self.last_id = id;
                }
                self.stream_error(id, reason);
            }
            h2::proto::Error::GoAway(_, reason, _) => self.conn_error(reason, "a malformed frame"),
            h2::proto::Error::Io(kind, _) => {
                if self.closing.is_none() {
                    self.closing = Some(Err(io::Error::from(kind)));
                }
                self.out.clear();
            }
        }
    }

    /// One turn over the connection; `Ready` when it ended.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.notify.waker.register(cx.waker());
            self.waker = Some(cx.waker().clone());
        }
        // Bounded: a client that keeps the connection busy yields to the others now and then.
        for _ in 0..8 {
            let mut progress = false;
            while self.closing.is_none() && self.out.len() < OUT_HIGH {
                match self.codec.poll_next_unpin(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => self.closing = Some(Ok(())),
                    Poll::Ready(Some(Err(e))) => self.on_codec_error(e),
                    Poll::Ready(Some(Ok(frame))) => self.on_frame(frame),
                }
                progress = true;
            }
            // Requests just read go to their upstream in this turn; answers just come go out.
            while let Poll::Ready(Some(answered)) = self.answering.poll_next_unpin(cx) {
                progress = true;
                if let Some((id, answer)) = answered {
                    self.on_answer(id, answer);
                }
            }
            while self.out.len() < OUT_HIGH {
                let Poll::Ready(Some(polled)) = self.sending.poll_next_unpin(cx) else {
                    break;
                };
                progress = true;
                if let Some(polled) = polled {
                    self.on_body(polled);
                }
            }
            progress |= self.on_marks();
            let written = match self.write(cx) {
                Ok(w) => w,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if self.closing.is_none()
                && self.streams.is_empty()
                && (matches!(self.shutdown, Shutdown::Final(_)) || self.peer_gone)
            {
                self.closing = Some(Ok(()));
                progress = true;
            }
            if written && self.closing.is_some() {
                std::task::ready!(self.codec.shutdown(cx)).ok();
                return Poll::Ready(self.closing.take().unwrap_or(Ok(())));
            }
            if !progress {
                if self.closing.is_some() || self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.on_timer(); // and another round: the new timer is polled, or GOAWAY sent
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Conn<T> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().turn(cx)
    }
}

impl<T> Drop for Conn<T> {
    fn drop(&mut self) {
        // Readers that outlive the connection (a body hyper's client still holds) mark nothing
        // more; what is marked goes (the marks hold their bodies).
        self.notify.closed.store(true, Ordering::Release);
        crate::body::lock(&self.notify.dirty).clear();
    }
}

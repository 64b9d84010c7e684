//! What a client sends on an HTTP/2 stream: its HEADERS made a request (checked as RFC 9113
//! §8.3 asks; h2's codec has already refused connection-specific fields, a `te` other than
//! `trailers` and misplaced pseudo-fields), and its DATA made the request's body.
//!
//! A body's bytes wait in [`Shared`] until the upstream call reads them; what it reads is
//! "released" and the connection gives it back to the client as window (the client never has
//! more than one window of a stream unread here: that is the memory bound).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use h2::frame::{Data, Pseudo, Reason};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Conn;

use crate::body::lock;
use crate::upstream::BoxError;

/// A request from a stream's HEADERS, or why the stream is malformed.
pub(super) fn request(pseudo: Pseudo, fields: HeaderMap) -> Result<Request<()>, &'static str> {
    let method = pseudo.method.ok_or("no :method")?;
    if pseudo.protocol.is_some() {
        // Extended CONNECT (RFC 8441) is not offered in our SETTINGS.
        return Err(":protocol without extended CONNECT");
    }
    let authority = match &pseudo.authority {
        Some(a) => Some(Authority::try_from(a.as_bytes()).map_err(|_| "invalid :authority")?),
        None => None,
    };
    let uri = if method == Method::CONNECT {
        if pseudo.scheme.is_some() || pseudo.path.is_some() {
            return Err(":scheme or :path in CONNECT");
        }
        let authority = authority.ok_or("CONNECT without :authority")?;
        Uri::from(authority)
    } else {
        let scheme = pseudo.scheme.ok_or("no :scheme")?;
        let scheme = Scheme::try_from(scheme.as_bytes()).map_err(|_| "invalid :scheme")?;
        let path = pseudo.path.ok_or("no :path")?;
        if path.is_empty() {
            return Err("empty :path");
        }
        let path = PathAndQuery::try_from(path.as_bytes()).map_err(|_| "invalid :path")?;
        let mut parts = http::uri::Parts::default();
        // A URI has a scheme only with an authority; without one the request keeps its path
        // (its `Host` field then names the route, as over HTTP/1.1).
        if authority.is_some() {
            parts.scheme = Some(scheme);
            parts.authority = authority;
        }
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).map_err(|_| "invalid request target")?
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = fields;
    Ok(req)
}

/// The `content-length` a request declares: `Ok(None)` without one, `Err` when it is not one
/// number (several differing values, or not digits).
pub(super) fn content_length(fields: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in fields.get_all(http::header::CONTENT_LENGTH) {
        let s = v.to_str().map_err(|_| ())?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n: u64 = s.parse().map_err(|_| ())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

/// The connection's side of its streams' bodies: which streams' readers released bytes or
/// want a `100 Continue` (their ids), and the connection's waker.
#[derive(Default)]
pub(super) struct Notify {
    pub(super) dirty: Mutex<Vec<Arc<Shared>>>,
    pub(super) waker: AtomicWaker,
    /// The connection is gone: nothing is marked any more (a mark holds its body).
    pub(super) closed: AtomicBool,
}

/// A request body's state, shared by the connection (which fills it) and the upstream call
/// (which reads it).
#[derive(Default)]
pub(super) struct State {
    /// Data and trailers not read yet.
    queue: VecDeque<Frame<Bytes>>,
    /// END_STREAM came: the body ends when `queue` is empty.
    end: bool,
    /// The stream was reset or is malformed: the body fails.
    error: Option<Reason>,
    reader: Option<Waker>,
    /// Bytes read and not given back to the client as window yet.
    pub(super) released: usize,
    /// The reader is gone: whatever comes is released at once.
    pub(super) dropped: bool,
    /// The request asked for `100 Continue`: sent when the body is first read.
    expect_continue: bool,
    pub(super) continue_wanted: bool,
    /// The id is in `Notify::dirty` already.
    marked: bool,
}

/// One stream's body, as the connection holds it.
pub(super) struct Shared {
    pub(super) id: u32,
    pub(super) state: Mutex<State>,
    notify: Arc<Notify>,
}

impl Shared {
    pub(super) fn new(id: u32, notify: &Arc<Notify>, expect_continue: bool) -> Arc<Self> {
        Arc::new(Self {
            id,
            state: Mutex::new(State {
                expect_continue,
                ..State::default()
            }),
            notify: Arc::clone(notify),
        })
    }

    /// Data from the client; `false` when nobody reads it any more (the caller releases it).
    pub(super) fn push(&self, frame: Frame<Bytes>, end: bool) -> bool {
        let mut s = lock(&self.state);
        if s.dropped {
            return false;
        }
        s.queue.push_back(frame);
        s.end |= end;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        true
    }

    /// END_STREAM without data.
    pub(super) fn end(&self) {
        let mut s = lock(&self.state);
        s.end = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The stream failed (a reset, a malformed body): the reader gets an error; returns the
    /// bytes it will never read (to release).
    pub(super) fn fail(&self, reason: Reason) -> usize {
        let mut s = lock(&self.state);
        s.error.get_or_insert(reason);
        let unread = unread(&s.queue);
        s.queue.clear();
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        unread
    }

    fn mark(this: &Arc<Self>, s: &mut State) {
        if !s.marked && !this.notify.closed.load(Ordering::Acquire) {
            s.marked = true;
            lock(&this.notify.dirty).push(Arc::clone(this));
            this.notify.waker.wake();
        }
    }

    /// What the connection takes when it handles the stream's mark: bytes released, whether
    /// a `100 Continue` is wanted, whether the reader is gone.
    pub(super) fn take_marks(&self) -> (usize, bool, bool) {
        let mut s = lock(&self.state);
        s.marked = false;
        let released = std::mem::take(&mut s.released);
        let wants_continue = std::mem::take(&mut s.continue_wanted);
        (released, wants_continue, s.dropped)
    }
}

fn unread(queue: &VecDeque<Frame<Bytes>>) -> usize {
    queue.iter().filter_map(|f| f.data_ref()).map(Bytes::len).sum()
}

/// The request body the upstream call reads.
pub(crate) struct RecvBody {
    shared: Arc<Shared>,
    /// The declared length, for `size_hint`.
    length: Option<u64>,
}

impl RecvBody {
    pub(super) fn new(shared: Arc<Shared>, length: Option<u64>) -> Self {
        Self { shared, length }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = &self.shared;
        let mut s = lock(&shared.state);
        if let Some(frame) = s.queue.pop_front() {
            if let Some(d) = frame.data_ref() {
                s.released += d.len();
                Shared::mark(shared, &mut s);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(reason) = s.error {
            return Poll::Ready(Some(Err(
                format!("the client's HTTP/2 stream failed: {reason}").into()
            )));
        }
        if s.end {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut s.expect_continue) {
            s.continue_wanted = true;
            Shared::mark(shared, &mut s);
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared.state);
        s.end && s.queue.is_empty() && s.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut s = lock(&shared.state);
        s.dropped = true;
        s.released += unread(&s.queue);
        s.queue.clear();
        Shared::mark(shared, &mut s);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    /// DATA from the client: counted against the windows and the declared length, handed to
    /// the body's reader (padding and what nobody reads any more are given back at once).
    pub(super) fn on_data(&mut self, d: Data) {
        let id = u32::from(d.stream_id());
        let flow = flow_len(&d);
        self.recv_window -= flow as i64;
        if self.recv_window < 0 {
            return self.conn_error(Reason::FLOW_CONTROL_ERROR, "DATA past the connection's window");
        }
        let Some(e) = self.streams.get_mut(&id) else {
            if id > self.last_id {
                return self.conn_error(Reason::PROTOCOL_ERROR, "DATA on an idle stream");
            }
            // A stream closed a moment ago (the client had not seen it yet).
            return self.release_conn(flow);
        };
        if !e.recv_open {
            self.stream_error(id, Reason::STREAM_CLOSED);
            return self.release_conn(flow);
        }
        e.recv_window -= flow as i64;
        if e.recv_window < 0 {
            self.stream_error(id, Reason::FLOW_CONTROL_ERROR);
            return self.release_conn(flow);
        }
        let end = d.is_end_stream();
        let payload = d.into_payload();
        e.received += payload.len() as u64;
        let too_long = e.length.is_some_and(|n| e.received > n);
        let too_short = end && e.length.is_some_and(|n| e.received < n);
        if too_long || too_short {
            self.stream_error(id, Reason::PROTOCOL_ERROR);
            return self.release_conn(flow);
        }
        if end {
            e.recv_open = false;
        }
        // Padding is given back at once; the data once it is read.
        let mut now = flow - payload.len();
        match &e.recv {
            Some(shared) if payload.is_empty() => {
                if end {
                    shared.end();
                }
            }
            Some(shared) => {
                let len = payload.len();
                if !shared.push(hyper::body::Frame::data(payload), end) {
                    now += len;
                }
            }
            None => now += payload.len(),
        }
        if now > 0 {
            self.release_stream(id, now);
            self.release_conn(now);
        }
        if end {
            self.recv_ended(id);
        }
    }
}

/// The bytes a DATA frame takes from the windows: its data, and its padding with the pad
/// length's byte when it is padded. h2's codec keeps the padding's length to itself but shows
/// it in the frame's `Debug` form (the unit test below pins that).
fn flow_len(d: &Data) -> usize {
    let len = d.payload().len();
    if !d.is_padded() {
        return len;
    }
    let shown = format!("{d:?}");
    let pad = shown
        .split("pad_len: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(255);
    len + pad + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use h2::frame::{BytesStr, Frame as H2Frame, StreamId};
    use tokio::io::AsyncWriteExt;

    fn pseudo(
        method: Option<Method>,
        scheme: Option<&str>,
        authority: Option<&str>,
        path: Option<&str>,
    ) -> Pseudo {
        let s = |v: &str| BytesStr::try_from(Bytes::copy_from_slice(v.as_bytes())).expect("utf-8");
        Pseudo {
            method,
            scheme: scheme.map(s),
            authority: authority.map(s),
            path: path.map(s),
            protocol: None,
            status: None,
        }
    }

    #[test]
    fn a_request_needs_its_pseudo_fields_and_connect_takes_only_an_authority() {
        let get = request(
            pseudo(
                Some(Method::GET),
                Some("https"),
                Some("shop.example.com"),
                Some("/a?b=1"),
            ),
            HeaderMap::new(),
        )
        .expect("a whole request");
        assert_eq!(get.uri(), "https://shop.example.com/a?b=1");
        assert_eq!(get.version(), Version::HTTP_2);
        let no_authority = request(
            pseudo(Some(Method::GET), Some("https"), None, Some("/x")),
            HeaderMap::new(),
        )
        .expect("a request without :authority");
        assert_eq!(no_authority.uri(), "/x");
        let connect = request(
            pseudo(Some(Method::CONNECT), None, Some("db:5432"), None),
            HeaderMap::new(),
        )
        .expect("CONNECT");
        assert_eq!(connect.uri().authority().map(Authority::as_str), Some("db:5432"));
        let refused = [
            pseudo(None, Some("https"), Some("a"), Some("/")),
            pseudo(Some(Method::GET), None, Some("a"), Some("/")),
            pseudo(Some(Method::GET), Some("https"), Some("a"), None),
            pseudo(Some(Method::GET), Some("https"), Some("a"), Some("")),
            pseudo(Some(Method::GET), Some("https"), Some("a b"), Some("/")),
            pseudo(Some(Method::GET), Some("https"), Some("a"), Some("/a b")),
            pseudo(Some(Method::CONNECT), Some("https"), Some("a:1"), None),
            pseudo(Some(Method::CONNECT), None, Some("a:1"), Some("/")),
            pseudo(Some(Method::CONNECT), None, None, None),
        ];
        for p in refused {
            let shown = format!("{p:?}");
            assert!(request(p, HeaderMap::new()).is_err(), "{shown} must be refused");
        }
    }

    #[test]
    fn content_length_must_be_one_number() {
        let mut f = HeaderMap::new();
        assert_eq!(content_length(&f), Ok(None));
        f.append(http::header::CONTENT_LENGTH, "12".parse().expect("value"));
        assert_eq!(content_length(&f), Ok(Some(12)));
        f.append(http::header::CONTENT_LENGTH, "12".parse().expect("value"));
        assert_eq!(content_length(&f), Ok(Some(12)));
        f.append(http::header::CONTENT_LENGTH, "13".parse().expect("value"));
        assert_eq!(content_length(&f), Err(()));
        for bad in ["-1", "+1", "1 ", "0x10", "", "99999999999999999999999"] {
            let mut f = HeaderMap::new();
            f.insert(http::header::CONTENT_LENGTH, bad.parse().expect("value"));
            assert_eq!(content_length(&f), Err(()), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_body_releases_what_is_read_and_everything_when_dropped() {
        use http_body_util::BodyExt;
        let notify = Arc::new(Notify::default());
        let shared = Shared::new(1, &notify, false);
        let mut body = RecvBody::new(Arc::clone(&shared), Some(5));
        assert!(shared.push(Frame::data(Bytes::from_static(b"abc")), false));
        assert!(shared.push(Frame::data(Bytes::from_static(b"de")), false));
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"abc"[..]));
        assert_eq!(
            lock(&notify.dirty).iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(shared.take_marks(), (3, false, false));
        drop(body);
        assert_eq!(
            shared.take_marks(),
            (2, false, true),
            "the unread 2 bytes are released"
        );
        assert!(
            !shared.push(Frame::data(Bytes::from_static(b"f")), true),
            "nobody reads it"
        );
    }

    #[tokio::test]
    async fn a_failed_stream_fails_its_body() {
        use http_body_util::BodyExt;
        let notify = Arc::new(Notify::default());
        let shared = Shared::new(3, &notify, true);
        let mut body = RecvBody::new(Arc::clone(&shared), None);
        let reading = tokio::spawn(async move { body.frame().await.map(|f| f.is_err()) });
        tokio::task::yield_now().await;
        assert_eq!(
            shared.take_marks(),
            (0, true, false),
            "the first read asks for 100 Continue"
        );
        assert_eq!(shared.fail(Reason::CANCEL), 0);
        assert_eq!(reading.await.expect("joined"), Some(true));
    }

    /// A padded DATA frame through h2's codec counts its padding and pad length's byte.
    #[tokio::test]
    async fn a_padded_data_frame_takes_its_padding_from_the_windows() {
        let (mut client, server) = tokio::io::duplex(1024);
        // DATA, 5 bytes of payload: pad length 2, "abc"... no: pad length byte, 3 data bytes, 2 pad.
        let mut raw = vec![0, 0, 6, 0x0, 0x8, 0, 0, 0, 1];
        raw.extend_from_slice(&[2, b'a', b'b', b'c', 0, 0]);
        client.write_all(&raw).await.expect("written");
        let mut codec: h2::Codec<_, Bytes> = h2::Codec::new(server);
        let Some(Ok(H2Frame::Data(d))) = codec.next().await else {
            panic!("a DATA frame");
        };
        assert_eq!(&d.payload()[..], b"abc");
        assert_eq!(flow_len(&d), 6);
        let plain = Data::new(StreamId::from(1), Bytes::from_static(b"abcd"));
        assert_eq!(flow_len(&plain), 4);
    }
}

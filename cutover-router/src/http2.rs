//! HTTP/2 towards clients (ALPN `h2` on a TLS listener), served in the connection's own task.
//!
//! hyper's HTTP/2 server spawns a task per stream: the connection's task reads a request, a
//! new task (the stream's future copied into it) handles it, and its answer goes back to the
//! connection's task to be written: three turns of the runtime's queue per request where the
//! HTTP/1.1 path (`fast`) takes two, and under load every turn waits behind every other
//! connection. Here the connection's task runs its streams itself (a [`FuturesUnordered`]) and
//! polls them before the connection, so an answer made ready is written in the same turn and a
//! new stream sends its upstream request in the turn that read it.
//!
//! Each stream is handled by [`proxy::handle`], as the HTTP/1.1 listeners' hyper path does, and
//! answered as hyper's server would: a `Date` added when missing, a `Content-Length` from an exact body size, the body sent as
//! the client's flow control allows (one chunk waiting at most), a stream the client resets
//! given up (its upstream call dropped). The settings are hyper's defaults (windows, frame and
//! header-list sizes, 200 concurrent streams, the local-reset bound); the client's preface must
//! arrive within the header timeout. Connection-specific fields, which HTTP/2 forbids (h2
//! resets a stream that sends one), are gone before: `dispatch` strips every hop-by-hop field
//! of an upstream's answer, and the router's own answers have none.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use h2::server::{Connection, SendResponse};
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{ClientBody, RouterBody};
use crate::proxy::{self, ConnCtx};
use crate::serve::{Requests, drive};

const WINDOW: u32 = 1 << 20;
const MAX_FRAME: u32 = 16 << 10;
const MAX_SEND_BUFFER: usize = 400 << 10;
const MAX_HEADER_LIST: u32 = 16 << 10;
const MAX_STREAMS: u32 = 200;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Serves an HTTP/2 connection over `io` (after the TLS handshake) to its end.
pub(crate) async fn serve<IO>(conn: crate::fast::Stream, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let crate::fast::Stream {
        ctx,
        stop,
        requests,
        last_call,
        header_timeout,
        hsts,
    } = conn;
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_send_buffer_size(MAX_SEND_BUFFER);
    let Ok(Ok(h2)) = tokio::time::timeout(header_timeout, builder.handshake(io)).await else {
        return; // no or a bad preface in time
    };
    let serving = Serving {
        conn: h2,
        streams: FuturesUnordered::new(),
        answer: move |req, respond| answer(Arc::clone(&ctx), hsts.clone(), req, respond),
        requests: Arc::clone(&requests),
    };
    let graceful = |s: Pin<&mut Serving<IO, _, _>>| s.get_mut().conn.graceful_shutdown();
    if let Err(e) = drive(serving, graceful, stop, &requests, last_call).await {
        tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
    }
}

/// A connection and the streams it runs; ends when the connection does (its streams then are
/// dropped: nothing could be sent on them any more).
struct Serving<IO, F, A> {
    conn: Connection<IO, Bytes>,
    streams: FuturesUnordered<F>,
    /// A stream's future ([`answer`] with the connection's context).
    answer: A,
    requests: Arc<Requests>,
}

impl<IO, F, A> Future for Serving<IO, F, A>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = ()>,
    A: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> F + Unpin,
{
    type Output = Result<(), h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut(); // `FuturesUnordered` pins the streams itself
        loop {
            // Streams first: what they send now is written by the connection's poll below.
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
            match ready!(this.conn.poll_accept(cx)) {
                Some(Ok((req, respond))) => {
                    this.requests.begin();
                    this.streams.push((this.answer)(req, respond));
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// One stream: routed and forwarded, then answered (see the module's documentation).
async fn answer(
    ctx: Arc<ConnCtx>,
    hsts: Option<HeaderValue>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let req = req.map(|recv| {
        if recv.is_end_stream() {
            ClientBody::Empty
        } else {
            ClientBody::H2(RecvBody {
                recv,
                data_done: false,
            })
        }
    });
    let handled = proxy::handle(ctx, req);
    let Some(Ok(resp)) = unless_reset(&mut respond, handled).await else {
        return; // the client reset the stream: its upstream call is dropped
    };
    let (mut parts, body) = resp.into_parts();
    if let Some(v) = hsts {
        parts.headers.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    if !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, crate::fast::date_value());
    }
    let end = body.is_end_stream();
    if !end && let Some(len) = body.size_hint().exact() {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
    }
    let Ok(send) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return; // the stream is gone
    };
    if !end {
        pipe(body, send).await;
    }
}

/// `fut`'s output, or `None` when the client resets the stream first.
async fn unless_reset<F: Future>(respond: &mut SendResponse<Bytes>, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Sends `body` on the stream, a chunk at a time as the client's windows open; resets the
/// stream if the body fails.
async fn pipe(mut body: RouterBody, mut send: SendStream<Bytes>) {
    // A chunk read from the body, waiting for capacity (and whether it is the last).
    let mut waiting: Option<(Bytes, bool)> = None;
    poll_fn(|cx| {
        loop {
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(()); // reset by the client, or closed
            }
            if let Some((data, last)) = waiting.take() {
                while send.capacity() == 0 {
                    match send.poll_capacity(cx) {
                        Poll::Pending => {
                            waiting = Some((data, last));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(0))) => {}
                        Poll::Ready(Some(Ok(_))) => break,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                if send.send_data(data, last).is_err() || last {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(Pin::new(&mut body).poll_frame(cx)) {
                None => {
                    let _ = send.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(_)) => {
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let last = body.is_end_stream();
                        if data.is_empty() {
                            if send.send_data(data, last).is_err() || last {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        // A claim of one byte: h2 raises it to the chunk when it is sent, and
                        // no window is held for a body that has nothing yet (hyper does so).
                        send.reserve_capacity(1);
                        waiting = Some((data, last));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            send.reserve_capacity(0);
                            let _ = send.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
            }
        }
    })
    .await;
}

/// A client's request body on an HTTP/2 stream: its data (each chunk's window given back as it
/// is read) then its trailers. h2 checks it against its `Content-Length`, which goes upstream
/// with the request (hyper's client frames the body by it).
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

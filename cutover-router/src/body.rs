//! The bodies the router streams: [`RouterBody`] towards clients (an upstream's body, holding
//! the generation's in-flight guard and the access-log line until it ends) and
//! [`UpstreamBody`] towards upstreams (a client's body, retrievable until first read).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access_log::Pending;
use crate::generation::InFlightGuard;
use crate::stall::StallClock;
use crate::upstream::{BoxError, FastBody};

/// Response body of the router: either a streamed upstream body (holding the generation's
/// in-flight guard until it ends or is dropped) or a small body the router wrote itself.
pub(crate) struct RouterBody {
    pub(crate) kind: Kind,
    pub(crate) guard: Option<InFlightGuard>,
    /// The access-log line of this response, written when the body ends or is dropped.
    pub(crate) pending: Option<Box<Pending>>,
}

pub(crate) enum Kind {
    /// Through hyper's client (a request with a body, an upgrade).
    Upstream(Incoming),
    /// Through the router's own client (`upstream`).
    Fast(FastBody),
    Local(Option<Bytes>),
}

impl RouterBody {
    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Local(Some(text.into())),
            guard: None,
            pending: None,
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            Kind::Fast(body) => Pin::new(body).poll_frame(cx),
        };
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || this.is_end_stream() {
            this.guard = None; // body over: the request leaves its generation
        }
        if let Some(pending) = &mut this.pending {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    pending.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(None | Some(Err(_))) => this.pending = None, // logged now
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(data) => data.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Fast(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Local(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Fast(body) => body.size_hint(),
        }
    }
}

/// A client's request body: none (the router's own HTTP/1.1 path, `fast`, takes only bodyless
/// requests), hyper's (HTTP/1.1) or an HTTP/2 stream's (`h2srv`).
pub(crate) enum ClientBody {
    Empty,
    Hyper(Incoming),
    H2(crate::h2srv::RecvBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// How a client's request body is getting on, for the upstream call that sends it: whether
/// it failed because of the client (an upstream call that fails then is the client's 400 or
/// 408, not a 502), when it last moved (the upstream's time to answer counts from its end, not
/// from the request's start: a long upload is not a slow upstream), whether it waits for the
/// client now.
pub(crate) struct BodyWatch {
    /// How long the client may leave its body without a byte.
    timeout: Duration,
    state: Mutex<Progress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Malformed (a bad chunk size, a length that does not match, an HTTP/2 stream error).
    Malformed,
    /// No byte for the body timeout.
    Stalled,
}

struct Progress {
    fault: Fault,
    /// When the body last gave a frame (or ended, or was first asked for).
    moved: Instant,
    /// It waits for the client now.
    waiting: bool,
}

impl BodyWatch {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            state: Mutex::new(Progress {
                fault: Fault::None,
                moved: Instant::now(),
                waiting: false,
            }),
        }
    }

    pub(crate) fn fault(&self) -> Fault {
        lock(&self.state).fault
    }

    /// When an upstream given `patience` to answer after the body's last move has had it:
    /// `None` while the body waits for the client (its own timeout governs then).
    pub(crate) fn answer_due(&self, patience: Duration) -> Option<Instant> {
        let s = lock(&self.state);
        (!s.waiting).then_some(s.moved + patience)
    }

    fn moved(&self) {
        let mut s = lock(&self.state);
        s.moved = Instant::now();
        s.waiting = false;
    }
}

/// Request body sent upstream. `Slot` keeps the client's body retrievable until first polled.
pub(crate) enum UpstreamBody {
    Empty,
    Slot {
        slot: Arc<Mutex<Option<ClientBody>>>,
        body: Option<ClientBody>,
        watch: Arc<BodyWatch>,
        /// Runs while the body waits for the client: the body timeout.
        clock: StallClock,
    },
}

impl UpstreamBody {
    pub(crate) fn with_slot(slot: &Arc<Mutex<Option<ClientBody>>>, watch: &Arc<BodyWatch>) -> Self {
        Self::Slot {
            slot: Arc::clone(slot),
            body: None,
            watch: Arc::clone(watch),
            clock: StallClock::new(watch.timeout),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Slot {
                slot,
                body,
                watch,
                clock,
            } => {
                if body.is_none() {
                    *body = lock(slot).take();
                    watch.moved();
                }
                let Some(b) = body else {
                    return Poll::Ready(None);
                };
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(polled) => {
                        clock.moved();
                        watch.moved();
                        if matches!(polled, Some(Err(_))) {
                            lock(&watch.state).fault = Fault::Malformed;
                        }
                        Poll::Ready(polled)
                    }
                    Poll::Pending => {
                        lock(&watch.state).waiting = true;
                        if !clock.expired(cx) {
                            return Poll::Pending;
                        }
                        lock(&watch.state).fault = Fault::Stalled;
                        Poll::Ready(Some(Err(format!(
                            "the client sent no byte of its request body for {:?}",
                            watch.timeout
                        )
                        .into())))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Slot { body: Some(b), .. } => b.is_end_stream(),
            UpstreamBody::Slot { slot, body: None, .. } => {
                lock(slot).as_ref().is_none_or(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Slot { body: Some(b), .. } => b.size_hint(),
            UpstreamBody::Slot { slot, body: None, .. } => lock(slot)
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}

//! The bodies the router streams: [`RouterBody`] towards clients (an upstream's body, holding
//! the generation's in-flight guard and the access-log line until it ends) and
//! [`UpstreamBody`] towards upstreams (a client's body, retrievable until first read).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access_log::Pending;
use crate::generation::InFlightGuard;
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

/// Request body sent upstream. `Slot` keeps the client's body retrievable until first polled.
pub(crate) enum UpstreamBody {
    Empty,
    Slot {
        slot: Arc<Mutex<Option<ClientBody>>>,
        body: Option<ClientBody>,
        /// Set when reading the client's body failed (a malformed chunk size, say): the
        /// upstream call then fails because of the client, which is a 400, not a 502.
        client_failed: Arc<AtomicBool>,
    },
}

impl UpstreamBody {
    pub(crate) fn with_slot(slot: &Arc<Mutex<Option<ClientBody>>>, client_failed: &Arc<AtomicBool>) -> Self {
        Self::Slot {
            slot: Arc::clone(slot),
            body: None,
            client_failed: Arc::clone(client_failed),
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
                client_failed,
            } => {
                if body.is_none() {
                    *body = lock(slot).take();
                }
                match body {
                    Some(b) => {
                        let polled = Pin::new(b).poll_frame(cx);
                        if matches!(polled, Poll::Ready(Some(Err(_)))) {
                            client_failed.store(true, Ordering::Release);
                        }
                        polled
                    }
                    None => Poll::Ready(None),
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

//! What the router sends on an HTTP/2 stream: the answer's HEADERS (its fields as HTTP/2
//! wants them), then its body as DATA within the client's windows (the stream's and the
//! connection's; what does not fit waits for WINDOW_UPDATE), then trailers or END_STREAM.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::frame::{Data, Headers, Pseudo, Reason, Reset, StreamId};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Cancellable, Conn, Phase};
use crate::body::RouterBody;
use crate::upstream::BoxError;

/// The next frame of an answer's body.
pub(super) struct NextFrame {
    id: u32,
    body: Option<RouterBody>,
}

pub(super) type Polled = (
    u32,
    RouterBody,
    Option<Result<hyper::body::Frame<Bytes>, BoxError>>,
);

impl Future for NextFrame {
    type Output = Polled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        let body = self.body.as_mut().expect("polled after its end");
        // A panic in the body is its stream's error alone (see `alone`).
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(body).poll_frame(cx)));
        let frame = match polled {
            Ok(polled) => std::task::ready!(polled),
            Err(_) => Some(Err(BoxError::from("the answer's body panicked"))),
        };
        let body = self.body.take().expect("still here");
        Poll::Ready((self.id, body, frame))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    /// A request's answer: its HEADERS, then its body.
    pub(super) fn on_answer(&mut self, id: u32, answer: Option<Response<RouterBody>>) {
        if !self.streams.contains_key(&id) {
            return; // reset meanwhile
        }
        let Some(answer) = answer else {
            // Its handling panicked (see `alone`).
            self.out
                .push_back(Reset::new(StreamId::from(id), Reason::INTERNAL_ERROR).into());
            return self.remove(id, Reason::INTERNAL_ERROR);
        };
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        let (parts, body) = answer.into_parts();
        let mut fields = parts.headers;
        answer_fields(
            &mut fields,
            parts.status,
            self.hsts.as_ref(),
            (!e.head).then_some(&body),
        );
        let end = e.head || body.is_end_stream();
        let mut headers = Headers::new(StreamId::from(id), Pseudo::response(parts.status), fields);
        if end {
            headers.set_end_stream();
            self.out.push_back(headers.into());
            return self.send_done(id);
        }
        self.out.push_back(headers.into());
        e.send = Phase::Polling;
        self.sending.push(Cancellable::new(
            Arc::clone(&e.cancel),
            NextFrame { id, body: Some(body) },
        ));
    }

    pub(super) fn on_body(&mut self, (id, body, frame): Polled) {
        if !self.streams.contains_key(&id) {
            return;
        }
        match frame {
            None => {
                let mut last = Data::new(StreamId::from(id), Bytes::new());
                last.set_end_stream(true);
                self.out.push_back(last.into());
                self.send_done(id);
            }
            Some(Err(e)) => {
                tracing::debug!(id, error = %e, "an HTTP/2 answer's body failed");
                self.out
                    .push_back(Reset::new(StreamId::from(id), Reason::INTERNAL_ERROR).into());
                self.remove(id, Reason::INTERNAL_ERROR);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.send_data(id, body, data),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        self.out
                            .push_back(Headers::trailers(StreamId::from(id), trailers).into());
                        self.send_done(id);
                    }
                    Err(_) => self.poll_next_frame(id, body), // a frame kind h2 has no use for
                },
            },
        }
    }

    fn poll_next_frame(&mut self, id: u32, body: RouterBody) {
        if let Some(e) = self.streams.get_mut(&id) {
            e.send = Phase::Polling;
            self.sending.push(Cancellable::new(
                Arc::clone(&e.cancel),
                NextFrame { id, body: Some(body) },
            ));
        }
    }

    /// Sends what the windows allow of `data`; the rest waits for window.
    fn send_data(&mut self, id: u32, body: RouterBody, mut data: Bytes) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        let end = body.is_end_stream();
        if data.is_empty() && !end {
            return self.poll_next_frame(id, body);
        }
        loop {
            let room = e.send_window.min(self.send_window).min(self.max_frame as i64);
            if room <= 0 && !data.is_empty() {
                if self.send_window <= 0 && !e.queued {
                    e.queued = true;
                    self.blocked.push_back(id);
                }
                let since = self.blocked_now();
                if let Some(e) = self.streams.get_mut(&id) {
                    e.send = Phase::Blocked(Box::new((body, data, since)));
                }
                return;
            }
            let chunk = data.split_to(data.len().min(usize::try_from(room).unwrap_or(0)));
            e.send_window -= chunk.len() as i64;
            self.send_window -= chunk.len() as i64;
            let mut frame = Data::new(StreamId::from(id), chunk);
            let last = data.is_empty();
            frame.set_end_stream(last && end);
            self.out.push_back(frame.into());
            if last {
                break;
            }
        }
        if end {
            drop(body);
            self.send_done(id);
        } else {
            self.poll_next_frame(id, body);
        }
    }

    /// Window came: a blocked stream sends on.
    pub(super) fn resume(&mut self, id: u32) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        if let Phase::Blocked(_) = e.send {
            let Phase::Blocked(blocked) = std::mem::replace(&mut e.send, Phase::Polling) else {
                unreachable!("matched above");
            };
            let (body, data, _) = *blocked;
            self.send_data(id, body, data);
        }
    }

    /// The answer is sent: the stream goes, unless the client is still sending to a reader.
    pub(super) fn send_done(&mut self, id: u32) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        e.send = Phase::Done;
        if !e.recv_open {
            return self.remove(id, Reason::NO_ERROR);
        }
        let reader_gone = e
            .recv
            .as_ref()
            .is_none_or(|s| crate::body::lock(&s.state).dropped);
        if reader_gone {
            // Nobody reads the rest of the client's body: it may stop sending.
            self.out
                .push_back(Reset::new(StreamId::from(id), Reason::NO_ERROR).into());
            self.remove(id, Reason::NO_ERROR);
        }
    }
}

/// The fields of an answer as HTTP/2 sends them: no connection-specific ones, a `Date`,
/// HSTS when configured, a `content-length` when the body's size is known (`body` is `None`
/// for a HEAD request's answer, whose length is the upstream's to say).
fn answer_fields(
    fields: &mut HeaderMap,
    status: StatusCode,
    hsts: Option<&HeaderValue>,
    body: Option<&RouterBody>,
) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        fields.remove(name);
    }
    if !fields.contains_key(header::DATE) {
        let mut date = Vec::with_capacity(29);
        crate::fast::date::extend(&mut date);
        if let Ok(v) = HeaderValue::from_bytes(&date) {
            fields.insert(header::DATE, v);
        }
    }
    if let Some(v) = hsts {
        fields.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    let bodyless = status.is_informational() || status == StatusCode::NO_CONTENT;
    if !bodyless
        && !fields.contains_key(header::CONTENT_LENGTH)
        && let Some(n) = body.and_then(|b| b.size_hint().exact())
    {
        fields.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_fields_drop_connection_fields_and_add_date_and_length() {
        let mut f = HeaderMap::new();
        f.insert(header::CONNECTION, HeaderValue::from_static("close"));
        f.insert("keep-alive", HeaderValue::from_static("5"));
        f.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let body = RouterBody::local("hello");
        answer_fields(
            &mut f,
            StatusCode::OK,
            Some(&HeaderValue::from_static("max-age=1")),
            Some(&body),
        );
        assert!(!f.contains_key(header::CONNECTION) && !f.contains_key("keep-alive"));
        assert!(!f.contains_key(header::TRANSFER_ENCODING));
        assert!(f.contains_key(header::DATE));
        assert_eq!(
            f.get(header::CONTENT_LENGTH).map(HeaderValue::as_bytes),
            Some(&b"5"[..])
        );
        assert_eq!(
            f.get(header::STRICT_TRANSPORT_SECURITY)
                .map(HeaderValue::as_bytes),
            Some(&b"max-age=1"[..])
        );
    }
}

//! A client's accepted TCP stream as every protocol uses it (the own HTTP/1.1 path, hyper's,
//! TLS, HTTP/2, an upgraded tunnel): it holds the connection's place under the connection cap
//! ([`crate::limit`]) until the socket closes, and its writes fail once the client has taken no
//! byte for the send timeout ([`crate::RouterConfig::client_send_timeout`]), as nginx's
//! `send_timeout`: a client that stops reading (a slow-read attack, a vanished peer whose TCP
//! window stays shut) would otherwise hold its connection, its TLS state and the upstream call
//! whose answer it does not take, for ever. Only a write that cannot go on starts the clock;
//! one byte taken stops it, so a slow client that keeps reading is never cut.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stall::StallClock;

/// An accepted client socket (see the module documentation).
pub(crate) struct ClientStream<IO> {
    io: IO,
    /// The connection's place under the cap (`None`: not counted, unit tests).
    _slot: Option<crate::limit::Slot>,
    /// Runs while a write waits for the client.
    clock: StallClock,
}

impl<IO> ClientStream<IO> {
    pub(crate) fn new(io: IO, timeout: Duration, slot: Option<crate::limit::Slot>) -> Self {
        Self {
            io,
            _slot: slot,
            clock: StallClock::new(timeout),
        }
    }

    /// What a write came to: `Pending` starts (or goes on with) the clock, anything else
    /// stops it; a wait past the timeout is an error.
    fn judge<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.clock.moved();
            return polled;
        }
        if !self.clock.expired(cx) {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took no byte for {:?} (send timeout)",
                self.clock.timeout()
            ),
        )))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ClientStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ClientStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.judge(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.judge(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.judge(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.judge(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_reader_that_stops_fails_the_write_and_a_slow_one_does_not() {
        let timeout = Duration::from_millis(200);
        // A pipe of 4 KiB: writes wait as soon as the reader is that far behind.
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut ours = ClientStream::new(ours, timeout, None);
        // Slow but steady: 1 KiB every 50 ms, 32 KiB in all, past four timeouts' worth.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 1024];
            while got < 32 << 10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                got += theirs.read(&mut buf).await.unwrap();
            }
            theirs
        });
        ours.write_all(&[7u8; 32 << 10])
            .await
            .expect("a slow reader is never cut");
        let _theirs = reader.await.unwrap(); // kept open, never read again
        let began = std::time::Instant::now();
        let err = ours.write_all(&[7u8; 32 << 10]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let waited = began.elapsed();
        assert!(
            waited >= timeout && waited < timeout * 10,
            "failed after {waited:?}"
        );
    }
}

//! Zero-downtime replacement of a data plane by a newer one (socket hand-over).
//!
//! The sequence, on one control connection from the new process to the old one:
//! 1. new → old: `{"secret": ..., "op": "hand_over"}`;
//! 2. old: refuses mutations from now on (`handed_over` errors, which clients retry on the new
//!    one), snapshots its listeners and table, and answers one line (`{"status": "ok", "value":
//!    Offer}`) whose bytes carry duplicates of the listening sockets (`SCM_RIGHTS`, in the order
//!    of `Offer::listeners`);
//! 3. new: serves the received sockets and the table (both processes now accept on the same
//!    kernel sockets), binds its control socket on a temporary path and renames it over
//!    `control.sock`, writes `pid`, then sends `commit`;
//! 4. old: answers `ok`, stops accepting, drains its in-flight requests and exits; its end of the
//!    connection closes when it is gone, which tells the new one its predecessor's generations
//!    are drained.
//!
//! If the new process fails or goes away before `commit`, the old one lifts the freeze and keeps
//! serving as if nothing happened. The blocking parts (fd passing, waiting for `commit`) run on
//! blocking threads with 10 s socket timeouts.
//!
//! Rejected: `SO_REUSEPORT` with an ordered drain (connections already queued on the old
//! socket's accept queue are reset when it closes, and the kernel keeps hashing new ones to it
//! until then); re-binding after the old one closed (a window of refused connections).

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

use crate::Error;
use crate::files::{ListenerRecord, Paths, RouteRecord};
use crate::proto::{Answer, ErrorKind, MAX_LINE, Op, Request};
use crate::server::Shared;

/// Most sockets one hand-over carries (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the old data plane hands over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Offer {
    pub(crate) pid: u32,
    pub(crate) epoch: u32,
    pub(crate) listeners: Vec<ListenerRecord>,
    pub(crate) routes: Vec<RouteRecord>,
    /// Holds and maintenance (absent from an older data plane's offer).
    #[serde(default)]
    pub(crate) gates: Vec<crate::GateRecord>,
    /// Feature flags (absent from an older data plane's offer).
    #[serde(default)]
    pub(crate) flags: Vec<crate::FlagsRecord>,
}

/// What the new data plane received, before it commits.
pub(crate) struct Received {
    pub(crate) offer: Offer,
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) conn: StdUnixStream,
}

fn take_over_err(message: impl Into<String>) -> Error {
    Error::TakeOver {
        message: message.into(),
    }
}

/// Sends `line` with `fds` attached to its first bytes.
fn send_with_fds(stream: &StdUnixStream, line: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other("too many sockets for one message"));
    }
    let sent = sendmsg(stream, &[IoSlice::new(line)], &mut control, SendFlags::NOSIGNAL)?;
    let mut writer = stream;
    writer.write_all(&line[sent..])?;
    writer.flush()
}

/// Receives one `\n`-terminated line and every descriptor attached to it.
fn recv_with_fds(stream: &StdUnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(std::io::Error::other("more sockets than one hand-over carries"));
        }
        if msg.bytes == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..msg.bytes]);
        if let Some(end) = data.iter().position(|&b| b == b'\n') {
            data.truncate(end);
            return Ok((data, fds));
        }
        if data.len() as u64 > MAX_LINE {
            return Err(std::io::Error::other("hand-over line too long"));
        }
    }
}

/// Reads one short line (`commit`, `ok`), byte by byte so nothing after it is consumed.
fn read_short_line(mut stream: &StdUnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1024 {
        match stream.read(&mut byte)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            _ => line.push(byte[0]),
        }
    }
    Err(std::io::Error::other("line too long"))
}

fn blocking(stream: UnixStream) -> std::io::Result<StdUnixStream> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// The old side: answers a `hand_over` request (see the module docs).
pub(crate) async fn give(shared: Arc<Shared>, stream: UnixStream) {
    let (offer, fds) = {
        let state = shared.state.lock().await;
        if shared.handing_over.swap(true, Ordering::SeqCst) {
            drop(state);
            let mut stream = stream;
            let answer = Answer::error(ErrorKind::Failed, "a hand-over is already in progress");
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &answer.line()).await;
            return;
        }
        let mut listeners = Vec::new();
        let mut fds = Vec::new();
        for (kind, live) in &state.listeners {
            match live.socket.try_clone() {
                Ok(dup) => {
                    listeners.push(ListenerRecord {
                        kind: kind.clone(),
                        addr: live.addr,
                    });
                    fds.push(OwnedFd::from(dup));
                }
                Err(e) => {
                    tracing::warn!(?kind, error = %e, "cannot duplicate a listening socket for the hand-over; the successor will not serve it")
                }
            }
        }
        let offer = Offer {
            pid: std::process::id(),
            epoch: shared.epoch,
            listeners,
            routes: shared.route_records(),
            gates: crate::gates::records(&shared.router),
            flags: crate::gates::flag_records(&shared.router),
        };
        (offer, fds)
    };
    let successor_pid = rustix::net::sockopt::socket_peercred(&stream)
        .map(|c| c.pid.as_raw_nonzero().get())
        .unwrap_or(0);
    tracing::info!(
        successor_pid,
        listeners = offer.listeners.len(),
        routes = offer.routes.len(),
        "handing over to a newer data plane"
    );
    let line = Answer::ok(&offer).line();
    let exchange = async {
        let stream = blocking(stream)?;
        tokio::task::spawn_blocking(move || {
            send_with_fds(&stream, &line, &fds)?;
            drop(fds);
            let reply = read_short_line(&stream)?;
            if reply != "commit" {
                return Err(std::io::Error::other(format!("expected commit, got {reply:?}")));
            }
            (&stream).write_all(b"ok\n")?;
            Ok(stream)
        })
        .await
        .map_err(std::io::Error::other)?
    };
    match exchange.await {
        Ok(stream) => {
            shared.handed_over.store(true, Ordering::SeqCst);
            *shared
                .successor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stream);
            tracing::info!(successor_pid, "handed over; stopping accepting and draining");
            let _ = shared.stop.send(true);
        }
        Err(e) => {
            shared.handing_over.store(false, Ordering::SeqCst);
            tracing::warn!(successor_pid, error = %e, "hand-over aborted; still serving");
        }
    }
}

/// The new side, step 1–2: asks the serving data plane for its listeners and table.
pub(crate) async fn receive(paths: &Paths, secret: &str) -> Result<Received, Error> {
    let socket = paths.socket();
    let request = {
        let mut v = serde_json::to_vec(&Request {
            secret,
            op: &Op::HandOver,
        })
        .map_err(|e| take_over_err(format!("cannot encode the request: {e}")))?;
        v.push(b'\n');
        v
    };
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|source| Error::NotRunning {
            socket: socket.clone(),
            source,
        })?;
    let stream = blocking(stream).map_err(|e| take_over_err(format!("socket setup: {e}")))?;
    let (line, fds, stream) = tokio::task::spawn_blocking(move || {
        (&stream).write_all(&request)?;
        let (line, fds) = recv_with_fds(&stream)?;
        Ok::<_, std::io::Error>((line, fds, stream))
    })
    .await
    .map_err(|e| take_over_err(e.to_string()))?
    .map_err(|e| take_over_err(format!("receiving the listeners from {}: {e}", socket.display())))?;
    let answer: Answer = serde_json::from_slice(&line)
        .map_err(|e| take_over_err(format!("the running data plane's answer is not valid: {e}")))?;
    let offer: Offer = match answer {
        Answer::Ok { value } => serde_json::from_value(value).map_err(|e| {
            take_over_err(format!(
                "the running data plane's offer is not valid (an older version?): {e}"
            ))
        })?,
        Answer::Error { message, .. } => return Err(take_over_err(message)),
    };
    if fds.len() != offer.listeners.len() {
        return Err(take_over_err(format!(
            "received {} sockets for {} listeners",
            fds.len(),
            offer.listeners.len()
        )));
    }
    Ok(Received {
        offer,
        fds,
        conn: stream,
    })
}

/// The new side, step 3's end: tells the old one to stop; returns the connection, which the old
/// one closes when it exits.
pub(crate) async fn commit(conn: StdUnixStream) -> Result<StdUnixStream, Error> {
    tokio::task::spawn_blocking(move || {
        (&conn).write_all(b"commit\n")?;
        let reply = read_short_line(&conn)?;
        if reply != "ok" {
            return Err(std::io::Error::other(format!("expected ok, got {reply:?}")));
        }
        Ok(conn)
    })
    .await
    .map_err(|e| take_over_err(e.to_string()))?
    .map_err(|e| {
        take_over_err(format!(
            "the old data plane did not confirm the hand-over ({e}); both may now serve: stop the old one"
        ))
    })
}

/// Marks the predecessor gone once it closed the hand-over connection (it exits after draining).
pub(crate) fn watch_predecessor(conn: StdUnixStream, gone: tokio::sync::watch::Sender<bool>) {
    tokio::task::spawn_blocking(move || {
        let _ = conn.set_read_timeout(None);
        let mut byte = [0u8; 1];
        while let Ok(n) = (&conn).read(&mut byte) {
            if n == 0 {
                break;
            }
        }
        let _ = gone.send(true);
    });
}

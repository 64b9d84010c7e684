//! Serving the control channel on TCP (see the crate's `tcp` module for the protocol): a task
//! that binds the address (retrying while a predecessor still holds it), accepts until the data
//! plane stops, and answers each connection's one signed request.
//!
//! At most [`MAX_CONNS`] connections are read at once (a connection past that is closed at
//! once): before its request is checked a peer is anyone on the network, and each connection
//! may hold up to a 1 MiB line for 10 s.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::*;
use crate::TcpControl;
use crate::tcp::{Seen, now_ms, seal_answer};

/// Control connections read at the same time.
const MAX_CONNS: usize = 64;

/// Spawns the TCP control listener; it ends when the data plane stops.
pub(super) fn spawn(shared: &Arc<Shared>, control: TcpControl) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut stop = shared.stop.subscribe();
        let listener = loop {
            match bind_tcp(control.addr).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }) {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(addr = %control.addr, error = %e, "cannot listen for control requests on TCP yet; retrying");
                    tokio::select! {
                        _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        };
        tracing::info!(addr = %control.addr, "control channel listening on TCP (signed requests only)");
        let seen = Arc::new(Seen::since(now_ms()));
        let slots = Arc::new(Semaphore::new(MAX_CONNS));
        loop {
            tokio::select! {
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            tracing::warn!(%peer, "too many control connections at once; closing one");
                            continue;
                        };
                        let shared = Arc::clone(&shared);
                        let secret = control.secret.clone();
                        let seen = Arc::clone(&seen);
                        tokio::spawn(async move {
                            handle(&shared, &secret, &seen, stream, peer).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a TCP control connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    })
}

async fn reply(stream: &mut TcpStream, line: &[u8]) {
    let _ = stream.write_all(line).await;
    let _ = stream.flush().await;
}

async fn handle(
    shared: &Shared,
    secret: &crate::SharedSecret,
    seen: &Seen,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let line = match tokio::time::timeout(proto::READ_TIMEOUT, proto::read_line(&mut stream)).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            let answer = Answer::error(ErrorKind::BadRequest, format!("bad request line: {e}"));
            return reply(&mut stream, &answer.line()).await;
        }
        Err(_) => {
            let answer = Answer::error(ErrorKind::BadRequest, "no complete request line within 10 s");
            return reply(&mut stream, &answer.line()).await;
        }
    };
    let (nonce, request) = match seen.open(secret, &line, now_ms()) {
        Ok(opened) => opened,
        Err(why) => {
            tracing::warn!(%peer, reason = %why, "refused a TCP control request");
            let answer = Answer::error(ErrorKind::Refused, why.to_string());
            return reply(&mut stream, &answer.line()).await;
        }
    };
    let answer = match serde_json::from_str::<Op>(&request) {
        Err(e) => Answer::error(ErrorKind::BadRequest, format!("unknown or malformed op: {e}")),
        Ok(Op::HandOver | Op::Shutdown) => Answer::error(
            ErrorKind::BadRequest,
            "hand-over and shutdown are served on the control socket only",
        ),
        Ok(op) => dispatch(shared, op).await,
    };
    reply(&mut stream, &seal_answer(secret, &nonce, &answer)).await;
}

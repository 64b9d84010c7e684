//! The control channel over TCP: signed requests from the holder of the secret are served,
//! anything else is refused and changes nothing.

use std::net::SocketAddr;
use std::time::Duration;

use cutover_dataplane::{Client, Error, ListenerKind, Options, SharedSecret, TcpControl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn free_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A plain line sent to the TCP control port; the answer line.
async fn raw(addr: SocketAddr, line: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(STEP, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

#[tokio::test]
async fn signed_requests_are_served_over_tcp_and_a_wrong_secret_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let control = free_port().await;
    let secret = SharedSecret::new(&[7; 32]).unwrap();
    let (dp, _) = Dp::start_opts(
        Options {
            data_dir: tmp.path().to_owned(),
            take_over: false,
            control_tcp: Some(TcpControl {
                addr: control,
                secret: secret.clone(),
            }),
        },
        |_| true,
    )
    .await;
    let remote = Client::tcp(control, secret);
    // The TCP listener may come up a moment after the unix socket.
    let deadline = tokio::time::Instant::now() + STEP;
    let hello = loop {
        match remote.hello().await {
            Ok(h) => break h,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let up = Upstream::start("one").await;
    let listen = remote
        .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    remote
        .switch("shop", "prod", "web", "v1", vec![up.addr])
        .await
        .unwrap();
    let reply = get(listen, "web.prod.shop.localhost", "/").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "one"));
    assert_eq!(
        dp.client.routes().await.unwrap().len(),
        1,
        "the same table as on the socket"
    );

    // Another secret: refused, nothing changed.
    let wrong = Client::tcp(control, SharedSecret::new(&[8; 32]).unwrap());
    match wrong.remove("shop", "prod", "web").await {
        Err(Error::Refused { message }) => assert!(message.contains("signature"), "{message}"),
        other => panic!("a request signed with another secret was not refused: {other:?}"),
    }
    // An unsigned request (the unix socket's form, secret field and all): refused.
    let answer = raw(
        control,
        "{\"secret\":\"x\",\"op\":\"remove\",\"app\":\"shop\",\"env\":\"prod\",\"service\":\"web\"}\n",
    )
    .await;
    assert!(answer.contains("\"refused\""), "{answer}");
    assert_eq!(remote.routes().await.unwrap().len(), 1);
    assert_eq!(remote.hello().await.unwrap().pid, hello.pid);

    // Something else listening where a data plane was expected: its answer is not trusted.
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let impostor_addr = impostor.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = impostor.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"{\"status\":\"ok\",\"value\":{\"pid\":1}}\n").await;
        }
    });
    let fooled = Client::tcp(impostor_addr, SharedSecret::new(&[7; 32]).unwrap());
    match fooled.hello().await {
        Err(Error::Protocol { message }) => assert!(message.contains("not signed"), "{message}"),
        other => panic!("an unsigned answer was taken: {other:?}"),
    }
}

//! `Router::serve_threads`: one socket served from several threads with a runtime each, as the
//! data plane serves its main and TLS listeners.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_router::{Backend, Listening, Router, RouterConfig};
use http::StatusCode;
use tokio::sync::watch;

use crate::support::*;

/// Binds 127.0.0.1:0 and serves it from `threads` threads; returns the address, the stop
/// switch and the serving task.
fn serve_threads(
    router: &Router,
    listening: Listening,
    threads: usize,
) -> (
    std::net::SocketAddr,
    watch::Sender<bool>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let r = router.clone();
    let task = tokio::spawn(async move { r.serve_threads(listening, socket, threads, stopped).await });
    (addr, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_share_the_table_a_switch_applies_to_all_and_stop_drains() {
    let v1 = upstream(&sha('1')).await;
    let v2 = upstream(&sha('2')).await;
    let router = Router::new(RouterConfig::default());
    router.switch(&key("yves"), Backend::new(sha('1'), vec![v1.addr]));
    let (addr, stop, task) = serve_threads(&router, Listening::ByHost, 3);
    let host: Arc<str> = router.host_of(&key("yves")).into();

    // Twelve keep-alive clients, spread over the threads by the kernel; a switch mid-way.
    let deadline = Instant::now() + Duration::from_millis(1200);
    let mut clients = Vec::new();
    for _ in 0..12 {
        let host = Arc::clone(&host);
        clients.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr).await;
            let mut log = Vec::new();
            while Instant::now() < deadline && log.len() < 3_000 {
                let sent = Instant::now();
                let a = c.get(&host, "/").await.expect("request through a router thread");
                assert_eq!(a.status, StatusCode::OK, "{}", a.body);
                log.push((sent, a.body));
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = router
        .switch(&key("yves"), Backend::new(sha('2'), vec![v2.addr]))
        .unwrap();
    let switched = Instant::now();
    assert_eq!(old.drain(STEP).await, 0);
    let (mut total, mut after) = (0, 0);
    for c in clients {
        for (sent, body) in tokio::time::timeout(STEP, c).await.unwrap().unwrap() {
            total += 1;
            if sent > switched {
                after += 1;
                assert_eq!(
                    body,
                    sha('2'),
                    "a thread answered with the old version after the switch"
                );
            }
        }
    }
    assert!(
        total > 100 && after > 0,
        "{total} requests, {after} after the switch"
    );

    // A slow request in flight when the listener stops is answered; then every thread ends.
    let mut slow = Conn::connect(addr).await;
    let host2 = host.to_string();
    let in_flight = tokio::spawn(async move { slow.get(&host2, "/slow?ms=300").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    let a = tokio::time::timeout(STEP, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, sha('2').as_str()));
    tokio::time::timeout(STEP, task).await.unwrap().unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the socket is closed once every thread has stopped"
    );
}

#[tokio::test]
async fn a_fixed_listener_on_threads_answers_for_its_route_whatever_the_host() {
    let v1 = upstream(&sha('1')).await;
    let router = Router::new(RouterConfig::default());
    router.switch(&key("zed"), Backend::new(sha('1'), vec![v1.addr]));
    let (addr, stop, task) = serve_threads(&router, Listening::Fixed(key("zed")), 1);
    let a = Conn::connect(addr)
        .await
        .get("anything.example", "/")
        .await
        .unwrap();
    assert_eq!((a.status, a.body), (StatusCode::OK, sha('1')));
    stop.send(true).unwrap();
    tokio::time::timeout(STEP, task).await.unwrap().unwrap().unwrap();
}

//! Atomic switch under load, drain, streaming without buffering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_router::{Backend, RouterConfig};
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

#[tokio::test]
async fn switch_returns_previous_generation_and_updates_table() {
    let r = TestRouter::start(RouterConfig::default()).await;
    let b1 = Backend::new(sha('1'), vec![dead_addr().await]);
    assert!(r.router.switch(&key("yves"), b1.clone()).is_none());
    assert_eq!(r.router.current(&key("yves")), Some(b1.clone()));
    let g1 = r.router.generation(&key("yves")).unwrap();
    assert!(!g1.is_retired());

    let b2 = Backend::new(sha('2'), vec![]);
    let old = r.router.switch(&key("yves"), b2.clone()).unwrap();
    assert_eq!(old.id(), g1.id());
    assert_eq!(old.backend(), &b1);
    assert!(g1.is_retired());
    assert_eq!(r.router.routes(), vec![(key("yves"), b2)]);
    assert_eq!(old.drain(Duration::from_millis(10)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_drops_nothing_and_old_version_never_answers_after() {
    let v1 = upstream(&sha('1')).await;
    let v2 = upstream(&sha('2')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let host: Arc<str> = r.host("yves").into();

    const CLIENTS: usize = 8;
    const MAX_PER_CLIENT: usize = 5_000;
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let host = Arc::clone(&host);
        let addr = r.addr;
        clients.push(tokio::spawn(async move {
            // One keep-alive connection per client for the whole run.
            let mut c = Conn::connect(addr).await;
            let mut log = Vec::new();
            while Instant::now() < deadline && log.len() < MAX_PER_CLIENT {
                let sent = Instant::now();
                let outcome = match c.get(&host, "/").await {
                    Ok(a) if a.status == StatusCode::OK => {
                        assert_eq!(a.version(), Some(a.body.as_str()));
                        Ok(a.body)
                    }
                    Ok(a) => Err(format!("{}: {}", a.status, a.body)),
                    Err(e) => Err(e.to_string()),
                };
                log.push((sent, outcome));
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let old = r
        .router
        .switch(&key("yves"), Backend::new(sha('2'), vec![v2.addr]))
        .unwrap();
    let switched = Instant::now();
    assert_eq!(old.drain(STEP).await, 0);

    let mut total = 0;
    let (mut before_v1, mut after_v2) = (0, 0);
    for client in clients {
        let log = tokio::time::timeout(STEP, client).await.unwrap().unwrap();
        for (sent, outcome) in log {
            total += 1;
            let version = outcome.unwrap_or_else(|e| panic!("request failed: {e}"));
            if sent > switched {
                assert_eq!(version, sha('2'), "old version answered after the switch");
                after_v2 += 1;
            } else if version == sha('1') {
                before_v1 += 1;
            }
        }
    }
    assert!(before_v1 > 0 && after_v2 > 0, "{before_v1} / {after_v2}");
    eprintln!("switch under load: {total} requests, 0 failed, {after_v2} after switch all v2");
}

#[tokio::test]
async fn drain_waits_for_slow_request_of_old_generation() {
    let v1 = upstream(&sha('1')).await;
    let v2 = upstream(&sha('2')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let host = r.host("yves");
    let mut slow_conn = Conn::connect(r.addr).await;
    let h = host.clone();
    let slow = tokio::spawn(async move {
        let ans = slow_conn.get(&h, "/slow?ms=500").await;
        (ans, Instant::now())
    });
    let g1 = r.router.generation(&key("yves")).unwrap();
    wait_until(|| g1.in_flight() == 1).await;

    let old = r
        .router
        .switch(&key("yves"), Backend::new(sha('2'), vec![v2.addr]))
        .unwrap();
    assert_eq!(old.in_flight(), 1);
    let mut c = Conn::connect(r.addr).await;
    assert_eq!(c.get(&host, "/").await.unwrap().body, sha('2'));

    assert_eq!(old.drain(STEP).await, 0);
    let drained = Instant::now();
    let (ans, finished) = slow.await.unwrap();
    let ans = ans.unwrap();
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(
        ans.body,
        sha('1'),
        "in-flight request completes on the old version"
    );
    // The guard is released while the body completes, so drain ends no earlier than ~then.
    assert!(drained + Duration::from_millis(200) > finished);
}

#[tokio::test]
async fn drain_timeout_returns_requests_still_running() {
    let v1 = upstream(&sha('1')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let host = r.host("yves");
    let mut conns = Vec::new();
    for _ in 0..2 {
        let mut c = Conn::connect(r.addr).await;
        let h = host.clone();
        conns.push(tokio::spawn(async move { c.get(&h, "/slow?ms=1500").await }));
    }
    let g1 = r.router.generation(&key("yves")).unwrap();
    wait_until(|| g1.in_flight() == 2).await;
    let old = r
        .router
        .switch(&key("yves"), Backend::new(sha('2'), vec![]))
        .unwrap();
    let t = Instant::now();
    assert_eq!(old.drain(Duration::from_millis(100)).await, 2);
    assert!(t.elapsed() < Duration::from_millis(1000));
    for c in conns {
        assert_eq!(c.await.unwrap().unwrap().body, sha('1'));
    }
    assert_eq!(old.in_flight(), 0);
}

#[tokio::test]
async fn response_body_is_streamed_and_counted_until_its_end() {
    let v1 = upstream(&sha('1')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let mut c = Conn::connect(r.addr).await;
    let req = Request::get("/stream")
        .header("host", r.host("yves"))
        .body(Conn::body(""))
        .unwrap();
    let resp = tokio::time::timeout(STEP, c.send(req)).await.unwrap().unwrap();
    assert_eq!(resp.headers()["x-cutover-version"], sha('1').as_str());
    let mut body = resp.into_body();
    // The upstream is blocked after its first chunk: it must still reach us.
    let first = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("first chunk was buffered by the router")
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"first\n"[..]));

    // Headers arrived long ago, but the request is in flight until the body ends.
    let old = r
        .router
        .switch(&key("yves"), Backend::new(sha('2'), vec![]))
        .unwrap();
    assert_eq!(old.in_flight(), 1);
    assert_eq!(old.drain(Duration::from_millis(50)).await, 1);

    v1.release.notify_one();
    let rest = tokio::time::timeout(STEP, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"second\n");
    assert_eq!(old.drain(STEP).await, 0);
}

#[tokio::test]
async fn request_body_is_streamed_to_upstream() {
    let v1 = upstream(&sha('1')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let mut c = Conn::connect(r.addr).await;
    let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes, hyper::Error>::new(1);
    let req = Request::post("/echo")
        .header("host", r.host("yves"))
        .body(body.boxed())
        .unwrap();
    let resp_fut = tokio::spawn(async move { c.send(req).await });
    tx.send_data(bytes::Bytes::from_static(b"part-1;")).await.unwrap();
    // The echo upstream answers while the upload is still open: nothing waits for the end.
    let resp = tokio::time::timeout(STEP, resp_fut)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut echoed = resp.into_body();
    let first = tokio::time::timeout(STEP, echoed.frame())
        .await
        .expect("request body was buffered")
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"part-1;"[..]));
    tx.send_data(bytes::Bytes::from_static(b"part-2")).await.unwrap();
    drop(tx);
    let rest = tokio::time::timeout(STEP, echoed.collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&rest.to_bytes()[..], b"part-2");
}

#[tokio::test]
async fn keep_alive_client_is_not_pinned_to_old_generation() {
    let v1 = upstream(&sha('1')).await;
    let v2 = upstream(&sha('2')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let mut c = Conn::connect(r.addr).await;
    let host = r.host("yves");
    assert_eq!(c.get(&host, "/").await.unwrap().body, sha('1'));
    r.switch("yves", &sha('2'), &[&v2]);
    let ans = c.get(&host, "/").await.unwrap();
    assert_eq!(ans.body, sha('2'));
    assert_eq!(ans.version(), Some(sha('2').as_str()));
}

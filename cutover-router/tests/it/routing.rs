//! Host routing, error answers, forwarded headers, retries, fixed listeners, upgrades.

use std::time::Duration;

use cutover_router::{Backend, RouterConfig};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[tokio::test]
async fn routes_by_host_case_insensitive_and_adds_version_header() {
    let a = upstream(&sha('a')).await;
    let b = upstream(&sha('b')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    r.switch("zed", &sha('b'), &[&b]);
    let mut c = Conn::connect(r.addr).await;

    let ans = c.get("YVES.Stage.shop.localhost:8080", "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(ans.body, sha('a'));
    assert_eq!(ans.version(), Some(sha('a').as_str()));

    let ans = c.get(&r.host("zed"), "/").await.unwrap();
    assert_eq!(ans.body, sha('b'));
    assert_eq!(ans.version(), Some(sha('b').as_str()));
}

#[tokio::test]
async fn unknown_host_is_a_plain_404_naming_no_route() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    r.switch("zed", &sha('a'), &[&a]);
    let mut c = Conn::connect(r.addr).await;
    let ans = c.get("nope.stage.shop.localhost", "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::NOT_FOUND);
    assert_eq!(ans.body, "cutover router: no route for this host\n");
    assert!(
        !ans.body.contains("yves") && !ans.body.contains("stage"),
        "{}",
        ans.body
    );
    assert!(ans.version().is_none());
}

#[tokio::test]
async fn route_without_upstreams_is_503_and_remove_gives_404() {
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[]);
    let mut c = Conn::connect(r.addr).await;
    let ans = c.get(&r.host("yves"), "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ans.body.contains("no upstreams"), "{}", ans.body);

    let old = r.router.remove(&key("yves")).expect("route existed");
    assert!(old.is_retired());
    assert!(r.router.routes().is_empty());
    let ans = c.get(&r.host("yves"), "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sets_forwarded_headers_and_strips_hop_by_hop() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    for (path, edge) in crate::edge::both_paths(&Default::default(), dir.path()) {
        r.router.set_edge(edge).unwrap();
        let mut c = Conn::connect(r.addr).await;
        let req = Request::get("/headers")
            .header("host", &host)
            .header("x-forwarded-for", "203.0.113.9")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "secret")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("cutover-flags", "admin=on")
            .header("x-app", "kept")
            .body(Conn::body(""))
            .unwrap();
        let resp = c.send(req).await.unwrap();
        assert_eq!(resp.headers()["x-cutover-version"], sha('a').as_str());
        let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        // The client is no trusted proxy: its own X-Forwarded-For is replaced, not appended to.
        assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{path}: {text}");
        assert!(!text.contains("203.0.113.9"), "{path}: {text}");
        assert!(
            text.contains(&format!("x-forwarded-host: {host}\n")),
            "{path}: {text}"
        );
        assert!(text.contains("x-forwarded-proto: http\n"), "{path}: {text}");
        assert!(text.contains(&format!("host: {host}\n")), "{path}: {text}");
        assert!(text.contains("x-app: kept\n"), "{path}: {text}");
        assert!(!text.contains("x-private"), "{path}: {text}");
        assert!(!text.contains("keep-alive: timeout"), "{path}: {text}");
        assert!(!text.contains("te: trailers"), "{path}: {text}");
        assert!(!text.contains("cutover-flags"), "{path}: {text}");
    }
}

#[tokio::test]
async fn connection_refused_moves_to_next_upstream() {
    let live = upstream(&sha('a')).await;
    let dead = dead_addr().await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.router
        .switch(&key("yves"), Backend::new(sha('a'), vec![dead, live.addr]));
    let mut c = Conn::connect(r.addr).await;
    for _ in 0..10 {
        let ans = c.get(&r.host("yves"), "/").await.unwrap();
        assert_eq!(ans.status, StatusCode::OK, "{}", ans.body);
        assert_eq!(ans.body, sha('a'));
    }
    // A POST body is also retried: the client never polled it before the connect failed.
    for _ in 0..4 {
        let req = Request::post("/echo")
            .header("host", r.host("yves"))
            .body(Conn::body("payload"))
            .unwrap();
        let resp = c.send(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"payload");
    }
}

#[tokio::test]
async fn all_upstreams_dead_is_502() {
    let r = TestRouter::start(RouterConfig::default()).await;
    let backend = Backend::new(sha('a'), vec![dead_addr().await, dead_addr().await]);
    r.router.switch(&key("yves"), backend);
    let mut c = Conn::connect(r.addr).await;
    let ans = c.get(&r.host("yves"), "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::BAD_GATEWAY);
    assert!(ans.body.contains("connect"), "{}", ans.body);
}

#[tokio::test]
async fn three_dead_upstreams_of_four_fail_no_request_and_are_tried_once_each() {
    // A node died with 3 of the route's 4 replicas: their ports refuse connections.
    let live = upstream(&sha('a')).await;
    let mut upstreams = vec![dead_addr().await, dead_addr().await, dead_addr().await];
    upstreams.insert(2, live.addr);
    let r = TestRouter::start(RouterConfig::default()).await;
    r.router.switch(&key("yves"), Backend::new(sha('a'), upstreams));
    let mut c = Conn::connect(r.addr).await;
    let mut failed = 0;
    for _ in 0..200 {
        let ans = c.get(&r.host("yves"), "/").await.unwrap();
        if ans.status != StatusCode::OK {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "{failed} of 200 requests failed");
    // Each dead upstream cost one connect: then it was suspect and tried after the live one.
    let text = r.router.encode_metrics();
    let errors = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "cutover_router_upstream_connect_errors_total{app=\"shop\",env=\"stage\",service=\"yves\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no connect error series in:\n{text}"));
    assert_eq!(errors.trim(), "3", "connect errors");
}

#[tokio::test]
async fn a_suspect_upstream_is_tried_again_once_its_mark_ends() {
    // A replica refused once (restarting, say) and then listens again on the same port.
    let one = upstream("one").await;
    let port = released_addr().await;
    let config = RouterConfig {
        suspect_for: Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let r = TestRouter::start(config).await;
    r.router
        .switch(&key("yves"), Backend::new(sha('a'), vec![port, one.addr]));
    let mut c = Conn::connect(r.addr).await;
    for _ in 0..4 {
        let ans = c.get(&r.host("yves"), "/").await.unwrap();
        assert_eq!((ans.status, ans.body.as_str()), (StatusCode::OK, "one"));
    }
    let two = upstream_at("two", port).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut bodies = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let ans = c.get(&r.host("yves"), "/").await.unwrap();
        assert_eq!(ans.status, StatusCode::OK);
        bodies.insert(ans.body);
    }
    assert!(
        bodies.contains("two"),
        "the replica is back in the rotation: {bodies:?}"
    );
    drop(two);
}

#[tokio::test]
async fn slow_upstream_head_is_504() {
    let a = upstream(&sha('a')).await;
    let config = RouterConfig {
        response_header_timeout: Duration::from_millis(100),
        ..RouterConfig::default()
    };
    let r = TestRouter::start(config).await;
    r.switch("yves", &sha('a'), &[&a]);
    let mut c = Conn::connect(r.addr).await;
    let ans = c.get(&r.host("yves"), "/slow?ms=1000").await.unwrap();
    assert_eq!(ans.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn round_robin_within_generation() {
    // Both upstreams belong to one generation; their bodies tell them apart.
    let one = upstream("one").await;
    let two = upstream("two").await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&one, &two]);
    let mut c = Conn::connect(r.addr).await;
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let ans = c.get(&r.host("yves"), "/").await.unwrap();
        assert_eq!(ans.status, StatusCode::OK);
        assert_eq!(ans.version(), Some(sha('a').as_str()));
        bodies.push(ans.body);
    }
    for pair in bodies.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {bodies:?}");
    }
}

#[tokio::test]
async fn fixed_listener_ignores_host() {
    let a = upstream(&sha('a')).await;
    let router = cutover_router::Router::new(RouterConfig::default());
    router.switch(&key("yves"), Backend::new(sha('a'), vec![a.addr]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let r = router.clone();
    let serve = tokio::spawn(async move {
        r.serve_fixed(key("yves"), listener, async {
            let _ = rx.await;
        })
        .await
    });
    let mut c = Conn::connect(addr).await;
    let ans = c.get("anything.example", "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(ans.body, sha('a'));
    assert_eq!(ans.version(), Some(sha('a').as_str()));
    tx.send(()).unwrap();
    tokio::time::timeout(STEP, serve).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn upgrade_is_tunnelled_and_counted_in_flight() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        r.host("yves")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    tokio::time::timeout(STEP, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "router closed before 101");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(
        text.contains(&format!("x-cutover-version: {}", sha('a'))),
        "{text}"
    );
    let generation = r.router.generation(&key("yves")).unwrap();
    wait_until(|| generation.in_flight() == 1).await;

    s.write_all(b"ping through tunnel").await.unwrap();
    let mut echoed = vec![0u8; 19];
    tokio::time::timeout(STEP, s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through tunnel");
    drop(s);
    assert_eq!(generation.drain(STEP).await, 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_then_stops_accepting() {
    let a = upstream(&sha('a')).await;
    let mut r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    let mut c = Conn::connect(r.addr).await;
    let host = r.host("yves");
    let slow = tokio::spawn(async move { c.get(&host, "/slow?ms=400").await });
    let generation = r.router.generation(&key("yves")).unwrap();
    wait_until(|| generation.in_flight() == 1).await;
    let serve = r.stop();
    let ans = tokio::time::timeout(STEP, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(ans.body, sha('a'));
    tokio::time::timeout(STEP, serve).await.unwrap().unwrap().unwrap();
    assert!(TcpStream::connect(r.addr).await.is_err(), "listener still open");
}

#[tokio::test]
async fn a_request_on_an_open_connection_just_after_shutdown_is_still_answered() {
    // A keep-alive connection that is idle when the shutdown starts (or one accepted a moment
    // before it, its request head not read yet): its request is on the wire, and closing the
    // connection would fail it. It is answered, with `Connection: close`.
    let a = upstream(&sha('a')).await;
    let mut r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    let mut c = Conn::connect(r.addr).await;
    assert_eq!(c.get(&host, "/").await.unwrap().status, StatusCode::OK);
    let serve = r.stop();
    tokio::time::timeout(STEP, async {
        while TcpStream::connect(r.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the listener closes");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let ans = c.get(&host, "/").await.expect("answered after the stop");
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(
        ans.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    tokio::time::timeout(STEP, serve).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_is_bounded_by_grace() {
    let a = upstream(&sha('a')).await;
    let config = RouterConfig {
        shutdown_grace: Duration::from_millis(200),
        ..RouterConfig::default()
    };
    let mut r = TestRouter::start(config).await;
    r.switch("yves", &sha('a'), &[&a]);
    let mut c = Conn::connect(r.addr).await;
    let host = r.host("yves");
    let stuck = tokio::spawn(async move { c.get(&host, "/slow?ms=5000").await });
    let generation = r.router.generation(&key("yves")).unwrap();
    wait_until(|| generation.in_flight() == 1).await;
    let t = std::time::Instant::now();
    let serve = r.stop();
    tokio::time::timeout(Duration::from_secs(2), serve)
        .await
        .expect("serve outlived its grace period")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    // The cut request fails on the client side instead of hanging; its guard is released.
    assert!(stuck.await.unwrap().is_err());
    assert_eq!(generation.drain(STEP).await, 0);
}

//! Gates over real sockets: a hold keeps new requests waiting while what was admitted drains,
//! then sends them to the generation switched to; a hold past its bound and maintenance answer
//! 503 with `Retry-After` and the page; another environment is not affected.

use std::time::{Duration, Instant};

use cutover_router::{Gate, RouterConfig};
use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_drains_the_admitted_then_releases_the_held_to_the_new_generation() {
    let v1 = upstream(&sha('1')).await;
    let v2 = upstream(&sha('2')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let host = r.host("yves");

    // Admitted before the hold: a 400 ms request of v1.
    let slow = {
        let (addr, host) = (r.addr, host.clone());
        tokio::spawn(async move { Conn::connect(addr).await.get(&host, "/slow?ms=400").await })
    };
    wait_until(|| {
        r.router
            .generation(&key("yves"))
            .is_some_and(|g| g.in_flight() == 1)
    })
    .await;
    r.router.set_gate(
        "shop",
        "stage",
        Some(Gate::hold(Duration::from_secs(30), 5, "page")),
    );
    // Sent during the hold: waits, admitted nowhere.
    let held = {
        let (addr, host) = (r.addr, host.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            (Conn::connect(addr).await.get(&host, "/").await, sent.elapsed())
        })
    };
    let started = Instant::now();
    assert_eq!(
        r.router.drain_env("shop", "stage", Duration::from_secs(5)).await,
        0
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the drain waited for the admitted request"
    );
    assert_eq!(slow.await.unwrap().unwrap().body, sha('1'));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the held request still waits");
    assert_eq!(r.router.generation(&key("yves")).unwrap().in_flight(), 0);

    r.switch("yves", &sha('2'), &[&v2]);
    r.router.set_gate("shop", "stage", None);
    let (answer, took) = held.await.unwrap();
    let answer = answer.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, sha('2').as_str())
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[tokio::test]
async fn past_its_bound_and_in_maintenance_the_router_answers_503_with_retry_after_and_the_page() {
    let v1 = upstream(&sha('1')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('1'), &[&v1]);
    let other = cutover_router::RouteKey::new("shop", "prod", "yves").unwrap();
    r.router
        .switch(&other, cutover_router::Backend::new(sha('1'), vec![v1.addr]));
    let mut c = Conn::connect(r.addr).await;

    r.router.set_gate(
        "shop",
        "stage",
        Some(Gate::hold(Duration::from_millis(300), 5, "<p>soon</p>")),
    );
    let sent = Instant::now();
    let a = c.get(&r.host("yves"), "/").await.unwrap();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "it waited for the bound first"
    );
    assert_eq!(a.headers["retry-after"], "5");
    assert_eq!(a.body, "<p>soon</p>");

    r.router
        .set_gate("shop", "stage", Some(Gate::maintenance(120, "<p>down</p>")));
    let a = c.get(&r.host("yves"), "/").await.unwrap();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "120");
    assert_eq!(a.body, "<p>down</p>");
    let prod = c.get(&other.host("localhost"), "/").await.unwrap();
    assert_eq!(prod.status, StatusCode::OK, "another environment serves");

    r.router.set_gate("shop", "stage", None);
    assert_eq!(c.get(&r.host("yves"), "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn a_gates_503_is_counted_and_logged_as_its_routes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let v1 = upstream(&sha('1')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.router
        .set_edge(cutover_router::EdgeSettings {
            access_log: Some(cutover_router::AccessLogTarget::File {
                path: path.clone(),
                max_size: 1024 * 1024,
                keep: 0,
            }),
            ..cutover_router::EdgeSettings::default()
        })
        .unwrap();
    r.switch("yves", &sha('1'), &[&v1]);
    r.router
        .set_gate("shop", "stage", Some(Gate::maintenance(60, "<p>down</p>")));
    let mut c = Conn::connect(r.addr).await;
    for _ in 0..3 {
        let a = c.get(&r.host("yves"), "/").await.unwrap();
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    let text = r.router.encode_metrics();
    let labels = "app=\"shop\",env=\"stage\",service=\"yves\"";
    let series = format!("cutover_router_requests_total{{{labels},class=\"5xx\"}} 3");
    assert!(text.lines().any(|l| l == series), "{series} missing in:\n{text}");
    let in_flight = format!("cutover_router_in_flight{{{labels}}} 0");
    assert!(text.lines().any(|l| l == in_flight), "{text}");
    assert!(
        text.contains("{app=\"\",env=\"\",service=\"\",class=\"5xx\"} 0"),
        "a gate's answer is not an unrouted one:\n{text}"
    );

    // The access log's writer is a thread: give it a moment.
    let lines = wait_for_lines(&path, 3).await;
    for line in &lines {
        assert_eq!(line["status"], 503, "{line}");
        assert_eq!(line["env"], "stage", "{line}");
        assert_eq!(line["service"], "yves", "{line}");
    }
}

async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Only complete lines: the writer may be in the middle of the next one.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<serde_json::Value> = complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} lines in {}", path.display());
}

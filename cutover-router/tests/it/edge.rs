//! The router's public side: forwarding headers with trusted proxies, and the access log.

use cutover_router::{AccessLogTarget, EdgeSettings, RouterConfig, TrustedProxies};
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

/// The edge settings that send a bodyless request's head upstream each of the two ways it is
/// written: from its raw fields (the router's own HTTP/1.1 path) and from a `HeaderMap`
/// (`proxy::forward`, which every request takes while an access log is on, as HTTP/2 and
/// unusual HTTP/1.1 requests always do). `dir`: where the access log goes.
pub(crate) fn both_paths(
    trusted: &TrustedProxies,
    dir: &std::path::Path,
) -> [(&'static str, EdgeSettings); 2] {
    let edge = |access_log| EdgeSettings {
        trusted_proxies: trusted.clone(),
        access_log,
        hosts: vec![],
        tls: None,
    };
    [
        ("raw fields", edge(None)),
        (
            "header map",
            edge(Some(AccessLogTarget::File {
                path: dir.join("access.log"),
                max_size: 1 << 20,
                keep: 1,
            })),
        ),
    ]
}

async fn echoed_headers(c: &mut Conn, host: &str, extra: &[(&str, &str)]) -> String {
    let mut req = Request::get("/headers").header("host", host);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = c.send(req.body(Conn::body("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "198.51.100.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "bank.example"),
    ("forwarded", "for=198.51.100.7;proto=https"),
];

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    // Trusting some other network must not make 127.0.0.1 trusted.
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    for (path, edge) in both_paths(&trusted, dir.path()) {
        r.router.set_edge(edge).unwrap();
        let mut c = Conn::connect(r.addr).await;
        let text = echoed_headers(&mut c, &host, SPOOFED).await;
        assert!(!text.contains("198.51.100.7"), "{path}: {text}");
        assert!(!text.contains("bank.example"), "{path}: {text}");
        assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{path}: {text}");
        assert!(text.contains("x-forwarded-proto: http\n"), "{path}: {text}");
        assert!(
            text.contains(&format!("x-forwarded-host: {host}\n")),
            "{path}: {text}"
        );
        assert!(
            text.contains(&format!("forwarded: for=127.0.0.1;host=\"{host}\";proto=http\n")),
            "{path}: {text}"
        );
        // Exactly one line per forwarding header: nothing of the client's survives beside it.
        assert_eq!(text.matches("x-forwarded-for:").count(), 1, "{path}: {text}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("forwarded:")).count(),
            1,
            "{path}: {text}"
        );
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_appended() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    r.switch("yves", &sha('a'), &[&a]);
    let trusted = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap()]);
    for (path, edge) in both_paths(&trusted, dir.path()) {
        r.router.set_edge(edge).unwrap();
        let mut c = Conn::connect(r.addr).await;
        let text = echoed_headers(&mut c, &r.host("yves"), SPOOFED).await;
        assert!(
            text.contains("x-forwarded-for: 198.51.100.7, 127.0.0.1\n"),
            "{path}: {text}"
        );
        assert!(text.contains("x-forwarded-proto: https\n"), "{path}: {text}");
        assert!(
            text.contains("x-forwarded-host: bank.example\n"),
            "{path}: {text}"
        );
        assert!(
            text.contains(&format!(
                "forwarded: for=198.51.100.7;proto=https, for=127.0.0.1;host=\"{}\";proto=http\n",
                r.host("yves")
            )),
            "{path}: {text}"
        );
    }
}

fn log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only complete lines: the writer may be in the middle of the next one.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn access_log_has_one_line_per_request_with_the_version_across_a_switch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let a = upstream(&sha('a')).await;
    let b = upstream(&sha('b')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.router
        .set_edge(EdgeSettings {
            trusted_proxies: TrustedProxies::default(),
            access_log: Some(AccessLogTarget::File {
                path: path.clone(),
                max_size: 10 * 1024 * 1024,
                keep: 1,
            }),
            hosts: vec![],
            tls: None,
        })
        .unwrap();
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    let mut c = Conn::connect(r.addr).await;
    let mut expected = Vec::new();
    for i in 0..40 {
        if i == 20 {
            r.switch("yves", &sha('b'), &[&b]);
        }
        let ans = c.get(&host, "/?token=secret").await.unwrap();
        assert_eq!(ans.status, StatusCode::OK);
        expected.push((ans.body.clone(), ans.body.len() as u64));
    }
    let ans = c.get("nobody.stage.shop.localhost", "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::NOT_FOUND);

    wait_until(|| log_lines(&path).len() >= 41).await;
    let lines = log_lines(&path);
    assert_eq!(lines.len(), 41);
    for (line, (version, bytes)) in lines.iter().zip(&expected) {
        assert_eq!(line["version"], version.as_str(), "{line}");
        assert_eq!(line["bytes"], *bytes, "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["host"], host.as_str(), "{line}");
        assert_eq!(line["app"], "shop", "{line}");
        assert_eq!(line["env"], "stage", "{line}");
        assert_eq!(line["service"], "yves", "{line}");
        assert_eq!(line["path"], "/", "the query is left out: {line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        let upstream = line["upstream"].as_str().unwrap();
        let want = if *version == sha('a') { a.addr } else { b.addr };
        assert_eq!(upstream, want.to_string(), "{line}");
    }
    assert_eq!(
        lines[..20]
            .iter()
            .filter(|l| l["version"] == sha('a').as_str())
            .count(),
        20
    );
    assert_eq!(
        lines[20..40]
            .iter()
            .filter(|l| l["version"] == sha('b').as_str())
            .count(),
        20
    );
    let miss = &lines[40];
    assert_eq!(miss["status"], 404);
    assert!(miss["service"].is_null() && miss["version"].is_null(), "{miss}");

    // Turned off: no more lines.
    r.router.set_edge(EdgeSettings::default()).unwrap();
    c.get(&host, "/").await.unwrap();
    assert_eq!(r.router.edge(), EdgeSettings::default());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(log_lines(&path).len(), 41);
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_class_across_a_switch() {
    let a = upstream(&sha('a')).await;
    let b = upstream(&sha('b')).await;
    let dead = dead_addr().await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    let mut c = Conn::connect(r.addr).await;
    for _ in 0..3 {
        assert_eq!(c.get(&host, "/").await.unwrap().status, StatusCode::OK);
    }
    // Round-robin starts somewhere in [dead, b]: whichever, one connect fails over at most.
    r.router.switch(
        &key("yves"),
        cutover_router::Backend::new(sha('b'), vec![dead, b.addr]),
    );
    for _ in 0..2 {
        assert_eq!(c.get(&host, "/").await.unwrap().status, StatusCode::OK);
    }
    r.router
        .switch(&key("yves"), cutover_router::Backend::new(sha('b'), vec![dead]));
    assert_eq!(c.get(&host, "/").await.unwrap().status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        c.get("nobody.stage.shop.localhost", "/").await.unwrap().status,
        StatusCode::NOT_FOUND
    );

    let text = r.router.encode_metrics();
    let labels = "app=\"shop\",env=\"stage\",service=\"yves\"";
    assert_eq!(
        metric(
            &text,
            &format!("cutover_router_requests_total{{{labels},class=\"2xx\"}}")
        ),
        5.0
    );
    assert_eq!(
        metric(
            &text,
            &format!("cutover_router_requests_total{{{labels},class=\"5xx\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "cutover_router_requests_total{app=\"\",env=\"\",service=\"\",class=\"4xx\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, &format!("cutover_router_in_flight{{{labels}}}")),
        0.0
    );
    let errors = metric(
        &text,
        &format!("cutover_router_upstream_connect_errors_total{{{labels}}}"),
    );
    // [dead, b]: one connect fails at most (then dead is suspect, tried after b); [dead]: one.
    assert!((1.0..=2.0).contains(&errors), "{errors}");
    assert_eq!(
        metric(
            &text,
            &format!("cutover_router_request_duration_seconds_count{{{labels}}}")
        ),
        6.0
    );
    let bytes = metric(&text, &format!("cutover_router_response_bytes_total{{{labels}}}"));
    assert!(bytes >= 5.0 * 40.0, "{bytes}");
    assert!(text.contains("cutover_build_info{version=\""), "{text}");
}

/// A router with services `yves` (answering version a) and `zed` (version b), and the public
/// names `hosts` (`(name, service)`); the upstreams live as long as the returned pair.
async fn yves_and_zed(hosts: &[(&str, &str)]) -> (TestRouter, [Upstream; 2]) {
    let a = upstream(&sha('a')).await;
    let b = upstream(&sha('b')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    r.switch("zed", &sha('b'), &[&b]);
    r.router
        .set_edge(EdgeSettings {
            hosts: hosts.iter().map(|(h, s)| ((*h).into(), key(s))).collect(),
            ..EdgeSettings::default()
        })
        .unwrap();
    (r, [a, b])
}

#[tokio::test]
async fn public_host_names_and_wildcards_route_beside_the_localhost_names() {
    let (r, [_a, b]) = yves_and_zed(&[
        ("www.example.com", "yves"),
        ("example.com", "yves"),
        ("*.admin.example.com", "zed"),
    ])
    .await;
    let mut c = Conn::connect(r.addr).await;
    for (host, want) in [
        ("WWW.example.com:443", sha('a')),
        ("example.com", sha('a')),
        ("eu.admin.example.com", sha('b')),
        (r.host("yves").as_str(), sha('a')),
        (r.host("zed").as_str(), sha('b')),
    ] {
        let ans = c.get(host, "/").await.unwrap();
        assert_eq!(ans.status, StatusCode::OK, "{host}");
        assert_eq!(ans.body, want, "{host}");
    }
    for host in ["a.b.admin.example.com", "admin.example.com", "other.example.com"] {
        assert_eq!(
            c.get(host, "/").await.unwrap().status,
            StatusCode::NOT_FOUND,
            "{host}"
        );
    }
    // The instance sees the name the client asked for.
    let ans = c.get("www.example.com", "/headers").await.unwrap();
    assert!(ans.body.contains("host: www.example.com\n"), "{}", ans.body);
    assert!(
        ans.body.contains("x-forwarded-host: www.example.com\n"),
        "{}",
        ans.body
    );
    // A switch keeps the public names.
    r.switch("yves", &sha('b'), &[&b]);
    assert_eq!(c.get("www.example.com", "/").await.unwrap().body, sha('b'));
    // A name given twice is refused and the old names stay.
    let err = r
        .router
        .set_edge(EdgeSettings {
            hosts: vec![
                ("x.example.com".into(), key("yves")),
                ("x.example.com".into(), key("zed")),
            ],
            ..EdgeSettings::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("x.example.com"), "{err}");
    assert_eq!(c.get("example.com", "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn plain_http_to_a_redirected_host_gets_a_308_to_https() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    r.router
        .set_edge(EdgeSettings {
            hosts: vec![
                ("www.example.com".into(), key("yves")),
                ("api.example.com".into(), key("yves")),
            ],
            tls: Some(cutover_router::EdgeTls {
                certificates: vec![],
                hsts: None,
                redirect_hosts: vec!["www.example.com".into(), "*.shop.example".into()],
                https_port: 7443,
                acme: None,
            }),
            ..EdgeSettings::default()
        })
        .unwrap();
    let mut c = Conn::connect(r.addr).await;
    let ans = c.get("WWW.example.com:80", "/cart?id=3").await.unwrap();
    assert_eq!(ans.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(ans.headers["location"], "https://www.example.com:7443/cart?id=3");
    let ans = c.get("eu.shop.example", "/").await.unwrap();
    assert_eq!(ans.headers["location"], "https://eu.shop.example:7443/");
    // Not listed: served over plain HTTP as before.
    let ans = c.get("api.example.com", "/").await.unwrap();
    assert_eq!(
        (ans.status, ans.body.as_str()),
        (StatusCode::OK, sha('a').as_str())
    );
    let ans = c.get(&r.host("yves"), "/").await.unwrap();
    assert_eq!(ans.status, StatusCode::OK);
}

#[tokio::test]
async fn a_path_prefix_of_a_public_name_routes_to_its_own_service_longest_first() {
    let (r, _upstreams) = yves_and_zed(&[("example.com", "yves"), ("example.com/shop", "zed")]).await;
    let mut c = Conn::connect(r.addr).await;
    for (path, want) in [
        ("/", sha('a')),
        ("/shopping", sha('a')),
        ("/shop", sha('b')),
        ("/shop/cart?x=1", sha('b')),
    ] {
        let ans = c.get("example.com", path).await.unwrap();
        assert_eq!(
            (ans.status, ans.body.as_str()),
            (StatusCode::OK, want.as_str()),
            "{path}"
        );
    }
}

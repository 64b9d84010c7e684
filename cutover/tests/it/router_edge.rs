//! The router's public side through the real data-plane process: forwarding headers replaced
//! for untrusted peers and appended for trusted proxies (an upstream echoing the request it
//! got), the access log with one line per request and the right version across a switch, the
//! settings kept by a data plane restarted after `kill -9`, and `cutover serve` pushing
//! `router.*` of cutover.yml.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cutover_dataplane::{AccessLogConfig, EdgeConfig, HostRoute, ListenerKind, ensure_running};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::pipeline_support::http_get;
use crate::support::{BIN, Fixture};

const HOST: &str = "web.prod.shop.localhost";

/// An upstream answering every request with the request head it received (keep-alive).
async fn echo_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push_str(&line),
                        }
                    }
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}", head.len());
                    if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// One GET with extra header lines on a new connection; (status, version header, body).
async fn get(router: SocketAddr, extra: &str) -> (u16, String, String) {
    get_host(router, HOST, extra).await
}

async fn get_host(router: SocketAddr, host: &str, extra: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(router).await.unwrap();
    s.write_all(
        format!("GET /p?secret=1 HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let version = head
        .lines()
        .find_map(|l| l.strip_prefix("x-cutover-version: "))
        .unwrap_or_default()
        .to_owned();
    (status, version, body.to_lowercase())
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only complete lines: the writer may be in the middle of the next one.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn until_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

const SPOOF: &str =
    "x-forwarded-for: 198.51.100.7\r\nx-forwarded-proto: https\r\nforwarded: for=198.51.100.7\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_replaces_spoofed_forwarding_headers_and_logs_every_request() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("access.log");
    let (client, hello, _) = ensure_running(tmp.path(), Path::new(BIN)).await.unwrap();
    let mut pids = vec![hello.pid];
    let test = async {
        let router = client
            .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (up, _task) = echo_upstream().await;
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let mut edge = EdgeConfig {
            trusted_proxies: vec!["10.0.0.0/8".into()],
            access_log: Some(AccessLogConfig {
                path: Some(log.clone()),
                max_size: 1 << 20,
                keep: 2,
            }),
            hosts: vec![HostRoute {
                host: "www.example.com".into(),
                app: "shop".into(),
                env: "prod".into(),
                service: "web".into(),
            }],
            tls: None,
        };
        client.configure(&edge).await.unwrap();
        client.switch("shop", "prod", "web", &a, vec![up]).await.unwrap();

        // Untrusted (127.0.0.1 is not in 10.0.0.0/8): replaced.
        let (status, _, seen) = get(router, SPOOF).await;
        assert_eq!(status, 200);
        assert!(!seen.contains("198.51.100.7"), "{seen}");
        assert!(seen.contains("x-forwarded-for: 127.0.0.1\r\n"), "{seen}");
        assert!(seen.contains("x-forwarded-proto: http\r\n"), "{seen}");
        assert!(
            seen.contains(&format!(
                "forwarded: for=127.0.0.1;host=\"{HOST}\";proto=http\r\n"
            )),
            "{seen}"
        );

        let mut versions = vec![a.clone()];
        for i in 0..19 {
            if i == 9 {
                client.switch("shop", "prod", "web", &b, vec![up]).await.unwrap();
            }
            let (status, version, _) = get(router, "").await;
            assert_eq!(status, 200);
            versions.push(version);
        }
        assert_eq!(versions.iter().filter(|v| **v == a).count(), 10);
        assert_eq!(versions.iter().filter(|v| **v == b).count(), 10);
        let lines = until_lines(&log, 20).await;
        assert_eq!(lines.len(), 20, "{lines:#?}");
        for (line, version) in lines.iter().zip(&versions) {
            assert_eq!(line["version"], version.as_str(), "{line}");
            assert_eq!(line["env"], "prod", "{line}");
            assert_eq!(line["service"], "web", "{line}");
            assert_eq!(line["status"], 200, "{line}");
            assert_eq!(line["path"], "/p", "{line}");
            assert_eq!(line["upstream"], up.to_string(), "{line}");
            assert!(line["bytes"].as_u64().unwrap() > 50, "{line}");
        }

        // Trusted: appended.
        edge.trusted_proxies = vec!["127.0.0.0/8".into()];
        client.configure(&edge).await.unwrap();
        let (_, _, seen) = get(router, SPOOF).await;
        assert!(
            seen.contains("x-forwarded-for: 198.51.100.7, 127.0.0.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("x-forwarded-proto: https\r\n"), "{seen}");
        let lines = until_lines(&log, 21).await;
        assert_eq!(lines[20]["client"], "198.51.100.7", "the client behind the proxy");

        // The public name routes to the same service, and is what the log says.
        let (status, version, seen) = get_host(router, "www.example.com", "").await;
        assert_eq!((status, version), (200, b.clone()));
        assert!(seen.contains("host: www.example.com\r\n"), "{seen}");
        let lines = until_lines(&log, 22).await;
        assert_eq!(lines[21]["host"], "www.example.com");
        assert_eq!(lines[21]["service"], "web");

        // A refused setting changes nothing.
        let bad = EdgeConfig {
            trusted_proxies: vec!["10.0.0.1/8".into()],
            ..EdgeConfig::default()
        };
        let err = client.configure(&bad).await.unwrap_err().to_string();
        assert!(err.contains("10.0.0.1/8"), "{err}");

        // kill -9: the restarted data plane keeps its settings (routes.json).
        kill(hello.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", hello.pid)).exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, again, spawned) = ensure_running(tmp.path(), Path::new(BIN)).await.unwrap();
        pids.push(again.pid);
        assert!(spawned);
        let router = again.listeners[0].addr;
        let (_, version, seen) = get(router, SPOOF).await;
        assert_eq!(version, b);
        assert!(
            seen.contains("x-forwarded-for: 198.51.100.7, 127.0.0.1\r\n"),
            "{seen}"
        );
        assert_eq!(until_lines(&log, 23).await.len(), 23);
        assert_eq!(
            get_host(router, "www.example.com", "").await.0,
            200,
            "public names kept"
        );
    };
    let result = tokio::time::timeout(Duration::from_secs(60), test).await;
    for pid in pids {
        kill(pid);
    }
    result.expect("the test finished in time");
}

#[test]
fn serve_pushes_the_router_section_of_cutover_yml() {
    let fixture = Fixture::new();
    let log = fixture.dir.path().join("router-access.log");
    let text = std::fs::read_to_string(fixture.config()).unwrap().replace(
        "requires: [] }",
        "requires: [], hosts: { yves: [www.shop.example] } }",
    );
    assert!(text.contains("www.shop.example"));
    std::fs::write(
        fixture.config(),
        format!(
            "{text}router:\n  trusted_proxies: [192.0.2.0/24]\n  access_log: {{ path: {}, keep: 1 }}\n",
            log.display()
        ),
    )
    .unwrap();
    let server = fixture.start();
    let (status, _, _) = http_get(server.router_port, "nobody.prod.shop.localhost", "/x").unwrap();
    assert_eq!(status, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_lines(&log).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 404);
    assert_eq!(lines[0]["host"], "nobody.prod.shop.localhost");
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.data_dir().join("dataplane/routes.json")).unwrap())
            .unwrap();
    assert_eq!(
        routes["edge"]["trusted_proxies"],
        serde_json::json!(["192.0.2.0/24"])
    );
    assert_eq!(
        routes["edge"]["hosts"],
        serde_json::json!([{"host": "www.shop.example", "app": "shop", "env": "prod", "service": "yves"}])
    );

    // The router's series, from the data plane, are in the server's /metrics.
    let api_port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let (status, _, metrics) = http_get(api_port, "127.0.0.1", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("cutover_router_requests_total{app=\"\",env=\"\",service=\"\",class=\"4xx\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cutover_build_info{"), "{metrics}");
    assert!(
        metrics.contains("cutover_runs_active"),
        "the server's own series stay: {metrics}"
    );
}

/// curl over HTTP/2 with `ca` trusted, `host` resolved to 127.0.0.1: the response head.
fn curl_h2(ca: &Path, host: &str, port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(["-o", "/dev/null", "-D", "-"])
        .arg(format!("https://{host}:{port}/"))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

#[test]
fn serve_terminates_tls_from_cutover_yml_and_an_upgrade_hands_the_tls_listener_over() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path();
    let c = rcgen::generate_simple_self_signed(vec!["www.shop.example".to_owned()]).unwrap();
    std::fs::write(dir.join("www.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("www.key"), c.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(fixture.config()).unwrap();
    std::fs::write(
        fixture.config(),
        format!(
            "{text}router:\n  tls:\n    port: {port}\n    hsts: true\n    certificates:\n      - {{ hosts: [www.shop.example], cert: {}, key: {}, redirect: true }}\n",
            dir.join("www.pem").display(),
            dir.join("www.key").display()
        ),
    )
    .unwrap();
    let server = fixture.start();
    let head = curl_h2(&dir.join("www.pem"), "www.shop.example", port);
    assert!(head.starts_with("http/2 404"), "nothing deployed yet: {head}");
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    // Plain HTTP to that host: a redirect to HTTPS.
    let (status, head, _) = http_get(server.router_port, "www.shop.example", "/cart?x=1").unwrap();
    assert_eq!(status, 308, "{head}");
    assert!(
        head.to_lowercase()
            .contains(&format!("location: https://www.shop.example:{port}/cart?x=1")),
        "{head}"
    );

    let upgraded = server.cli_json("admin", &["upgrade", "--data-plane"]);
    assert!(
        upgraded["data_plane"]["took_over_from"].as_u64().is_some(),
        "{upgraded}"
    );
    let head = curl_h2(&dir.join("www.pem"), "www.shop.example", port);
    assert!(
        head.starts_with("http/2 404"),
        "the successor serves the TLS port: {head}"
    );
}

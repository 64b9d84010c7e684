//! TLS termination with a private CA made here: SNI picks the certificate per host name (rustls
//! client and curl), a certificate replaced on disk is served to new connections with no failed
//! request under load, and HTTP/2 and HTTP/1.1 clients both get through a switch under load.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use cutover_router::{Backend, CertFiles, RouterConfig, TlsCerts, TlsOptions};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use crate::support::*;

pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

pub(crate) fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL takes a leaf whose issuer equals its subject for self-signed.
    params
        .distinguished_name
        .push(DnType::CommonName, "Cutover test CA");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes a leaf for `names` signed by `ca` to `<dir>/<file>.crt|.key`; returns its DER.
pub(crate) fn leaf(ca: &Ca, names: &[&str], dir: &Path, file: &str) -> (CertFiles, CertificateDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let files = CertFiles {
        hosts: names.iter().map(|s| s.to_string()).collect(),
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    // Replace by rename, as certificate renewal tools do, key first.
    for (path, text) in [(&files.key, key.serialize_pem()), (&files.cert, cert.pem())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (files, cert.der().clone())
}

fn connector(ca: &Ca, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

pub(crate) struct TlsRouter {
    pub(crate) router: cutover_router::Router,
    pub(crate) addr: SocketAddr,
    certs: Arc<TlsCerts>,
    /// Dropped or sent: the listener stops.
    pub(crate) stop: oneshot::Sender<()>,
}

pub(crate) async fn tls_router(files: Vec<CertFiles>) -> TlsRouter {
    tls_router_with(files, RouterConfig::default()).await
}

pub(crate) async fn tls_router_with(files: Vec<CertFiles>, config: RouterConfig) -> TlsRouter {
    let router = cutover_router::Router::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let certs = Arc::new(TlsCerts::load(files).unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let r = router.clone();
    let opts = TlsOptions {
        certs: Arc::clone(&certs),
        hsts: Some(http::HeaderValue::from_static("max-age=600")),
    };
    tokio::spawn(async move {
        r.serve_tls(listener, opts, async {
            let _ = rx.await;
        })
        .await
    });
    TlsRouter {
        router,
        addr,
        certs,
        stop: tx,
    }
}

/// A TLS connection to the router for `sni`; returns it with the leaf certificate it got.
pub(crate) async fn handshake(
    addr: SocketAddr,
    ca: &Ca,
    sni: &str,
    alpn: &[u8],
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
)> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector(ca, alpn)
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((tls, leaf))
}

/// One GET over a new HTTP/1.1 TLS connection: (status, body, leaf).
async fn get_h1(
    addr: SocketAddr,
    ca: &Ca,
    host: &str,
) -> Result<(StatusCode, String, CertificateDer<'static>), String> {
    let (tls, leaf) = handshake(addr, ca, host, b"http/1.1")
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), leaf))
}

#[tokio::test]
async fn sni_picks_the_certificate_of_each_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (a_files, a_der) = leaf(&ca, &["a.example.com"], dir.path(), "a");
    let (b_files, b_der) = leaf(&ca, &["*.b.example.com"], dir.path(), "b");
    let up = upstream(&sha('a')).await;
    let t = tls_router(vec![a_files, b_files]).await;
    t.router
        .switch(&key("yves"), Backend::new(sha('a'), vec![up.addr]));
    t.router
        .set_edge(cutover_router::EdgeSettings {
            hosts: vec![
                ("a.example.com".into(), key("yves")),
                ("*.b.example.com".into(), key("yves")),
            ],
            ..Default::default()
        })
        .unwrap();
    let (status, body, leaf_a) = get_h1(t.addr, &ca, "a.example.com").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, sha('a').as_str()));
    assert_eq!(leaf_a, a_der);
    let (status, _, leaf_b) = get_h1(t.addr, &ca, "x.b.example.com").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(leaf_b, b_der);
    // A name the certificate does not cover fails verification on the client.
    assert!(
        handshake(t.addr, &ca, "c.example.com", b"http/1.1")
            .await
            .is_err()
    );

    // curl, over HTTP/2, with the private CA: the right certificate and the forwarding headers.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let port = t.addr.port();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("x.b.example.com:{port}:127.0.0.1"))
        .args(["-D", "-", "-o", "-"])
        .arg(format!("https://x.b.example.com:{port}/headers"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("http/2 200"), "{text}");
    assert!(text.contains("strict-transport-security: max-age=600"), "{text}");
    assert!(text.contains("x-forwarded-proto: https\n"), "{text}");
    assert!(text.contains("host: x.b.example.com"), "{text}");

    // The same over HTTP/1.1 (the router's own HTTP/1.1 path behind TLS), two requests that
    // ask to close: HSTS once per answer, the forwarding headers, each TLS stream ended cleanly.
    let url = format!("https://x.b.example.com:{port}/headers");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert"])
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("x.b.example.com:{port}:127.0.0.1"))
        .args([
            "-D",
            "-",
            "-o",
            "-",
            &url,
            "-H",
            "connection: close",
            "-D",
            "-",
            "-o",
            "-",
            &url,
        ])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert_eq!(
        text.matches("strict-transport-security: max-age=600").count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("x-forwarded-proto: https\n").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_connections_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (files, old_der) = leaf(&ca, &["www.example.com"], dir.path(), "www");
    let up = upstream(&sha('a')).await;
    let t = tls_router(vec![files]).await;
    t.router
        .switch(&key("yves"), Backend::new(sha('a'), vec![up.addr]));
    t.router
        .set_edge(cutover_router::EdgeSettings {
            hosts: vec![("www.example.com".into(), key("yves"))],
            ..Default::default()
        })
        .unwrap();
    let ca = Arc::new(ca);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, new_seen) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    let new_der = Arc::new(std::sync::Mutex::new(None::<CertificateDer<'static>>));
    for _ in 0..4 {
        let (ca, stop, ok, new_seen, failures, new_der) = (
            Arc::clone(&ca),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&new_seen),
            Arc::clone(&failures),
            Arc::clone(&new_der),
        );
        let addr = t.addr;
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get_h1(addr, &ca, "www.example.com").await {
                    Ok((StatusCode::OK, _, leaf)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if new_der.lock().unwrap().as_ref() == Some(&leaf) {
                            new_seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok((status, body, _)) => failures.lock().unwrap().push(format!("{status} {body}")),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    wait_until(|| ok.load(Ordering::Relaxed) >= 50).await;
    let (_, replacement) = leaf(&ca, &["www.example.com"], dir.path(), "www");
    assert_ne!(replacement, old_der);
    *new_der.lock().unwrap() = Some(replacement);
    // The poll notices within RELOAD_EVERY; then every new connection gets the new one.
    wait_until(|| new_seen.load(Ordering::Relaxed) >= 50).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(t.certs.reload_if_changed(), 0, "nothing left to reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_and_http1_clients_get_through_a_switch_under_load_with_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (files, _) = leaf(&ca, &["www.example.com"], dir.path(), "www");
    let a = upstream(&sha('a')).await;
    let b = upstream(&sha('b')).await;
    let t = tls_router(vec![files]).await;
    t.router
        .switch(&key("yves"), Backend::new(sha('a'), vec![a.addr]));
    t.router
        .set_edge(cutover_router::EdgeSettings {
            hosts: vec![("www.example.com".into(), key("yves"))],
            ..Default::default()
        })
        .unwrap();

    // One HTTP/2 connection, requests multiplexed on it.
    let (tls, _) = handshake(t.addr, &ca, "www.example.com", b"h2").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    // One HTTP/1.1 keep-alive connection.
    let (tls, _) = handshake(t.addr, &ca, "www.example.com", b"http/1.1")
        .await
        .unwrap();
    let (h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let h1 = Arc::new(tokio::sync::Mutex::new(h1));

    let mut seen = Vec::new();
    for round in 0..200 {
        if round == 100 {
            t.router
                .switch(&key("yves"), Backend::new(sha('b'), vec![b.addr]));
        }
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let mut h2 = h2.clone();
            batch.spawn(async move {
                let req = Request::get("https://www.example.com/slow?ms=1")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = h2.send_request(req).await.map_err(|e| e.to_string())?;
                let v = resp.headers()["x-cutover-version"].to_str().unwrap().to_owned();
                let status = resp.status();
                resp.into_body().collect().await.map_err(|e| e.to_string())?;
                (status == StatusCode::OK)
                    .then_some(("h2", v))
                    .ok_or_else(|| status.to_string())
            });
        }
        let h1 = Arc::clone(&h1);
        batch.spawn(async move {
            let mut h1 = h1.lock().await;
            h1.ready().await.map_err(|e| e.to_string())?;
            let req = Request::get("/")
                .header("host", "www.example.com")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = h1.send_request(req).await.map_err(|e| e.to_string())?;
            let v = resp.headers()["x-cutover-version"].to_str().unwrap().to_owned();
            let status = resp.status();
            resp.into_body().collect().await.map_err(|e| e.to_string())?;
            (status == StatusCode::OK)
                .then_some(("h1", v))
                .ok_or_else(|| status.to_string())
        });
        while let Some(r) = batch.join_next().await {
            seen.push(r.unwrap().expect("no failed request"));
        }
    }
    assert_eq!(seen.len(), 1000);
    for proto in ["h1", "h2"] {
        for v in [sha('a'), sha('b')] {
            assert!(
                seen.iter().any(|(p, s)| *p == proto && *s == v),
                "{proto} never saw {v}"
            );
        }
    }
    // After the switch returned, nothing went to the old version.
    let after = &seen[500..];
    assert!(after.iter().all(|(_, v)| *v == sha('b')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_handed_to_a_successor_fails_no_request_under_load() {
    handed_over_under_load(b"http/1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_listener_handed_to_a_successor_fails_no_request_under_load() {
    handed_over_under_load(b"h2").await;
}

/// A keep-alive client connection of either protocol.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn connect(tls: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        let io = TokioIo::new(tls);
        if io.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
            let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(s)
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    async fn send(&mut self) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => {
                let req = Request::get("/")
                    .header("host", "www.example.com")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                s.send_request(req).await
            }
            Sender::H2(s) => {
                let req = Request::get("https://www.example.com/")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                s.send_request(req).await
            }
        }
    }
}

/// Whether a request failed before the server took it, so a client may send it again: not
/// sent (the connection closed first), or refused by an HTTP/2 server going away (RFC 9113
/// 8.7: a stream above the GOAWAY's last stream was not processed).
fn not_taken(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let h2 = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>());
    h2.is_some_and(|h2| {
        let reason = h2.reason();
        (h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR))
            || reason == Some(h2::Reason::REFUSED_STREAM)
    })
}

/// Two routers on one TLS listening socket under keep-alive load over `alpn`; the first stops
/// (a data-plane hand-over): no request fails.
async fn handed_over_under_load(alpn: &'static [u8]) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(ca());
    let (files, _) = leaf(&ca, &["www.example.com"], dir.path(), "www");
    let up = upstream(&sha('a')).await;
    // Two routers on one kernel socket, as in a data-plane hand-over: the old one stops.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let second = std_listener.try_clone().unwrap();
    let mut stops = Vec::new();
    for socket in [std_listener, second] {
        let router = cutover_router::Router::new(RouterConfig::default());
        router.switch(&key("yves"), Backend::new(sha('a'), vec![up.addr]));
        router
            .set_edge(cutover_router::EdgeSettings {
                hosts: vec![("www.example.com".into(), key("yves"))],
                ..Default::default()
            })
            .unwrap();
        let opts = TlsOptions {
            certs: Arc::new(TlsCerts::load(vec![files.clone()]).unwrap()),
            hsts: None,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let listener = TcpListener::from_std(socket).unwrap();
        let serving = tokio::spawn(async move {
            router
                .serve_tls(listener, opts, async {
                    let _ = rx.await;
                })
                .await
        });
        stops.push((tx, serving));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (ca, stop, ok, failures) = (
            Arc::clone(&ca),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
        );
        load.push(tokio::spawn(async move {
            // Keep-alive clients: reconnect when the server closes, as HTTP clients do.
            while !stop.load(Ordering::Relaxed) {
                let Ok((tls, _)) = handshake(addr, &ca, "www.example.com", alpn).await else {
                    failures.lock().unwrap().push("handshake".to_owned());
                    continue;
                };
                let mut sender = Sender::connect(tls).await;
                while !stop.load(Ordering::Relaxed) {
                    if sender.ready().await.is_err() {
                        break; // closed between requests: reconnect
                    }
                    match sender.send().await {
                        Ok(resp) if resp.status() == StatusCode::OK => {
                            match resp.into_body().collect().await {
                                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("body: {e}"));
                                    break;
                                }
                            };
                        }
                        Ok(resp) => failures.lock().unwrap().push(resp.status().to_string()),
                        Err(e) if not_taken(&e) => break, // reconnect and send it again
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            break;
                        }
                    }
                }
            }
        }));
    }
    wait_until(|| ok.load(Ordering::Relaxed) >= 200).await;
    let (old, old_serving) = stops.remove(0);
    let _ = old.send(()); // the old one stops accepting and drains
    // Its connections close (the clients move to the successor) long before its 30 s grace.
    wait_until(|| old_serving.is_finished()).await;
    let before = ok.load(Ordering::Relaxed);
    wait_until(|| ok.load(Ordering::Relaxed) >= before + 400).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}

//! TLS load for `router_overhead`: a certificate made here (rcgen, self-signed for one host name)
//! written to PEM files that both the router and nginx serve, and a keep-alive load generator
//! over rustls speaking HTTP/1.1 or HTTP/2 (one connection per client, requests in sequence,
//! like [`crate::run_load`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{Load, Sample};

/// A self-signed certificate for `host` in `<dir>/cert.pem` and `<dir>/key.pem`.
#[derive(Clone)]
pub struct BenchCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

pub fn self_signed(dir: &Path, host: &str) -> std::io::Result<BenchCert> {
    let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).map_err(std::io::Error::other)?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, c.cert.pem())?;
    std::fs::write(&key, c.signing_key.serialize_pem())?;
    Ok(BenchCert {
        cert,
        key,
        der: c.cert.der().clone(),
    })
}

impl BenchCert {
    /// The certificate at `cert` (PEM), to trust it (no key: a client's view).
    pub fn load(cert: &Path) -> std::io::Result<BenchCert> {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_file(cert).map_err(std::io::Error::other)?;
        Ok(BenchCert {
            cert: cert.to_owned(),
            key: PathBuf::new(),
            der,
        })
    }
}

fn connector(cert: &BenchCert, h2: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let _ = roots.add(cert.der.clone());
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    TlsConnector::from(Arc::new(config))
}

/// Runs `load` over TLS against `addr` (SNI and `Host`: `host`), HTTP/2 when `h2`.
pub async fn run_tls_load(
    addr: SocketAddr,
    host: &str,
    cert: &BenchCert,
    h2: bool,
    load: Load,
) -> (Vec<Sample>, Duration) {
    let per_conn = load.max_requests.div_ceil(load.connections.max(1));
    let start = Instant::now();
    let deadline = start + load.duration;
    let connector = connector(cert, h2);
    let mut tasks = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let host = host.to_owned();
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            client(addr, &host, connector, h2, deadline, per_conn).await
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(mut s) = t.await {
            samples.append(&mut s);
        }
    }
    (samples, start.elapsed())
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn client(
    addr: SocketAddr,
    host: &str,
    connector: TlsConnector,
    h2: bool,
    deadline: Instant,
    max: usize,
) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(max.min(1 << 16));
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return samples;
    };
    let _ = tcp.set_nodelay(true);
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return samples;
    };
    let Ok(tls) = connector.connect(name, tcp).await else {
        return samples;
    };
    let io = TokioIo::new(tls);
    let mut sender = if h2 {
        let Ok((s, conn)) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await else {
            return samples;
        };
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let Ok((s, conn)) = hyper::client::conn::http1::handshake(io).await else {
            return samples;
        };
        tokio::spawn(conn);
        Sender::H1(s)
    };
    let uri = format!("https://{host}/");
    while samples.len() < max && Instant::now() < deadline {
        let sent = Instant::now();
        let answer = async {
            let resp = match &mut sender {
                Sender::H1(s) => {
                    s.ready().await.ok()?;
                    let req = Request::get("/")
                        .header(http::header::HOST, host)
                        .body(Empty::<Bytes>::new())
                        .ok()?;
                    s.send_request(req).await.ok()?
                }
                Sender::H2(s) => {
                    s.ready().await.ok()?;
                    let req = Request::get(uri.as_str()).body(Empty::<Bytes>::new()).ok()?;
                    s.send_request(req).await.ok()?
                }
            };
            let ok = resp.status().is_success();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            ok.then(|| body.first().copied().unwrap_or(0))
        }
        .await;
        let failed = answer.is_none();
        samples.push(Sample {
            sent,
            latency: sent.elapsed(),
            answer,
        });
        if failed {
            break;
        }
    }
    samples
}

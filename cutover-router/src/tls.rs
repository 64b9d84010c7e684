//! TLS termination (rustls, ring provider) with HTTP/2 towards clients.
//!
//! [`TlsCerts`] holds one certificate chain and key per host name (SNI; `*.example.com` covers
//! one label), loaded from PEM files. [`TlsCerts::reload_if_changed`] rereads them when a file's
//! modification time or size changed, and [`Router::serve_tls`] calls it every
//! [`RELOAD_EVERY`]: a new certificate is used for handshakes from then on, connections already
//! open keep theirs, nothing is dropped. A pair that fails to load (a key replaced before its
//! certificate) keeps the previous pair, so a half-written renewal never takes a host offline.
//!
//! Connections offer ALPN `h2` and `http/1.1`: HTTP/1.1 (also when the client named none) takes
//! the plain listener's path (`fast`, which hands anything unusual to hyper), HTTP/2 the
//! router's own stream layer on h2's frame codec (`h2srv`). Requests go to
//! instances over HTTP/1.1 keep-alive as on the plain listener; `X-Forwarded-Proto` is
//! `https`. With HSTS on, every answer carries `Strict-Transport-Security`.
//!
//! Rejected: `notify` for file changes (not in the dependency tree; a 1 s poll of a few `stat`
//! calls costs nothing and also sees files replaced by rename, which inotify watches on the old
//! inode miss); dropping the previous certificate when a reload fails.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Router;
use crate::proxy::Target;
use crate::serve::Conn;

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// One host's certificate: names it serves, and its PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// Host names (`www.example.com`, `*.example.com`) this certificate is picked for.
    pub hosts: Vec<String>,
    /// The certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {}: {detail}; give a PEM file the data plane can read", path.display())]
    Load {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// No certificate was configured.
    #[error("no certificate configured: TLS needs at least one host's cert and key files")]
    Empty,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

struct Loaded {
    files: CertFiles,
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
}

/// Certificates by host name, swapped atomically on reload.
pub struct TlsCerts {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    loaded: Mutex<Vec<Loaded>>,
    /// The first configured certificate, for clients sending no SNI.
    default: ArcSwap<Option<Arc<CertifiedKey>>>,
    /// Certificates issued by ACME (the `acme` module), by exact host name; a configured file
    /// covering the same name wins.
    issued: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCerts")
            .field("names", &self.by_name.load().len())
            .finish()
    }
}

fn load_pair(files: &CertFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let err = |what, path: &Path, detail: String| TlsError::Load {
        what,
        path: path.to_owned(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err("the certificate", &files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("the certificate", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err("the certificate", &files.cert, "no CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err("the key", &files.key, e.to_string()))?;
    let signer = any_supported_type(&key).map_err(|e| err("the key", &files.key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        err(
            "the key",
            &files.key,
            format!("it does not match the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(certified))
}

impl TlsCerts {
    /// No certificate: every handshake fails until [`TlsCerts::replace`].
    pub fn empty() -> Self {
        Self {
            by_name: ArcSwap::from_pointee(HashMap::new()),
            loaded: Mutex::new(Vec::new()),
            default: ArcSwap::from_pointee(None),
            issued: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Loads every pair; fails on the first that cannot be loaded.
    pub fn load(files: Vec<CertFiles>) -> Result<Self, TlsError> {
        let certs = Self::empty();
        certs.replace(files)?;
        Ok(certs)
    }

    /// Replaces the whole set (a new configuration); on an error the current set stays.
    pub fn replace(&self, files: Vec<CertFiles>) -> Result<(), TlsError> {
        if files.is_empty() {
            return Err(TlsError::Empty);
        }
        let mut loaded = Vec::with_capacity(files.len());
        for f in files {
            let stamps = (stamp(&f.cert), stamp(&f.key));
            let key = load_pair(&f)?;
            loaded.push(Loaded {
                files: f,
                stamps,
                key,
            });
        }
        let mut current = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.publish(&loaded);
        *current = loaded;
        Ok(())
    }

    /// Drops every configured file (ACME-issued certificates stay).
    pub fn clear_files(&self) {
        let mut current = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.publish(&[]);
        current.clear();
    }

    /// Serves `key` for `host` (an ACME-issued certificate), replacing the previous one.
    pub(crate) fn set_issued(&self, host: &str, key: Arc<CertifiedKey>) {
        self.issued.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(host.to_owned(), Arc::clone(&key));
            map
        });
    }

    /// Forgets every ACME-issued certificate.
    pub(crate) fn clear_issued(&self) {
        self.issued.store(Arc::new(HashMap::new()));
    }

    /// The configured files.
    pub fn files(&self) -> Vec<CertFiles> {
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loaded.iter().map(|l| l.files.clone()).collect()
    }

    fn publish(&self, loaded: &[Loaded]) {
        let mut map = HashMap::new();
        for l in loaded {
            for h in &l.files.hosts {
                map.insert(
                    h.trim().trim_end_matches('.').to_ascii_lowercase(),
                    Arc::clone(&l.key),
                );
            }
        }
        self.by_name.store(Arc::new(map));
        self.default
            .store(Arc::new(loaded.first().map(|l| Arc::clone(&l.key))));
    }

    /// Rereads the pairs whose files changed; returns how many were replaced. A pair that fails
    /// to load keeps serving its previous certificate (logged).
    pub fn reload_if_changed(&self) -> usize {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut replaced = 0;
        for l in loaded.iter_mut() {
            let now = (stamp(&l.files.cert), stamp(&l.files.key));
            if now == l.stamps {
                continue;
            }
            match load_pair(&l.files) {
                Ok(key) => {
                    l.key = key;
                    l.stamps = now;
                    replaced += 1;
                    tracing::info!(cert = %l.files.cert.display(), "certificate reloaded");
                }
                // Stamps not updated: tried again on the next check (the other file may follow).
                Err(e) => {
                    tracing::warn!(error = %e, "certificate files changed but do not load; keeping the previous one")
                }
            }
        }
        if replaced > 0 {
            self.publish(&loaded);
        }
        replaced
    }

    pub(crate) fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let map = self.by_name.load();
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            if let Some(k) = map.get(&name) {
                return Some(Arc::clone(k));
            }
            if let Some((_, rest)) = name.split_once('.')
                && let Some(k) = map.get(&format!("*.{rest}"))
            {
                return Some(Arc::clone(k));
            }
            if let Some(k) = self.issued.load().get(&name) {
                return Some(Arc::clone(k));
            }
        }
        (**self.default.load()).clone()
    }
}

#[derive(Debug)]
struct Resolver(Arc<TlsCerts>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

/// A TLS listener's settings.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// The certificates, shared with whoever reloads them.
    pub certs: Arc<TlsCerts>,
    /// `Strict-Transport-Security` value added to every answer, e.g. `max-age=31536000`.
    pub hsts: Option<HeaderValue>,
}

fn server_config(certs: &Arc<TlsCerts>) -> Arc<ServerConfig> {
    server_config_with_alpn(certs, &[b"h2", b"http/1.1"])
}

/// A rustls server configuration that picks its certificate from `certs` (ring provider),
/// offering `alpn` (e.g. only `http/1.1` for a server that speaks nothing else).
pub fn server_config_with_alpn(certs: &Arc<TlsCerts>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(Arc::clone(certs))));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

impl Router {
    /// [`Router::serve_tls`] with the certificates and HSTS of [`crate::EdgeSettings::tls`]
    /// (certificates replaced by [`Router::set_edge`] apply at once; HSTS as it was at start).
    pub async fn serve_tls_configured(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let hsts = self
            .inner
            .edge
            .load()
            .tls
            .as_ref()
            .and_then(|t| t.hsts.as_deref())
            .and_then(|h| HeaderValue::from_str(h).ok());
        let opts = TlsOptions {
            certs: Arc::clone(&self.inner.tls_certs),
            hsts,
        };
        self.serve_tls(listener, opts, shutdown).await
    }

    /// Serves HTTPS (HTTP/2 or HTTP/1.1 by ALPN) on `listener`, routing by `Host` (or
    /// `:authority`) like [`Router::serve`], until `shutdown` resolves; checks the certificate
    /// files every [`RELOAD_EVERY`]. The accept loop and shutdown are the plain listener's
    /// (`Router::accept_loop`); on shutdown, connections finish their requests (bounded by
    /// the shutdown grace).
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        tls: TlsOptions,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let acceptor = TlsAcceptor::from(server_config(&tls.certs));
        let hsts = tls.hsts.clone();
        let serve_conn = move |c: Conn| {
            let acceptor = acceptor.clone();
            let hsts = hsts.clone();
            async move {
                let (conn, stream) = c.into_stream(hsts);
                let Ok(Ok(stream)) = tokio::time::timeout(conn.header_timeout, acceptor.accept(stream)).await
                else {
                    return; // handshake failed or too slow
                };
                // ALPN already chose. HTTP/1.1 takes the plain listener's path (`fast`, which
                // hands anything unusual to hyper); HTTP/2 the router's own stream layer.
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                if !h2 {
                    crate::fast::serve_stream(conn, stream).await;
                    return;
                }
                // The router's own stream layer on h2's codec (`h2srv`).
                crate::h2srv::serve(conn, stream).await;
            }
        };
        self.accept_loop(
            Target::ByHost,
            "https",
            listener,
            Some(Arc::clone(&tls.certs)),
            shutdown,
            serve_conn,
        )
        .await
    }
}

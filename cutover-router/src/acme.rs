//! Automatic certificates from an ACME server (RFC 8555), HTTP-01 challenge, `instant-acme`.
//!
//! [`AcmeSettings`] names the directory URL (Let's Encrypt, a private ACME server, pebble in
//! the tests), the contact addresses, an optional CA file to trust for the directory's own TLS,
//! the host names to get certificates for, and the directory where issued certificates live.
//! One task per router ([`Acme::configure`] replaces it when the settings change):
//!
//! 1. loads every `<dir>/certs/<host>/{cert,key}.pem` already there and serves it at once, so a
//!    restarted data plane does not ask again (the key is written 0600, tmp + rename);
//! 2. orders a certificate for each host with none, or one past two thirds of its lifetime
//!    ([`renew_at`]), answering the HTTP-01 challenge on the plain listener
//!    (`/.well-known/acme-challenge/<token>`, answered by the router itself: with ACME on, that
//!    path never reaches an application, see `proxy`), and serves it by SNI beside the
//!    configured certificate files (those win for a name both cover);
//! 3. sleeps until the earliest renewal (at most 12 h); after a failure it retries with a
//!    backoff from 5 s to 1 h, keeping what it serves.
//!
//! The account's credentials are kept in `<dir>/account.json` (0600) with the directory URL
//! they belong to; another directory gets a new account.
//!
//! Rejected: TLS-ALPN-01 (`rustls-acme`): it would own the TLS listener's certificate resolver
//! and needs the port-443 listener reachable, where HTTP-01 only needs the plain port that
//! already serves redirects; DNS-01 (a DNS provider's API per deployment). Running the client
//! in the control plane and handing files over: the data plane already reloads certificates,
//! but the challenge answers must come from the listener the ACME server reaches, which is the
//! data plane's.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

use crate::TlsCerts;

/// The path prefix of HTTP-01 challenges.
pub(crate) const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Longest wait between two checks of the certificates' age.
const MAX_CHECK: Duration = Duration::from_secs(12 * 3600);
/// First retry after a failure; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where and how to get certificates automatically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The ACME directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// Contact URIs of the account (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// A PEM CA certificate trusted for the directory's TLS instead of the system's roots (a
    /// private ACME server).
    pub ca_file: Option<PathBuf>,
    /// Host names to get a certificate for (one certificate each, no wildcards: HTTP-01).
    pub hosts: Vec<String>,
    /// Where the account and the issued certificates are kept (created 0700).
    pub dir: PathBuf,
}

/// Why getting a certificate failed (logged; the task retries).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server or the protocol failed.
    #[error(
        "ACME request to {directory} failed; check the directory URL, its CA file and that the ACME server reaches this router's plain HTTP port"
    )]
    Protocol {
        /// The directory URL.
        directory: String,
        /// What the client said.
        #[source]
        source: instant_acme::Error,
    },
    /// An authorization or order ended in a state that will not become valid.
    #[error("the ACME server refused the order for {host}: {detail}")]
    Refused {
        /// The host name.
        host: String,
        /// The state or problem it reported.
        detail: String,
    },
    /// Reading or writing the certificate directory failed.
    #[error("cannot use {}: check that the data directory is writable by the data plane", path.display())]
    Files {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// What was issued or stored cannot be used.
    #[error("the certificate for {host} cannot be used: {detail}")]
    Unusable {
        /// The host name.
        host: String,
        /// Why.
        detail: String,
    },
}

/// The HTTP-01 answers being offered (token → key authorization).
#[derive(Debug, Default)]
pub(crate) struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    pub(crate) fn answer(&self, token: &str) -> Option<String> {
        lock(&self.0).get(token).cloned()
    }
    fn offer(&self, token: String, key_auth: String) {
        lock(&self.0).insert(token, key_auth);
    }
    fn withdraw(&self, token: &str) {
        lock(&self.0).remove(token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The router's ACME state: the challenge answers and the running task.
#[derive(Debug, Default)]
pub(crate) struct Acme {
    pub(crate) challenges: Arc<Challenges>,
    task: Mutex<Option<(AcmeSettings, JoinHandle<()>)>>,
}

impl Drop for Acme {
    fn drop(&mut self) {
        if let Some((_, task)) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Acme {
    /// Starts, replaces or stops the task so that it runs with `settings`.
    pub(crate) fn configure(&self, settings: Option<&AcmeSettings>, certs: &Arc<TlsCerts>) {
        let mut task = lock(&self.task);
        if task.as_ref().map(|(s, _)| s) == settings {
            return;
        }
        if let Some((_, old)) = task.take() {
            old.abort();
        }
        certs.clear_issued();
        let Some(settings) = settings else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("ACME configured outside a tokio runtime; no certificate will be ordered");
            return;
        };
        let handle = runtime.spawn(run(
            settings.clone(),
            Arc::clone(certs),
            Arc::clone(&self.challenges),
        ));
        *task = Some((settings.clone(), handle));
    }
}

/// One stored or issued certificate.
struct Stored {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// When a certificate valid from `not_before` to `not_after` is renewed: once two thirds of its
/// lifetime are over (30 days before the end of a 90-day certificate).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or(Duration::ZERO);
    not_before + life * 2 / 3
}

/// Whether `host` is a plain DNS name (what `config check` lets through), so that it stays one
/// path component under the certificate directory whatever reached the data plane.
fn plain_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').count() >= 2
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn cert_dir(dir: &Path, host: &str) -> PathBuf {
    // Only called with `plain_name`s: no '/', no "..", so this stays under `dir`.
    dir.join("certs").join(host)
}

fn files_err(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::Files {
        path: path.to_owned(),
        source,
    }
}

/// Writes `data` to `path` with mode 0600, through a temporary file and a rename.
fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(files_err(&tmp))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(files_err(&tmp))?;
    fs::rename(&tmp, path).map_err(files_err(path))
}

fn make_dir(path: &Path) -> Result<(), AcmeError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(files_err(path))
}

/// A certificate chain and key (PEM) as the TLS listener serves them, with its validity.
fn certified(host: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<Stored, AcmeError> {
    let unusable = |detail: String| AcmeError::Unusable {
        host: host.to_owned(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| unusable("no certificate in the chain".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| unusable(e.to_string()))?;
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let (not_before, not_after) = (
        time(parsed.validity().not_before),
        time(parsed.validity().not_after),
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| unusable(e.to_string()))?;
    let signer = any_supported_type(&key).map_err(|e| unusable(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| unusable(format!("the key does not match: {e}")))?;
    Ok(Stored {
        key: Arc::new(certified),
        not_before,
        not_after,
    })
}

/// The certificate stored for `host`, if there is a usable one.
fn load_stored(dir: &Path, host: &str) -> Option<Stored> {
    let d = cert_dir(dir, host);
    let chain = fs::read(d.join("cert.pem")).ok()?;
    let key = fs::read(d.join("key.pem")).ok()?;
    match certified(host, &chain, &key) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "stored ACME certificate ignored; a new one will be ordered");
            None
        }
    }
}

async fn run(settings: AcmeSettings, certs: Arc<TlsCerts>, challenges: Arc<Challenges>) {
    // The client's TLS uses the process's default provider: ring, as everywhere in Cutover.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut account = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut next = MAX_CHECK;
        let mut failed = false;
        for host in &settings.hosts {
            if !plain_name(host) {
                tracing::warn!(host, "not a DNS name; no ACME certificate is ordered for it");
                continue;
            }
            let now = SystemTime::now();
            let stored = load_stored(&settings.dir, host);
            if let Some(s) = &stored {
                certs.set_issued(host, Arc::clone(&s.key));
                let due = renew_at(s.not_before, s.not_after);
                if due > now {
                    next = next.min(due.duration_since(now).unwrap_or(Duration::ZERO));
                    continue;
                }
            }
            let issued = async {
                if account.is_none() {
                    account = Some(load_account(&settings).await?);
                }
                let Some(acc) = &account else {
                    unreachable!("set above")
                };
                issue(acc, &settings, host, &challenges).await
            }
            .await;
            match issued {
                Ok(s) => {
                    tracing::info!(host, "ACME certificate issued");
                    certs.set_issued(host, s.key);
                    let due = renew_at(s.not_before, s.not_after);
                    next = next.min(due.duration_since(now).unwrap_or(MIN_BACKOFF));
                }
                Err(e) => {
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        text.push_str(": ");
                        text.push_str(&s.to_string());
                        source = s.source();
                    }
                    tracing::warn!(host, error = %text, retry_in = ?backoff, "cannot get an ACME certificate");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = MIN_BACKOFF;
            tokio::time::sleep(next.max(Duration::from_secs(1))).await;
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

fn protocol(settings: &AcmeSettings) -> impl FnOnce(instant_acme::Error) -> AcmeError + '_ {
    move |source| AcmeError::Protocol {
        directory: settings.directory.clone(),
        source,
    }
}

async fn load_account(settings: &AcmeSettings) -> Result<Account, AcmeError> {
    make_dir(&settings.dir)?;
    let builder = || match &settings.ca_file {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let path = settings.dir.join("account.json");
    if let Ok(text) = fs::read(&path)
        && let Ok(saved) = serde_json::from_slice::<SavedAccount>(&text)
        && saved.directory == settings.directory
    {
        return builder()
            .map_err(protocol(settings))?
            .from_credentials(saved.credentials)
            .await
            .map_err(protocol(settings));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()
        .map_err(protocol(settings))?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(protocol(settings))?;
    let saved = SavedAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec(&saved).unwrap_or_default();
    write_private(&path, &json)?;
    Ok(account)
}

async fn issue(
    account: &Account,
    settings: &AcmeSettings,
    host: &str,
    challenges: &Challenges,
) -> Result<Stored, AcmeError> {
    let refused = |detail: String| AcmeError::Refused {
        host: host.to_owned(),
        detail,
    };
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(protocol(settings))?;
    let mut offered = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(protocol(settings))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(refused(format!("authorization {other:?}"))),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| refused("the server offers no HTTP-01 challenge".into()))?;
            let token = challenge.token.clone();
            challenges.offer(token.clone(), challenge.key_authorization().as_str().to_owned());
            offered.push(token);
            challenge.set_ready().await.map_err(protocol(settings))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new())
            .await
            .map_err(protocol(settings))?;
        if status != OrderStatus::Ready {
            return Err(refused(format!("order {status:?}")));
        }
        Ok(())
    }
    .await;
    for token in &offered {
        challenges.withdraw(token);
    }
    result?;
    let key_pem = order.finalize().await.map_err(protocol(settings))?;
    let chain_pem = order
        .poll_certificate(&RetryPolicy::new())
        .await
        .map_err(protocol(settings))?;
    let stored = certified(host, chain_pem.as_bytes(), key_pem.as_bytes())?;
    let d = cert_dir(&settings.dir, host);
    make_dir(&d)?;
    // The key first: a crash between the two leaves a new key beside the old certificate,
    // which does not load (keys_match), so the next start orders again.
    write_private(&d.join("key.pem"), key_pem.as_bytes())?;
    write_private(&d.join("cert.pem"), chain_pem.as_bytes())?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_directories() {
        assert!(plain_name("shop.example.com"));
        for bad in [
            "..",
            "../etc",
            "a/b.com",
            "x",
            ".example.com",
            "Shop.example.com",
            "*.example.com",
        ] {
            assert!(!plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn renewal_starts_after_two_thirds_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(90 * 86_400);
        assert_eq!(renew_at(start, end), start + Duration::from_secs(60 * 86_400));
        // Nonsense validity (end before start): due at once.
        assert_eq!(renew_at(end, start), end);
    }

    fn self_signed(host: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn a_stored_certificate_is_served_at_start_without_asking_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let host = "shop.example.com";
        let (cert, key) = self_signed(host);
        let d = cert_dir(dir.path(), host);
        make_dir(&d).unwrap();
        write_private(&d.join("cert.pem"), cert.as_bytes()).unwrap();
        write_private(&d.join("key.pem"), key.as_bytes()).unwrap();
        let mode = fs::metadata(d.join("key.pem")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

        let certs = Arc::new(TlsCerts::empty());
        let acme = Acme::default();
        let settings = AcmeSettings {
            // Nothing listens there: the stored certificate (valid for years) needs no order.
            directory: "https://127.0.0.1:9/dir".into(),
            contact: vec![],
            ca_file: None,
            hosts: vec![host.into()],
            dir: dir.path().to_owned(),
        };
        acme.configure(Some(&settings), &certs);
        let mut served = None;
        for _ in 0..100 {
            served = certs.pick(Some(host));
            if served.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let served = served.expect("the stored certificate is served");
        let want = CertificateDer::pem_slice_iter(cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(served.cert[0], want);
        assert!(!dir.path().join("account.json").exists(), "no account was made");
        // Turned off: no longer served.
        acme.configure(None, &certs);
        assert!(certs.pick(Some(host)).is_none());
    }
}

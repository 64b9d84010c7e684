//! The router's public-side settings on the wire and on disk: trusted proxies and the access
//! log, pushed by the control plane (`configure`) from `router.*` of `cutover.yml`, persisted in
//! `routes.json` so a data plane restarted alone (or a successor taking over, which reads the
//! file its predecessor wrote) keeps them.
//!
//! Rejected: passing them on the `cutover data-plane` command line (a restarted control plane
//! with a changed configuration could not change them without replacing the process).

use std::path::PathBuf;

use cutover_router::{
    AccessLogTarget, AcmeSettings, CertFiles, Cidr, EdgeSettings, EdgeTls, RouteKey, TrustedProxies,
};
use serde::{Deserialize, Serialize};

/// Forwarding and access-log settings of the router (see [`cutover_router::EdgeSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeConfig {
    /// Address ranges (`10.0.0.0/8`, `::1/128`) of proxies whose forwarding headers are kept.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The access log; `None`: off.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Public host names and the route each one serves.
    #[serde(default)]
    pub hosts: Vec<HostRoute>,
    /// Certificates of the TLS listener (`ListenerKind::Tls`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Certificates and HSTS of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// One entry per certificate.
    pub certificates: Vec<CertConfig>,
    /// `Strict-Transport-Security` value, `None`: none.
    pub hsts: Option<String>,
    /// Hosts whose plain-HTTP requests are redirected to HTTPS.
    #[serde(default)]
    pub redirect_hosts: Vec<String>,
    /// The HTTPS port those redirects name.
    #[serde(default)]
    pub https_port: u16,
    /// Certificates from an ACME server; `None`: none.
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
}

/// Automatic certificates (see [`cutover_router::AcmeSettings`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeConfig {
    /// The ACME directory URL.
    pub directory: String,
    /// Account contact URIs.
    #[serde(default)]
    pub contact: Vec<String>,
    /// A PEM CA certificate trusted for the directory's TLS (a private ACME server).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Host names to get certificates for.
    pub hosts: Vec<String>,
    /// Where the account and issued certificates are kept (absolute; in the data directory).
    pub dir: PathBuf,
}

/// One certificate: the host names it is picked for (SNI) and its absolute PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertConfig {
    /// Host names (`*.example.com` for one label).
    pub hosts: Vec<String>,
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// One public host name (`www.example.com`, `*.example.com`) of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    /// The name.
    pub host: String,
    /// Application label.
    pub app: String,
    /// Environment label.
    pub env: String,
    /// Service label.
    pub service: String,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogConfig {
    /// An absolute file; `None`: standard output.
    pub path: Option<PathBuf>,
    /// A file is rotated before it passes this many bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl EdgeConfig {
    /// The router's form, checking every range (the message names the bad one).
    pub fn to_settings(&self) -> Result<EdgeSettings, String> {
        let ranges = self
            .trusted_proxies
            .iter()
            .map(|s| s.parse::<Cidr>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let access_log = match &self.access_log {
            None => None,
            Some(AccessLogConfig { path: None, .. }) => Some(AccessLogTarget::Stdout),
            Some(AccessLogConfig {
                path: Some(path),
                max_size,
                keep,
            }) => {
                if !path.is_absolute() {
                    return Err(format!(
                        "the access log {} is not an absolute path",
                        path.display()
                    ));
                }
                Some(AccessLogTarget::File {
                    path: path.clone(),
                    max_size: *max_size,
                    keep: *keep,
                })
            }
        };
        let hosts = self
            .hosts
            .iter()
            .map(|h| {
                RouteKey::new(&h.app, &h.env, &h.service)
                    .map(|key| (h.host.clone(), key))
                    .map_err(|e| format!("host {}: {e}", h.host))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = self.tls.as_ref().map(|t| EdgeTls {
            certificates: t
                .certificates
                .iter()
                .map(|c| CertFiles {
                    hosts: c.hosts.clone(),
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                })
                .collect(),
            hsts: t.hsts.clone(),
            redirect_hosts: t.redirect_hosts.clone(),
            https_port: t.https_port,
            acme: t.acme.as_ref().map(|a| AcmeSettings {
                directory: a.directory.clone(),
                contact: a.contact.clone(),
                ca_file: a.ca_file.clone(),
                hosts: a.hosts.clone(),
                dir: a.dir.clone(),
            }),
        });
        Ok(EdgeSettings {
            trusted_proxies: TrustedProxies::new(ranges),
            access_log,
            hosts,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_converts_and_checks() {
        let edge: EdgeConfig = serde_json::from_value(serde_json::json!({
            "trusted_proxies": ["10.0.0.0/8"],
            "access_log": {"path": "/tmp/a.log", "max_size": 10, "keep": 1},
        }))
        .unwrap();
        let s = edge.to_settings().unwrap();
        assert_eq!(s.trusted_proxies.ranges().len(), 1);
        assert!(matches!(
            s.access_log,
            Some(AccessLogTarget::File {
                max_size: 10,
                keep: 1,
                ..
            })
        ));
        // An older routes.json has no such field: the defaults.
        let old: EdgeConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(old, EdgeConfig::default());
        let bad = EdgeConfig {
            trusted_proxies: vec!["10.0.0.1/8".into()],
            ..EdgeConfig::default()
        };
        assert!(bad.to_settings().unwrap_err().contains("10.0.0.1/8"));
        let relative = EdgeConfig {
            trusted_proxies: vec![],
            access_log: Some(AccessLogConfig {
                path: Some("a.log".into()),
                max_size: 1,
                keep: 0,
            }),
            ..EdgeConfig::default()
        };
        assert!(relative.to_settings().is_err());
    }
}

//! Route keys and host-name handling.
//!
//! A route is one public service of one environment of one application. Its host name is
//! `<service>.<env>.<app>.<base_domain>` (`base_domain` is `localhost` by default, see
//! [`crate::RouterConfig`]). Incoming `Host` values are normalised once (lower-cased, port and
//! trailing dot stripped) and looked up as strings in the routing table.
//!
//! Rejected: depending on `cutover-core` for the name newtypes. The router must stay ignorant of
//! the rest of Cutover, so it validates its own three labels here (DNS-label rules, which
//! `cutover-core`'s `[a-z][a-z0-9-]{0,62}` names always satisfy).

use std::borrow::Cow;
use std::fmt;

/// Why a [`RouteKey`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteKeyError {
    /// A label is empty, longer than 63 bytes, starts with `-` or has a character outside
    /// `[a-z0-9-]` (after lower-casing).
    #[error("invalid {part} label {label:?}: expected 1-63 chars of [a-z0-9-], not starting with '-'")]
    InvalidLabel {
        /// Which part of the key: `app`, `env` or `service`.
        part: &'static str,
        /// The rejected input.
        label: String,
    },
}

/// Identifies one routed service: application, environment and service name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    app: String,
    env: String,
    service: String,
}

impl RouteKey {
    /// Builds a key from its three labels (lower-cased, then validated as DNS labels).
    pub fn new(app: &str, env: &str, service: &str) -> Result<Self, RouteKeyError> {
        Ok(Self {
            app: label("app", app)?,
            env: label("env", env)?,
            service: label("service", service)?,
        })
    }

    /// The application label.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The environment label.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The service label.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The host name this route answers to: `<service>.<env>.<app>.<base_domain>`.
    pub fn host(&self, base_domain: &str) -> String {
        format!(
            "{}.{}.{}.{}",
            self.service,
            self.env,
            self.app,
            base_domain.trim_matches('.').to_ascii_lowercase()
        )
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.service, self.env, self.app)
    }
}

fn label(part: &'static str, raw: &str) -> Result<String, RouteKeyError> {
    let lower = raw.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= 63
        && !lower.starts_with('-')
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(lower)
    } else {
        Err(RouteKeyError::InvalidLabel {
            part,
            label: raw.to_owned(),
        })
    }
}

/// Normalises a `Host` header value for lookup: trims, strips a `:port` (IPv6-literal aware)
/// and a trailing dot, lower-cases. Returns `None` for an empty host.
pub(crate) fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep up to and including the closing bracket.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_validates_and_lowercases() {
        let k = RouteKey::new("Shop", "stage", "yves").unwrap();
        assert_eq!(k.host("localhost"), "yves.stage.shop.localhost");
        assert_eq!(k.to_string(), "yves.stage.shop");
        assert!(RouteKey::new("", "stage", "yves").is_err());
        assert!(RouteKey::new("shop", "-x", "yves").is_err());
        assert!(RouteKey::new("shop", "st.age", "yves").is_err());
        assert!(RouteKey::new("shop", &"a".repeat(64), "yves").is_err());
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("A.B.localhost:8080").unwrap(), "a.b.localhost");
        assert_eq!(normalize_host("a.b.localhost.").unwrap(), "a.b.localhost");
        assert_eq!(normalize_host("[::1]:80").unwrap(), "[::1]");
        assert_eq!(normalize_host(" x "), Some(Cow::Borrowed("x")));
        assert_eq!(normalize_host(":80"), None);
        assert_eq!(normalize_host(""), None);
    }
}

//! Public host names: `www.example.com` (or `*.example.com`, one label) routed to a route whose
//! own name is `<service>.<env>.<app>.<base_domain>`. The routing table stays keyed by those
//! internal names, so a switch changes nothing here; a request's `Host` is first looked up among
//! the exact names, then (dropping its first label) among the wildcards, and otherwise used as
//! is, so the `.localhost` names keep working.
//!
//! Rejected: inserting every public name into the routing table (a switch would then have to
//! update several entries atomically, and the retire-after-publish protocol of `generation`
//! works per entry).

use std::collections::HashMap;

use crate::RouteKey;

/// Public names → internal host names.
#[derive(Debug, Default)]
pub(crate) struct HostMap {
    exact: HashMap<String, String>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, String>,
}

/// Why a host name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    /// Not a lower-case DNS name with at least two labels (after an optional `*.`).
    #[error(
        "{0:?} is not a host name: expected labels of a-z, 0-9 and '-', at least two, optionally after one \"*.\""
    )]
    Invalid(String),
    /// The same name given for two routes.
    #[error("host {host:?} is given for both {first} and {second}; a name routes to one service")]
    Duplicate {
        /// The name.
        host: String,
        /// The route it was given for first.
        first: String,
        /// The other route.
        second: String,
    },
}

impl HostMap {
    pub(crate) fn build(hosts: &[(String, RouteKey)], base_domain: &str) -> Result<Self, HostError> {
        let mut map = Self::default();
        let mut owner: HashMap<String, &RouteKey> = HashMap::new();
        for (raw, route) in hosts {
            let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
            let (table, key) = match name.strip_prefix("*.") {
                Some(rest) => (&mut map.wildcard, rest.to_owned()),
                None => (&mut map.exact, name.clone()),
            };
            let valid = key.split('.').count() >= 2
                && key.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !valid {
                return Err(HostError::Invalid(raw.clone()));
            }
            if let Some(first) = owner.get(&name) {
                return Err(HostError::Duplicate {
                    host: name,
                    first: first.to_string(),
                    second: route.to_string(),
                });
            }
            table.insert(key, route.host(base_domain));
            owner.insert(name, route);
        }
        Ok(map)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// The internal host a normalised request host stands for, if it is a public name.
    pub(crate) fn resolve(&self, host: &str) -> Option<&str> {
        if let Some(internal) = self.exact.get(host) {
            return Some(internal);
        }
        let (_, rest) = host.split_once('.')?;
        self.wildcard.get(rest).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_one_label_wildcard() {
        let web = RouteKey::new("shop", "prod", "web").unwrap();
        let admin = RouteKey::new("shop", "prod", "admin").unwrap();
        let map = HostMap::build(
            &[
                ("www.example.com".into(), web.clone()),
                ("*.example.com".into(), admin.clone()),
            ],
            "localhost",
        )
        .unwrap();
        assert_eq!(map.resolve("www.example.com"), Some("web.prod.shop.localhost"));
        assert_eq!(map.resolve("a.example.com"), Some("admin.prod.shop.localhost"));
        assert_eq!(map.resolve("a.b.example.com"), None);
        assert_eq!(map.resolve("example.com"), None);
        assert_eq!(map.resolve("web.prod.shop.localhost"), None);
        assert!(matches!(
            HostMap::build(
                &[
                    ("a.example.com".into(), web.clone()),
                    ("A.example.com".into(), admin)
                ],
                "localhost"
            ),
            Err(HostError::Duplicate { .. })
        ));
        assert!(HostMap::build(&[("nodot".into(), web.clone())], "localhost").is_err());
        assert!(HostMap::build(&[("a b.com".into(), web)], "localhost").is_err());
    }
}

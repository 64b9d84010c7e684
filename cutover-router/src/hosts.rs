//! Public host names: `www.example.com` (or `*.example.com`, one label) routed to a route whose
//! own name is `<service>.<env>.<app>.<base_domain>`. The routing table stays keyed by those
//! internal names, so a switch changes nothing here; a request's `Host` is first looked up among
//! the exact names, then (dropping its first label) among the wildcards, and otherwise used as
//! is, so the `.localhost` names keep working.
//!
//! A name may carry a path prefix (`example.com/shop`): on that host, a request whose path is
//! the prefix or continues it after a `/` (`/shop`, `/shop/cart`, not `/shopping`) goes to that
//! route, the longest matching prefix winning; the bare name (prefix `/`) takes the rest. The
//! prefix is not stripped: the application sees the path as the client sent it, so links it
//! writes stay right without knowing where it is mounted, which is what frameworks' base-path
//! settings (`SCRIPT_NAME`, `relative_url_root`) expect. Rejected: stripping (an application
//! mounted under `/shop` would have to be told to write `/shop/…` into every link anyway).
//!
//! Rejected: inserting every public name into the routing table (a switch would then have to
//! update several entries atomically, and the retire-after-publish protocol of `generation`
//! works per entry).

use std::collections::HashMap;

use crate::RouteKey;

/// Path prefixes of one public name → internal host names, longest prefix first (`""` is the
/// whole host).
type Prefixes = Vec<(String, String)>;

/// Public names → internal host names.
#[derive(Debug, Default)]
pub(crate) struct HostMap {
    exact: HashMap<String, Prefixes>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Prefixes>,
}

/// Whether `path` is `prefix` or continues it after a `/` (`""` matches every path).
fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn pick<'a>(prefixes: &'a Prefixes, path: &str) -> Option<&'a str> {
    prefixes
        .iter()
        .find(|(prefix, _)| under(path, prefix))
        .map(|(_, internal)| internal.as_str())
}

/// `/shop/`, `/shop` → `/shop`; `/` → `""`; `Err` for anything but `/`-separated segments of
/// unreserved characters (no `.` or `..` segment, no query, no percent-encoding).
fn prefix_of(raw: &str) -> Result<String, ()> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let ok = trimmed.split('/').skip(1).all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    });
    if ok { Ok(trimmed.to_owned()) } else { Err(()) }
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
            let entry = raw.trim().to_ascii_lowercase();
            let (name, path) = match entry.find('/') {
                Some(i) => entry.split_at(i),
                None => (entry.as_str(), "/"),
            };
            let name = name.trim_end_matches('.');
            let prefix = prefix_of(path).map_err(|()| HostError::Invalid(raw.clone()))?;
            let (table, key) = match name.strip_prefix("*.") {
                Some(rest) => (&mut map.wildcard, rest.to_owned()),
                None => (&mut map.exact, name.to_owned()),
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
            let full = format!("{name}{prefix}");
            if let Some(first) = owner.get(&full) {
                return Err(HostError::Duplicate {
                    host: full,
                    first: first.to_string(),
                    second: route.to_string(),
                });
            }
            let prefixes = table.entry(key).or_default();
            prefixes.push((prefix, route.host(base_domain)));
            // Longest first: the first match is the longest prefix.
            prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
            owner.insert(full, route);
        }
        Ok(map)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// The internal host a normalised request host and its path stand for, if they are a
    /// public name (with the longest matching path prefix).
    pub(crate) fn resolve(&self, host: &str, path: &str) -> Option<&str> {
        if let Some(internal) = self.exact.get(host).and_then(|p| pick(p, path)) {
            return Some(internal);
        }
        let (_, rest) = host.split_once('.')?;
        self.wildcard.get(rest).and_then(|p| pick(p, path))
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
        assert_eq!(
            map.resolve("www.example.com", "/"),
            Some("web.prod.shop.localhost")
        );
        assert_eq!(
            map.resolve("a.example.com", "/x"),
            Some("admin.prod.shop.localhost")
        );
        assert_eq!(map.resolve("a.b.example.com", "/"), None);
        assert_eq!(map.resolve("example.com", "/"), None);
        assert_eq!(map.resolve("web.prod.shop.localhost", "/"), None);
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

    #[test]
    fn the_longest_path_prefix_wins_at_a_segment_boundary() {
        let web = RouteKey::new("shop", "prod", "web").unwrap();
        let store = RouteKey::new("shop", "prod", "storefront").unwrap();
        let admin = RouteKey::new("shop", "prod", "admin").unwrap();
        let map = HostMap::build(
            &[
                ("example.com".into(), web.clone()),
                ("example.com/shop/".into(), store.clone()),
                ("example.com/shop/admin".into(), admin.clone()),
                ("*.example.org/api".into(), admin.clone()),
            ],
            "localhost",
        )
        .unwrap();
        let r = |h, p| map.resolve(h, p);
        assert_eq!(r("example.com", "/"), Some("web.prod.shop.localhost"));
        assert_eq!(r("example.com", "/shopping"), Some("web.prod.shop.localhost"));
        assert_eq!(r("example.com", "/shop"), Some("storefront.prod.shop.localhost"));
        assert_eq!(
            r("example.com", "/shop/cart"),
            Some("storefront.prod.shop.localhost")
        );
        assert_eq!(r("example.com", "/shop/admin"), Some("admin.prod.shop.localhost"));
        assert_eq!(
            r("example.com", "/shop/admin/x"),
            Some("admin.prod.shop.localhost")
        );
        assert_eq!(
            r("example.com", "/shop/administrator"),
            Some("storefront.prod.shop.localhost")
        );
        assert_eq!(r("a.example.org", "/api/v1"), Some("admin.prod.shop.localhost"));
        assert_eq!(r("a.example.org", "/"), None, "no bare name: not a public path");
        for bad in [
            "example.com/a/../b",
            "example.com/a b",
            "example.com/a?x",
            "example.com/%2e",
        ] {
            assert!(
                HostMap::build(&[(bad.into(), web.clone())], "localhost").is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            HostMap::build(
                &[
                    ("example.com/shop".into(), web),
                    ("example.com/shop/".into(), store)
                ],
                "localhost"
            ),
            Err(HostError::Duplicate { .. })
        ));
    }
}

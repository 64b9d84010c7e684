//! Feature flags as a request header: every request the router forwards to an instance of an
//! environment that has flags carries `Cutover-Flags: <name>=on, <name>=off, <name>=25%, ...`
//! (names sorted; a percentage is decided by the app per user, see the engine's `flag_bucket`),
//! so an application reads its flags per request without reading a file. The control plane sets
//! an environment's whole set with [`crate::Router::set_flags`] on every change; the header value
//! is built once there, not per request.
//!
//! A client's own `Cutover-Flags` is always removed before forwarding (it would otherwise turn
//! features on from outside); an environment without flags pays one atomic load per request and
//! its instances get no such header. Rejected: one header per flag (`Cutover-Flag-<name>`; an app
//! could not tell a removed flag from a header a proxy dropped) and JSON in the header (quotes in
//! a header value are fragile across proxies; the names are restricted to `[a-z0-9_-]`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::header::HeaderName;

use crate::RouteKey;

/// The header carrying an environment's flags to its instances.
pub const FLAGS_HEADER: HeaderName = HeaderName::from_static("cutover-flags");

/// The longest flag name the router takes (as the engine's own rule).
const MAX_NAME: usize = 63;

/// An environment's flags that cannot be put in a header.
#[derive(Debug, thiserror::Error)]
#[error(
    "flag {name:?} = {value:?} cannot be sent in the Cutover-Flags header: a name is 1 to {MAX_NAME} of a-z, 0-9, '_' or '-', \
     a value is on, off or a percentage from 0% to 100%"
)]
pub struct FlagsError {
    pub name: String,
    pub value: String,
}

type EnvKey = (String, String);

struct EnvFlags {
    flags: BTreeMap<String, String>,
    header: HeaderValue,
}

/// The flags of every environment that has some.
#[derive(Default)]
pub(crate) struct FlagHeaders {
    map: ArcSwap<HashMap<EnvKey, Arc<EnvFlags>>>,
    /// Serialises writers; readers never take it.
    write: Mutex<()>,
}

impl FlagHeaders {
    /// The header value for a request of `key`'s environment, if it has flags.
    pub(crate) fn header_for(&self, key: &RouteKey) -> Option<HeaderValue> {
        let map = self.map.load();
        if map.is_empty() {
            return None;
        }
        map.get(&(key.app().to_owned(), key.env().to_owned()))
            .map(|f| f.header.clone())
    }
}

/// Whether `value` is `on`, `off` or `0%` to `100%`.
fn valid_value(value: &str) -> bool {
    if value == "on" || value == "off" {
        return true;
    }
    value
        .strip_suffix('%')
        .filter(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| n <= 100)
}

/// `a=on, b=off, c=25%`, or the first flag that cannot be sent.
fn header_value(flags: &BTreeMap<String, String>) -> Result<HeaderValue, FlagsError> {
    let mut text = String::new();
    for (name, value) in flags {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && valid_value(value);
        if !valid {
            return Err(FlagsError {
                name: name.clone(),
                value: value.clone(),
            });
        }
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(name);
        text.push('=');
        text.push_str(value);
    }
    // Only the characters checked above: always a valid header value.
    HeaderValue::from_str(&text).map_err(|_| FlagsError {
        name: String::new(),
        value: text.clone(),
    })
}

impl crate::Router {
    /// Replaces the flags of an environment (`app`, `env` as in its route keys): requests
    /// forwarded from now on carry them in `Cutover-Flags`. An empty set removes the header.
    pub fn set_flags(&self, app: &str, env: &str, flags: BTreeMap<String, String>) -> Result<(), FlagsError> {
        let key = (app.to_ascii_lowercase(), env.to_ascii_lowercase());
        let entry = if flags.is_empty() {
            None
        } else {
            let header = header_value(&flags)?;
            Some(Arc::new(EnvFlags { flags, header }))
        };
        let f = &self.inner.flags;
        let _writer = f.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = HashMap::clone(&f.map.load());
        match entry {
            Some(e) => next.insert(key, e),
            None => next.remove(&key),
        };
        f.map.store(Arc::new(next));
        Ok(())
    }

    /// Every environment's flags: `(app, env, flags)`, sorted.
    pub fn flags(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let mut out: Vec<_> = self
            .inner
            .flags
            .map
            .load()
            .iter()
            .map(|((a, e), f)| (a.clone(), e.clone(), f.flags.clone()))
            .collect();
        out.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Router, RouterConfig};

    #[test]
    fn a_header_per_environment_built_once_and_bad_names_refused() {
        let router = Router::new(RouterConfig::default());
        let key = RouteKey::new("shop", "prod", "web").unwrap();
        assert!(router.inner.flags.header_for(&key).is_none());
        let flags = BTreeMap::from([
            ("new_checkout".to_owned(), "off".to_owned()),
            ("dark-mode".to_owned(), "on".to_owned()),
            ("beta".to_owned(), "25%".to_owned()),
        ]);
        router.set_flags("Shop", "PROD", flags.clone()).unwrap();
        assert_eq!(
            router.inner.flags.header_for(&key).unwrap(),
            "beta=25%, dark-mode=on, new_checkout=off"
        );
        assert!(
            router
                .inner
                .flags
                .header_for(&RouteKey::new("shop", "stage", "web").unwrap())
                .is_none()
        );
        assert_eq!(router.flags(), vec![("shop".into(), "prod".into(), flags)]);
        for bad in ["", "a b", "x\r\ny", "A", "a,b", "a=b", &"a".repeat(64)] {
            let e = router
                .set_flags(
                    "shop",
                    "prod",
                    BTreeMap::from([(bad.to_owned(), "on".to_owned())]),
                )
                .unwrap_err();
            assert!(e.to_string().contains("a-z, 0-9"), "{bad:?}: {e}");
        }
        for bad in ["", "yes", "101%", "%", "5", "1\r\nx: y", "on, evil=on"] {
            let e = router
                .set_flags("shop", "prod", BTreeMap::from([("a".to_owned(), bad.to_owned())]))
                .unwrap_err();
            assert!(e.to_string().contains("0% to 100%"), "{bad:?}: {e}");
        }
        // A refused set leaves the previous one.
        assert!(router.inner.flags.header_for(&key).is_some());
        router.set_flags("shop", "prod", BTreeMap::new()).unwrap();
        assert!(router.inner.flags.header_for(&key).is_none());
        assert!(router.flags().is_empty());
    }
}

//! `ParamKey`: the validated name of a parameter, e.g. `/shop-prod/desired_version`.
//!
//! Keys are checked once, here, when they enter the system; the store and
//! everything behind it take a `ParamKey` and never see a raw string. The
//! error is `cutover_core::NameError`, so callers treat a bad key exactly like
//! a bad environment or service name.
//!
//! Rejected: allowing any UTF-8 (keys end up in URLs, shell environment
//! variable names and log lines; a narrow ASCII alphabet keeps all three
//! safe), and `.`/`..` segments (they read as path traversal in URLs and
//! would make two spellings of one key).

use std::fmt;
use std::str::FromStr;

use cutover_core::NameError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest key accepted, in characters.
pub const PARAM_KEY_MAX_LEN: usize = 512;

const KIND: &str = "parameter key";
const RULE: &str = "a parameter key starts with '/' and is made of segments of letters, digits, '_', '.' or '-' \
                    separated by single '/' (no empty, '.' or '..' segment, no trailing '/', at most 512 characters), \
                    e.g. \"/shop-prod/desired_version\"";

/// A parameter key: `/segment/segment...`, each segment `[A-Za-z0-9_.-]+`,
/// neither `.` nor `..`, at most [`PARAM_KEY_MAX_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamKey(String);

impl ParamKey {
    /// Checks `value` against the key grammar; the error says what is wrong.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check(value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, without the slashes: `/a/b` gives `["a", "b"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }

    /// Whether this key is `prefix` itself or lies below it (path semantics:
    /// `/shop-prod` covers `/shop-prod/x` but not `/shop-production/x`).
    pub fn is_under(&self, prefix: &ParamKey) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0) && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }
}

fn invalid(value: &str, problem: impl Into<String>) -> NameError {
    NameError::Invalid {
        kind: KIND,
        value: value.to_owned(),
        problem: problem.into(),
        rule: RULE,
    }
}

fn check(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty {
            kind: KIND,
            rule: RULE,
        });
    }
    let len = value.chars().count();
    if len > PARAM_KEY_MAX_LEN {
        return Err(NameError::TooLong {
            kind: KIND,
            value: value.to_owned(),
            len,
            rule: RULE,
        });
    }
    let Some(rest) = value.strip_prefix('/') else {
        return Err(invalid(value, "it does not start with '/'"));
    };
    if rest.is_empty() {
        return Err(invalid(value, "it has no segment after the leading '/'"));
    }
    if rest.ends_with('/') {
        return Err(invalid(value, "it ends with '/'"));
    }
    for (i, segment) in rest.split('/').enumerate() {
        if segment.is_empty() {
            return Err(invalid(value, "it contains an empty segment ('//')"));
        }
        if segment == "." || segment == ".." {
            return Err(invalid(value, format!("segment {} is {segment:?}", i + 1)));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(invalid(value, format!("it contains {bad:?}")));
        }
    }
    Ok(())
}

impl fmt::Display for ParamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ParamKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for ParamKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for ParamKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ParamKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

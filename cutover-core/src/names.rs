//! Validated newtypes for the names and versions that cross the system.
//!
//! Everything a user types is checked here, once, at the edge (CLI argument,
//! HTTP body, `cutover.yml`). Downstream code takes these types and never
//! re-validates a raw string. Rejected alternative: validating in each
//! consumer, which drifted in earlier tools and let `../` or `;rm` through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name or version was refused. The message says what was wrong and
/// what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} is empty; {rule}")]
    Empty { kind: &'static str, rule: &'static str },
    #[error("{kind} {value:?} is too long ({len} characters); {rule}")]
    TooLong {
        kind: &'static str,
        value: String,
        len: usize,
        rule: &'static str,
    },
    #[error("{kind} {value:?} is not valid: {problem}; {rule}")]
    Invalid {
        kind: &'static str,
        value: String,
        problem: String,
        rule: &'static str,
    },
}

const NAME_RULE: &str = "use a lowercase letter first, then lowercase letters, digits or '-' (at most 63 characters), e.g. \"staging\" or \"back-office\"";

fn check_name(kind: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty {
            kind,
            rule: NAME_RULE,
        });
    }
    let len = value.chars().count();
    if len > 63 {
        return Err(NameError::TooLong {
            kind,
            value: value.to_owned(),
            len,
            rule: NAME_RULE,
        });
    }
    let first = value.chars().next().unwrap_or_default();
    if !first.is_ascii_lowercase() {
        let problem = if first.is_ascii_uppercase() {
            "it starts with a capital letter".to_owned()
        } else {
            format!("it starts with {first:?}")
        };
        return Err(NameError::Invalid {
            kind,
            value: value.to_owned(),
            problem,
            rule: NAME_RULE,
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let problem = if bad.is_ascii_uppercase() {
            format!("it contains the capital letter {bad:?}")
        } else {
            format!("it contains {bad:?}")
        };
        return Err(NameError::Invalid {
            kind,
            value: value.to_owned(),
            problem,
            rule: NAME_RULE,
        });
    }
    Ok(())
}

/// The OpenAPI schema of a validated string newtype: a string with a pattern.
macro_rules! string_schema {
    ($ty:ident, $pattern:expr, $doc:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .description(Some($doc))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Checks `value` against `[a-z][a-z0-9-]{0,62}`.
            pub fn parse(value: &str) -> Result<Self, NameError> {
                check_name($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        string_schema!($ty, "^[a-z][a-z0-9-]{0,62}$", concat!("A ", $kind, "."));
    };
}

name_type!(
    /// The application's name (`app:` in cutover.yml); the prefix of parameter keys.
    AppName,
    "application name"
);
name_type!(
    /// An environment's name, e.g. `staging`.
    EnvName,
    "environment name"
);
name_type!(
    /// A service's name, e.g. `yves`.
    ServiceName,
    "service name"
);
name_type!(
    /// A scheduler job's name, e.g. `queue-worker`.
    JobName,
    "job name"
);

/// Who did something: a user name recorded in parameter history and the audit
/// log. It is the name of the API token the change was made with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const RULE: &str =
            "an actor is 1 to 64 letters, digits, '.', '_', '@' or '-', e.g. \"alice\" or \"ci@shop\"";
        if value.is_empty() {
            return Err(NameError::Empty {
                kind: "actor",
                rule: RULE,
            });
        }
        if value.len() > 64 {
            return Err(NameError::TooLong {
                kind: "actor",
                value: value.to_owned(),
                len: value.len(),
                rule: RULE,
            });
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._@-".contains(*c)))
        {
            return Err(NameError::Invalid {
                kind: "actor",
                value: value.to_owned(),
                problem: format!("it contains {bad:?}"),
                rule: RULE,
            });
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Actor {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An application version: a full 40-hex-digit git commit SHA, lowercase.
///
/// Short SHAs, branches, tags and `latest` are *references*; they are resolved
/// to a `Version` once (see `cutover-git`) and only the full SHA is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const RULE: &str = "a version is a full 40-character hexadecimal git commit SHA";
        if value.is_empty() {
            return Err(NameError::Empty {
                kind: "version",
                rule: RULE,
            });
        }
        if value.len() != 40 {
            return Err(NameError::Invalid {
                kind: "version",
                value: value.to_owned(),
                problem: format!("it has {} characters, not 40", value.chars().count()),
                rule: RULE,
            });
        }
        if let Some(bad) = value.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(NameError::Invalid {
                kind: "version",
                value: value.to_owned(),
                problem: format!("{bad:?} is not a hexadecimal digit"),
                rule: RULE,
            });
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for tables and logs.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Version {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

string_schema!(
    Version,
    "^[0-9a-f]{40}$",
    "A version: a full 40-character hexadecimal git commit SHA, lowercase."
);
string_schema!(
    Actor,
    "^[A-Za-z0-9._@-]{1,64}$",
    "Who did something: 1 to 64 letters, digits, '.', '_', '@' or '-'."
);

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The longest branch, tag or SHA accepted where a version is expected, in bytes. Git
/// stores a ref as a file named after it (plus `.lock` while writing), and file names are
/// at most 255 bytes.
pub const MAX_VERSION_REF_LEN: usize = 200;

/// What a user may type where a version is expected, before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// `latest`: the environment's `last_build_version`.
    Latest,
    /// A full SHA, short SHA, branch or tag, to be resolved through git.
    Git(String),
}

impl VersionRef {
    /// Accepts anything a git ref may be, but refuses what could never be one
    /// (empty, whitespace, control characters, `..`, a leading `-`), so nothing
    /// that looks like an option or a shell fragment travels further.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const RULE: &str = "give `latest`, a commit SHA (full or at least 4 hex digits), a branch or a tag";
        let value = value.trim();
        if value.is_empty() {
            return Err(NameError::Empty {
                kind: "version",
                rule: RULE,
            });
        }
        if value == "latest" {
            return Ok(Self::Latest);
        }
        let problem = if value.starts_with('-') {
            Some("it starts with '-'".to_owned())
        } else if value.contains("..") {
            Some("it contains '..'".to_owned())
        } else if let Some(c) = value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\;&|$`'\"<>(){}".contains(*c))
        {
            Some(format!("it contains {c:?}, which no git ref may contain"))
        } else if value.len() > MAX_VERSION_REF_LEN {
            Some(format!(
                "it is {} characters long; a version is at most {MAX_VERSION_REF_LEN} (a longer ref cannot be a file name \
                 in a repository)",
                value.len()
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(NameError::Invalid {
                kind: "version",
                value: value.to_owned(),
                problem,
                rule: RULE,
            }),
            None => Ok(Self::Git(value.to_owned())),
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Git(r) => f.write_str(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_shape() {
        for ok in ["a", "staging", "prod-like", "back-office", "s3", &"a".repeat(63)] {
            assert!(EnvName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_refuse_capitals_slashes_and_shell_metacharacters() {
        for (bad, needle) in [
            ("", "empty"),
            ("Prod", "capital"),
            ("prOd", "capital letter 'O'"),
            ("a/b", "'/'"),
            ("a;rm", "';'"),
            ("a b", "' '"),
            ("$(x)", "'$'"),
            ("1st", "starts with '1'"),
            ("-x", "starts with '-'"),
        ] {
            let err = EnvName::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        assert!(
            ServiceName::parse(&"a".repeat(64))
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn versions_are_forty_hex_and_lowercased() {
        let v = Version::parse("ABCDEF0123456789abcdef0123456789ABCDEF01").unwrap();
        assert_eq!(v.as_str(), "abcdef0123456789abcdef0123456789abcdef01");
        assert_eq!(v.short(), "abcdef012345");
        assert!(
            Version::parse("abc")
                .unwrap_err()
                .to_string()
                .contains("3 characters")
        );
        assert!(
            Version::parse(&"g".repeat(40))
                .unwrap_err()
                .to_string()
                .contains("hexadecimal")
        );
    }

    #[test]
    fn version_refs_refuse_what_no_ref_can_be() {
        assert_eq!(VersionRef::parse("latest").unwrap(), VersionRef::Latest);
        assert_eq!(
            VersionRef::parse("feature/x").unwrap(),
            VersionRef::Git("feature/x".into())
        );
        for bad in ["", "-rf", "a..b", "a b", "x;y", "$(id)", "a`b`"] {
            assert!(VersionRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(VersionRef::parse(&"a".repeat(MAX_VERSION_REF_LEN)).is_ok());
        let err = VersionRef::parse(&"a".repeat(256)).unwrap_err().to_string();
        assert!(err.contains("at most 200"), "{err}");
    }
}

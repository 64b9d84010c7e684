//! Who may do what: the four roles and a token's grants (a role per
//! environment, plus an optional default role for every environment, `*`).
//!
//! Roles are ordered, each including the ones before it: `viewer` reads an
//! environment's data, `deployer` also changes it (release, rollback,
//! promote into it, cancel, scheduler, its parameters), `approver` also
//! approves and rejects its runs, `admin` also manages tokens and the
//! parameters outside every environment's prefix. Which request needs which
//! role is decided in one table at the API edge (`cutover-server`'s
//! `auth::policy`); this module only holds the vocabulary.
//!
//! Rejected: free-form permission lists per token (hard to review, and the
//! spec names exactly four roles) and roles per application (one server
//! serves one application).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::EnvName;

/// A role on an environment; later variants include earlier ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Deployer,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Deployer, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    /// Parses `viewer`, `deployer`, `approver` or `admin`; the error lists them.
    pub fn parse(value: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == value)
            .ok_or_else(|| {
                format!("unknown role {value:?}; roles are viewer, deployer, approver and admin (each includes the ones before it)")
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token may do: a role per environment and an optional default
/// role for every environment (`*`). The higher of the two applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grants {
    /// The role on every environment, also ones added later (`*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Role>,
    /// Roles on single environments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<EnvName, Role>,
}

impl Grants {
    /// A grant of `role` on every environment.
    pub fn everywhere(role: Role) -> Grants {
        Grants {
            default: Some(role),
            envs: BTreeMap::new(),
        }
    }

    /// The role held on `env`, if any.
    pub fn role_on(&self, env: &str) -> Option<Role> {
        let single = self.envs.iter().find(|(e, _)| e.as_str() == env).map(|(_, r)| *r);
        single.max(self.default)
    }

    /// The highest role held on some environment.
    pub fn highest(&self) -> Option<Role> {
        self.envs.values().copied().max().max(self.default)
    }

    /// True if nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.envs.is_empty()
    }

    /// `*=admin`, `dev=deployer, prod=viewer`: for messages and tables.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(d) = self.default {
            parts.push(format!("*={d}"));
        }
        parts.extend(self.envs.iter().map(|(e, r)| format!("{e}={r}")));
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> EnvName {
        EnvName::parse(s).unwrap()
    }

    #[test]
    fn roles_are_ordered_and_parse_their_names() {
        assert!(Role::Viewer < Role::Deployer && Role::Deployer < Role::Approver);
        assert!(Role::Approver < Role::Admin);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        let err = Role::parse("owner").unwrap_err();
        assert!(err.contains("viewer, deployer, approver and admin"), "{err}");
    }

    #[test]
    fn the_higher_of_default_and_single_grant_applies() {
        let mut g = Grants::everywhere(Role::Viewer);
        g.envs.insert(env("dev"), Role::Deployer);
        assert_eq!(g.role_on("dev"), Some(Role::Deployer));
        assert_eq!(g.role_on("prod"), Some(Role::Viewer));
        assert_eq!(g.highest(), Some(Role::Deployer));
        let only_dev = Grants {
            default: None,
            envs: [(env("dev"), Role::Approver)].into(),
        };
        assert_eq!(only_dev.role_on("prod"), None);
        assert_eq!(only_dev.describe(), "dev=approver");
        let admin = Grants {
            default: Some(Role::Admin),
            envs: [(env("dev"), Role::Viewer)].into(),
        };
        assert_eq!(admin.role_on("dev"), Some(Role::Admin));
        assert!(Grants::default().is_empty());
        assert_eq!(Grants::default().highest(), None);
    }

    #[test]
    fn grants_round_trip_as_json() {
        let g = Grants {
            default: Some(Role::Viewer),
            envs: [(env("prod"), Role::Approver)].into(),
        };
        let text = serde_json::to_string(&g).unwrap();
        assert_eq!(text, r#"{"default":"viewer","envs":{"prod":"approver"}}"#);
        assert_eq!(serde_json::from_str::<Grants>(&text).unwrap(), g);
        assert!(serde_json::from_str::<Grants>(r#"{"envs":{"Prod":"viewer"}}"#).is_err());
    }
}

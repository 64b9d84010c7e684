//! Feature flags per environment: named switches that running instances read from a file and
//! from a request header, so turning one changes behaviour without a restart or a deploy.
//!
//! A flag is `/<app>-<env>/flags/<NAME>` in the parameter store (`on`, `off`, or a share of users
//! `0%`..`100%`; history and compare-and-set for free), written by [`Engine::flag_set`] and by
//! `promote --flags` ([`Engine::copy_flags`], each flag audited with the promote as reason) only:
//! `param put` refuses those keys, as it refuses the replica counts of scale changes. Delivery:
//!
//! * every instance gets `CUTOVER_FLAGS_FILE=<env dir>/flags.json` (the environment directory is
//!   shared with containers at the same path); the engine rewrites that file atomically (a
//!   temporary file renamed over it) on every change and at start, as
//!   `{"flags": {"NAME": true, ...}, "percent": {"NAME": 25}, "updated_at_ms": ...}`; a share
//!   reads `false` in `flags` (an app that ignores shares keeps the feature off);
//! * the router adds `Cutover-Flags: a=on, b=off, c=25%` to every request it forwards to an
//!   instance of the environment (`cutover_router::FLAGS_HEADER`; a client's own is removed): the
//!   engine pushes the whole set to the data plane on every change, at start (adopted instances
//!   included) and after a data plane was replaced; the data plane keeps it in `routes.json`.
//!
//! A share is decided by the app per user: on when [`flag_bucket`] (SHA-256 of `<flag>:<user>`,
//! first four bytes big-endian, modulo 100) is below the percentage, so a user keeps their answer
//! and raising the share only adds users. Rejected: environment variables (they need a restart),
//! an HTTP endpoint polled by apps (every app would need a token), and deciding shares in the
//! router (it does not know who the user is; a cookie of its own would be a second identity).
//! Not done: lists of user ids.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cutover_core::{Actor, EnvName, NameError};
use cutover_store::ParamKey;
use serde::Serialize;
use serde_json::json;

use crate::{Engine, EngineError};

/// The longest flag name.
pub const MAX_FLAG_NAME: usize = 63;
const FLAG_RULE: &str = "use a lowercase letter first, then lowercase letters, digits, '_' or '-' (at most 63 characters), e.g. \"new_checkout\"";

/// One flag of an environment as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Flag {
    pub name: String,
    /// `on` or `off`.
    pub value: String,
    /// The parameter store version of this value (its history: `cutover param history`).
    pub version: i64,
    pub updated_by: String,
    pub updated_at_ms: i64,
}

/// Checks a flag name: `[a-z][a-z0-9_-]*`, at most [`MAX_FLAG_NAME`] characters.
pub fn check_flag_name(name: &str) -> Result<(), NameError> {
    let kind = "flag name";
    if name.is_empty() {
        return Err(NameError::Empty {
            kind,
            rule: FLAG_RULE,
        });
    }
    let len = name.chars().count();
    if len > MAX_FLAG_NAME {
        return Err(NameError::TooLong {
            kind,
            value: name.to_owned(),
            len,
            rule: FLAG_RULE,
        });
    }
    let problem = if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some(format!(
            "it starts with {:?}",
            name.chars().next().unwrap_or_default()
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
            .map(|bad| format!("it contains {bad:?}"))
    };
    match problem {
        Some(problem) => Err(NameError::Invalid {
            kind,
            value: name.to_owned(),
            problem,
            rule: FLAG_RULE,
        }),
        None => Ok(()),
    }
}

/// What a flag's stored value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagValue {
    On,
    Off,
    /// On for the users whose [`flag_bucket`] is below this (0 to 100).
    Percent(u8),
}

impl FlagValue {
    /// `on` for everyone (a percentage counts as off for an app that does not look at
    /// percentages: the cautious reading).
    fn on(self) -> bool {
        self == FlagValue::On
    }
}

/// Checks a flag value: exactly `on`, `off`, or a whole percentage `0%` to `100%`.
fn check_flag_value(name: &str, value: &str) -> Result<FlagValue, EngineError> {
    let percent = value
        .strip_suffix('%')
        .filter(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 100);
    match (value, percent) {
        ("on", _) => Ok(FlagValue::On),
        ("off", _) => Ok(FlagValue::Off),
        (_, Some(n)) => Ok(FlagValue::Percent(n)),
        (other, None) => Err(EngineError::Refused(format!(
            "flag {name}: value {other:?} is not valid; use exactly \"on\" or \"off\", or a share of users \
             from \"0%\" to \"100%\" (whole numbers, e.g. \"25%\")"
        ))),
    }
}

/// The bucket (0 to 99) of `user` for flag `flag`: the first four bytes of
/// SHA-256(`<flag>:<user>`) as a big-endian unsigned integer, modulo 100. A percentage flag of
/// `P%` is on for a user whose bucket is below `P`: the same user always gets the same answer,
/// raising the percentage only adds users, and each flag splits users differently. Apps compute
/// it themselves (README, "Feature flags"); this is the reference.
pub fn flag_bucket(flag: &str, user: &str) -> u8 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{flag}:{user}").as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    u8::try_from(first % 100).unwrap_or(0)
}

impl Engine {
    /// `/<app>-<env>/flags`.
    fn flags_prefix(&self, env: &EnvName) -> String {
        format!("{}/flags", self.config().param_prefix(env))
    }

    /// Whether `key` is a feature flag, which only [`Engine::flag_set`] writes.
    pub(crate) fn is_flag_key(&self, key: &ParamKey) -> bool {
        let config = self.config();
        config
            .environments
            .keys()
            .any(|env| ParamKey::parse(&self.flags_prefix(env)).is_ok_and(|p| key.is_under(&p)))
    }

    /// The file every instance of `env` reads its flags from (`CUTOVER_FLAGS_FILE`).
    pub fn flags_file(&self, env: &EnvName) -> PathBuf {
        self.env_dir(env).join("flags.json")
    }

    /// The flags of `env`, by name.
    pub async fn flag_list(&self, env: &str) -> Result<Vec<Flag>, EngineError> {
        let env = self.env_name(env)?;
        self.flags_of(&env).await
    }

    async fn flags_of(&self, env: &EnvName) -> Result<Vec<Flag>, EngineError> {
        let prefix = format!("{}/", self.flags_prefix(env));
        let mut flags: Vec<Flag> = self
            .store()
            .param_list(&prefix)
            .await?
            .into_iter()
            .map(|p| Flag {
                name: p.key.trim_start_matches(&prefix).to_owned(),
                value: p.value,
                version: p.version,
                updated_by: p.actor,
                updated_at_ms: p.at_ms,
            })
            .collect();
        flags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(flags)
    }

    /// Turns flag `name` of `env` on or off (`value` is `on` or `off`), audited as `flag.set`,
    /// and rewrites the environment's flags file for its running instances.
    pub async fn flag_set(
        &self,
        env: &str,
        name: &str,
        value: &str,
        actor: &Actor,
    ) -> Result<Flag, EngineError> {
        let env = self.env_name(env)?;
        check_flag_name(name)?;
        check_flag_value(name, value)?;
        let flag = self.put_flag(&env, name, value, actor, None).await?;
        self.publish_flags(&env).await?;
        Ok(flag)
    }

    /// Copies every flag of `from` onto `to` (a promote's `flags`), each audited as `flag.set`
    /// with `reason`; flags only `to` has stay, flags that already agree are not written again.
    /// Returns the names written.
    pub(crate) async fn copy_flags(
        &self,
        from: &EnvName,
        to: &EnvName,
        actor: &Actor,
        reason: &str,
    ) -> Result<Vec<String>, EngineError> {
        let have: BTreeMap<String, String> = self
            .flags_of(to)
            .await?
            .into_iter()
            .map(|f| (f.name, f.value))
            .collect();
        let mut written = Vec::new();
        for f in self.flags_of(from).await? {
            if have.get(&f.name) == Some(&f.value) {
                continue;
            }
            self.put_flag(to, &f.name, &f.value, actor, Some(reason)).await?;
            written.push(f.name);
        }
        if !written.is_empty() {
            self.publish_flags(to).await?;
        }
        Ok(written)
    }

    /// Writes one checked flag and audits it (`reason` when it is part of something larger).
    async fn put_flag(
        &self,
        env: &EnvName,
        name: &str,
        value: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Flag, EngineError> {
        let key = ParamKey::parse(&format!("{}/{name}", self.flags_prefix(env)))?;
        let written = self.store().param_put(&key, value, actor.as_str(), None).await?;
        let mut detail =
            json!({ "env": env.as_str(), "flag": name, "value": value, "version": written.version });
        if let Some(reason) = reason {
            detail["reason"] = json!(reason);
        }
        self.audit(actor, "flag.set", key.as_str(), detail).await;
        Ok(Flag {
            name: name.to_owned(),
            value: written.value,
            version: written.version,
            updated_by: written.actor,
            updated_at_ms: written.at_ms,
        })
    }

    /// After a change: `env`'s flags file, then the router's `Cutover-Flags` header. The
    /// header failing (a data plane being replaced) is logged, not returned: the flag is stored
    /// and in the file, and the next data plane gets every environment's flags pushed again.
    async fn publish_flags(&self, env: &EnvName) -> Result<(), EngineError> {
        self.write_flags_file(env).await?;
        if let Err(e) = self.push_flags(env).await {
            tracing::warn!(env = %env, error = %e, "the router's flags header lags until the data plane is back");
        }
        Ok(())
    }

    /// Sets `env`'s flags in the data plane (the `Cutover-Flags` request header), from the store.
    pub(crate) async fn push_flags(&self, env: &EnvName) -> Result<(), EngineError> {
        // Reading the store and pushing are one step, as for the file: two changes at once must
        // not leave the older read as the data plane's set.
        static PUSHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = PUSHING.lock().await;
        let flags: BTreeMap<String, String> = self
            .flags_of(env)
            .await?
            .into_iter()
            .map(|f| (f.name, f.value))
            .collect();
        self.data_plane()
            .set_flags(self.config().app.as_str(), env.as_str(), flags)
            .await
            .map_err(EngineError::Internal)
    }

    /// Writes `env`'s flags file from the store, atomically (temporary file, then rename).
    pub(crate) async fn write_flags_file(&self, env: &EnvName) -> Result<(), EngineError> {
        // Reading the store and renaming are one step: two changes at once must not leave the
        // older read as the file (the later rename would win with a set missing one flag).
        static WRITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = WRITING.lock().await;
        let mut flags: BTreeMap<String, bool> = BTreeMap::new();
        let mut percent: BTreeMap<String, u8> = BTreeMap::new();
        for f in self.flags_of(env).await? {
            // A stored value was checked when it was written; anything else reads as off.
            let value = check_flag_value(&f.name, &f.value).unwrap_or(FlagValue::Off);
            if let FlagValue::Percent(n) = value {
                percent.insert(f.name.clone(), n);
            }
            flags.insert(f.name, value.on());
        }
        let body =
            json!({ "flags": flags, "percent": percent, "updated_at_ms": crate::now_ms() }).to_string();
        let file = self.flags_file(env);
        // One temporary file per write: two changes at once must not share one.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = file.with_extension(format!("json.{}.{seq}.tmp", std::process::id()));
        let written = tokio::fs::write(&tmp, body.as_bytes())
            .await
            .and(tokio::fs::rename(&tmp, &file).await);
        written.map_err(|e| {
            EngineError::Internal(format!(
                "cannot write the flags file {}: {e}; check that the data directory is writable, then set the flag again",
                file.display()
            ))
        })
    }

    /// `env`'s flags file, written first if it does not exist yet (an integration environment
    /// created after the start): every instance finds the file its variable names.
    pub(crate) async fn ensure_flags_file(&self, env: &EnvName) -> PathBuf {
        let file = self.flags_file(env);
        if !file.exists()
            && let Err(e) = self.write_flags_file(env).await
        {
            tracing::error!(env = %env, error = %e, "cannot write the flags file");
        }
        file
    }

    /// At start: every environment's flags file and header, so instances (adopted ones too)
    /// see the stored flags.
    pub(crate) async fn write_all_flags_files(&self) {
        let envs: Vec<EnvName> = self.config().environments.keys().cloned().collect();
        for env in envs {
            if let Err(e) = self.write_flags_file(&env).await {
                tracing::error!(env = %env, error = %e, "cannot write the flags file");
            }
            if let Err(e) = self.push_flags(&env).await {
                tracing::error!(env = %env, error = %e, "cannot set the flags header in the data plane");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_and_values_are_checked_with_the_rule_in_the_error() {
        for ok in ["a", "new_checkout", "dark-mode", "v2", &"a".repeat(MAX_FLAG_NAME)] {
            assert!(check_flag_name(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "is empty"),
            ("New", "starts with 'N'"),
            ("2fa", "starts with '2'"),
            ("_x", "starts with '_'"),
            ("a.b", "contains '.'"),
            ("a/b", "contains '/'"),
            ("aB", "contains 'B'"),
        ] {
            let e = check_flag_name(bad).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("lowercase letter first"),
                "{bad}: {e}"
            );
        }
        let long = "a".repeat(MAX_FLAG_NAME + 1);
        assert!(
            check_flag_name(&long)
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert_eq!(check_flag_value("x", "on").unwrap(), FlagValue::On);
        assert_eq!(check_flag_value("x", "off").unwrap(), FlagValue::Off);
        assert_eq!(check_flag_value("x", "25%").unwrap(), FlagValue::Percent(25));
        assert_eq!(check_flag_value("x", "0%").unwrap(), FlagValue::Percent(0));
        assert_eq!(check_flag_value("x", "100%").unwrap(), FlagValue::Percent(100));
        for bad in [
            "On", "true", "1", "", " on", "101%", "%", "25", "2.5%", "-1%", "+5%", "0100%", "25 %", "256%",
        ] {
            let e = check_flag_value("x", bad).unwrap_err().to_string();
            assert!(
                e.contains("\"on\" or \"off\"") && e.contains("\"25%\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn buckets_are_the_documented_hash_and_split_users_per_flag() {
        // Computed independently: Python's
        // int.from_bytes(hashlib.sha256(f"{flag}:{user}".encode()).digest()[:4], "big") % 100
        assert_eq!(flag_bucket("beta", "alice"), 54);
        assert_eq!(flag_bucket("beta", "bob"), 21);
        assert_eq!(flag_bucket("new_checkout", "42"), 69);
        assert_eq!(flag_bucket("beta", ""), 39);
        // Roughly the share asked for over many users.
        let on = (0..10_000)
            .filter(|u| flag_bucket("beta", &u.to_string()) < 25)
            .count();
        assert!((2_200..2_800).contains(&on), "{on}");
    }
}

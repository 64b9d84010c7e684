//! Parameter-store rules: which keys are well known, who may write them, and
//! how a typed version reference becomes a full SHA before it is stored.
//!
//! `desired_version` accepts `latest`, a full or short SHA, a branch or a tag;
//! everything but `latest` is resolved through git once, here, and only the
//! full 40-hex SHA is stored. `last_build_version` and `last_deployed_version`
//! are facts recorded by pipelines, so people cannot write them.

use cutover_core::{Actor, EnvName, VersionRef};
use cutover_store::{ParamKey, ParamVersion};
use serde_json::json;

use crate::{Engine, EngineError, secrets};

/// Why `key`, a setting (`/<app>-<env>/env/…`, rendered into the environment
/// of every process of a run under its last segment's name), may not be
/// written; `None` for an acceptable name or a key that is no setting.
pub(crate) fn refused_setting(key: &ParamKey) -> Option<String> {
    let segments: Vec<&str> = key.segments().collect();
    if segments.len() < 3 || segments[1] != "env" {
        return None;
    }
    cutover_core::settings::refused_setting_name(segments[segments.len() - 1])
}

/// The per-environment keys of SPEC section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WellKnownKey {
    DesiredVersion,
    LastBuildVersion,
    LastDeployedVersion,
}

impl WellKnownKey {
    pub const ALL: [WellKnownKey; 3] = [
        Self::DesiredVersion,
        Self::LastBuildVersion,
        Self::LastDeployedVersion,
    ];

    pub fn leaf(self) -> &'static str {
        match self {
            Self::DesiredVersion => "desired_version",
            Self::LastBuildVersion => "last_build_version",
            Self::LastDeployedVersion => "last_deployed_version",
        }
    }
}

/// A key people may not write, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedKey {
    pub why: &'static str,
}

impl Engine {
    /// The store key of a well-known parameter of `env`.
    pub fn key(&self, env: &EnvName, which: WellKnownKey) -> ParamKey {
        let raw = format!("{}/{}", self.config().param_prefix(env), which.leaf());
        // App and environment names are validated newtypes, so this key is
        // always well-formed.
        ParamKey::parse(&raw).unwrap_or_else(|e| panic!("well-known key {raw} must be valid: {e}"))
    }

    /// Which environment and well-known key `key` is, if any.
    fn classify(&self, key: &ParamKey) -> Option<(EnvName, WellKnownKey)> {
        self.config().environments.keys().find_map(|env| {
            WellKnownKey::ALL
                .into_iter()
                .find(|which| self.key(env, *which).as_str() == key.as_str())
                .map(|which| (env.clone(), which))
        })
    }

    pub async fn param_get(&self, key: &str) -> Result<ParamVersion, EngineError> {
        let key = ParamKey::parse(key)?;
        self.store()
            .param_get(&key)
            .await?
            .map(|p| self.shown(p))
            .transpose()?
            .ok_or_else(|| EngineError::ParamNotFound { key: key.to_string() })
    }

    /// A secret's plain value, for the stages that need it; never for the API.
    pub(crate) async fn secret_value(&self, key: &ParamKey) -> Result<Option<String>, EngineError> {
        match self.store().param_get(key).await? {
            Some(p) => Ok(Some(self.secret_key().decrypt(&p.value)?)),
            None => Ok(None),
        }
    }

    /// The newest value of a well-known key, if it was ever written.
    pub async fn well_known(
        &self,
        env: &EnvName,
        which: WellKnownKey,
    ) -> Result<Option<String>, EngineError> {
        Ok(self
            .store()
            .param_get(&self.key(env, which))
            .await?
            .map(|p| p.value))
    }

    pub async fn param_history(&self, key: &str) -> Result<Vec<ParamVersion>, EngineError> {
        let key = ParamKey::parse(key)?;
        let history = self.store().param_history(&key).await?;
        if history.is_empty() {
            return Err(EngineError::ParamNotFound { key: key.to_string() });
        }
        history.into_iter().map(|p| self.shown(p)).collect()
    }

    pub async fn param_list(&self, prefix: &str) -> Result<Vec<ParamVersion>, EngineError> {
        self.store()
            .param_list(prefix)
            .await?
            .into_iter()
            .map(|p| self.shown(p))
            .collect()
    }

    /// Writes a parameter as a person (or a script acting for one).
    ///
    /// `desired_version` values are resolved to full SHAs (and, on tiers that
    /// accept one branch only, checked to be on it) before anything is
    /// written; pipeline-owned keys are refused. `expect_version` is a
    /// compare-and-set whose mismatch names the current version.
    pub async fn param_put(
        &self,
        key: &str,
        value: &str,
        actor: &Actor,
        expect_version: Option<i64>,
    ) -> Result<ParamVersion, EngineError> {
        let key = ParamKey::parse(key)?;
        let records = ParamKey::parse(&self.records_prefix())?;
        if key.is_under(&records) {
            return Err(EngineError::Refused(format!(
                "{key} is an environment's lifecycle record, written by Cutover only; use `cutover env create`, \
                 `cutover env delete` or a release instead"
            )));
        }
        // An empty value neutralises a refused setting stored by an older version (rendering
        // skips it), as the store has no delete.
        if let Some(why) = refused_setting(&key).filter(|_| !value.is_empty()) {
            return Err(EngineError::Refused(format!("{key}: {why}")));
        }
        if self.is_replicas_key(&key) {
            return Err(EngineError::Refused(format!(
                "{key} is the replica count a scale change put in force; use `cutover scale ENV SERVICE N` \
                 (dev and integration apply at once, fixed-size tiers need an approval)"
            )));
        }
        if self.is_maintenance_key(&key) {
            return Err(EngineError::Refused(format!(
                "{key} is the environment's maintenance mode; use `cutover maintenance on|off ENV` (it is audited \
                 and puts the router's answer in force)"
            )));
        }
        if self.is_flag_key(&key) {
            return Err(EngineError::Refused(format!(
                "{key} is a feature flag; use `cutover flag set ENV NAME on|off` (it is audited and updates \
                 the running instances' flags file)"
            )));
        }
        self.check_size(&key, value).await?;
        let (stored, typed) = match self.classify(&key) {
            Some((env, WellKnownKey::DesiredVersion)) => {
                let stored = self.resolve_desired(&env, &key, value).await?;
                (stored, Some(value.to_owned()))
            }
            Some((env, which)) => {
                return Err(EngineError::ReservedKey {
                    key: key.to_string(),
                    prefix: self
                        .config()
                        .param_prefix(&env)
                        .trim_start_matches('/')
                        .to_owned(),
                    why: match which {
                        WellKnownKey::LastBuildVersion => "the build records it",
                        _ => "a successful pipeline run records it",
                    },
                });
            }
            None if secrets::is_encrypted(key.as_str()) => (self.secret_key().encrypt(value)?, None),
            None => (value.to_owned(), None),
        };
        let written = self
            .store()
            .param_put(&key, &stored, actor.as_str(), expect_version)
            .await?;
        // Versions are not secret; any other value may be (settings feed
        // instances), so the append-only audit log never keeps it.
        let detail = if typed.is_some() {
            json!({ "version": written.version, "value": stored, "typed": typed })
        } else {
            json!({ "version": written.version, "value": "****", "length": stored.chars().count() })
        };
        self.audit(actor, "param.put", key.as_str(), detail).await;
        if crate::masking::is_masked_key(key.as_str()) {
            self.refresh_server_log_masker().await;
        }
        self.shown(written)
    }

    /// The limits of [`crate::limits`]: one value, and an environment's settings together.
    async fn check_size(&self, key: &ParamKey, value: &str) -> Result<(), EngineError> {
        crate::limits::check_value(key.as_str(), value)?;
        let Some(env) = self.env_of_key(key.as_str()) else {
            return Ok(());
        };
        let settings = format!("{}/env/", self.config().param_prefix(&env));
        let Some(name) = key.as_str().strip_prefix(&settings) else {
            return Ok(());
        };
        let stored = self.store().param_list(&settings).await?;
        // Settings are stored encrypted: the budget is about what children get, the plain values.
        let mut others = Vec::with_capacity(stored.len());
        for p in stored.iter().filter(|p| p.key != key.as_str()) {
            let plain = self.secret_key().decrypt(&p.value)?;
            others.push((p.key.strip_prefix(&settings).unwrap_or(&p.key), plain));
        }
        let others = others.iter().map(|(k, v)| (*k, v.as_str()));
        crate::limits::check_settings_total(key.as_str(), name, value, others)
    }

    /// Turns what a user typed for `desired_version` into what is stored:
    /// `latest` or a full SHA that exists and, for stage and prod tiers, is on
    /// the environment's branch.
    pub(crate) async fn resolve_desired(
        &self,
        env: &EnvName,
        key: &ParamKey,
        typed: &str,
    ) -> Result<String, EngineError> {
        let reference = match VersionRef::parse(typed)? {
            VersionRef::Latest => return Ok("latest".to_owned()),
            VersionRef::Git(r) => r,
        };
        self.fetch_source_best_effort("resolve a typed version").await;
        let branch = self.config().accepted_branch(env).map(str::to_owned);
        let env_cfg = &self.config().environments[env];
        let tier = env_cfg.tier;
        let key_s = key.to_string();
        let env_s = env.to_string();
        self.with_repo(move |repo| {
            let version = repo.resolve(&reference).map_err(|source| EngineError::Resolve {
                key: key_s.clone(),
                reference: reference.clone(),
                source: Box::new(source),
            })?;
            if let Some(branch) = branch.filter(|_| !tier.accepts_any_branch()) {
                let on_branch =
                    repo.branch_contains(&branch, &version)
                        .map_err(|source| EngineError::Resolve {
                            key: key_s.clone(),
                            reference: reference.clone(),
                            source: Box::new(source),
                        })?;
                if !on_branch {
                    return Err(EngineError::NotOnBranch {
                        version: version.to_string(),
                        branch,
                        env: env_s,
                        tier: tier.to_string(),
                    });
                }
            }
            Ok(version.to_string())
        })
        .await
    }
}

impl Engine {
    /// What the API shows of a parameter: secrets never leave the engine; settings are
    /// decrypted (those written before settings were encrypted are plain and shown as they are).
    fn shown(&self, mut p: ParamVersion) -> Result<ParamVersion, EngineError> {
        if secrets::is_secret(&p.key) {
            p.value = "****".to_owned();
        } else if secrets::is_encrypted(&p.key) {
            p.value = self.secret_key().decrypt(&p.value)?;
        }
        Ok(p)
    }
}

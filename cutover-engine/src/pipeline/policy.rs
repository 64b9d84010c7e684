//! What a run request fixes and checks before anything is queued: the SHA
//! the run will deploy (and who chose it), and the environment's
//! `requires:` policy (only what succeeded on the named environments may be
//! deployed here).
//!
//! The SHA is fixed at request time so that an approval approves exactly
//! what the approver saw: changing `desired_version` later never changes a
//! queued or waiting run, and whoever wrote the `desired_version` a run was
//! resolved from is recorded as its chooser (four-eyes covers them too).
//! Rejected: resolving `desired_version` when the run starts (Source), which
//! let an approver choose a version, cancel the waiting run and approve a
//! newer queued one that then deployed their choice (issue 11, finding 2).

use cutover_core::{Actor, EnvName, Grants, Role, Version};
use serde_json::json;

use crate::{Engine, EngineError, WellKnownKey};

/// The SHA a run is fixed to, and who chose it.
#[derive(Debug, Clone)]
pub(crate) struct Fixed {
    pub version: Version,
    /// The writer of the `desired_version` value it was resolved from (or
    /// the requester of a rollback or promotion, who named it).
    pub chosen_by: String,
}

/// An admin's override of an environment's `requires:` policy, with the
/// reason that is recorded on the run and in the audit log.
#[derive(Debug, Clone)]
pub struct PolicyOverride {
    pub reason: String,
    /// The requester's grants; only an admin of the environment may override.
    pub grants: Grants,
}

impl Engine {
    /// The SHA a stored `desired_version` value (`latest` or a full SHA)
    /// stands for now: itself, or for `latest` the environment's
    /// last_build_version. Nothing built yet is refused here, at request
    /// time, rather than failing the run later.
    pub(crate) async fn fix_version(
        &self,
        env: &EnvName,
        stored: &str,
        chosen_by: &str,
    ) -> Result<Fixed, EngineError> {
        let version = if stored == "latest" {
            let built = self
                .well_known(env, WellKnownKey::LastBuildVersion)
                .await?
                .ok_or_else(|| {
                    EngineError::Refused(format!(
                        "`latest` means the version last built for {env}, and nothing has been built for {env} yet; \
                         release a specific version: cutover release {env} --version REF"
                    ))
                })?;
            Version::parse(&built)?
        } else {
            Version::parse(stored)?
        };
        Ok(Fixed {
            version,
            chosen_by: chosen_by.to_owned(),
        })
    }

    /// The run `env`'s current `desired_version` stands for, with its writer
    /// as the chooser; refused if it was never set.
    pub(crate) async fn fix_desired(&self, env: &EnvName) -> Result<Fixed, EngineError> {
        let key = self.key(env, WellKnownKey::DesiredVersion);
        let desired = self.store().param_get(&key).await?.ok_or_else(|| {
            EngineError::Refused(format!(
                "{env} has no desired_version; name the version to release: cutover release {env} --version REF"
            ))
        })?;
        self.fix_version(env, &desired.value, &desired.actor).await
    }

    /// Refuses a run of `version` on `env` unless it succeeded on every
    /// environment `env` requires (`requires:` in cutover.yml), naming where
    /// it is missing. A version that already succeeded on `env` itself
    /// (a redeploy, a rollback) passes; `satisfied` is the environment a
    /// promotion copies from, which ran it by construction. An admin may
    /// override with a reason; the override is audited and returned, to be
    /// recorded on the run.
    pub(crate) async fn check_requires(
        &self,
        env: &EnvName,
        version: &Version,
        satisfied: Option<&EnvName>,
        over: Option<&PolicyOverride>,
        actor: &Actor,
    ) -> Result<Option<String>, EngineError> {
        let required = self
            .config()
            .environments
            .get(env)
            .map(|e| e.requires.clone())
            .unwrap_or_default();
        if required.is_empty()
            || self
                .store()
                .run_succeeded_with(env.as_str(), version.as_str())
                .await?
        {
            return Ok(None);
        }
        let mut missing = Vec::new();
        for r in &required {
            if Some(r) == satisfied {
                continue;
            }
            if !self
                .store()
                .run_succeeded_with(r.as_str(), version.as_str())
                .await?
            {
                missing.push(r.as_str().to_owned());
            }
        }
        if missing.is_empty() {
            return Ok(None);
        }
        let list = missing.join(", ");
        let Some(over) = over else {
            let first = &missing[0];
            return Err(EngineError::Refused(format!(
                "{} has not succeeded on {list}, and {env} deploys only versions that passed {} first \
                 (`requires:` in cutover.yml); release it there first (cutover release {first} --version {}) \
                 and promote it (cutover promote {first} {env}), or, as an admin, override with a reason: \
                 --override-policy \"why\"",
                version.short(),
                required
                    .iter()
                    .map(EnvName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                version.short(),
            )));
        };
        let reason = over.reason.trim();
        if reason.is_empty() {
            return Err(EngineError::Refused(
                "an override of the requires: policy needs a reason: --override-policy \"why\"".to_owned(),
            ));
        }
        let role = over.grants.role_on(env.as_str());
        if role != Some(Role::Admin) {
            return Err(EngineError::Forbidden(format!(
                "only an admin of {env} may override its requires: policy ({actor} holds {}); \
                 release {} on {list} first, or ask an admin",
                role.map_or("no role", Role::as_str),
                version.short()
            )));
        }
        self.audit(
            actor,
            "policy.override",
            &format!("env/{env}"),
            json!({ "version": version.as_str(), "requires": required, "missing": missing, "reason": reason }),
        )
        .await;
        tracing::warn!(env = %env, version = %version, missing = %list, actor = %actor, reason, "requires: policy overridden");
        Ok(Some(format!(
            "requires: overridden by {actor} (not on {list}): {reason}"
        )))
    }
}

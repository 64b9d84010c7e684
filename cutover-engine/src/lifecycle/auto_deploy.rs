//! Auto-deploy: every `watch_interval`, each environment with
//! `auto_deploy: true` and a branch (dev, and integration instances whose
//! template sets it) has its branch head looked up (a cheap ref read through
//! gix). A head that is neither deployed, nor already queued or running
//! there, nor the commit auto-deploy last started a run for gets a normal
//! release as Cutover's system actor; the pipeline's queue and supersede
//! rules apply. The commit is remembered (persisted in the lifecycle record)
//! before the run is queued, so a commit whose run fails is not retried in a
//! loop, not even after a restart: the next commit is.

use cutover_core::config::Tier;
use cutover_core::{Actor, EnvName, RunKind, Version};
use serde_json::json;

use super::LifecycleRecord;
use crate::pipeline::SYSTEM_ACTOR;
use crate::{Engine, EngineError, WellKnownKey};

impl Engine {
    /// One pass of the watcher.
    pub(crate) async fn watch_once(&self) {
        let config = self.config();
        let watched: Vec<(EnvName, String)> = config
            .environments
            .iter()
            .filter(|(_, e)| e.auto_deploy && matches!(e.tier, Tier::Dev | Tier::Integration))
            .filter_map(|(n, e)| e.branch.clone().map(|b| (n.clone(), b)))
            .collect();
        if !watched.is_empty() {
            self.fetch_source_best_effort("auto-deploy").await;
        }
        for (env, branch) in watched {
            if let Err(e) = self.watch_env(&env, &branch).await {
                tracing::warn!(env = %env, branch, error = %e.chain(), "auto-deploy could not look at the branch");
            }
        }
    }

    pub(crate) async fn watch_env(&self, env: &EnvName, branch: &str) -> Result<(), EngineError> {
        let repo_path = self.repo().path().display().to_string();
        let b = branch.to_owned();
        let head: Version = self
            .with_repo(move |repo| {
                repo.branch_head(&b).map_err(|source| EngineError::Git {
                    repo: repo_path,
                    source: Box::new(source),
                })
            })
            .await?;
        let seen = self.record(env).and_then(|r| r.auto_deploy_seen);
        if seen.as_deref() == Some(head.as_str()) {
            return Ok(());
        }
        let deployed = self.well_known(env, WellKnownKey::LastDeployedVersion).await?;
        let deployed = self.visible_deployed(env, deployed);
        let pending = self.store().runs_unfinished().await?.into_iter().any(|r| {
            r.env == env.as_str()
                && (r.target_version.as_deref() == Some(head.as_str())
                    || r.version.as_deref() == Some(head.as_str()))
        });
        let already = deployed.as_deref() == Some(head.as_str()) || pending;
        {
            let _guard = self.lifecycle().lock.lock().await;
            if !self.config().environments.contains_key(env) {
                return Ok(()); // deleted meanwhile
            }
            let mut rec = self.record(env).unwrap_or_else(LifecycleRecord::new_static);
            rec.auto_deploy_seen = Some(head.to_string());
            self.put_record(env, rec).await?;
        }
        if already {
            return Ok(());
        }
        let actor = Actor::parse(SYSTEM_ACTOR).unwrap_or_else(|e| panic!("system actor: {e}"));
        let reason = format!("auto-deploy of {} after new commit on {branch}", head.short());
        // A production environment's `requires:` holds for auto-deploys too.
        self.check_requires(env, &head, None, None, &actor).await?;
        let key = self.key(env, WellKnownKey::DesiredVersion);
        let written = self
            .store()
            .param_put(&key, head.as_str(), SYSTEM_ACTOR, None)
            .await?;
        self.audit(
            &actor,
            "param.put",
            key.as_str(),
            json!({ "version": written.version, "value": head.as_str(), "typed": "auto-deploy" }),
        )
        .await;
        let run = self
            .enqueue(
                env,
                RunKind::Normal,
                &actor,
                &crate::pipeline::Fixed {
                    version: head.clone(),
                    chosen_by: SYSTEM_ACTOR.to_owned(),
                },
                Some(reason.clone()),
            )
            .await?;
        self.audit(
            &actor,
            "env.auto_deploy",
            &format!("env/{env}"),
            json!({ "branch": branch, "version": head.as_str(), "run": run.id, "message": reason }),
        )
        .await;
        tracing::info!(env = %env, run = run.id, "{reason}");
        Ok(())
    }
}

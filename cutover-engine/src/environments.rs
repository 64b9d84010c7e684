//! What an environment looks like from outside: its tier, branch and the
//! three version facts of the parameter store, and the recent commits of its
//! branch marked with which of them is built, desired and deployed.

use cutover_core::EnvName;
use cutover_core::config::Tier;
use cutover_git::CommitInfo;
use serde::Serialize;

use crate::{Engine, EngineError, WellKnownKey};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvironmentSummary {
    pub name: EnvName,
    pub tier: Tier,
    /// The branch this environment follows: the configured one, else the one
    /// its tier requires (stage and prod: main). None: the repository's HEAD.
    pub branch: Option<String>,
    /// Whether only commits on `branch` may be deployed here (stage, prod).
    pub branch_only: bool,
    pub approval: bool,
    /// As stored: a full SHA or `latest`.
    pub desired_version: Option<String>,
    /// `desired_version` with `latest` replaced by `last_build_version`.
    pub desired_resolved: Option<String>,
    pub last_build_version: Option<String>,
    pub last_deployed_version: Option<String>,
    /// Follows `branch` by itself (`auto_deploy: true`).
    pub auto_deploy: bool,
    /// Kind (static, integration, integration-template), expiry and, for
    /// integration environments, template, creator and last activity.
    #[serde(flatten)]
    pub lifecycle: crate::LifecycleView,
    /// In sync: deployed = desired and every serving instance runs it.
    pub sync: crate::glance::Assessment,
    /// Healthy: every serving instance is up and passes its last probe.
    pub health: crate::glance::Assessment,
    /// The newest run, whatever its state.
    pub last_run: Option<crate::glance::RunBrief>,
    /// Runs waiting in their Approval stage.
    pub awaiting_approval: Vec<crate::glance::RunBrief>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionRow {
    #[serde(flatten)]
    pub commit: CommitInfo,
    pub built: bool,
    pub desired: bool,
    pub deployed: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionsReport {
    pub environment: EnvName,
    pub branch: String,
    pub desired_version: Option<String>,
    pub last_build_version: Option<String>,
    pub last_deployed_version: Option<String>,
    pub commits: Vec<VersionRow>,
}

impl Engine {
    /// Every environment of one snapshot of the environment set (an integration environment
    /// deleted or expired meanwhile is summarized as that snapshot had it).
    pub async fn environments(&self) -> Result<Vec<EnvironmentSummary>, EngineError> {
        use futures::StreamExt as _;
        let config = self.config();
        // Each summary is a few store reads: several at once (the SQLite reader pool and
        // PostgreSQL serve them in parallel), in the environments' order.
        let envs: Vec<EnvName> = config.environments.keys().cloned().collect();
        futures::stream::iter(envs)
            .map(|env| {
                let (engine, config) = (self.clone(), config.clone());
                async move { engine.summarize(&config, &env).await }
            })
            .buffered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    pub async fn environment(&self, name: &str) -> Result<EnvironmentSummary, EngineError> {
        let config = self.config();
        let env = self.env_name(name)?;
        self.summarize(&config, &env).await
    }

    async fn summarize(
        &self,
        config: &cutover_core::config::Config,
        env: &EnvName,
    ) -> Result<EnvironmentSummary, EngineError> {
        // Gone between the name check and here (deleted or expired just now): say so.
        let cfg = config
            .environments
            .get(env)
            .ok_or_else(|| EngineError::UnknownEnvironment {
                name: env.to_string(),
                app: config.app.to_string(),
                known: config
                    .environments
                    .keys()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let desired = self.well_known(env, WellKnownKey::DesiredVersion).await?;
        let built = self.well_known(env, WellKnownKey::LastBuildVersion).await?;
        let deployed = self.well_known(env, WellKnownKey::LastDeployedVersion).await?;
        let deployed = self.visible_deployed(env, deployed);
        let desired_resolved = match desired.as_deref() {
            Some("latest") => built.clone(),
            other => other.map(str::to_owned),
        };
        let lifecycle = self.lifecycle_view(env);
        let glance = self
            .glance(
                env,
                lifecycle.kind == "integration-template",
                desired_resolved.as_deref(),
                deployed.as_deref(),
            )
            .await?;
        Ok(EnvironmentSummary {
            name: env.clone(),
            tier: cfg.tier,
            branch: cfg
                .branch
                .clone()
                .or_else(|| config.accepted_branch(env).map(str::to_owned)),
            branch_only: !cfg.tier.accepts_any_branch(),
            approval: cfg.approval,
            desired_version: desired,
            desired_resolved,
            last_build_version: built,
            last_deployed_version: deployed,
            auto_deploy: cfg.auto_deploy,
            lifecycle,
            sync: glance.sync,
            health: glance.health,
            last_run: glance.last_run,
            awaiting_approval: glance.awaiting_approval,
        })
    }

    /// The newest `limit` commits of the branch the environment follows (else
    /// the repository's HEAD), marked built / desired / deployed.
    pub async fn versions(&self, name: &str, limit: usize) -> Result<VersionsReport, EngineError> {
        let summary = self.environment(name).await?;
        self.fetch_source_best_effort("list versions").await;
        let branch = summary.branch.clone().unwrap_or_else(|| "HEAD".to_owned());
        let repo_path = self.repo().path().display().to_string();
        let b = branch.clone();
        let commits: Vec<CommitInfo> = self
            .with_repo(move |repo| {
                let commits = if b == "HEAD" {
                    repo.resolve("HEAD")
                        .and_then(|head| repo.commits_between(None, &head, limit))
                } else {
                    repo.recent_commits(&b, limit)
                };
                commits.map_err(|source| EngineError::Git {
                    repo: repo_path,
                    source: Box::new(source),
                })
            })
            .await?;
        let is = |v: &Option<String>, c: &CommitInfo| v.as_deref() == Some(c.version.as_str());
        let commits = commits
            .into_iter()
            .map(|c| VersionRow {
                built: is(&summary.last_build_version, &c),
                desired: is(&summary.desired_resolved, &c),
                deployed: is(&summary.last_deployed_version, &c),
                commit: c,
            })
            .collect();
        Ok(VersionsReport {
            environment: summary.name,
            branch,
            desired_version: summary.desired_version,
            last_build_version: summary.last_build_version,
            last_deployed_version: summary.last_deployed_version,
            commits,
        })
    }
}

//! Pipeline runs as data: the 13 stages in order, the run and stage states,
//! and the only transitions between them.
//!
//! The engine persists every transition before acting on it; keeping the
//! legal moves here, as a pure function, means the executor, crash recovery
//! and the API all agree on what a run may do next. Rejected: letting each
//! caller set a status column directly, which is how runs end up both
//! "succeeded" and "cancelled".

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stages of both pipelines, in the order they run (SPEC section 3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Source,
    VersionInfo,
    Approval,
    Build,
    MessageBroker,
    PreDeployHook,
    PreDeployConfig,
    DeployScheduler,
    Install,
    DeployServices,
    UpdateDeployedVersion,
    PostDeployConfig,
    PostDeployHook,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::Source,
        Stage::VersionInfo,
        Stage::Approval,
        Stage::Build,
        Stage::MessageBroker,
        Stage::PreDeployHook,
        Stage::PreDeployConfig,
        Stage::DeployScheduler,
        Stage::Install,
        Stage::DeployServices,
        Stage::UpdateDeployedVersion,
        Stage::PostDeployConfig,
        Stage::PostDeployHook,
    ];

    /// The name people see, as the platform documents spell it.
    pub fn title(self) -> &'static str {
        match self {
            Stage::Source => "Source",
            Stage::VersionInfo => "Prepare versions information",
            Stage::Approval => "Approval",
            Stage::Build => "Build and prepare",
            Stage::MessageBroker => "Configure message broker",
            Stage::PreDeployHook => "Pre-deploy hook",
            Stage::PreDeployConfig => "Pre-deployment configuration",
            Stage::DeployScheduler => "Deploy scheduler",
            Stage::Install => "Install",
            Stage::DeployServices => "Deploy services",
            Stage::UpdateDeployedVersion => "Update deployed version",
            Stage::PostDeployConfig => "Post-deployment configuration",
            Stage::PostDeployHook => "Post-deploy hook",
        }
    }

    /// The short id used in URLs and `--stage` (e.g. `deploy-services`).
    pub fn slug(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::VersionInfo => "version-info",
            Stage::Approval => "approval",
            Stage::Build => "build",
            Stage::MessageBroker => "message-broker",
            Stage::PreDeployHook => "pre-deploy-hook",
            Stage::PreDeployConfig => "pre-deploy-config",
            Stage::DeployScheduler => "deploy-scheduler",
            Stage::Install => "install",
            Stage::DeployServices => "deploy-services",
            Stage::UpdateDeployedVersion => "update-deployed-version",
            Stage::PostDeployConfig => "post-deploy-config",
            Stage::PostDeployHook => "post-deploy-hook",
        }
    }

    pub fn index(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or_default()
    }

    /// Accepts a slug or a title, case-insensitively, with `_` for `-` (the JSON's spelling,
    /// `deploy_services`, works as well as the slug's); the error lists the slugs.
    pub fn parse(text: &str) -> Result<Stage, String> {
        let t = text.trim().to_ascii_lowercase().replace('_', "-");
        Stage::ALL
            .into_iter()
            .find(|s| s.slug() == t || s.title().to_ascii_lowercase() == t)
            .ok_or_else(|| {
                format!(
                    "unknown stage {text:?}; stages are: {}",
                    Stage::ALL.iter().map(|s| s.slug()).collect::<Vec<_>>().join(", ")
                )
            })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// Which pipeline a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Never destroys data.
    Normal,
    /// Also resets data in Install; refused on production tiers.
    Destructive,
    /// A normal run of an older version, started by `rollback`.
    Rollback,
    /// Traffic switched back to the still-warm previous release; no build, no hooks.
    FastRollback,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Normal => "normal",
            RunKind::Destructive => "destructive",
            RunKind::Rollback => "rollback",
            RunKind::FastRollback => "fast_rollback",
        }
    }

    pub fn parse(text: &str) -> Option<RunKind> {
        [
            RunKind::Normal,
            RunKind::Destructive,
            RunKind::Rollback,
            RunKind::FastRollback,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// A run's state. Terminal states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for the environment's active run to end.
    Queued,
    Running,
    /// Parked in the Approval stage until someone approves or rejects.
    AwaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
    /// A newer request for the same environment replaced it while queued.
    Superseded,
    /// The server died while it was active; found so at the next start.
    Interrupted,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        RunState::Queued,
        RunState::Running,
        RunState::AwaitingApproval,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Superseded,
        RunState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Superseded => "superseded",
            RunState::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::Failed
                | RunState::Cancelled
                | RunState::Superseded
                | RunState::Interrupted
        )
    }

    /// Active runs hold the environment: at most one per environment.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Running | RunState::AwaitingApproval)
    }

    /// The one place that says which moves are legal.
    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, next),
            (Queued, Running | Cancelled | Superseded | Interrupted)
                | (
                    Running,
                    AwaitingApproval | Succeeded | Failed | Cancelled | Interrupted
                )
                | (AwaitingApproval, Running | Failed | Cancelled | Interrupted)
        )
    }

    /// Checks a transition, with a message fit for a person when it is illegal.
    pub fn transition(self, next: RunState) -> Result<RunState, String> {
        if self.can_become(next) {
            Ok(next)
        } else if self.is_terminal() {
            Err(format!(
                "the run already ended ({}); it cannot become {}",
                self.as_str(),
                next.as_str()
            ))
        } else {
            Err(format!("a {} run cannot become {}", self.as_str(), next.as_str()))
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage's state within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Pending,
    Running,
    Succeeded,
    /// Nothing configured for it (the reason is recorded).
    Skipped,
    Failed,
    /// The run ended before this stage ran.
    NotRun,
}

impl StageStatus {
    pub const ALL: [StageStatus; 6] = [
        StageStatus::Pending,
        StageStatus::Running,
        StageStatus::Succeeded,
        StageStatus::Skipped,
        StageStatus::Failed,
        StageStatus::NotRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Running => "running",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Skipped => "skipped",
            StageStatus::Failed => "failed",
            StageStatus::NotRun => "not_run",
        }
    }

    pub fn parse(text: &str) -> Option<StageStatus> {
        StageStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_done(self) -> bool {
        matches!(
            self,
            StageStatus::Succeeded | StageStatus::Skipped | StageStatus::Failed | StageStatus::NotRun
        )
    }
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_the_thirteen_of_the_spec_in_order() {
        let titles: Vec<&str> = Stage::ALL.iter().map(|s| s.title()).collect();
        assert_eq!(
            titles,
            [
                "Source",
                "Prepare versions information",
                "Approval",
                "Build and prepare",
                "Configure message broker",
                "Pre-deploy hook",
                "Pre-deployment configuration",
                "Deploy scheduler",
                "Install",
                "Deploy services",
                "Update deployed version",
                "Post-deployment configuration",
                "Post-deploy hook",
            ]
        );
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Stage::parse(s.slug()), Ok(*s));
            assert_eq!(Stage::parse(&s.title().to_uppercase()), Ok(*s));
            // The JSON's spelling (`deploy_services`) is accepted too.
            assert_eq!(Stage::parse(&s.slug().replace('-', "_")), Ok(*s));
        }
        assert!(Stage::parse("deploy").unwrap_err().contains("deploy-services"));
    }

    #[test]
    fn terminal_states_never_move() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
                assert!(from.transition(to).unwrap_err().contains("already ended"));
            }
        }
    }

    #[test]
    fn the_legal_moves_and_only_those() {
        use RunState::*;
        let legal = [
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, Superseded),
            (Queued, Interrupted),
            (Running, AwaitingApproval),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, Interrupted),
            (AwaitingApproval, Running),
            (AwaitingApproval, Failed),
            (AwaitingApproval, Cancelled),
            (AwaitingApproval, Interrupted),
        ];
        for from in RunState::ALL {
            for to in RunState::ALL {
                assert_eq!(from.can_become(to), legal.contains(&(from, to)), "{from} -> {to}");
            }
        }
        // Illegal examples people could ask for: a queued run cannot wait for approval or succeed directly,
        // a running run cannot be superseded (only queued ones are), nothing goes back to queued.
        assert!(
            Queued
                .transition(Succeeded)
                .unwrap_err()
                .contains("queued run cannot become succeeded")
        );
        assert!(!Running.can_become(Superseded));
        assert!(!Running.can_become(Queued));
    }

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        for s in StageStatus::ALL {
            assert_eq!(StageStatus::parse(s.as_str()), Some(s));
        }
        for k in [
            RunKind::Normal,
            RunKind::Destructive,
            RunKind::Rollback,
            RunKind::FastRollback,
        ] {
            assert_eq!(RunKind::parse(k.as_str()), Some(k));
        }
    }
}

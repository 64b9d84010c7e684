//! The state of an environment at a glance, for the dashboard's overview (in the manner of
//! Argo CD's tiles): in sync (deployed = desired, every serving instance runs it), healthy
//! (every serving instance up and passing its probe), the last run and the runs waiting for
//! an approval. Each judgement carries a one-line reason a person can act on.
//!
//! Computed from what the runtime already knows (its last background probe), never by probing
//! again: the overview lists every environment, and a probe per instance per request would
//! make it as slow as the slowest instance. Rejected: a stored health state (it would go stale
//! whenever the runtime's view changes without the engine noticing).

use cutover_core::{EnvName, RunState};
use cutover_runtime::InstanceState;
use cutover_store::RunRecord;
use serde::Serialize;

use crate::{Engine, EngineError};

/// A judgement (`state`) with the reason for it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Assessment {
    /// sync: `in_sync`, `drift` or `unknown`; health: `healthy`, `degraded` or `unknown`.
    pub state: &'static str,
    /// Why, in one line, e.g. "desired 1a2b3c4d5e6f, deployed 9f8e7d6c5b4a".
    pub reason: String,
}

/// A run in one line: enough to show its state and age and to link to it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunBrief {
    pub id: i64,
    pub kind: cutover_core::RunKind,
    pub state: RunState,
    pub requested_by: String,
    /// Who chose the version (on a production tier they may not approve either).
    pub version_chosen_by: Option<String>,
    pub target_version: Option<String>,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

impl From<&RunRecord> for RunBrief {
    fn from(r: &RunRecord) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            state: r.state,
            requested_by: r.requested_by.clone(),
            version_chosen_by: r.version_chosen_by.clone(),
            target_version: r.target_version.clone(),
            created_at_ms: r.created_at_ms,
            ended_at_ms: r.ended_at_ms,
        }
    }
}

/// What [`Engine::glance`] answers.
pub(crate) struct Glance {
    pub sync: Assessment,
    pub health: Assessment,
    pub last_run: Option<RunBrief>,
    pub awaiting_approval: Vec<RunBrief>,
}

fn short(v: &str) -> &str {
    v.get(..12).unwrap_or(v)
}

impl Engine {
    /// Sync, health and runs of `env`; `desired` is `desired_version` resolved (`latest` →
    /// the last build), `deployed` the visible `last_deployed_version`.
    pub(crate) async fn glance(
        &self,
        env: &EnvName,
        template: bool,
        desired: Option<&str>,
        deployed: Option<&str>,
    ) -> Result<Glance, EngineError> {
        // One active run per environment, and at most one queued behind it (a newer request
        // supersedes a queued one): a run waiting for approval is among the newest few.
        let runs = self.store().run_list(Some(env.as_str()), 5, None).await?;
        let last_run = runs.first().map(RunBrief::from);
        let awaiting_approval = runs
            .iter()
            .filter(|r| r.state == RunState::AwaitingApproval)
            .map(RunBrief::from)
            .collect();
        if template {
            let na = |what: &str| Assessment {
                state: "unknown",
                reason: format!("a template for integration environments: it is never {what} itself"),
            };
            return Ok(Glance {
                sync: na("deployed"),
                health: na("run"),
                last_run,
                awaiting_approval,
            });
        }
        let live = self
            .runtime_for(env)
            .status_of(&self.config().app, env)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let serving = self.env_services(env);
        let serving_ids: Vec<_> = serving
            .current
            .values()
            .flat_map(|s| s.instances.iter().map(|(id, _)| id.clone()))
            .collect();
        let mine: Vec<_> = live.iter().filter(|i| serving_ids.contains(&i.id)).collect();
        Ok(Glance {
            sync: sync_of(desired, deployed, &mine),
            health: health_of(deployed, serving_ids.len(), &mine),
            last_run,
            awaiting_approval,
        })
    }
}

fn sync_of(
    desired: Option<&str>,
    deployed: Option<&str>,
    serving: &[&cutover_runtime::InstanceStatus],
) -> Assessment {
    let drift = |reason: String| Assessment {
        state: "drift",
        reason,
    };
    match (desired, deployed) {
        (None, None) => Assessment {
            state: "unknown",
            reason: "no version chosen and nothing deployed yet".into(),
        },
        (Some(want), None) => drift(format!(
            "desired {} is not deployed: nothing is deployed yet",
            short(want)
        )),
        (None, Some(have)) => drift(format!("deployed {} but no desired_version is set", short(have))),
        (Some(want), Some(have)) if want != have => drift(format!(
            "desired {} but deployed {}: a release of the desired version brings them together",
            short(want),
            short(have)
        )),
        (Some(_), Some(have)) => {
            let odd: Vec<String> = serving
                .iter()
                .filter(|i| i.version.as_ref().is_some_and(|v| v.as_str() != have))
                .map(|i| {
                    format!(
                        "{} runs {}",
                        i.id,
                        i.version
                            .as_ref()
                            .map(|v| short(v.as_str()).to_owned())
                            .unwrap_or_default()
                    )
                })
                .collect();
            if odd.is_empty() {
                Assessment {
                    state: "in_sync",
                    reason: format!("deployed = desired = {}", short(have)),
                }
            } else {
                drift(format!("deployed {} but {}", short(have), odd.join(", ")))
            }
        }
    }
}

fn health_of(
    deployed: Option<&str>,
    expected: usize,
    serving: &[&cutover_runtime::InstanceStatus],
) -> Assessment {
    if deployed.is_none() {
        return Assessment {
            state: "unknown",
            reason: "nothing deployed yet".into(),
        };
    }
    if expected == 0 {
        return Assessment {
            state: "unknown",
            reason: "no serving instances known (the server may still be starting)".into(),
        };
    }
    let mut bad: Vec<String> = Vec::new();
    if serving.len() < expected {
        bad.push(format!(
            "{} of {expected} serving instances are gone",
            expected - serving.len()
        ));
    }
    for i in serving {
        if i.state != InstanceState::Running {
            bad.push(format!("{} is {:?}", i.id, i.state).to_lowercase());
        } else if i.healthy == Some(false) {
            bad.push(format!("{} fails its health probe", i.id));
        }
    }
    if bad.is_empty() {
        Assessment {
            state: "healthy",
            reason: format!("all {expected} serving instances are up"),
        }
    } else {
        Assessment {
            state: "degraded",
            reason: bad.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use cutover_core::{AppName, EnvName, ServiceName, Version};
    use cutover_runtime::{InstanceId, InstanceOwner, InstanceState, InstanceStatus, VersionSource};

    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn instance(id: &str, version: &str, healthy: Option<bool>, state: InstanceState) -> InstanceStatus {
        InstanceStatus {
            id: InstanceId::parse(id).unwrap(),
            app: AppName::parse("shop").unwrap(),
            env: EnvName::parse("prod").unwrap(),
            service: ServiceName::parse("api").unwrap(),
            replica: 0,
            requested_version: Version::parse(version).unwrap(),
            version: Some(Version::parse(version).unwrap()),
            version_source: VersionSource::Cwd,
            pid: Some(1),
            port: 1,
            addr: "127.0.0.1:1".parse().unwrap(),
            healthy,
            node: None,
            restarts: 0,
            started_at: 0,
            created_at: 0,
            state,
            last_exit: None,
            owner: InstanceOwner::default(),
        }
    }

    #[test]
    fn sync_is_deployed_equals_desired_and_every_serving_instance_runs_it() {
        let ok = instance("api-1", A, Some(true), InstanceState::Running);
        assert_eq!(sync_of(Some(A), Some(A), &[&ok]).state, "in_sync");
        let moved = sync_of(Some(B), Some(A), &[&ok]);
        assert_eq!(moved.state, "drift");
        assert!(
            moved.reason.contains("bbbbbbbbbbbb") && moved.reason.contains("aaaaaaaaaaaa"),
            "{}",
            moved.reason
        );
        let never = sync_of(Some(A), None, &[]);
        assert_eq!(never.state, "drift");
        assert!(never.reason.contains("not deployed"), "{}", never.reason);
        assert_eq!(sync_of(None, None, &[]).state, "unknown");
        let odd = instance("api-2", B, Some(true), InstanceState::Running);
        let drift = sync_of(Some(A), Some(A), &[&ok, &odd]);
        assert_eq!(drift.state, "drift");
        assert!(
            drift.reason.contains("api-2 runs bbbbbbbbbbbb"),
            "{}",
            drift.reason
        );
    }

    #[test]
    fn health_names_each_serving_instance_that_is_down_failing_or_missing() {
        let ok = instance("api-1", A, Some(true), InstanceState::Running);
        assert_eq!(health_of(Some(A), 1, &[&ok]).state, "healthy");
        let failing = instance("api-2", A, Some(false), InstanceState::Running);
        let bad = health_of(Some(A), 2, &[&ok, &failing]);
        assert_eq!(bad.state, "degraded");
        assert!(
            bad.reason.contains("api-2 fails its health probe"),
            "{}",
            bad.reason
        );
        let restarting = instance("api-3", A, None, InstanceState::Backoff);
        let bad = health_of(Some(A), 3, &[&ok, &restarting]);
        assert_eq!(bad.state, "degraded");
        assert!(
            bad.reason.contains("1 of 3 serving instances are gone"),
            "{}",
            bad.reason
        );
        assert!(bad.reason.contains("api-3 is backoff"), "{}", bad.reason);
        assert_eq!(health_of(None, 0, &[]).state, "unknown");
        assert_eq!(health_of(Some(A), 0, &[]).state, "unknown");
    }
}

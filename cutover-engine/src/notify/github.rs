//! GitHub: a Deployment per run (`POST /repos/{owner}/{repo}/deployments` with `ref` = the
//! run's SHA, `environment`, `auto_merge: false`, `required_contexts: []`) and its statuses
//! (`POST …/deployments/{id}/statuses`: `queued` when the run is requested, `in_progress` when
//! it starts, `success`, `failure` or `error` (cancelled, interrupted) when it ends, `inactive`
//! when a newer request replaced it), plus a commit status `cutover/<env>` on the SHA
//! (`POST /repos/{owner}/{repo}/statuses/{sha}`: `pending` while queued, running or waiting for
//! approval, then `success`, `failure` or `error`), with `target_url` / `log_url` the run's page
//! and `environment_url` the environment's page in the dashboard (with
//! `notifications.public_url`). Descriptions are at most 140 characters, as GitHub requires.
//!
//! Each request carries `Authorization: Bearer <token>`, `Accept: application/vnd.github+json`
//! and `X-GitHub-Api-Version: 2022-11-28`. The deployment's id is remembered per run in this
//! receiver's task (its notices arrive in order). A run whose id this task does not know (it
//! was requested before a restart, or before a crash it is now reported as interrupted) looks
//! its deployment up first (`GET …/deployments?sha=&environment=`, the one whose payload names
//! this app and run), so a crash leaves no deployment in progress forever; only when none is
//! found is one created. Rejected: keeping deployment ids in the store (a schema change for
//! what GitHub itself lists by SHA and environment).

use std::collections::HashMap;

use cutover_core::RunState;
use cutover_core::config::Tier;
use serde_json::{Value, json};

use super::{Notice, Secrets, Sender, Trigger, clip};

pub(crate) const API_VERSION: &str = "2022-11-28";

/// Where a receiver's requests go.
pub(crate) struct Target<'a> {
    pub api_url: &'a str,
    pub repository: &'a str,
    pub token_secret: &'a str,
}

/// The deployments this receiver created, by run id, until their run ends.
#[derive(Default)]
pub(crate) struct Deployments {
    by_run: HashMap<i64, u64>,
}

impl Deployments {
    fn remember(&mut self, run: i64, id: u64) {
        if self.by_run.len() >= 1000 {
            self.by_run.clear();
        }
        self.by_run.insert(run, id);
    }
}

/// The id of the deployment made earlier for `notice`'s run (by this or a previous server): the
/// newest of the SHA's deployments to the environment whose payload names this app and run.
async fn find_deployment(
    sender: &mut Sender,
    repo: &str,
    headers: &[(&str, String)],
    notice: &Notice,
    sha: &str,
) -> Option<u64> {
    let env = crate::http::encode_segment(&notice.env);
    let url = format!("{repo}/deployments?sha={sha}&environment={env}&per_page=100");
    let list = sender.get(&url, headers, "github deployments lookup").await?;
    deployment_of(&list, &notice.app, notice.run_id)
}

/// In GitHub's list of deployments (newest first), the id of the first one whose payload is
/// `{cutover_run: run, app}`.
pub(crate) fn deployment_of(list: &Value, app: &str, run: i64) -> Option<u64> {
    list.as_array()?
        .iter()
        .find(|d| {
            d["payload"]["cutover_run"].as_i64() == Some(run) && d["payload"]["app"].as_str() == Some(app)
        })
        .and_then(|d| d["id"].as_u64())
}

/// `POST /repos/{owner}/{repo}/deployments`'s body.
pub(crate) fn deployment(notice: &Notice, sha: &str) -> Value {
    json!({
        "ref": sha,
        "environment": notice.env,
        "auto_merge": false,
        "required_contexts": [],
        "description": clip(&format!("Cutover run #{} by {}", notice.run_id, notice.requested_by), 140),
        "production_environment": notice.tier == Some(Tier::Prod),
        "transient_environment": notice.tier == Some(Tier::Integration),
        "payload": { "cutover_run": notice.run_id, "app": notice.app },
    })
}

/// The deployment status and commit status for a notice: `(deployment state, commit state,
/// description)`; `None` for a state GitHub is not told about.
pub(crate) fn states(notice: &Notice) -> (Option<&'static str>, Option<&'static str>, String) {
    let id = notice.run_id;
    let env = &notice.env;
    match notice.trigger {
        Trigger::Queued => (
            Some("queued"),
            Some("pending"),
            format!("{env}: run #{id} queued"),
        ),
        Trigger::Started => (
            Some("in_progress"),
            Some("pending"),
            format!("{env}: run #{id} deploying"),
        ),
        Trigger::AwaitingApproval => (
            None,
            Some("pending"),
            format!("{env}: run #{id} waits for approval (cutover approve {id})"),
        ),
        Trigger::Superseded => (Some("inactive"), None, format!("{env}: run #{id} superseded")),
        Trigger::Finished => match notice.state {
            RunState::Succeeded => (
                Some("success"),
                Some("success"),
                format!("{env}: run #{id} succeeded"),
            ),
            RunState::Failed => (
                Some("failure"),
                Some("failure"),
                match &notice.error {
                    Some(e) => format!("{env}: run #{id} {e}"),
                    None => format!("{env}: run #{id} failed"),
                },
            ),
            other => (
                Some("error"),
                Some("error"),
                format!("{env}: run #{id} {}", other.as_str()),
            ),
        },
    }
}

/// `POST …/deployments/{id}/statuses`'s body.
pub(crate) fn deployment_status(notice: &Notice, state: &str, description: &str) -> Value {
    let mut body = json!({
        "state": state,
        "description": clip(description, 140),
        "environment": notice.env,
        "auto_inactive": true,
    });
    if let Some(url) = &notice.run_url {
        body["log_url"] = json!(url);
    }
    if let Some(url) = &notice.env_url {
        body["environment_url"] = json!(url);
    }
    body
}

/// `POST /repos/{owner}/{repo}/statuses/{sha}`'s body.
pub(crate) fn commit_status(notice: &Notice, state: &str, description: &str) -> Value {
    let mut body = json!({
        "state": state,
        "context": format!("cutover/{}", notice.env),
        "description": clip(description, 140),
    });
    if let Some(url) = &notice.run_url {
        body["target_url"] = json!(url);
    }
    body
}

impl Deployments {
    pub(crate) async fn deliver(
        &mut self,
        sender: &mut Sender,
        secrets: &Secrets,
        target: &Target<'_>,
        notice: &Notice,
    ) {
        let Some(sha) = notice.sha.clone() else {
            return; // a run queued by an older version, with no SHA fixed
        };
        let token = match secrets.read(target.token_secret, "token_secret").await {
            Ok(t) => t.trim().to_owned(),
            Err(why) => return sender.refuse(&why),
        };
        let headers = [
            ("Authorization", format!("Bearer {token}")),
            ("Accept", "application/vnd.github+json".to_owned()),
            ("X-GitHub-Api-Version", API_VERSION.to_owned()),
        ];
        let repo = format!("{}/repos/{}", target.api_url, target.repository);
        let (deploy_state, commit_state, description) = states(notice);
        if let Some(state) = deploy_state {
            let known = self.by_run.get(&notice.run_id).copied();
            let id = match known {
                Some(id) => Some(id),
                // A superseded run without a deployment needs none.
                None if notice.trigger == Trigger::Superseded => None,
                None if notice.trigger != Trigger::Queued
                    && let Some(id) = find_deployment(sender, &repo, &headers, notice, &sha).await =>
                {
                    self.remember(notice.run_id, id);
                    Some(id)
                }
                None => {
                    let url = format!("{repo}/deployments");
                    let created = sender
                        .post(
                            &url,
                            true,
                            &headers,
                            &deployment(notice, &sha),
                            "github deployment",
                        )
                        .await;
                    match created.ok().and_then(|v| v["id"].as_u64()) {
                        Some(id) => {
                            self.remember(notice.run_id, id);
                            Some(id)
                        }
                        None => {
                            tracing::warn!(receiver = %sender.label, run = notice.run_id, "GitHub created no deployment (no id in its answer); only the commit status is sent");
                            None
                        }
                    }
                }
            };
            if let Some(id) = id {
                let url = format!("{repo}/deployments/{id}/statuses");
                let _ = sender
                    .post(
                        &url,
                        true,
                        &headers,
                        &deployment_status(notice, state, &description),
                        "github deployment status",
                    )
                    .await;
            }
        }
        if let Some(state) = commit_state {
            let url = format!("{repo}/statuses/{sha}");
            let _ = sender
                .post(
                    &url,
                    true,
                    &headers,
                    &commit_status(notice, state, &description),
                    "github commit status",
                )
                .await;
        }
        if matches!(notice.trigger, Trigger::Finished | Trigger::Superseded) {
            self.by_run.remove(&notice.run_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    #[test]
    fn the_deployment_of_a_run_is_the_one_whose_payload_names_its_app_and_run() {
        let list = json!([
            { "id": 30, "payload": { "cutover_run": 7, "app": "other" } },
            { "id": 20, "payload": { "cutover_run": 7, "app": "shop" } },
            { "id": 10, "payload": { "cutover_run": 7, "app": "shop" } },
            { "id": 5, "payload": "not ours" },
        ]);
        assert_eq!(
            deployment_of(&list, "shop", 7),
            Some(20),
            "the newest of this app's"
        );
        assert_eq!(deployment_of(&list, "shop", 8), None);
        assert_eq!(deployment_of(&json!({ "message": "Not Found" }), "shop", 7), None);
    }

    const DEPLOYMENT_STATES: [&str; 7] = [
        "error",
        "failure",
        "inactive",
        "in_progress",
        "queued",
        "pending",
        "success",
    ];
    const COMMIT_STATES: [&str; 4] = ["error", "failure", "pending", "success"];

    #[test]
    fn every_trigger_maps_to_states_github_documents() {
        let cases = [
            (Trigger::Queued, RunState::Queued, Some("queued"), Some("pending")),
            (
                Trigger::Started,
                RunState::Running,
                Some("in_progress"),
                Some("pending"),
            ),
            (
                Trigger::AwaitingApproval,
                RunState::AwaitingApproval,
                None,
                Some("pending"),
            ),
            (
                Trigger::Finished,
                RunState::Succeeded,
                Some("success"),
                Some("success"),
            ),
            (
                Trigger::Finished,
                RunState::Failed,
                Some("failure"),
                Some("failure"),
            ),
            (
                Trigger::Finished,
                RunState::Cancelled,
                Some("error"),
                Some("error"),
            ),
            (
                Trigger::Finished,
                RunState::Interrupted,
                Some("error"),
                Some("error"),
            ),
            (Trigger::Superseded, RunState::Superseded, Some("inactive"), None),
        ];
        for (trigger, state, deployment, commit) in cases {
            let (d, c, description) = states(&notice(trigger, state));
            assert_eq!((d, c), (deployment, commit), "{trigger:?} {state:?}");
            assert!(d.is_none_or(|d| DEPLOYMENT_STATES.contains(&d)));
            assert!(c.is_none_or(|c| COMMIT_STATES.contains(&c)));
            assert!(description.starts_with("prod: run #12"), "{description}");
        }
    }

    #[test]
    fn bodies_have_the_documented_fields_and_short_descriptions() {
        let mut n = notice(Trigger::Finished, RunState::Failed);
        n.error = Some(format!("Health check failed: {}", "é".repeat(300)));
        let sha = n.sha.clone().unwrap();
        let d = deployment(&n, &sha);
        assert_eq!(d["ref"], sha.as_str());
        assert_eq!(d["environment"], "prod");
        assert_eq!(d["auto_merge"], false);
        assert_eq!(d["required_contexts"], json!([]));
        assert_eq!(d["production_environment"], true);
        let (state, commit, description) = states(&n);
        let s = deployment_status(&n, state.unwrap(), &description);
        assert_eq!(s["state"], "failure");
        assert_eq!(s["log_url"], "https://cutover.example.com/#/run/12");
        assert_eq!(s["environment_url"], "https://cutover.example.com/#/env/prod");
        let c = commit_status(&n, commit.unwrap(), &description);
        assert_eq!(c["context"], "cutover/prod");
        assert_eq!(c["target_url"], "https://cutover.example.com/#/run/12");
        for body in [&s, &c] {
            let text = body["description"].as_str().unwrap();
            assert_eq!(text.chars().count(), 140, "{text}");
            assert!(text.ends_with('…'));
        }
        n.run_url = None;
        n.env_url = None;
        let c = commit_status(&n, "failure", "x");
        assert!(c.get("target_url").is_none(), "no link without public_url: {c}");
    }
}

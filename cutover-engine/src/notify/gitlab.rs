//! GitLab: a commit status `cutover/<env>` per run event (`POST
//! /projects/:id/statuses/:sha` with `state` `pending` (queued), `running` (started, and while
//! it waits for approval: GitLab refuses to move a status from running back to pending),
//! `success`, `failed` or `canceled`, `name`, `target_url`, `description`), authenticated with
//! `PRIVATE-TOKEN`. The project path is percent-encoded as one segment (`acme%2Fshop`), as
//! GitLab's API wants it. Rejected for now: GitLab's deployments API (it needs a pipeline or
//! job to attach to, which a run outside GitLab CI has not).

use cutover_core::RunState;
use serde_json::{Value, json};

use super::{Notice, Secrets, Sender, Trigger, clip};

/// The commit status for a notice.
pub(crate) fn status(notice: &Notice) -> Value {
    let id = notice.run_id;
    let env = &notice.env;
    let (state, description) = match notice.trigger {
        Trigger::Queued => ("pending", format!("{env}: run #{id} queued")),
        Trigger::Started => ("running", format!("{env}: run #{id} deploying")),
        Trigger::AwaitingApproval => (
            "running",
            format!("{env}: run #{id} waits for approval (cutover approve {id})"),
        ),
        Trigger::Superseded => ("canceled", format!("{env}: run #{id} superseded")),
        Trigger::Finished => match notice.state {
            RunState::Succeeded => ("success", format!("{env}: run #{id} succeeded")),
            RunState::Failed => (
                "failed",
                notice.error.as_ref().map_or_else(
                    || format!("{env}: run #{id} failed"),
                    |e| format!("{env}: run #{id} {e}"),
                ),
            ),
            other => ("canceled", format!("{env}: run #{id} {}", other.as_str())),
        },
    };
    let mut body = json!({
        "state": state,
        "name": format!("cutover/{env}"),
        "description": clip(&description, 140),
    });
    if let Some(url) = &notice.run_url {
        body["target_url"] = json!(url);
    }
    body
}

pub(crate) async fn deliver(
    sender: &mut Sender,
    secrets: &Secrets,
    api_url: &str,
    project: &str,
    token_secret: &str,
    notice: &Notice,
) {
    let Some(sha) = notice.sha.as_deref() else {
        return;
    };
    let body = status(notice);
    let token = match secrets.read(token_secret, "token_secret").await {
        Ok(t) => t.trim().to_owned(),
        Err(why) => return sender.refuse(&why),
    };
    let url = format!(
        "{api_url}/projects/{}/statuses/{sha}",
        crate::http::encode_segment(project)
    );
    let _ = sender
        .post(
            &url,
            true,
            &[("PRIVATE-TOKEN", token)],
            &body,
            "gitlab commit status",
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    #[test]
    fn states_are_gitlabs_and_names_say_the_environment() {
        let cases = [
            (Trigger::Queued, RunState::Queued, "pending"),
            (Trigger::Started, RunState::Running, "running"),
            (Trigger::AwaitingApproval, RunState::AwaitingApproval, "running"),
            (Trigger::Finished, RunState::Succeeded, "success"),
            (Trigger::Finished, RunState::Failed, "failed"),
            (Trigger::Finished, RunState::Cancelled, "canceled"),
            (Trigger::Superseded, RunState::Superseded, "canceled"),
        ];
        for (trigger, state, want) in cases {
            let body = status(&notice(trigger, state));
            assert_eq!(body["state"], want, "{trigger:?}");
            assert_eq!(body["name"], "cutover/prod");
            assert!(body["description"].as_str().unwrap().chars().count() <= 140);
        }
    }
}

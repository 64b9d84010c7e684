//! Slack-compatible incoming webhooks: one message when a run waits for approval, succeeds,
//! fails (or is cancelled or interrupted) or rolls back, in Slack's documented shape: a
//! top-level `text` (the notification's plain fallback) and `blocks` (a `section` with the
//! headline, a `section` with `fields`, a `context` with the error, the approval hint or the
//! link). Every value from outside (commit subject, actor names, errors) is escaped as Slack's
//! mrkdwn wants (`&`, `<`, `>`), so a commit subject cannot mention `<!channel>` or hide a
//! link; long values are clipped below Slack's block limits. Mattermost, Rocket.Chat and
//! Discord's `/slack` endpoints read the same payload.

use cutover_core::RunState;
use cutover_core::config::{NotifyEvent, Tier};
use serde_json::{Value, json};

use super::{Notice, Secrets, Sender, Trigger, clip};

/// Which Slack event a notice is, if any.
pub(crate) fn event_of(notice: &Notice) -> Option<NotifyEvent> {
    use cutover_core::RunKind;
    match (notice.trigger, notice.state) {
        (Trigger::AwaitingApproval, _) => Some(NotifyEvent::Approval),
        (Trigger::Finished, RunState::Succeeded)
            if matches!(notice.kind, RunKind::Rollback | RunKind::FastRollback) =>
        {
            Some(NotifyEvent::RolledBack)
        }
        (Trigger::Finished, RunState::Succeeded) => Some(NotifyEvent::Succeeded),
        (Trigger::Finished, RunState::Failed | RunState::Cancelled | RunState::Interrupted) => {
            Some(NotifyEvent::Failed)
        }
        _ => None,
    }
}

/// `&`, `<` and `>` as Slack's mrkdwn and plain text want them.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The message for `notice` as `event`.
pub(crate) fn message(notice: &Notice, event: NotifyEvent) -> Value {
    let env = escape(&notice.env);
    let app = escape(&notice.app);
    let run = match &notice.run_url {
        Some(url) => format!("<{url}|run #{}>", notice.run_id),
        None => format!("run #{}", notice.run_id),
    };
    let short = notice.short_sha().unwrap_or("unknown");
    let (icon, what) = match event {
        NotifyEvent::Approval => (":hourglass_flowing_sand:", "waits for approval".to_owned()),
        NotifyEvent::Succeeded => (":white_check_mark:", "succeeded".to_owned()),
        NotifyEvent::RolledBack => (
            ":leftwards_arrow_with_hook:",
            match notice.previous.as_deref() {
                Some(from) => format!("rolled back to `{short}` from `{}`", &from[..from.len().min(7)]),
                None => format!("rolled back to `{short}`"),
            },
        ),
        NotifyEvent::Failed => match notice.state {
            RunState::Cancelled => (":no_entry_sign:", "was cancelled".to_owned()),
            RunState::Interrupted => (":warning:", "was interrupted (the server stopped)".to_owned()),
            _ => (":x:", "failed".to_owned()),
        },
    };
    let headline = format!("{icon} *{app}* · *{env}*: {run} {what}");
    let subject = notice
        .subject
        .as_deref()
        .map(|s| escape(&clip(s, 150)))
        .unwrap_or_else(|| "(commit not in the local repository)".to_owned());
    let who = escape(&notice.requested_by);
    let mut fields = vec![
        field(&format!("*Environment*\n{env}")),
        field(&format!("*Version*\n`{short}`")),
        field(&format!("*Commit*\n{subject}")),
        field(&format!("*Started by*\n{who}")),
    ];
    if event == NotifyEvent::Approval
        && let Some(chooser) = &notice.chosen_by
        && chooser != &notice.requested_by
    {
        fields.push(field(&format!("*Version chosen by*\n{}", escape(chooser))));
    }
    let mut context = Vec::new();
    match event {
        NotifyEvent::Approval => {
            let production = notice.tier == Some(Tier::Prod);
            context.push(format!(
                "Approve with `cutover approve {id}` or reject with `cutover reject {id} --comment WHY`{}",
                if production {
                    "; on production neither who started it nor who chose the version may decide"
                } else {
                    ""
                },
                id = notice.run_id
            ));
        }
        NotifyEvent::Failed => {
            if let Some(error) = &notice.error {
                context.push(escape(&clip(error, 500)));
            }
        }
        _ => {}
    }
    match &notice.run_url {
        Some(url) => context.push(format!("<{url}|Open run #{} in the dashboard>", notice.run_id)),
        None => context.push(
            "No link: set notifications.public_url in cutover.yml to the dashboard's address".to_owned(),
        ),
    }
    let text = format!(
        "{app} {env}: run #{} {} ({short} {subject}, started by {who})",
        notice.run_id,
        what.replace('`', ""),
    );
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": clip(&headline, 3000) } },
            { "type": "section", "fields": fields },
            {
                "type": "context",
                "elements": context
                    .iter()
                    .map(|c| json!({ "type": "mrkdwn", "text": clip(c, 3000) }))
                    .collect::<Vec<_>>(),
            },
        ],
    })
}

fn field(text: &str) -> Value {
    json!({ "type": "mrkdwn", "text": clip(text, 2000) })
}

/// Sends `notice` if this receiver wants its event.
pub(crate) async fn deliver(
    sender: &mut Sender,
    secrets: &Secrets,
    url_secret: &str,
    events: &[NotifyEvent],
    notice: &Notice,
) {
    let Some(event) = event_of(notice).filter(|e| events.contains(e)) else {
        return;
    };
    let url = match secrets.read(url_secret, "url_secret").await {
        Ok(url) => url.trim().to_owned(),
        Err(why) => return sender.refuse(&why),
    };
    if !super::safe_url(&url) {
        return sender.refuse(&format!(
            "the URL in secret {url_secret} is not an https:// URL (plain http:// is accepted to \
             127.0.0.1 and localhost only); put the incoming webhook's https URL there"
        ));
    }
    let _ = sender
        .post(&url, false, &[], &message(notice, event), "slack message")
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    /// Every block is one of Slack's documented kinds with its required members.
    fn assert_slack_shape(m: &Value) {
        assert!(m["text"].as_str().is_some_and(|t| !t.is_empty()), "{m:#}");
        for block in m["blocks"].as_array().expect("blocks") {
            match block["type"].as_str() {
                Some("section") => {
                    let text = block["text"]["text"].as_str();
                    let fields = block["fields"].as_array();
                    assert!(text.is_some() || fields.is_some(), "{block:#}");
                    if let Some(f) = fields {
                        assert!(f.len() <= 10, "at most 10 fields");
                        for x in f {
                            assert_eq!(x["type"], "mrkdwn");
                            assert!(x["text"].as_str().unwrap().chars().count() <= 2000);
                        }
                    }
                }
                Some("context") => {
                    let e = block["elements"].as_array().unwrap();
                    assert!(!e.is_empty() && e.len() <= 10);
                }
                other => panic!("unexpected block {other:?}"),
            }
        }
    }

    #[test]
    fn a_success_names_env_sha_subject_who_and_links_the_run() {
        let n = notice(Trigger::Finished, RunState::Succeeded);
        assert_eq!(event_of(&n), Some(NotifyEvent::Succeeded));
        let m = message(&n, NotifyEvent::Succeeded);
        assert_slack_shape(&m);
        let all = m.to_string();
        for needle in [
            "*prod*",
            "`3f2a9c1`",
            "Fix the &lt;checkout&gt; &amp; totals",
            "alice",
            "<https://cutover.example.com/#/run/12|run #12>",
            "succeeded",
        ] {
            assert!(all.contains(needle), "{needle}: {m:#}");
        }
        assert!(!all.contains("<checkout>"), "escaped: {all}");
    }

    #[test]
    fn a_commit_subject_cannot_ping_the_channel_or_hide_a_link() {
        let mut n = notice(Trigger::Finished, RunState::Failed);
        n.subject = Some("<!channel> look <https://evil.example|here>".into());
        n.error = Some("Health check failed: <b>500</b>".into());
        let all = message(&n, NotifyEvent::Failed).to_string();
        assert!(
            !all.contains("<!channel>") && !all.contains("<https://evil"),
            "{all}"
        );
        assert!(all.contains("&lt;!channel&gt;"), "{all}");
        assert!(all.contains("Health check failed: &lt;b&gt;500"), "{all}");
    }

    #[test]
    fn approval_rollback_and_no_link_messages() {
        let mut n = notice(Trigger::AwaitingApproval, RunState::AwaitingApproval);
        assert_eq!(event_of(&n), Some(NotifyEvent::Approval));
        let all = message(&n, NotifyEvent::Approval).to_string();
        assert!(
            all.contains("waits for approval") && all.contains("cutover approve 12"),
            "{all}"
        );
        assert!(all.contains("*Version chosen by*\\nbob"), "{all}");
        n.trigger = Trigger::Finished;
        n.state = RunState::Succeeded;
        n.kind = cutover_core::RunKind::Rollback;
        n.run_url = None;
        assert_eq!(event_of(&n), Some(NotifyEvent::RolledBack));
        let m = message(&n, NotifyEvent::RolledBack);
        assert_slack_shape(&m);
        let all = m.to_string();
        assert!(all.contains("rolled back to `3f2a9c1` from `0123456`"), "{all}");
        assert!(all.contains("No link: set notifications.public_url"), "{all}");
        assert!(!all.contains("http"), "no link at all: {all}");
        for quiet in [Trigger::Queued, Trigger::Started, Trigger::Superseded] {
            n.trigger = quiet;
            assert_eq!(event_of(&n), None, "{quiet:?}");
        }
    }
}

//! The schema of the `notifications:` and `webhooks:` sections.

use serde_json::{Value, json};

use super::*;

pub(super) fn notifications() -> Value {
    let receiver = object(
        &["kind"],
        "One receiver: a Slack-compatible incoming webhook, GitHub (deployments and commit \
         statuses) or GitLab (commit statuses).",
        props(vec![
            (
                "kind",
                choice(RECEIVER_KINDS, "What receives the messages.", None),
            ),
            (
                "environments",
                json!({
                    "type": "array",
                    "items": { "type": "string", "pattern": NAME_PATTERN },
                    "description": "Only runs of these environments (default: every one).",
                }),
            ),
            (
                "url_secret",
                string("slack: the secret /<app>/secrets/<name> holding the incoming webhook's URL."),
            ),
            (
                "events",
                json!({
                    "type": "array",
                    "items": choice(NOTIFY_EVENTS, "An event.", None),
                    "default": NOTIFY_EVENTS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                    "description": "slack: which runs to tell about.",
                }),
            ),
            ("repository", string("github: the repository as owner/name.")),
            (
                "project",
                string("gitlab: the project's numeric id or group/name path."),
            ),
            (
                "token_secret",
                string("github, gitlab: the secret /<app>/secrets/<name> holding the API token."),
            ),
            (
                "api_url",
                described(
                    json!({ "type": "string", "pattern": "^https?://\\S+$" }),
                    "github, gitlab: the API's base URL (GitHub Enterprise: https://host/api/v3).",
                ),
            ),
        ]),
    );
    object(
        &[],
        "Messages people read and the git host's deployment records.",
        props(vec![
            (
                "public_url",
                described(
                    json!({ "type": "string", "pattern": "^https?://[^?#\\s]+$" }),
                    "The server's address as people open it; messages link to its runs.",
                ),
            ),
            (
                "receivers",
                json!({ "type": "array", "items": receiver, "description": "Where messages go." }),
            ),
        ]),
    )
}

pub(super) fn webhook() -> Value {
    object(
        &["url"],
        "A URL that receives run and stage events as JSON POSTs.",
        props(vec![
            (
                "url",
                described(
                    json!({ "type": "string", "pattern": "^https?://\\S+$" }),
                    "Where events are POSTed, e.g. https://hooks.example.com/cutover.",
                ),
            ),
            (
                "events",
                json!({
                    "type": "array",
                    "items": choice(WEBHOOK_EVENTS, "An event kind.", None),
                    "default": WEBHOOK_EVENTS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                    "description": "Which events to send.",
                }),
            ),
            (
                "ca_file",
                string(
                    "https only: a PEM bundle (relative to cutover.yml) trusted instead of the system roots.",
                ),
            ),
            (
                "secret_env",
                described(
                    json!({ "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }),
                    "The server's environment variable holding the HMAC key that signs every body (X-Cutover-Signature).",
                ),
            ),
        ]),
    )
}

//! `notifications:`: messages people read (Slack-compatible incoming webhooks) and the git
//! host's own deployment records (GitHub Deployments and commit statuses, GitLab commit
//! statuses), beside the generic JSON `webhooks:` which keep their own section and form.
//!
//! ```yaml
//! notifications:
//!   public_url: https://cutover.example.com   # links to runs in the dashboard
//!   receivers:
//!     - kind: slack
//!       url_secret: slack_deploys             # /<app>/secrets/slack_deploys holds the URL
//!       events: [approval, succeeded, failed, rolled_back]
//!       environments: [prod]
//!     - kind: github
//!       repository: acme/shop
//!       token_secret: github_token
//!       api_url: https://api.github.com       # the default; GitHub Enterprise: https://host/api/v3
//! ```
//!
//! Every credential (a Slack URL is one) is named, never written here: it lives encrypted in the
//! parameter store and is read when a message is sent. A receiver's keys are one list for every
//! kind (so the JSON Schema stays a plain object); a key of another kind is refused with the
//! kind it belongs to. Rejected: one section per kind (`slack:`, `github:`), which would make
//! the order of messages across kinds a property of the file's layout and the `events:` and
//! `environments:` filters three times the same.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_saphyr::Location;

use super::extract::{Ctx, Fields, SNode, choice, list, parsed};
use super::keys;
use super::values::nearest;
use crate::EnvName;
use crate::config::Environment;

/// `notifications:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Notifications {
    /// The server's address as people open it (`https://cutover.example.com`, no trailing `/`):
    /// messages link to `<public_url>/#/run/<id>`. `None`: messages carry no link.
    pub public_url: Option<String>,
    pub receivers: Vec<Receiver>,
}

/// One receiver and what it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receiver {
    pub kind: ReceiverKind,
    /// Only runs of these environments (an integration environment also by its template's
    /// name); `None`: every environment.
    pub environments: Option<Vec<EnvName>>,
}

impl Receiver {
    /// Whether a run of `env` (created from `template`, for an integration environment) is
    /// reported to this receiver.
    pub fn wants_env(&self, env: &str, template: Option<&str>) -> bool {
        match &self.environments {
            None => true,
            Some(list) => list
                .iter()
                .any(|e| e.as_str() == env || Some(e.as_str()) == template),
        }
    }
}

/// What a receiver is and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReceiverKind {
    /// A Slack-compatible incoming webhook.
    Slack {
        /// The parameter-store secret (`/<app>/secrets/<name>`) holding the webhook's URL.
        url_secret: String,
        events: Vec<NotifyEvent>,
    },
    /// GitHub's Deployments API and commit statuses (`cutover/<env>`).
    Github {
        /// `owner/name`.
        repository: String,
        /// The parameter-store secret holding a token allowed to write deployments and statuses.
        token_secret: String,
        /// Without a trailing `/`; default `https://api.github.com`.
        api_url: String,
    },
    /// GitLab's commit status API (`cutover/<env>`).
    Gitlab {
        /// The project's numeric id or its `group/name` path.
        project: String,
        /// The parameter-store secret holding a token with the `api` scope.
        token_secret: String,
        /// Without a trailing `/`; default `https://gitlab.com/api/v4`.
        api_url: String,
    },
}

impl ReceiverKind {
    pub fn name(&self) -> &'static str {
        match self {
            ReceiverKind::Slack { .. } => "slack",
            ReceiverKind::Github { .. } => "github",
            ReceiverKind::Gitlab { .. } => "gitlab",
        }
    }
}

/// What a Slack receiver is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A run waits for someone to approve it.
    Approval,
    /// A release (not a rollback) succeeded.
    Succeeded,
    /// A run failed, was cancelled or interrupted.
    Failed,
    /// A rollback (or fast rollback) succeeded.
    RolledBack,
}

pub(crate) const NOTIFY_EVENTS: &[(&str, NotifyEvent)] = &[
    ("approval", NotifyEvent::Approval),
    ("succeeded", NotifyEvent::Succeeded),
    ("failed", NotifyEvent::Failed),
    ("rolled_back", NotifyEvent::RolledBack),
];

pub(crate) const RECEIVER_KINDS: &[(&str, &str)] =
    &[("slack", "slack"), ("github", "github"), ("gitlab", "gitlab")];

pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
pub const DEFAULT_GITLAB_API: &str = "https://gitlab.com/api/v4";

/// The keys each kind takes besides `kind` and `environments`.
fn own_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "slack" => &["url_secret", "events"],
        "github" => &["repository", "token_secret", "api_url"],
        _ => &["project", "token_secret", "api_url"],
    }
}

/// `notifications:`; `envs` are the environments (and templates) the file declares, when they
/// parsed, to check `environments:` filters against.
pub(crate) fn notifications(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    at: Location,
    envs: Option<&BTreeMap<EnvName, Environment>>,
) -> Option<Notifications> {
    let f = Fields::new(ctx, node, at, "notifications", keys::NOTIFICATIONS)?;
    let mut ok = true;
    let public_url = match f.get("public_url") {
        None => None,
        Some(n) => {
            let v = parsed(ctx, n, "notifications.public_url", check_public_url);
            ok &= v.is_some();
            v
        }
    };
    let mut receivers = Vec::new();
    if let Some(n) = f.get("receivers") {
        let items = list(ctx, n, "notifications.receivers", "a list of receivers");
        ok &= items.is_some();
        for (i, item) in items.unwrap_or_default().iter().enumerate() {
            match receiver(ctx, item, &format!("notifications.receivers[{i}]"), envs) {
                Some(r) => receivers.push(r),
                None => ok = false,
            }
        }
    }
    ok.then_some(Notifications {
        public_url,
        receivers,
    })
}

fn receiver(
    ctx: &mut Ctx<'_>,
    item: &SNode,
    path: &str,
    envs: Option<&BTreeMap<EnvName, Environment>>,
) -> Option<Receiver> {
    let f = Fields::new(ctx, item, item.referenced, path, keys::RECEIVER)?;
    let kind = f
        .required(ctx, "kind", "what receives the messages: slack, github or gitlab")
        .and_then(|n| choice(ctx, n, &f.path("kind"), "receiver kind", RECEIVER_KINDS))?;
    let mut ok = true;
    // Keys of another kind: say whose they are.
    for key in keys::RECEIVER {
        if matches!(*key, "kind" | "environments") || own_keys(kind).contains(key) {
            continue;
        }
        if let Some(n) = f.get(key) {
            let owners: Vec<&str> = RECEIVER_KINDS
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| own_keys(k).contains(key))
                .collect();
            ctx.error(
                n.referenced,
                &f.path(key),
                format!(
                    "{key} is for {} receivers; a {kind} receiver takes kind, environments, {}",
                    owners.join(" and "),
                    own_keys(kind).join(", ")
                ),
            );
            ok = false;
        }
    }
    let environments = match f.get("environments") {
        None => None,
        Some(n) => {
            let p = f.path("environments");
            let mut out = Vec::new();
            for e in list(ctx, n, &p, "a list of environment names").unwrap_or_default() {
                match parsed(ctx, e, &p, |s| known_env(s, envs)) {
                    Some(name) if !out.contains(&name) => out.push(name),
                    Some(_) => {}
                    None => ok = false,
                }
            }
            Some(out)
        }
    };
    let secret = |ctx: &mut Ctx<'_>, key: &'static str, what: &str| {
        f.required(ctx, key, what)
            .and_then(|n| parsed(ctx, n, &f.path(key), check_secret_name))
    };
    let kind = match kind {
        "slack" => {
            let url_secret = secret(
                ctx,
                "url_secret",
                "the secret /<app>/secrets/<name> holding the incoming webhook's URL, e.g. `url_secret: slack_deploys`",
            );
            let events = match f.get("events") {
                None => Some(NOTIFY_EVENTS.iter().map(|(_, e)| *e).collect()),
                Some(n) => {
                    let p = f.path("events");
                    let mut events = Vec::new();
                    let items = list(
                        ctx,
                        n,
                        &p,
                        "a list of events: approval, succeeded, failed, rolled_back",
                    );
                    for e in items.unwrap_or_default() {
                        match choice(ctx, e, &p, "event", NOTIFY_EVENTS) {
                            Some(ev) if !events.contains(&ev) => events.push(ev),
                            Some(_) => {}
                            None => ok = false,
                        }
                    }
                    Some(events)
                }
            };
            ReceiverKind::Slack {
                url_secret: url_secret?,
                events: events?,
            }
        }
        "github" => {
            let repository = f
                .required(
                    ctx,
                    "repository",
                    "the repository as owner/name, e.g. `repository: acme/shop`",
                )
                .and_then(|n| parsed(ctx, n, &f.path("repository"), check_github_repository));
            let token_secret = secret(
                ctx,
                "token_secret",
                "the secret /<app>/secrets/<name> holding a token that may write deployments and commit statuses",
            );
            let api_url = api_url(ctx, &f, DEFAULT_GITHUB_API, &mut ok);
            ReceiverKind::Github {
                repository: repository?,
                token_secret: token_secret?,
                api_url: api_url?,
            }
        }
        _ => {
            let project = f
                .required(
                    ctx,
                    "project",
                    "the project's numeric id or group/name path, e.g. `project: acme/shop`",
                )
                .and_then(|n| parsed(ctx, n, &f.path("project"), check_gitlab_project));
            let token_secret = secret(
                ctx,
                "token_secret",
                "the secret /<app>/secrets/<name> holding a token with the api scope",
            );
            let api_url = api_url(ctx, &f, DEFAULT_GITLAB_API, &mut ok);
            ReceiverKind::Gitlab {
                project: project?,
                token_secret: token_secret?,
                api_url: api_url?,
            }
        }
    };
    ok.then_some(Receiver { kind, environments })
}

fn api_url(ctx: &mut Ctx<'_>, f: &Fields<'_>, default: &str, ok: &mut bool) -> Option<String> {
    match f.get("api_url") {
        None => Some(default.to_owned()),
        Some(n) => {
            let v = parsed(ctx, n, &f.path("api_url"), check_api_url);
            *ok &= v.is_some();
            v
        }
    }
}

fn known_env(s: &str, envs: Option<&BTreeMap<EnvName, Environment>>) -> Result<EnvName, String> {
    let name = EnvName::parse(s).map_err(|e| e.to_string())?;
    match envs {
        Some(envs) if !envs.contains_key(&name) => {
            let names: Vec<&str> = envs.keys().map(EnvName::as_str).collect();
            let hint = nearest(s, &names)
                .map(|n| format!(" did you mean {n:?}?"))
                .unwrap_or_default();
            Err(format!(
                "unknown environment {s:?};{hint} environments are {}",
                names.join(", ")
            ))
        }
        _ => Ok(name),
    }
}

fn check_secret_name(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        return Err(
            "this names a secret, it is not the secret itself: store the URL or token with \
             `cutover param put /<app>/secrets/<name> -` and write its name here"
                .to_owned(),
        );
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c)) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a secret name; use letters, digits, '_', '-', '.' or '/', e.g. \"slack_deploys\""
        ))
    }
}

/// `owner/name` as GitHub spells them (letters, digits, `-`, `_`, `.`).
fn check_github_repository(s: &str) -> Result<String, String> {
    let part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match s.split_once('/') {
        Some((owner, name)) if part(owner) && part(name) => Ok(s.to_owned()),
        _ => Err(format!(
            "{s:?} is not a GitHub repository; write owner/name, e.g. \"acme/shop\""
        )),
    }
}

/// A numeric id or `group[/subgroup…]/name`.
fn check_gitlab_project(s: &str) -> Result<String, String> {
    let part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() || s.contains('/') && s.split('/').all(part) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a GitLab project; write its numeric id or its path group/name, e.g. \"acme/shop\""
        ))
    }
}

/// The host of an `http(s)://host[:port]/…` URL, or why it is not one.
fn http_host(s: &str) -> Result<(&'static str, &str), String> {
    let (scheme, rest) = if let Some(rest) = s.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = s.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    };
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} contains white space"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{s:?} carries a user or password; credentials go in a secret, never in the URL"
        ));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(format!("{s:?} names no host"));
    }
    Ok((scheme, host))
}

/// Whether `host` is this machine: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An API's base URL: https, or plain http to this machine only (a token travels with every
/// request). Trailing `/` dropped.
pub fn check_api_url(s: &str) -> Result<String, String> {
    let (scheme, host) = http_host(s)?;
    if scheme == "http" && !is_loopback_host(host) {
        return Err(format!(
            "{s:?} is plain http:// to another machine, which would send the token in the clear; \
             use https:// (plain http is accepted for 127.0.0.1 and localhost only)"
        ));
    }
    if s.contains(['?', '#']) {
        return Err(format!(
            "{s:?} has a query or fragment; give the API's base URL only"
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn check_public_url(s: &str) -> Result<String, String> {
    http_host(s)?;
    if s.contains(['?', '#']) {
        return Err(format!(
            "{s:?} has a query or fragment; give the address the dashboard is opened at, e.g. \
             \"https://cutover.example.com\""
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "app: shop\nservices: { web: { run: x } }\nenvironments:\n  staging: { tier: stage }\n  prod: { tier: prod }\n";

    fn errors(text: &str) -> String {
        match crate::config::parse(text, Path::new("cutover.yml")) {
            Ok(cfg) => panic!("accepted: {:#?}", cfg.notifications),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn receivers_of_each_kind_are_read_with_defaults() {
        let text = format!(
            "{BASE}notifications:\n  public_url: https://cutover.example.com/\n  receivers:\n    \
             - {{ kind: slack, url_secret: slack_deploys, environments: [prod] }}\n    \
             - {{ kind: slack, url_secret: s2, events: [approval, failed] }}\n    \
             - {{ kind: github, repository: acme/shop, token_secret: gh }}\n    \
             - {{ kind: gitlab, project: acme/shop, token_secret: gl, api_url: \"http://127.0.0.1:9/api/v4/\" }}\n"
        );
        let cfg = crate::config::parse(&text, Path::new("cutover.yml")).unwrap_or_else(|e| panic!("{e}"));
        let n = &cfg.notifications;
        assert_eq!(n.public_url.as_deref(), Some("https://cutover.example.com"));
        assert_eq!(n.receivers.len(), 4);
        assert!(n.receivers[0].wants_env("prod", None));
        assert!(!n.receivers[0].wants_env("staging", None));
        assert!(n.receivers[1].wants_env("anything", None));
        assert_eq!(
            n.receivers[0].kind,
            ReceiverKind::Slack {
                url_secret: "slack_deploys".into(),
                events: NOTIFY_EVENTS.iter().map(|(_, e)| *e).collect()
            }
        );
        assert!(matches!(
            &n.receivers[1].kind,
            ReceiverKind::Slack { events, .. } if *events == [NotifyEvent::Approval, NotifyEvent::Failed]
        ));
        assert!(matches!(
            &n.receivers[2].kind,
            ReceiverKind::Github { api_url, .. } if api_url == DEFAULT_GITHUB_API
        ));
        assert!(matches!(
            &n.receivers[3].kind,
            ReceiverKind::Gitlab { api_url, .. } if api_url == "http://127.0.0.1:9/api/v4"
        ));
        let none = crate::config::parse(BASE, Path::new("cutover.yml")).unwrap();
        assert_eq!(none.notifications, Notifications::default());
    }

    #[test]
    fn mistakes_are_reported_at_their_line_and_column_with_a_hint() {
        let e = errors(&format!(
            "{BASE}notifications:\n  public_url: \"cutover.example.com\"\n  receivers:\n    \
             - kind: slak\n      url_secret: x\n    \
             - kind: slack\n      events: [succeded]\n    \
             - kind: github\n      repository: acme/shop\n      token_secret: gh\n      api_url: \"http://ghe.example.com/api/v3\"\n      url_secret: x\n    \
             - kind: slack\n      url_secret: \"https://hooks.slack.com/services/T/B/X\"\n      environments: [prd]\n"
        ));
        for needle in [
            "cutover.yml:7:15: notifications.public_url: \"cutover.example.com\" is not an http:// or https:// URL",
            "cutover.yml:9:13: notifications.receivers[0].kind: unknown receiver kind \"slak\"; did you mean \"slack\"?",
            "notifications.receivers[1]: missing required key \"url_secret\" (the secret /<app>/secrets/<name>",
            "cutover.yml:12:16: notifications.receivers[1].events: unknown event \"succeded\"; did you mean \"succeeded\"?",
            "cutover.yml:16:16: notifications.receivers[2].api_url: \"http://ghe.example.com/api/v3\" is plain http://",
            "cutover.yml:17:19: notifications.receivers[2].url_secret: url_secret is for slack receivers",
            "notifications.receivers[3].url_secret: this names a secret, it is not the secret itself",
            "notifications.receivers[3].environments: unknown environment \"prd\"; did you mean \"prod\"?",
        ] {
            assert!(e.contains(needle), "{needle}\n---\n{e}");
        }
        assert!(
            !e.contains("hooks.slack.com/services/T/B/X\" is"),
            "a URL written where its secret's name belongs is not echoed: {e}"
        );
    }

    /// The README's example, with the environments it names, passes the parser and the schema.
    #[test]
    fn the_readme_example_parses_and_matches_the_schema() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("  ```yaml\n  notifications:")
            .expect("README's notifications example")
            + 10;
        let block: String = readme[start..start + readme[start..].find("```").unwrap()]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
            .collect();
        let text = format!("{BASE}{block}");
        let cfg = crate::config::parse(&text, Path::new("cutover.yml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.notifications.receivers.len(), 3);
        let schema = crate::config::json_schema();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn api_urls_are_https_or_loopback_http() {
        assert_eq!(
            check_api_url("https://ghe.example.com/api/v3/").unwrap(),
            "https://ghe.example.com/api/v3"
        );
        assert!(check_api_url("http://127.0.0.1:9000").is_ok());
        assert!(check_api_url("http://[::1]:9000/x").is_ok());
        assert!(check_api_url("http://localhost/x").is_ok());
        let e = check_api_url("http://ghe.example.com").unwrap_err();
        assert!(e.contains("in the clear"), "{e}");
        assert!(check_api_url("http://127.0.0.1.evil.example/").is_err());
        assert!(check_api_url("ftp://x").is_err());
        assert!(check_api_url("https://user:pw@ghe.example.com").is_err());
    }

    #[test]
    fn repositories_and_projects_cannot_change_the_path() {
        assert!(check_github_repository("acme/shop.web").is_ok());
        for bad in [
            "acme",
            "acme/shop/x",
            "../x",
            "acme/..",
            "a cme/shop",
            "acme/sh?p",
        ] {
            assert!(check_github_repository(bad).is_err(), "{bad}");
        }
        assert!(check_gitlab_project("1234").is_ok());
        assert!(check_gitlab_project("group/sub/name").is_ok());
        for bad in ["name", "a/../b", "a/b?c", ""] {
            assert!(check_gitlab_project(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_name_is_not_a_url() {
        let e = check_secret_name("https://hooks.slack.com/services/T/B/x").unwrap_err();
        assert!(e.contains("names a secret"), "{e}");
    }
}

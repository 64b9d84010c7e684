//! The JSON Schema (draft 2020-12) of `cutover.yml` that `cutover config schema` prints, for
//! editors (yaml-language-server completes keys and flags typos as you type). Each section's
//! `properties` must be exactly the parser's key list for it ([`super::keys`]); a test compares
//! them both ways. Allowed values come from the parser's own choice tables, defaults from its own
//! constants. The schema is a help, not the judge: cross-references (`like:`, `requires:`,
//! `task_service:`), which keys each tier takes, cron syntax and zero durations are checked by
//! `cutover config check` only. Rejected: deriving it with `schemars` from the typed `Config`,
//! which describes the parsed result (defaults filled in, `like:` resolved), not the file.

use serde_json::{Map, Value, json};

use super::build::{SUSPEND_ACTIONS, WEBHOOK_EVENTS};
use super::environments::{
    DEFAULT_APPROVAL_TIMEOUT, DEFAULT_HOLD_TIMEOUT, DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_ACTIVE,
    DEFAULT_PROD_LIKE_TTL, MIGRATIONS, ON_HOLD_TIMEOUT, RUNTIMES, STRATEGIES, TIERS,
};
use super::keys;
use super::notifications::{NOTIFY_EVENTS, RECEIVER_KINDS};
use super::services::DEFAULT_HEALTH_TIMEOUT;
use super::values::format_duration;
use messages::{notifications, webhook};
use router::{access_log, tls};

mod messages;
mod router;

/// A name the user chooses: an application, service, environment or job.
const NAME_PATTERN: &str = "^[a-z][a-z0-9-]{0,62}$";
/// What [`super::parse_duration`] accepts, but for zero (refused by the parser only).
const DURATION_PATTERN: &str = "^([0-9]+[smhdw])+$";

fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

fn string(description: &str) -> Value {
    described(json!({ "type": "string" }), description)
}

fn boolean(description: &str, default: Option<bool>) -> Value {
    let mut s = described(json!({ "type": "boolean" }), description);
    if let Some(d) = default {
        s["default"] = json!(d);
    }
    s
}

fn integer(min: u64, max: Option<u64>, description: &str) -> Value {
    let mut s = described(json!({ "type": "integer", "minimum": min }), description);
    if let Some(max) = max {
        s["maximum"] = json!(max);
    }
    s
}

fn duration(description: &str, default: Option<std::time::Duration>) -> Value {
    let mut s = described(
        json!({ "type": "string", "pattern": DURATION_PATTERN }),
        &format!("{description} A duration: a number and a unit s, m, h, d or w, or a sum such as 1h30m."),
    );
    if let Some(d) = default {
        s["default"] = json!(format_duration(d));
    }
    s
}

fn choice<T>(table: &[(&str, T)], description: &str, default: Option<&str>) -> Value {
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    let mut s = described(json!({ "type": "string", "enum": names }), description);
    if let Some(d) = default {
        s["default"] = json!(d);
    }
    s
}

/// A mapping with exactly `properties` (compared with the parser's key list by a test).
fn object(required: &[&str], description: &str, properties: Map<String, Value>) -> Value {
    let mut s = json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

/// A mapping from names the user chooses to `value`.
fn named(value: Value, description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "propertyNames": { "pattern": NAME_PATTERN },
        "additionalProperties": value,
    })
}

fn props(entries: Vec<(&str, Value)>) -> Map<String, Value> {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn service() -> Value {
    object(
        &["run"],
        "A service: the command that starts one replica, and how to build, check and expose it.",
        props(vec![
            (
                "build",
                string("Shell command run once per version in the checked-out release (empty: none)."),
            ),
            (
                "run",
                string("Shell command that starts one replica; PORT and the CUTOVER_* variables are set."),
            ),
            (
                "health",
                described(
                    json!({ "type": "string", "pattern": "^/\\S*$" }),
                    "HTTP path answering 2xx when an instance is ready, e.g. /health.",
                ),
            ),
            (
                "health_timeout",
                duration(
                    "How long a new instance may take to become healthy.",
                    Some(DEFAULT_HEALTH_TIMEOUT),
                ),
            ),
            ("replicas", {
                let mut s = integer(1, None, "How many instances run.");
                s["default"] = json!(1);
                s
            }),
            (
                "public",
                boolean("Served through the router (reached by Host).", Some(false)),
            ),
            (
                "port",
                integer(
                    1,
                    Some(65_535),
                    "docker/swarm: the port inside the container (PORT).",
                ),
            ),
            (
                "dockerfile",
                described(
                    json!({ "type": "string", "minLength": 1, "default": "Dockerfile" }),
                    "docker/swarm: the Dockerfile the image is built from, relative to the release.",
                ),
            ),
            (
                "placement",
                object(
                    &[],
                    "swarm: where Swarm may place the replicas (default: any node, spread over nodes).",
                    props(vec![
                        (
                            "constraints",
                            described(
                                json!({ "type": ["array", "null"], "items": { "type": "string", "minLength": 1 } }),
                                "Swarm constraints, e.g. node.labels.zone==eu-1.",
                            ),
                        ),
                        (
                            "preferences",
                            described(
                                json!({ "type": ["array", "null"], "items": { "type": "string", "pattern": "^spread=\\S+$" } }),
                                "Spread preferences, e.g. spread=node.labels.zone.",
                            ),
                        ),
                    ]),
                ),
            ),
        ]),
    )
}

fn hooks() -> Value {
    object(
        &[],
        "Shell commands run in the new release's directory during a deployment (empty: none).",
        props(vec![
            ("pre_deploy", string("Runs before the installation.")),
            ("install", string("The installation, e.g. migrations.")),
            (
                "destructive_install",
                string("Replaces `install` in the destructive pipeline (resets data; never on prod tiers)."),
            ),
            (
                "post_switch",
                string(
                    "Runs after the switch, once the previous version drained and stopped (expand/contract: the \
                     destructive half of a schema change); such a release keeps no warm release.",
                ),
            ),
            ("post_deploy", string("Runs after the new version serves.")),
            (
                "rollback",
                string(
                    "Runs before Install in a rollback run, in the release restored (CUTOVER_VERSION) with \
                     CUTOVER_PREVIOUS_VERSION the version left: reverses migrations.",
                ),
            ),
        ]),
    )
}

fn scheduler() -> Value {
    let job = object(
        &["schedule", "run"],
        "A cron job run from the active release.",
        props(vec![
            (
                "schedule",
                string("A 5-field cron expression, e.g. \"*/5 * * * *\"."),
            ),
            (
                "timezone",
                string(
                    "The IANA time zone the schedule is read in, e.g. \"Europe/Paris\" (default UTC); daylight saving time as in Vixie cron.",
                ),
            ),
            ("run", string("The job's shell command.")),
            (
                "overlap",
                boolean("Start a run while the previous one still runs.", Some(false)),
            ),
        ]),
    );
    object(
        &[],
        "The cron scheduler of every environment.",
        props(vec![
            ("jobs", named(job, "Jobs by name.")),
            (
                "suspend_timeout",
                duration(
                    "How long a suspend (e.g. during a deployment) waits for running jobs.",
                    Some(super::Scheduler::default().suspend_timeout),
                ),
            ),
            (
                "on_suspend_timeout",
                choice(
                    SUSPEND_ACTIONS,
                    "What a suspend does when jobs still run after suspend_timeout: fail, or terminate them and go on.",
                    Some("fail"),
                ),
            ),
        ]),
    )
}

fn rabbitmq() -> Value {
    let user = object(
        keys::RABBIT_USER,
        "A RabbitMQ user of the vhost and its permissions.",
        props(vec![
            ("name", string("The RabbitMQ user name.")),
            (
                "password_secret",
                string("The parameter /<app>-<env>/secrets/<password_secret> holding its password."),
            ),
            (
                "configure",
                string("Configure permission regex, e.g. \".*\", or \"\" for none."),
            ),
            (
                "write",
                string("Write permission regex, e.g. \".*\", or \"\" for none."),
            ),
            (
                "read",
                string("Read permission regex, e.g. \".*\", or \"\" for none."),
            ),
        ]),
    );
    let vhost = object(
        &["name"],
        "A vhost and its users.",
        props(vec![
            ("name", string("The vhost's name, e.g. /shop.")),
            (
                "users",
                json!({ "type": "array", "items": user, "description": "Its users." }),
            ),
        ]),
    );
    object(
        &["url"],
        "A RabbitMQ broker configured by the Configure message broker stage (through its management API).",
        props(vec![
            (
                "url",
                described(
                    json!({ "type": "string", "pattern": "^https?://\\S+$" }),
                    "The management API, e.g. http://127.0.0.1:15672.",
                ),
            ),
            (
                "admin_user",
                described(
                    json!({ "type": "string", "default": "guest" }),
                    "The user the management API is called as.",
                ),
            ),
            (
                "admin_password_secret",
                string(
                    "The parameter /<app>-<env>/secrets/<name> holding admin_user's password (default: guest).",
                ),
            ),
            (
                "vhosts",
                json!({ "type": "array", "items": vhost, "description": "The vhosts to create." }),
            ),
        ]),
    )
}

fn environment() -> Value {
    let autoscale = object(
        &["min", "max"],
        "prod and prod-like: scale public services by the requests the router admits.",
        props(vec![
            ("min", integer(1, None, "The fewest replicas.")),
            ("max", integer(1, None, "The most replicas (at least min).")),
            (
                "target_rps_per_replica",
                integer(1, None, "Requests per second one replica should take."),
            ),
        ]),
    );
    object(
        &["tier"],
        "An environment: its tier decides which keys it takes and its defaults.",
        props(vec![
            (
                "tier",
                choice(
                    TIERS,
                    "What kind of environment; integration makes a template for per-branch environments.",
                    None,
                ),
            ),
            (
                "branch",
                string(
                    "dev, stage and prod: the branch whose commits it accepts (stage and prod: main unless set).",
                ),
            ),
            (
                "approval",
                boolean(
                    "Runs wait for someone's approval before deploying (default: true on prod, else false).",
                    None,
                ),
            ),
            (
                "approval_for_rollback",
                boolean(
                    "Rollbacks wait for approval too (default: the same as approval).",
                    None,
                ),
            ),
            (
                "auto_deploy",
                boolean(
                    "dev (with branch) and integration: release each new commit of the branch.",
                    Some(false),
                ),
            ),
            (
                "strategy",
                choice(
                    STRATEGIES,
                    "How new versions take the traffic.",
                    Some("blue-green"),
                ),
            ),
            (
                "runtime",
                choice(RUNTIMES, "Where instances run.", Some("process")),
            ),
            (
                "ttl",
                duration(
                    &format!(
                        "prod-like and integration: removed this long after the last deploy (prod-like default: {}).",
                        format_duration(DEFAULT_PROD_LIKE_TTL)
                    ),
                    None,
                ),
            ),
            (
                "like",
                string("prod-like: the environment it copies (its services and the version it runs)."),
            ),
            ("max_active", {
                let mut s = integer(
                    1,
                    None,
                    "integration: how many environments of this template may live at once.",
                );
                s["default"] = json!(DEFAULT_MAX_ACTIVE);
                s
            }),
            ("autoscale", autoscale),
            (
                "replicas",
                named(
                    integer(1, None, "Replicas of the service here."),
                    "Replica counts by service, overriding services.<name>.replicas.",
                ),
            ),
            (
                "hook_timeout",
                duration("How long one hook may run.", Some(DEFAULT_HOOK_TIMEOUT)),
            ),
            (
                "migrations",
                choice(
                    MIGRATIONS,
                    "When the install step runs: `switch` while the old version serves; `hold` after the new version is healthy, with requests held at the router and the old version drained; `hold-before-start` before the new version starts, for one that cannot start against the old schema.",
                    Some("switch"),
                ),
            ),
            (
                "hold_timeout",
                duration(
                    "Longest the router holds requests in a hold deploy; past it they get 503 with Retry-After and the maintenance page.",
                    Some(DEFAULT_HOLD_TIMEOUT),
                ),
            ),
            (
                "on_hold_timeout",
                choice(
                    ON_HOLD_TIMEOUT,
                    "Past hold_timeout: `continue` (503 until the install step ends, then switch) or `fail` (stop the install step, fail the run, the old version serves again).",
                    Some("continue"),
                ),
            ),
            (
                "maintenance_page",
                string(
                    "An HTML file (relative to this file) answered with 503 past a hold's bound and in maintenance mode.",
                ),
            ),
            (
                "approval_timeout",
                duration(
                    "How long a run waits for approval before it fails.",
                    Some(DEFAULT_APPROVAL_TIMEOUT),
                ),
            ),
            (
                "ports",
                named(
                    integer(1, Some(65_535), "A router port serving the public service."),
                    "Fixed router ports by public service, besides the host-routed one.",
                ),
            ),
            (
                "hosts",
                named(
                    json!({
                        "type": "array",
                        "items": { "type": "string" },
                        "description": "Host names (www.example.com, or *.example.com for one label), optionally with a path prefix (example.com/shop: the longest prefix wins, the path is passed on unchanged), routed to the public service; on an integration template, {branch}.review.example.com patterns.",
                    }),
                    "Public host names by public service; each name belongs to one environment; an integration template's are {branch} patterns, expanded per environment made from it.",
                ),
            ),
            (
                "requires",
                json!({
                    "type": "array",
                    "items": { "type": "string", "pattern": NAME_PATTERN },
                    "description": "Environments a version must have succeeded on before a run here (prod: every stage environment unless set; [] for none).",
                }),
            ),
        ]),
    )
}

/// The JSON Schema of `cutover.yml`.
pub fn json_schema() -> Value {
    let mut root = object(
        &["app", "services", "environments"],
        "cutover.yml: one application, its services and environments (Cutover's configuration).",
        props(vec![
            (
                "app",
                described(
                    json!({ "type": "string", "pattern": NAME_PATTERN }),
                    "The application's name; parameter keys are /<app>-<env>/...",
                ),
            ),
            (
                "repo",
                described(
                    json!({ "type": "string", "minLength": 1, "default": "." }),
                    "The application's git repository: a path relative to this file, or a URL.",
                ),
            ),
            (
                "services",
                named(service(), "The services, by name (at least one)."),
            ),
            ("hooks", hooks()),
            ("scheduler", scheduler()),
            ("rabbitmq", rabbitmq()),
            (
                "environments",
                named(environment(), "The environments, by name (at least one)."),
            ),
            (
                "router",
                object(
                    &[],
                    "The router in front of public services.",
                    props(vec![
                        ("port", {
                            let mut s = integer(
                                0,
                                Some(65_535),
                                "Its port on 127.0.0.1 (0: any free one); --router-listen overrides it.",
                            );
                            s["default"] = json!(7080);
                            s
                        }),
                        (
                            "trusted_proxies",
                            json!({
                                "type": "array",
                                "items": { "type": "string" },
                                "description": "Address ranges (10.0.0.0/8, 2001:db8::/32, or one address) of proxies in front of the router: their X-Forwarded-For/Forwarded headers are appended to; everyone else's are replaced.",
                            }),
                        ),
                        ("access_log", access_log()),
                        ("tls", tls()),
                    ]),
                ),
            ),
            (
                "task_service",
                described(
                    json!({ "type": "string", "pattern": NAME_PATTERN }),
                    "docker/swarm: the service whose image hooks and jobs run in.",
                ),
            ),
            (
                "registry",
                object(
                    &["url"],
                    "docker/swarm: an image registry the Build stage pushes to.",
                    props(vec![
                        (
                            "url",
                            string("host[:port][/prefix] without a scheme, e.g. 127.0.0.1:5000."),
                        ),
                        (
                            "username",
                            string("The account pushes authenticate as (with password_secret)."),
                        ),
                        (
                            "password_secret",
                            string("The secret /<app>/secrets/<name> holding the account's password."),
                        ),
                    ]),
                ),
            ),
            (
                "webhooks",
                json!({ "type": "array", "items": webhook(), "description": "Receivers of run and stage events." }),
            ),
            ("notifications", notifications()),
            (
                "source",
                object(
                    &[],
                    "How a remote `repo:` is fetched into Cutover's own mirror.",
                    props(vec![
                        (
                            "token_secret",
                            string("https: the secret /<app>/secrets/<name> holding a token."),
                        ),
                        (
                            "token_user",
                            string("https: the user name sent with the token (default x-access-token)."),
                        ),
                        (
                            "ssh_key_file",
                            string("ssh: a private key file, relative to this file."),
                        ),
                        (
                            "ssh_key_secret",
                            string("ssh: the secret /<app>/secrets/<name> holding a private key."),
                        ),
                        (
                            "webhook_secret",
                            string("The secret /<app>/secrets/<name> push webhooks are signed with."),
                        ),
                        (
                            "fetch_timeout",
                            duration("Bound on one fetch.", Some(std::time::Duration::from_secs(60))),
                        ),
                    ]),
                ),
            ),
            (
                "run_as",
                described(
                    json!({ "type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$" }),
                    "Server as root: the unprivileged user hooks, builds, jobs and instances run as.",
                ),
            ),
        ]),
    );
    let top = root.as_object_mut().expect("an object");
    top.insert(
        "$schema".to_owned(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    top.insert("title".to_owned(), json!("cutover.yml"));
    root
}

#[cfg(test)]
mod tests;

//! The keys the parser accepts in each mapping of `cutover.yml`: the one list per section that
//! both the parser (unknown keys and their "did you mean" suggestions) and the JSON Schema
//! (`cutover config schema`) read, so the two cannot drift ([`SECTIONS`] is what a test
//! compares the schema with). Rejected: keys written out again in the schema only, which a new
//! key in the parser would silently leave behind.

pub(crate) const TOP: &[&str] = &[
    "app",
    "repo",
    "services",
    "hooks",
    "scheduler",
    "rabbitmq",
    "environments",
    "router",
    "task_service",
    "registry",
    "webhooks",
    "run_as",
    "source",
    "notifications",
];

pub(crate) const SERVICE: &[&str] = &[
    "build",
    "run",
    "health",
    "health_timeout",
    "replicas",
    "public",
    "port",
    "dockerfile",
    "placement",
];

pub(crate) const PLACEMENT: &[&str] = &["constraints", "preferences"];

pub(crate) const HOOKS: &[&str] = &[
    "pre_deploy",
    "install",
    "destructive_install",
    "post_switch",
    "post_deploy",
    "rollback",
];

pub(crate) const SCHEDULER: &[&str] = &["jobs", "suspend_timeout", "on_suspend_timeout"];

pub(crate) const JOB: &[&str] = &["schedule", "timezone", "run", "overlap"];

pub(crate) const ROUTER: &[&str] = &["port", "trusted_proxies", "access_log", "tls"];

pub(crate) const TLS: &[&str] = &["port", "certificates", "hsts", "acme"];

pub(crate) const ACME: &[&str] = &["directory", "contact", "ca_file", "hosts", "redirect"];

pub(crate) const CERTIFICATE: &[&str] = &["hosts", "cert", "key", "redirect"];

pub(crate) const ACCESS_LOG: &[&str] = &["path", "stdout", "max_size", "keep"];

pub(crate) const REGISTRY: &[&str] = &["url", "username", "password_secret"];

pub(crate) const SOURCE: &[&str] = &[
    "token_secret",
    "token_user",
    "ssh_key_file",
    "ssh_key_secret",
    "fetch_timeout",
    "webhook_secret",
];

pub(crate) const WEBHOOK: &[&str] = &["url", "events", "ca_file", "secret_env"];

pub(crate) const NOTIFICATIONS: &[&str] = &["public_url", "receivers"];

/// Every kind's keys in one list; `notifications.rs` refuses a key of another kind by name.
pub(crate) const RECEIVER: &[&str] = &[
    "kind",
    "environments",
    "url_secret",
    "events",
    "repository",
    "project",
    "token_secret",
    "api_url",
];

pub(crate) const RABBITMQ: &[&str] = &["url", "admin_user", "admin_password_secret", "vhosts"];

pub(crate) const VHOST: &[&str] = &["name", "users"];

pub(crate) const RABBIT_USER: &[&str] = &["name", "password_secret", "configure", "write", "read"];

pub(crate) const ENVIRONMENT: &[&str] = &[
    "tier",
    "branch",
    "approval",
    "approval_for_rollback",
    "auto_deploy",
    "strategy",
    "runtime",
    "ttl",
    "like",
    "max_active",
    "autoscale",
    "replicas",
    "hook_timeout",
    "approval_timeout",
    "ports",
    "requires",
    "migrations",
    "hold_timeout",
    "on_hold_timeout",
    "maintenance_page",
    "hosts",
];

pub(crate) const AUTOSCALE: &[&str] = &["min", "max", "target_rps_per_replica"];

/// Every mapping of `cutover.yml` with fixed keys, by where it is (`*` a name the user chooses,
/// `[]` an item of a list), with the keys the parser accepts there.
pub const SECTIONS: &[(&str, &[&str])] = &[
    ("", TOP),
    ("services.*", SERVICE),
    ("services.*.placement", PLACEMENT),
    ("hooks", HOOKS),
    ("scheduler", SCHEDULER),
    ("scheduler.jobs.*", JOB),
    ("router", ROUTER),
    ("router.access_log", ACCESS_LOG),
    ("router.tls", TLS),
    ("router.tls.certificates[]", CERTIFICATE),
    ("router.tls.acme", ACME),
    ("registry", REGISTRY),
    ("source", SOURCE),
    ("webhooks[]", WEBHOOK),
    ("notifications", NOTIFICATIONS),
    ("notifications.receivers[]", RECEIVER),
    ("rabbitmq", RABBITMQ),
    ("rabbitmq.vhosts[]", VHOST),
    ("rabbitmq.vhosts[].users[]", RABBIT_USER),
    ("environments.*", ENVIRONMENT),
    ("environments.*.autoscale", AUTOSCALE),
];

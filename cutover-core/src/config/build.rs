//! Walks the located node tree into [`Config`]: top level, hooks, scheduler, RabbitMQ, router,
//! image registry and webhooks. Services are in `services.rs`, environments in `environments.rs`.

use std::collections::BTreeMap;

use crate::EnvName;
use std::path::Path;
use std::time::Duration;

use serde_saphyr::Location;

use super::cron::{check_cron, check_timezone};
use super::environments;
use super::extract::{
    Ctx, Fields, SNode, boolean, choice, join, list, named_entries, nonempty, parsed, string,
};
use super::keys;
use super::node::Node;
use super::resolve_repo;
use super::services::{run_needed_by_process, services};
use super::types::*;
use super::values::parse_duration;
use crate::{AppName, JobName, ServiceName};

pub(crate) fn config(ctx: &mut Ctx<'_>, root: &SNode) -> Option<Config> {
    if !matches!(root.value, Node::Map(_)) {
        let message = format!(
            "the file must be a mapping with the keys {}; found {}",
            keys::TOP.join(", "),
            root.value.kind()
        );
        ctx.error(root.referenced, "", message);
        return None;
    }
    let top = Fields::new(ctx, root, root.referenced, "", keys::TOP)?;

    let app = top
        .required(ctx, "app", "the application's name, e.g. `app: shop`")
        .and_then(|n| {
            let s = string(ctx, n, "app")?;
            AppName::parse(s)
                .map_err(|e| ctx.error(n.referenced, "app", e.to_string()))
                .ok()
        });

    let repo = match top.get("repo") {
        None => Some(resolve_repo(".", ctx.file())),
        Some(n) => nonempty(ctx, n, "repo", "a path relative to this file, or a URL")
            .map(|raw| resolve_repo(raw.trim(), ctx.file())),
    };

    // Services without `run:` (the image's own command), with where they are named.
    let mut image_command = Vec::new();
    let services =
        match top.required_even_if_null(ctx, "services", "at least one service with a `run` command") {
            Some(n) => services(ctx, n, top.key_location("services"), &mut image_command),
            None => None,
        };
    let hooks = top.get("hooks").map_or(Some(Hooks::default()), |n| {
        hooks(ctx, n, top.key_location("hooks"))
    });
    let scheduler = top.get("scheduler").map_or(Some(Scheduler::default()), |n| {
        scheduler(ctx, n, top.key_location("scheduler"))
    });
    let rabbitmq = match top.get("rabbitmq") {
        None => Some(None),
        Some(n) => rabbitmq(ctx, n, top.key_location("rabbitmq")).map(Some),
    };
    let router = top.get("router").map_or(Some(RouterConfig::default()), |n| {
        super::router::router(ctx, n, top.key_location("router"))
    });
    let registry = match top.get("registry") {
        None => Some(None),
        Some(n) => registry(ctx, n, top.key_location("registry")).map(Some),
    };
    let service_names: Vec<ServiceName> = services
        .as_ref()
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let public_names: Vec<ServiceName> = services
        .as_ref()
        .map(|s| {
            s.iter()
                .filter(|(_, svc)| svc.public)
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    let environments =
        match top.required_even_if_null(ctx, "environments", "at least one environment with a `tier`") {
            Some(n) => {
                let at = top.key_location("environments");
                let envs = environments::environments(ctx, n, at, &service_names, &public_names);
                envs.filter(|e| unique_ports(ctx, e, at, router.as_ref().and_then(|r| r.port)))
            }
            None => None,
        };
    if let Some(envs) = &environments {
        run_needed_by_process(ctx, &image_command, envs);
    }

    let task_service = match top.get("task_service") {
        None => Some(None),
        Some(n) => string(ctx, n, "task_service").and_then(|raw| {
            let names: Vec<&str> = service_names.iter().map(ServiceName::as_str).collect();
            match ServiceName::parse(raw) {
                Ok(name) if service_names.is_empty() || service_names.contains(&name) => Some(Some(name)),
                Ok(_) => {
                    let hint = super::values::nearest(raw, &names)
                        .map(|n| format!(" did you mean {n:?}?"))
                        .unwrap_or_default();
                    ctx.error(
                        n.referenced,
                        "task_service",
                        format!("unknown service {raw:?};{hint} services are {}", names.join(", ")),
                    );
                    None
                }
                Err(e) => {
                    ctx.error(n.referenced, "task_service", e.to_string());
                    None
                }
            }
        }),
    };

    let run_as = match top.get("run_as") {
        None => Some(None),
        Some(n) => parsed(ctx, n, "run_as", check_user_name).map(Some),
    };

    let webhooks = match top.get("webhooks") {
        None => Some(Vec::new()),
        Some(n) => webhooks(ctx, n),
    };

    let notifications = match top.get("notifications") {
        None => Some(Default::default()),
        Some(n) => super::notifications::notifications(
            ctx,
            n,
            top.key_location("notifications"),
            environments.as_ref(),
        ),
    };

    let source = match top.get("source") {
        None => Some(SourceSettings::default()),
        Some(n) => source(ctx, n, top.key_location("source")),
    };

    Some(Config {
        file: ctx.file().to_path_buf(),
        app: app?,
        repo: repo?,
        services: services?,
        hooks: hooks?,
        scheduler: scheduler?,
        rabbitmq: rabbitmq?,
        environments: environments?,
        router: router?,
        task_service: task_service?,
        webhooks: webhooks?,
        registry: registry?,
        run_as: run_as?,
        source: source?,
        notifications: notifications?,
    })
}

/// `source:` (credentials and timeout for fetching a remote `repo:`).
fn source(ctx: &mut Ctx<'_>, node: &SNode, at: Location) -> Option<SourceSettings> {
    let f = Fields::new(ctx, node, at, "source", keys::SOURCE)?;
    let mut ok = true;
    let defaults = SourceSettings::default();
    let token_secret = opt(ctx, &f, "token_secret", &mut ok, secret_name);
    let token_user = opt(ctx, &f, "token_user", &mut ok, |ctx, n, p| {
        parsed(ctx, n, p, |s| {
            if !s.is_empty() && !s.contains(':') && !s.chars().any(char::is_control) {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "{s:?} is not a user name for HTTP authentication (non-empty, no ':')"
                ))
            }
        })
    })
    .unwrap_or(defaults.token_user);
    let ssh_key_file = opt(ctx, &f, "ssh_key_file", &mut ok, |ctx, n, p| {
        nonempty(
            ctx,
            n,
            p,
            "a path to an ssh private key file, relative to this file",
        )
        .map(|raw| {
            let base = ctx.file().parent().unwrap_or(std::path::Path::new(""));
            let joined = base.join(raw);
            std::path::absolute(&joined).unwrap_or(joined)
        })
    });
    let ssh_key_secret = opt(ctx, &f, "ssh_key_secret", &mut ok, secret_name);
    let webhook_secret = opt(ctx, &f, "webhook_secret", &mut ok, secret_name);
    let fetch_timeout = opt(ctx, &f, "fetch_timeout", &mut ok, duration).unwrap_or(defaults.fetch_timeout);
    if ssh_key_file.is_some() && ssh_key_secret.is_some() {
        ctx.error(
            at,
            "source",
            "both ssh_key_file and ssh_key_secret are set; keep one".to_owned(),
        );
        ok = false;
    }
    ok.then_some(SourceSettings {
        token_secret,
        token_user,
        ssh_key_file,
        ssh_key_secret,
        fetch_timeout,
        webhook_secret,
    })
}

/// A user name as `useradd` accepts it: `[a-z_][a-z0-9_-]*`, at most 32
/// characters. Whether the user exists is checked when the server starts.
pub(crate) fn check_user_name(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a user name (lowercase letters, digits, '_' and '-', starting with a letter or '_', \
             at most 32 characters); name the unprivileged user hooks and instances run as, e.g. `run_as: cutover-app`"
        ))
    }
}

/// Fixed router ports must not clash with each other or the router's own port.
fn unique_ports(
    ctx: &mut Ctx<'_>,
    envs: &BTreeMap<EnvName, Environment>,
    at: Location,
    router_port: Option<u16>,
) -> bool {
    let mut seen: BTreeMap<u16, String> = BTreeMap::new();
    if let Some(p) = router_port {
        seen.insert(p, "router.port".to_owned());
    }
    let mut ok = true;
    for (env, e) in envs {
        for (svc, port) in &e.ports {
            let here = format!("environments.{env}.ports.{svc}");
            if let Some(first) = seen.get(port) {
                ctx.error(
                    at,
                    &here,
                    format!("port {port} is already used by {first}; give each its own port"),
                );
                ok = false;
            } else {
                seen.insert(*port, here);
            }
        }
    }
    ok
}

/// Null or `{}`: a section that lists nothing.
pub(crate) fn is_empty_map(node: &SNode) -> bool {
    match &node.value {
        Node::Null => true,
        Node::Map(entries) => entries.is_empty(),
        _ => false,
    }
}

/// Reads an optional key with `read`, recording failure in `ok`.
pub(crate) fn opt<T>(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    key: &str,
    ok: &mut bool,
    read: impl FnOnce(&mut Ctx<'_>, &SNode, &str) -> Option<T>,
) -> Option<T> {
    let node = f.get(key)?;
    let value = read(ctx, node, &f.path(key));
    *ok &= value.is_some();
    value
}

/// An optional shell command; an empty string means "not configured".
pub(crate) fn optional_command(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    key: &str,
    ok: &mut bool,
) -> Option<String> {
    let node = f.get(key)?;
    match string(ctx, node, &f.path(key)) {
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s.to_owned()),
        None => {
            *ok = false;
            None
        }
    }
}

fn hooks(ctx: &mut Ctx<'_>, node: &SNode, at: Location) -> Option<Hooks> {
    let f = Fields::new(ctx, node, at, "hooks", keys::HOOKS)?;
    let mut ok = true;
    let hooks = Hooks {
        pre_deploy: optional_command(ctx, &f, "pre_deploy", &mut ok),
        install: optional_command(ctx, &f, "install", &mut ok),
        destructive_install: optional_command(ctx, &f, "destructive_install", &mut ok),
        post_deploy: optional_command(ctx, &f, "post_deploy", &mut ok),
        post_switch: optional_command(ctx, &f, "post_switch", &mut ok),
        rollback: optional_command(ctx, &f, "rollback", &mut ok),
    };
    ok.then_some(hooks)
}

pub(crate) const SUSPEND_ACTIONS: &[(&str, SuspendTimeoutAction)] = &[
    ("fail", SuspendTimeoutAction::Fail),
    ("terminate", SuspendTimeoutAction::Terminate),
];

fn scheduler(ctx: &mut Ctx<'_>, node: &SNode, at: Location) -> Option<Scheduler> {
    let f = Fields::new(ctx, node, at, "scheduler", keys::SCHEDULER)?;
    let mut ok = true;
    let suspend_timeout = opt(ctx, &f, "suspend_timeout", &mut ok, |ctx, n, p| {
        duration(ctx, n, p)
    })
    .unwrap_or(Scheduler::default().suspend_timeout);
    let on_suspend_timeout = opt(ctx, &f, "on_suspend_timeout", &mut ok, |ctx, n, p| {
        choice(ctx, n, p, "action", SUSPEND_ACTIONS)
    })
    .unwrap_or_default();
    let mut jobs = BTreeMap::new();
    if let Some(n) = f.get("jobs") {
        for (name, key_at, value) in named_entries(
            ctx,
            n,
            "scheduler.jobs",
            "a mapping of job names to jobs",
            JobName::parse,
        ) {
            let path = join("scheduler.jobs", name.as_str());
            match job(ctx, value, key_at, &path) {
                Some(j) => {
                    jobs.insert(name, j);
                }
                None => ok = false,
            }
        }
    }
    ok.then_some(Scheduler {
        jobs,
        suspend_timeout,
        on_suspend_timeout,
    })
}

fn job(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<Job> {
    let f = Fields::new(ctx, node, at, path, keys::JOB)?;
    let mut ok = true;
    let overlap = opt(ctx, &f, "overlap", &mut ok, boolean).unwrap_or(false);
    let schedule = f
        .required(ctx, "schedule", "a 5-field cron expression, e.g. \"*/5 * * * *\"")
        .and_then(|n| {
            parsed(ctx, n, &f.path("schedule"), |s| {
                check_cron(s).map(|()| s.trim().to_owned())
            })
        });
    let timezone = opt(ctx, &f, "timezone", &mut ok, |ctx, n, p| {
        parsed(ctx, n, p, check_timezone)
    });
    let run = f
        .required(ctx, "run", "the job's command")
        .and_then(|n| nonempty(ctx, n, &f.path("run"), "the job's command"));
    let (schedule, run) = (schedule?, run?.to_owned());
    ok.then_some(Job {
        schedule,
        timezone,
        run,
        overlap,
    })
}

pub(crate) fn duration(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<Duration> {
    if let Node::Int(n) = node.value {
        // `ttl: 72` reads as a number; say what is missing rather than "expected a string".
        let message = parse_duration(&n.to_string()).err().unwrap_or_default();
        ctx.error(node.referenced, path, message);
        return None;
    }
    parsed(ctx, node, path, parse_duration)
}

fn registry(ctx: &mut Ctx<'_>, node: &SNode, at: Location) -> Option<Registry> {
    let f = Fields::new(ctx, node, at, "registry", keys::REGISTRY)?;
    let url = f
        .required(
            ctx,
            "url",
            "the registry as host[:port][/prefix], e.g. 127.0.0.1:5000",
        )
        .and_then(|n| parsed(ctx, n, "registry.url", check_registry_url));
    let mut ok = true;
    let username = opt(ctx, &f, "username", &mut ok, |ctx, n, p| {
        parsed(ctx, n, p, |s| {
            if !s.is_empty() && !s.contains(':') && !s.chars().any(char::is_control) {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not a registry user name (non-empty, no ':')"))
            }
        })
    });
    let password_secret = opt(ctx, &f, "password_secret", &mut ok, secret_name);
    if username.is_some() != password_secret.is_some() && ok {
        ctx.error(
            at,
            "registry",
            "username and password_secret go together: set both (the password in the parameter store), or neither",
        );
        ok = false;
    }
    let url = url?;
    ok.then_some(Registry {
        url,
        username,
        password_secret,
    })
}

/// `host[:port][/path-prefix]` as Docker reads the front of an image
/// reference: the host must contain a `.` or a `:port`, or be `localhost`,
/// or Docker would take it for a repository on Docker Hub; path components
/// are lowercase. A trailing `/` is dropped.
pub(crate) fn check_registry_url(raw: &str) -> Result<String, String> {
    const EXAMPLE: &str = "e.g. \"127.0.0.1:5000\" or \"registry.example.com/team\"";
    let s = raw.trim().trim_end_matches('/');
    if let Some((scheme, rest)) = s.split_once("://") {
        return Err(format!(
            "{raw:?} has a scheme ({scheme}://); write the registry without it, as host[:port][/prefix]: {rest:?}"
        ));
    }
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(format!(
            "{raw:?} is not a registry; expected host[:port][/prefix], {EXAMPLE}"
        ));
    }
    let (authority, prefix) = s.split_once('/').unwrap_or((s, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(format!(
            "registry host {host:?} in {raw:?} is not a host name or IPv4 address; {EXAMPLE}"
        ));
    }
    if let Some(p) = port
        && !matches!(p.parse::<u32>(), Ok(1..=65_535))
    {
        return Err(format!(
            "registry port {p:?} in {raw:?} is not a port number 1-65535"
        ));
    }
    if port.is_none() && !host.contains('.') && host != "localhost" {
        return Err(format!(
            "registry host {host:?} has no '.' and no port, so Docker would read {s:?} as a \
             repository on Docker Hub; add the port (\"{host}:5000\") or the full domain name"
        ));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if !prefix.is_empty() && !prefix.split('/').all(component_ok) {
        return Err(format!(
            "registry path prefix {prefix:?} in {raw:?} is not valid: use lowercase letters, digits \
             and '.', '_' or '-' inside /-separated parts, e.g. \"127.0.0.1:5000/team\""
        ));
    }
    Ok(s.to_owned())
}

pub(crate) const WEBHOOK_EVENTS: &[(&str, WebhookEvent)] =
    &[("run", WebhookEvent::Run), ("stage", WebhookEvent::Stage)];

/// `webhooks: [{ url: http(s)://…, events: [run, stage], ca_file: path }]`.
fn webhooks(ctx: &mut Ctx<'_>, node: &SNode) -> Option<Vec<Webhook>> {
    let mut ok = true;
    let mut out = Vec::new();
    for (i, item) in list(ctx, node, "webhooks", "a list of webhooks")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("webhooks[{i}]");
        let Some(f) = Fields::new(ctx, item, item.referenced, &path, keys::WEBHOOK) else {
            ok = false;
            continue;
        };
        let url = f
            .required(
                ctx,
                "url",
                "the URL to POST events to, e.g. https://hooks.example.com/cutover",
            )
            .and_then(|n| {
                parsed(ctx, n, &f.path("url"), |s| {
                    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
                    match rest {
                        Some(rest) if !rest.is_empty() && !s.contains(char::is_whitespace) => {
                            Ok(s.to_owned())
                        }
                        _ => Err(format!("{s:?} is not an http:// or https:// URL")),
                    }
                })
            });
        let ca_file = f.get("ca_file").and_then(|n| {
            let p = f.path("ca_file");
            let raw = nonempty(ctx, n, &p, "a PEM file of the certificate authorities to trust")?;
            if url.as_deref().is_some_and(|u| u.starts_with("http://")) {
                ctx.error(
                    n.referenced,
                    &p,
                    "ca_file is for https:// URLs; this webhook's URL is plain http://",
                );
                return None;
            }
            let base = ctx.file().parent().unwrap_or(Path::new("."));
            Some(base.join(raw.trim()))
        });
        if f.get("ca_file").is_some() && ca_file.is_none() {
            ok = false;
        }
        let secret_env = f.get("secret_env").and_then(|n| {
            let p = f.path("secret_env");
            parsed(ctx, n, &p, |s| {
                let valid = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !s.as_bytes()[0].is_ascii_digit();
                if valid {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "{s:?} is not an environment variable name (letters, digits and _, e.g. CUTOVER_WEBHOOK_SECRET); \
                         the secret itself never goes in cutover.yml"
                    ))
                }
            })
        });
        if f.get("secret_env").is_some() && secret_env.is_none() {
            ok = false;
        }
        let events = match f.get("events") {
            None => Some(vec![WebhookEvent::Run, WebhookEvent::Stage]),
            Some(n) => {
                let p = f.path("events");
                let mut events = Vec::new();
                for e in list(ctx, n, &p, "a list of events: run, stage").unwrap_or_default() {
                    match choice(ctx, e, &p, "event", WEBHOOK_EVENTS) {
                        Some(ev) if !events.contains(&ev) => events.push(ev),
                        Some(_) => {}
                        None => ok = false,
                    }
                }
                Some(events)
            }
        };
        match (url, events) {
            (Some(url), Some(events)) => out.push(Webhook {
                url,
                events,
                ca_file,
                secret_env,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn rabbitmq(ctx: &mut Ctx<'_>, node: &SNode, at: Location) -> Option<RabbitMq> {
    let f = Fields::new(ctx, node, at, "rabbitmq", keys::RABBITMQ)?;
    let mut ok = true;
    let url = f
        .required(ctx, "url", "the management API URL, e.g. http://127.0.0.1:15672")
        .and_then(|n| {
            parsed(ctx, n, "rabbitmq.url", |s| {
                if (s.starts_with("http://") || s.starts_with("https://")) && !s.contains(char::is_whitespace)
                {
                    Ok(s.trim_end_matches('/').to_owned())
                } else {
                    Err(format!(
                        "{s:?} is not an http:// or https:// URL of the RabbitMQ management API"
                    ))
                }
            })
        });
    let admin_user = opt(ctx, &f, "admin_user", &mut ok, |ctx, n, p| {
        nonempty(ctx, n, p, "a user name").map(str::to_owned)
    });
    let admin_password_secret = opt(ctx, &f, "admin_password_secret", &mut ok, secret_name);
    let mut vhosts: Vec<Vhost> = Vec::new();
    if let Some(n) = f.get("vhosts") {
        for (i, item) in list(ctx, n, "rabbitmq.vhosts", "a list of vhosts")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let path = format!("rabbitmq.vhosts[{i}]");
            match vhost(ctx, item, &path) {
                Some(v) if vhosts.iter().any(|o| o.name == v.name) => {
                    ctx.error(
                        item.referenced,
                        &path,
                        format!("vhost {:?} is declared twice", v.name),
                    );
                    ok = false;
                }
                Some(v) => vhosts.push(v),
                None => ok = false,
            }
        }
    }
    let url = url?;
    ok.then_some(RabbitMq {
        url,
        admin_user,
        admin_password_secret,
        vhosts,
    })
}

fn vhost(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<Vhost> {
    let f = Fields::new(ctx, node, node.referenced, path, keys::VHOST)?;
    let mut ok = true;
    let name = f
        .required(ctx, "name", "the vhost's name, e.g. /shop")
        .and_then(|n| {
            parsed(ctx, n, &f.path("name"), |s| {
                if s.is_empty() || s.chars().any(char::is_control) {
                    Err(format!("vhost name {s:?} must be non-empty and printable"))
                } else {
                    Ok(s.to_owned())
                }
            })
        });
    let mut users: Vec<RabbitUser> = Vec::new();
    if let Some(n) = f.get("users") {
        let users_path = f.path("users");
        for (i, item) in list(ctx, n, &users_path, "a list of users")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let path = format!("{users_path}[{i}]");
            match rabbit_user(ctx, item, &path) {
                Some(u) if users.iter().any(|o| o.name == u.name) => {
                    ctx.error(
                        item.referenced,
                        &path,
                        format!("user {:?} is declared twice in this vhost", u.name),
                    );
                    ok = false;
                }
                Some(u) => users.push(u),
                None => ok = false,
            }
        }
    }
    let name = name?;
    ok.then_some(Vhost { name, users })
}

fn rabbit_user(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<RabbitUser> {
    let f = Fields::new(ctx, node, node.referenced, path, keys::RABBIT_USER)?;
    let name = f
        .required(ctx, "name", "the RabbitMQ user name")
        .and_then(|n| nonempty(ctx, n, &f.path("name"), "the RabbitMQ user name"));
    let secret = f
        .required(
            ctx,
            "password_secret",
            "the parameter-store secret holding the password",
        )
        .and_then(|n| secret_name(ctx, n, &f.path("password_secret")));
    let mut perm = |key: &'static str| {
        f.required(ctx, key, "a permission regex such as \".*\", or \"\" for none")
            .and_then(|n| parsed(ctx, n, &f.path(key), |s| check_regex(s).map(|()| s.to_owned())))
    };
    let configure = perm("configure");
    let write = perm("write");
    let read = perm("read");
    Some(RabbitUser {
        name: name?.to_owned(),
        password_secret: secret?,
        configure: configure?,
        write: write?,
        read: read?,
    })
}

/// A parameter-store secret name: letters, digits, `_`, `-`, `.`, `/`.
fn secret_name(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<String> {
    parsed(ctx, node, path, |s| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c)) {
            Ok(s.to_owned())
        } else {
            Err(format!(
                "{s:?} is not a secret name; use letters, digits, '_', '-', '.' or '/', e.g. \"rabbit_shop\""
            ))
        }
    })
}

/// A light check of a permission regex: printable, balanced brackets, no
/// dangling escape. The broker does the full check when it is applied.
fn check_regex(s: &str) -> Result<(), String> {
    if s.chars().any(char::is_control) {
        return Err(format!("permission regex {s:?} contains a control character"));
    }
    let mut depth = 0i32;
    let mut in_class = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => {
                return Err(format!("permission regex {s:?} ends with a lone '\\'"));
            }
            '\\' => {}
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("permission regex {s:?} has an unmatched ')'"));
                }
            }
            _ => {}
        }
    }
    if in_class || depth != 0 {
        return Err(format!("permission regex {s:?} has an unclosed '(' or '['"));
    }
    Ok(())
}

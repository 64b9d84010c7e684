//! The `services:` section: each service's keys, its Swarm `placement:`, and the rule that the
//! process runtime needs a `run:` command.

use std::collections::BTreeMap;

use serde_saphyr::Location;

use super::extract::{
    Ctx, Fields, SNode, boolean, count, integer, join, list, named_entries, nonempty, parsed,
};
use super::keys;
use super::types::*;
use crate::{EnvName, ServiceName};

use super::build::{duration, is_empty_map, opt, optional_command};

/// How long a new instance may take to answer its health path.
pub(crate) const DEFAULT_HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A service without `run:` runs its image's own command, which only the docker and swarm
/// runtimes have: every environment on the process runtime (all environments run every
/// service; an integration template's runtime is its environments') needs a `run`.
pub(crate) fn run_needed_by_process(
    ctx: &mut Ctx<'_>,
    image_command: &[(ServiceName, Location)],
    envs: &BTreeMap<EnvName, Environment>,
) {
    let process: Vec<&str> = envs
        .iter()
        .filter(|(_, e)| e.runtime == RuntimeKind::Process)
        .map(|(n, _)| n.as_str())
        .collect();
    if process.is_empty() {
        return;
    }
    for (name, at) in image_command {
        let message = format!(
            "has no `run` command, but environment(s) {} use the process runtime, which has no \
             image command to fall back on; add `run:` to this service, or use runtime \
             docker/swarm there (`runtime: docker`; process is the default)",
            process.join(", ")
        );
        ctx.error(*at, &join("services", name.as_str()), message);
    }
}

pub(crate) fn services(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    at: Location,
    image_command: &mut Vec<(ServiceName, Location)>,
) -> Option<BTreeMap<ServiceName, Service>> {
    let named = named_entries(
        ctx,
        node,
        "services",
        "a mapping of service names to services",
        ServiceName::parse,
    );
    if is_empty_map(node) {
        ctx.error(
            at,
            "services",
            "must list at least one service, e.g. `web: { run: \"bin/web --port $PORT\" }`",
        );
        return None;
    }
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, key_at, value) in named {
        let path = join("services", name.as_str());
        match service(ctx, value, key_at, &path) {
            Some(s) => {
                if s.run.is_empty() {
                    image_command.push((name.clone(), key_at));
                }
                out.insert(name, s);
            }
            None => ok = false,
        }
    }
    (ok && !out.is_empty()).then_some(out)
}

fn service(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<Service> {
    let f = Fields::new(ctx, node, at, path, keys::SERVICE)?;
    let mut ok = true;
    // Absent: the image's own command (docker/swarm only, checked with the environments).
    let run = match f.get("run") {
        None => Some(""),
        Some(n) => nonempty(ctx, n, &f.path("run"), "the command that starts one replica"),
    };
    let build = optional_command(ctx, &f, "build", &mut ok);
    let health = match f.get("health") {
        None => None,
        Some(n) => {
            let p = f.path("health");
            let checked = parsed(ctx, n, &p, |s| {
                if !s.starts_with('/') {
                    Err(format!("health path {s:?} must start with '/', e.g. \"/health\""))
                } else if s.contains(char::is_whitespace) {
                    Err(format!("health path {s:?} must not contain spaces"))
                } else {
                    Ok(s.to_owned())
                }
            });
            ok &= checked.is_some();
            checked
        }
    };
    let health_timeout = opt(ctx, &f, "health_timeout", &mut ok, duration).unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    let replicas = opt(ctx, &f, "replicas", &mut ok, |ctx, n, p| count(ctx, n, p, 1)).unwrap_or(1);
    let public = opt(ctx, &f, "public", &mut ok, boolean).unwrap_or(false);
    let port = opt(ctx, &f, "port", &mut ok, |ctx, n, p| {
        integer(ctx, n, p, 1, 65_535).and_then(|v| u16::try_from(v).ok())
    });
    let dockerfile = opt(ctx, &f, "dockerfile", &mut ok, |ctx, n, p| {
        nonempty(ctx, n, p, "a path to a Dockerfile").map(str::to_owned)
    });
    let placement = match f.get("placement") {
        None => Placement::default(),
        Some(n) => {
            let read = placement(ctx, n, f.key_location("placement"), &f.path("placement"));
            ok &= read.is_some();
            read.unwrap_or_default()
        }
    };
    let run = run?.to_owned();
    ok.then_some(Service {
        build,
        run,
        health,
        health_timeout,
        replicas,
        public,
        port,
        dockerfile,
        placement,
    })
}

/// `placement: { constraints: [...], preferences: [...] }` of a service.
fn placement(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<Placement> {
    if is_empty_map(node) {
        return Some(Placement::default());
    }
    let f = Fields::new(ctx, node, at, path, keys::PLACEMENT)?;
    let mut ok = true;
    let mut read = |key: &str, what: &str, check: fn(&str) -> Result<String, String>| {
        let mut out = Vec::new();
        let Some(n) = f.get(key) else {
            return out;
        };
        let p = f.path(key);
        let Some(items) = list(ctx, n, &p, what) else {
            ok = false;
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            match parsed(ctx, item, &format!("{p}[{i}]"), check) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        out
    };
    let constraints = read(
        "constraints",
        "a list of Swarm constraints, e.g. [\"node.labels.zone==eu-1\"]",
        check_constraint,
    );
    let preferences = read(
        "preferences",
        "a list of Swarm preferences, e.g. [\"spread=node.labels.zone\"]",
        check_preference,
    );
    ok.then_some(Placement {
        constraints,
        preferences,
    })
}

/// `<attribute>==<value>` or `<attribute>!=<value>`, as `docker service create --constraint`.
pub(crate) fn check_constraint(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let op = if s.contains("==") { "==" } else { "!=" };
    let valid = s.len() <= 200
        && !s.chars().any(char::is_control)
        && s.split_once(op).is_some_and(|(k, v)| {
            let k = k.trim();
            !v.trim().is_empty() && (k.starts_with("node.") || k.starts_with("engine.labels."))
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a Swarm constraint; write <attribute>==<value> or <attribute>!=<value> \
             with a node.* or engine.labels.* attribute, e.g. \"node.labels.zone==eu-1\""
        ))
    }
}

/// `spread=<descriptor>`, as `docker service create --placement-pref`.
pub(crate) fn check_preference(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    match s.strip_prefix("spread=") {
        Some(d)
            if !d.is_empty()
                && d.len() <= 200
                && !d.contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "{raw:?} is not a Swarm placement preference; write spread=<attribute>, e.g. \
             \"spread=node.labels.zone\""
        )),
    }
}

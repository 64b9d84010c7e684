//! Environments: per-tier rules (which keys each tier takes), defaults, and
//! the cross-references between environments (`like:`, `requires:`) and to
//! services (`replicas:` overrides).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_saphyr::Location;

use super::build::{duration, is_empty_map, opt};
use super::extract::integer;
use super::extract::{Ctx, Fields, SNode, boolean, choice, count, join, list, named_entries, parsed, string};
use super::keys;
use super::types::{Autoscale, Environment, Migrations, OnHoldTimeout, RuntimeKind, Strategy, Tier};
use super::values::{check_branch, nearest};
use crate::{EnvName, ServiceName};

pub(crate) const TIERS: &[(&str, Tier)] = &[
    ("dev", Tier::Dev),
    ("stage", Tier::Stage),
    ("prod-like", Tier::ProdLike),
    ("prod", Tier::Prod),
    ("integration", Tier::Integration),
];
pub(crate) const STRATEGIES: &[(&str, Strategy)] = &[
    ("blue-green", Strategy::BlueGreen),
    ("rolling", Strategy::Rolling),
];
pub(crate) const MIGRATIONS: &[(&str, Migrations)] = &[
    ("switch", Migrations::Switch),
    ("hold", Migrations::Hold),
    ("hold-before-start", Migrations::HoldBeforeStart),
];
pub(crate) const ON_HOLD_TIMEOUT: &[(&str, OnHoldTimeout)] = &[
    ("continue", OnHoldTimeout::Continue),
    ("fail", OnHoldTimeout::Fail),
];
pub(crate) const RUNTIMES: &[(&str, RuntimeKind)] = &[
    ("process", RuntimeKind::Process),
    ("docker", RuntimeKind::Docker),
    ("swarm", RuntimeKind::Swarm),
];

/// Which tiers may use a tier-specific key, and why.
const TIER_KEYS: &[(&str, &[Tier], &str)] = &[
    (
        "like",
        &[Tier::ProdLike],
        "only a prod-like environment copies another one",
    ),
    (
        "ttl",
        &[Tier::ProdLike, Tier::Integration],
        "only prod-like and integration environments expire",
    ),
    (
        "max_active",
        &[Tier::Integration],
        "only integration environments are created per branch",
    ),
    (
        "branch",
        &[Tier::Dev, Tier::Stage, Tier::Prod],
        "its branch comes from elsewhere: a prod-like copy runs what its target runs, an integration environment gets its branch when it is created",
    ),
    (
        "requires",
        &[Tier::Dev, Tier::Stage, Tier::ProdLike, Tier::Prod],
        "an integration environment deploys its branch's commits as they come",
    ),
    (
        "autoscale",
        &[Tier::Prod, Tier::ProdLike],
        "dev, stage and integration environments have a fixed size; set `replicas` instead",
    ),
];

pub(crate) const DEFAULT_MAX_ACTIVE: u32 = 8;
pub(crate) const DEFAULT_PROD_LIKE_TTL: Duration = Duration::from_secs(72 * 3600);
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub(crate) const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// An environment before cross-references are resolved; `None` = not given.
struct Draft {
    name: EnvName,
    key_at: Location,
    env: Environment,
    like: Option<(String, Location)>,
    /// `requires:` as written (name, where); `None` = not given.
    requires: Option<Vec<(String, Location)>>,
    strategy_set: bool,
    runtime_set: bool,
}

pub(crate) fn environments(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    at: Location,
    services: &[ServiceName],
    public: &[ServiceName],
) -> Option<BTreeMap<EnvName, Environment>> {
    let named = named_entries(
        ctx,
        node,
        "environments",
        "a mapping of environment names to environments",
        EnvName::parse,
    );
    if is_empty_map(node) {
        ctx.error(
            at,
            "environments",
            "must list at least one environment, e.g. `dev: { tier: dev }`",
        );
        return None;
    }
    let mut ok = true;
    let mut drafts = Vec::new();
    let declared: Vec<String> = named.iter().map(|(n, _, _)| n.to_string()).collect();
    let mut hosts = Vec::new();
    for (name, key_at, value) in named {
        let mut found = Vec::new();
        match draft(ctx, name.clone(), key_at, value, services, public, &mut found) {
            Some(d) => drafts.push(d),
            None => ok = false,
        }
        hosts.extend(found.into_iter().map(|h| (name.clone(), h)));
    }
    ok &= super::hosts::unique(ctx, &hosts);
    ok &= resolve_like(ctx, &mut drafts, &declared, ok);
    ok &= resolve_requires(ctx, &mut drafts, &declared);
    ok.then(|| drafts.into_iter().map(|d| (d.name, d.env)).collect())
}

fn draft(
    ctx: &mut Ctx<'_>,
    name: EnvName,
    key_at: Location,
    node: &SNode,
    services: &[ServiceName],
    public: &[ServiceName],
    found_hosts: &mut Vec<super::hosts::HostAt>,
) -> Option<Draft> {
    let path = join("environments", name.as_str());
    let f = Fields::new(ctx, node, key_at, &path, keys::ENVIRONMENT)?;
    let mut ok = true;
    let tier = f
        .required(ctx, "tier", "one of dev, stage, prod-like, prod, integration")
        .and_then(|n| choice(ctx, n, &f.path("tier"), "tier", TIERS));
    if let Some(tier) = tier {
        for (key, tiers, why) in TIER_KEYS {
            if f.get(key).is_some() && !tiers.contains(&tier) {
                let article = if tier == Tier::Integration { "an" } else { "a" };
                let message = format!("{key:?} is not allowed on {article} {tier} environment: {why}");
                ctx.error(f.key_location(key), &f.path(key), message);
                ok = false;
            }
        }
    }
    let branch = opt(ctx, &f, "branch", &mut ok, |ctx, n, p| {
        parsed(ctx, n, p, |s| check_branch(s).map(|()| s.to_owned()))
    });
    let approval = opt(ctx, &f, "approval", &mut ok, boolean);
    let approval_for_rollback = opt(ctx, &f, "approval_for_rollback", &mut ok, boolean);
    let auto_deploy = opt(ctx, &f, "auto_deploy", &mut ok, boolean).unwrap_or(false);
    let strategy = opt(ctx, &f, "strategy", &mut ok, |ctx, n, p| {
        choice(ctx, n, p, "strategy", STRATEGIES)
    });
    let runtime = opt(ctx, &f, "runtime", &mut ok, |ctx, n, p| {
        choice(ctx, n, p, "runtime", RUNTIMES)
    });
    let ttl = opt(ctx, &f, "ttl", &mut ok, duration);
    let like = f.get("like").and_then(|n| {
        let s = string(ctx, n, &f.path("like"));
        ok &= s.is_some();
        s.map(|s| (s.to_owned(), n.referenced))
    });
    let max_active = opt(ctx, &f, "max_active", &mut ok, |ctx, n, p| count(ctx, n, p, 1));
    let requires = opt(ctx, &f, "requires", &mut ok, |ctx, n, p| {
        let items = list(ctx, n, p, "a list of environment names, e.g. [staging]")?;
        let mut out = Vec::new();
        let mut good = true;
        for (i, item) in items.iter().enumerate() {
            match string(ctx, item, &format!("{p}[{i}]")) {
                Some(s) => out.push((s.to_owned(), item.referenced)),
                None => good = false,
            }
        }
        good.then_some(out)
    });
    let autoscale = opt(ctx, &f, "autoscale", &mut ok, |ctx, n, p| {
        autoscale(ctx, n, f.key_location("autoscale"), p)
    });
    let replicas = opt(ctx, &f, "replicas", &mut ok, |ctx, n, p| {
        replicas(ctx, n, p, services)
    })
    .unwrap_or_default();
    let ports = opt(ctx, &f, "ports", &mut ok, |ctx, n, p| {
        ports(ctx, n, p, services, public)
    })
    .unwrap_or_default();
    let hosts = opt(ctx, &f, "hosts", &mut ok, |ctx, n, p| {
        super::hosts::hosts(ctx, n, p, services, public, found_hosts)
    })
    .unwrap_or_default();
    let hook_timeout = opt(ctx, &f, "hook_timeout", &mut ok, duration).unwrap_or(DEFAULT_HOOK_TIMEOUT);
    let approval_timeout =
        opt(ctx, &f, "approval_timeout", &mut ok, duration).unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
    let migrations = opt(ctx, &f, "migrations", &mut ok, |ctx, n, p| {
        choice(ctx, n, p, "migrations", MIGRATIONS)
    });
    let hold_timeout = opt(ctx, &f, "hold_timeout", &mut ok, duration).unwrap_or(DEFAULT_HOLD_TIMEOUT);
    let on_hold_timeout = opt(ctx, &f, "on_hold_timeout", &mut ok, |ctx, n, p| {
        choice(ctx, n, p, "on_hold_timeout", ON_HOLD_TIMEOUT)
    });
    let maintenance_page = opt(ctx, &f, "maintenance_page", &mut ok, |ctx, n, p| {
        let raw = string(ctx, n, p)?.trim().to_owned();
        if raw.is_empty() {
            ctx.error(
                n.referenced,
                p,
                "maintenance_page is empty: give the path of an HTML file",
            );
            return None;
        }
        let base = ctx.file().parent().unwrap_or(std::path::Path::new("."));
        Some(base.join(raw))
    });

    let tier = tier?;
    // An integration template's hosts are patterns (`{branch}.review.example.com`), expanded
    // per environment made from it; every other environment's are names.
    let integration = tier == Tier::Integration;
    for (service, names) in &hosts {
        for name in names {
            if super::hosts::is_pattern(name) != integration {
                let why = if integration {
                    format!(
                        "{name:?}: an integration environment's hosts are per branch; write {{branch}}.{name} (the branch name becomes that label)"
                    )
                } else {
                    format!(
                        "{name:?}: {{branch}} patterns are for integration environments (tier: integration) only; list the names"
                    )
                };
                ctx.error(
                    f.key_location("hosts"),
                    &join(&f.path("hosts"), service.as_str()),
                    why,
                );
                return None;
            }
        }
    }
    if !ok {
        return None;
    }
    let approval = approval.unwrap_or(tier == Tier::Prod);
    let env = Environment {
        tier,
        branch,
        approval,
        approval_for_rollback: approval_for_rollback.unwrap_or(approval),
        auto_deploy,
        strategy: strategy.unwrap_or(Strategy::BlueGreen),
        runtime: runtime.unwrap_or(RuntimeKind::Process),
        ttl: ttl.or((tier == Tier::ProdLike).then_some(DEFAULT_PROD_LIKE_TTL)),
        like: None,
        max_active: max_active.or((tier == Tier::Integration).then_some(DEFAULT_MAX_ACTIVE)),
        autoscale,
        replicas,
        hook_timeout,
        approval_timeout,
        ports,
        hosts,
        requires: Vec::new(),
        migrations: migrations.unwrap_or(Migrations::Switch),
        hold_timeout,
        on_hold_timeout: on_hold_timeout.unwrap_or(OnHoldTimeout::Continue),
        maintenance_page,
    };
    Some(Draft {
        name,
        key_at,
        env,
        like,
        requires,
        strategy_set: strategy.is_some(),
        runtime_set: runtime.is_some(),
    })
}

fn autoscale(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<Autoscale> {
    let f = Fields::new(ctx, node, at, path, keys::AUTOSCALE)?;
    let min = f
        .required(ctx, "min", "the fewest replicas, at least 1")
        .and_then(|n| count(ctx, n, &f.path("min"), 1));
    let max = f
        .required(ctx, "max", "the most replicas, at least min")
        .and_then(|n| count(ctx, n, &f.path("max"), 1));
    let mut ok = true;
    let target = opt(ctx, &f, "target_rps_per_replica", &mut ok, |ctx, n, p| {
        count(ctx, n, p, 1)
    });
    let (min, max) = (min?, max?);
    if min > max {
        let message = format!("min ({min}) is greater than max ({max}); give 1 <= min <= max");
        ctx.error(f.key_location("min"), path, message);
        return None;
    }
    ok.then_some(Autoscale {
        min,
        max,
        target_rps_per_replica: target,
    })
}

fn replicas(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    path: &str,
    services: &[ServiceName],
) -> Option<BTreeMap<ServiceName, u32>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    for (service, key_at, value) in named_entries(
        ctx,
        node,
        path,
        "a mapping of service names to replica counts",
        ServiceName::parse,
    ) {
        let p = join(path, service.as_str());
        if !services.is_empty() && !services.contains(&service) {
            let hint = nearest(service.as_str(), &names)
                .map(|n| format!(" did you mean {n:?}?"))
                .unwrap_or_default();
            let message = format!(
                "unknown service {:?};{hint} services are {}",
                service.as_str(),
                names.join(", ")
            );
            ctx.error(key_at, &p, message);
            ok = false;
            continue;
        }
        match count(ctx, value, &p, 1) {
            Some(n) => {
                out.insert(service, n);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `ports: { <public service>: <port> }`: a fixed router port per service.
fn ports(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    path: &str,
    services: &[ServiceName],
    public: &[ServiceName],
) -> Option<BTreeMap<ServiceName, u16>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    let names: Vec<&str> = public.iter().map(ServiceName::as_str).collect();
    for (service, key_at, value) in named_entries(
        ctx,
        node,
        path,
        "a mapping of public service names to router ports",
        ServiceName::parse,
    ) {
        let p = join(path, service.as_str());
        if !services.is_empty() && !public.contains(&service) {
            let why = if services.contains(&service) {
                "is not public (`public: true`)"
            } else {
                "is not a service"
            };
            let message = format!(
                "{:?} {why}; the router serves public services only: {}",
                service.as_str(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
            ctx.error(key_at, &p, message);
            ok = false;
            continue;
        }
        match integer(ctx, value, &p, 1, 65_535).and_then(|v| u16::try_from(v).ok()) {
            Some(port) => {
                out.insert(service, port);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Resolves `like:` on prod-like environments and copies what they inherit
/// from their target (strategy, runtime, autoscale, replica overrides).
///
/// `declared` names every environment, including those whose own errors kept
/// them out of `drafts`; references to those are not reported a second time.
fn resolve_like(ctx: &mut Ctx<'_>, drafts: &mut [Draft], declared: &[String], drafts_ok: bool) -> bool {
    let mut ok = true;
    let prods: Vec<EnvName> = drafts
        .iter()
        .filter(|d| d.env.tier == Tier::Prod)
        .map(|d| d.name.clone())
        .collect();
    let all = declared;
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    for i in 0..drafts.len() {
        if drafts[i].env.tier != Tier::ProdLike {
            continue;
        }
        let path = join("environments", drafts[i].name.as_str());
        let target = match drafts[i].like.clone() {
            Some((raw, at)) => {
                let like_path = join(&path, "like");
                let Some(target) = drafts.iter().find(|d| d.name.as_str() == raw) else {
                    ok = false;
                    if all.contains(&raw) {
                        continue; // declared, but invalid: already reported
                    }
                    let hint = nearest(&raw, &all_refs)
                        .map(|n| format!(" did you mean {n:?}?"))
                        .unwrap_or_default();
                    let message = format!(
                        "environment {raw:?} does not exist;{hint} environments are {}",
                        all.join(", ")
                    );
                    ctx.error(at, &like_path, message);
                    continue;
                };
                if target.env.tier != Tier::Prod {
                    let message = format!(
                        "environment {raw:?} is tier {}; a prod-like environment copies a tier prod environment",
                        target.env.tier
                    );
                    ctx.error(at, &like_path, message);
                    ok = false;
                    continue;
                }
                target.name.clone()
            }
            None if prods.len() == 1 && drafts_ok => prods[0].clone(),
            None if !drafts_ok => {
                ok = false; // the missing target may be among the invalid ones
                continue;
            }
            None => {
                let message = if prods.is_empty() {
                    "missing required key \"like\": a prod-like environment copies a tier prod environment, and there is none".to_owned()
                } else {
                    format!(
                        "missing required key \"like\" (one of {})",
                        prods.iter().map(EnvName::as_str).collect::<Vec<_>>().join(", ")
                    )
                };
                ctx.error(drafts[i].key_at, &path, message);
                ok = false;
                continue;
            }
        };
        let source = drafts.iter().find(|d| d.name == target).map(|d| d.env.clone());
        let draft = &mut drafts[i];
        if let Some(source) = source {
            if !draft.strategy_set {
                draft.env.strategy = source.strategy;
            }
            if !draft.runtime_set {
                draft.env.runtime = source.runtime;
            }
            if draft.env.autoscale.is_none() {
                draft.env.autoscale = source.autoscale;
            }
            if draft.env.replicas.is_empty() {
                draft.env.replicas = source.replicas;
            }
        }
        draft.env.like = Some(target);
    }
    ok
}

/// Resolves `requires:` (every name a declared, deployable environment other
/// than itself) and its default: a prod environment that does not say
/// requires every stage environment, so only what passed staging reaches
/// production.
fn resolve_requires(ctx: &mut Ctx<'_>, drafts: &mut [Draft], declared: &[String]) -> bool {
    let mut ok = true;
    let all_refs: Vec<&str> = declared.iter().map(String::as_str).collect();
    let stages: Vec<EnvName> = drafts
        .iter()
        .filter(|d| d.env.tier == Tier::Stage)
        .map(|d| d.name.clone())
        .collect();
    for i in 0..drafts.len() {
        let Some(written) = drafts[i].requires.clone() else {
            if drafts[i].env.tier == Tier::Prod {
                drafts[i].env.requires = stages.clone();
            }
            continue;
        };
        let path = join(&join("environments", drafts[i].name.as_str()), "requires");
        let mut names = Vec::new();
        for (n, (raw, at)) in written.iter().enumerate() {
            let item_path = format!("{path}[{n}]");
            let Some(target) = drafts.iter().find(|d| d.name.as_str() == raw) else {
                ok = false;
                if declared.contains(raw) {
                    continue; // declared, but invalid: already reported
                }
                let hint = nearest(raw, &all_refs)
                    .map(|n| format!(" did you mean {n:?}?"))
                    .unwrap_or_default();
                let message = format!(
                    "environment {raw:?} does not exist;{hint} environments are {}",
                    declared.join(", ")
                );
                ctx.error(*at, &item_path, message);
                continue;
            };
            let why = if target.name == drafts[i].name {
                Some("an environment cannot require itself; name the environments a version must pass first")
            } else if target.env.tier == Tier::Integration {
                Some("it is an integration template, which is never deployed itself")
            } else {
                None
            };
            if let Some(why) = why {
                ctx.error(*at, &item_path, format!("cannot require {raw:?}: {why}"));
                ok = false;
                continue;
            }
            if !names.contains(&target.name) {
                names.push(target.name.clone());
            }
        }
        drafts[i].env.requires = names;
    }
    ok
}

//! `environments.<env>.hosts`: the public host names of an environment's services, e.g.
//! `hosts: { storefront: [www.example.com, example.com], backoffice: [admin.example.com] }`.
//!
//! A name is lower-cased DNS labels (`[a-z0-9-]`, not starting or ending with `-`, at most 63
//! bytes each, 253 in all, at least two labels), optionally behind one `*.` wildcard label that
//! stands for exactly one label (as in TLS certificates). Only public services can have hosts,
//! and a name belongs to one environment and service: a second use anywhere is refused with its
//! file:line:column. The `.localhost` names (`<service>.<env>.<app>.localhost`) keep working
//! beside these.
//!
//! An integration template's hosts are patterns whose first label is `{branch}`
//! (`{branch}.review.example.com`): each environment made from it gets that name with the
//! branch as a DNS label ([`branch_label`]: `feature/Login_2` → `feature-login-2`), pushed to
//! the router by the engine when the environment is created, removed when it goes. The
//! pattern itself is unique like a name (two templates cannot share one).
//!
//! A name may end in a path prefix (`example.com/shop`): requests to that host whose path is
//! the prefix or continues it after a `/` go to that service, the longest prefix winning, and
//! the bare name takes the rest. The prefix is not stripped (the application sees the whole
//! path; see `cutover-router`'s `hosts`). Prefixes are `/`-separated segments of letters,
//! digits, `-`, `.`, `_` and `~` (no `.` or `..` segment, no query); certificates and ACME take
//! names only.

use std::collections::BTreeMap;

use serde_saphyr::Location;

use super::extract::{Ctx, SNode, join, list, named_entries, parsed};
use crate::{EnvName, ServiceName};

/// One host as written, with where.
pub(crate) struct HostAt {
    pub(crate) name: String,
    pub(crate) at: Location,
    pub(crate) path: String,
}

/// Parses `hosts:`; the hosts with their locations go to [`unique`] afterwards.
pub(crate) fn hosts(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    path: &str,
    services: &[ServiceName],
    public: &[ServiceName],
    found: &mut Vec<HostAt>,
) -> Option<BTreeMap<ServiceName, Vec<String>>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    for (service, key_at, value) in named_entries(
        ctx,
        node,
        path,
        "a mapping of public service names to lists of host names",
        ServiceName::parse,
    ) {
        let p = join(path, service.as_str());
        if !services.is_empty() && !public.contains(&service) {
            let why = if services.contains(&service) {
                "is not public (`public: true`); only public services are routed"
            } else {
                "is not a service"
            };
            ctx.error(key_at, &p, format!("{:?} {why}", service.as_str()));
            ok = false;
            continue;
        }
        let Some(items) = list(ctx, value, &p, "a list of host names, e.g. [www.example.com]") else {
            ok = false;
            continue;
        };
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            match parsed(ctx, item, &ip, check_host_route) {
                Some(name) => {
                    found.push(HostAt {
                        name: name.clone(),
                        at: item.referenced,
                        path: ip,
                    });
                    names.push(name);
                }
                None => ok = false,
            }
        }
        out.insert(service, names);
    }
    ok.then_some(out)
}

/// The first label of a host pattern, replaced by the branch's label.
pub const BRANCH_LABEL: &str = "{branch}";

/// Whether a (checked) host is a `{branch}.` pattern.
pub fn is_pattern(host: &str) -> bool {
    host.starts_with("{branch}.")
}

/// A branch name as one DNS label: lower-case ASCII letters and digits, every other run of
/// characters one `-`, none at either end, at most 63 bytes (`feature/Login_2` →
/// `feature-login-2`). `Err` when nothing is left (a branch of only punctuation).
pub fn branch_label(branch: &str) -> Result<String, String> {
    let mut out = String::new();
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    let label = out.trim_end_matches('-').to_owned();
    if label.is_empty() {
        return Err(format!(
            "branch {branch:?} has no letter or digit to make a host name label of; rename the branch"
        ));
    }
    Ok(label)
}

/// `pattern` (`{branch}.review.example.com`) for the branch label `label`; a name (no
/// pattern) is returned as it is.
pub fn expand_host(pattern: &str, label: &str) -> String {
    match pattern.strip_prefix(BRANCH_LABEL) {
        Some(rest) => format!("{label}{rest}"),
        None => pattern.to_owned(),
    }
}

/// A host name (or wildcard or pattern, see [`check_host`]) with an optional path prefix:
/// `Example.com/Shop/` → `example.com/Shop` (the host lower-cased, the path as written).
pub(crate) fn check_host_route(raw: &str) -> Result<String, String> {
    let raw_trimmed = raw.trim();
    let Some(i) = raw_trimmed.find('/') else {
        return check_host(raw_trimmed);
    };
    let (name, path) = raw_trimmed.split_at(i);
    if name.contains(':') {
        return Err(format!(
            "{raw:?} is not a host name: give the name only, without scheme or port, then an optional path (e.g. example.com/shop)"
        ));
    }
    let name = check_host(name)?;
    let prefix = path.trim_end_matches('/');
    let ok = prefix.split('/').skip(1).all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    });
    if !ok {
        return Err(format!(
            "{raw:?}: the path prefix must be /-separated segments of letters, digits, '-', '.', '_' or '~' (e.g. example.com/shop), without a query, '..' or %-escapes"
        ));
    }
    Ok(format!("{name}{prefix}"))
}

/// A host name or `*.` wildcard, lower-cased (see the module docs); or a `{branch}.` pattern.
pub(crate) fn check_host(raw: &str) -> Result<String, String> {
    let lower = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("{branch}.") {
        // The rest is a name of its own (at least two labels), so the expansion is one too.
        let rest = check_host(rest)
            .map_err(|e| format!("{raw:?}: after {{branch}}. a host name must follow ({e})"))?;
        if rest.starts_with("*.") || rest.contains('{') {
            return Err(format!(
                "{raw:?}: a pattern has {{branch}} as its first label only, and no wildcard"
            ));
        }
        return Ok(format!("{{branch}}.{rest}"));
    }
    if lower.contains('{') || lower.contains('}') {
        return Err(format!(
            "{raw:?}: the only host pattern is {{branch}} as the first label (e.g. {{branch}}.review.example.com)"
        ));
    }
    if lower.contains('/') || lower.contains(':') {
        return Err(format!(
            "{raw:?} is not a host name: give the name only, without scheme, port or path (e.g. www.example.com)"
        ));
    }
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if lower.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!(
            "{raw:?} is not a host name: expected dot-separated labels of a-z, 0-9 and '-' (at least two, e.g. www.example.com), optionally after one \"*.\""
        ));
    }
    if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{raw:?} is an IP address, not a host name"));
    }
    Ok(lower)
}

/// Every host name is used once across all environments and services.
pub(crate) fn unique(ctx: &mut Ctx<'_>, found: &[(EnvName, HostAt)]) -> bool {
    let mut seen: BTreeMap<&str, (&EnvName, &str)> = BTreeMap::new();
    let mut ok = true;
    for (env, h) in found {
        match seen.get(h.name.as_str()) {
            Some((first_env, first_path)) => {
                let whose = if *first_env == env {
                    "this environment".to_owned()
                } else {
                    format!("environment {first_env}")
                };
                ctx.error(
                    h.at,
                    &h.path,
                    format!(
                        "host {:?} is already used by {whose} ({first_path}); a host name routes to one environment and service",
                        h.name
                    ),
                );
                ok = false;
            }
            None => {
                seen.insert(&h.name, (env, &h.path));
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(check_host("WWW.Example.com."), Ok("www.example.com".into()));
        assert_eq!(check_host("*.example.com"), Ok("*.example.com".into()));
        assert!(check_host("example").is_err());
        assert!(check_host("*.*.example.com").is_err());
        assert!(check_host("a..b").is_err());
        assert!(check_host("-a.example.com").is_err());
        assert!(check_host("https://www.example.com").is_err());
        assert!(check_host("www.example.com:443").is_err());
        assert!(check_host("10.0.0.1").is_err());
        assert_eq!(
            check_host("{branch}.Review.example.com"),
            Ok("{branch}.review.example.com".into())
        );
        assert!(check_host("www.{branch}.example.com").is_err());
        assert!(check_host("{branch}.com").is_err());
        assert!(check_host("{branch}.*.example.com").is_err());
        assert!(check_host(&format!("{}.com", "a".repeat(64))).is_err());
    }

    fn parse(envs: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "app: a\nservices:\n  web: {{ run: x, public: true }}\n  admin: {{ run: y, public: true }}\n  worker: {{ run: z }}\nenvironments:\n{envs}"
        );
        crate::config::parse(&text, std::path::Path::new("cutover.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn hosts_parse_and_conflicts_point_at_the_second_use() {
        let cfg = parse(
            "  prod: { tier: prod, hosts: { web: [www.example.com, Example.com], admin: [\"*.admin.example.com\"] } }\n  stage: { tier: stage, hosts: { web: [staging.example.com] } }\n",
        )
        .unwrap();
        let prod = &cfg.environments[&EnvName::parse("prod").unwrap()];
        assert_eq!(
            prod.hosts[&ServiceName::parse("web").unwrap()],
            vec!["www.example.com".to_owned(), "example.com".to_owned()]
        );
        let e = parse(
            "  prod: { tier: prod, hosts: { web: [www.example.com] } }\n  stage:\n    tier: stage\n    hosts: { web: [a.example.com, WWW.example.com] }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("cutover.yml:10:35: environments.stage.hosts.web[1]: host \"www.example.com\" is already used by environment prod (environments.prod.hosts.web[0])"),
            "{e}"
        );
        let e = parse("  prod: { tier: prod, hosts: { worker: [w.example.com] } }\n").unwrap_err();
        assert!(e.contains("is not public"), "{e}");
        let e = parse("  prod: { tier: prod, hosts: { web: [a.example.com], admin: [a.example.com] } }\n")
            .unwrap_err();
        assert!(e.contains("already used by this environment"), "{e}");
        let e = parse("  review: { tier: integration, hosts: { web: [r.example.com] } }\n").unwrap_err();
        assert!(e.contains("{branch}.r.example.com"), "{e}");
        let e = parse("  prod: { tier: prod, hosts: { web: [\"{branch}.example.com\"] } }\n").unwrap_err();
        assert!(
            e.contains("integration environments (tier: integration) only"),
            "{e}"
        );
        let cfg =
            parse("  review: { tier: integration, hosts: { web: [\"{branch}.review.example.com\"] } }\n")
                .unwrap();
        let review = &cfg.environments[&EnvName::parse("review").unwrap()];
        assert_eq!(
            review.hosts[&ServiceName::parse("web").unwrap()],
            vec!["{branch}.review.example.com".to_owned()]
        );
    }

    #[test]
    fn path_prefixes() {
        assert_eq!(
            check_host_route("Example.com/shop/"),
            Ok("example.com/shop".into())
        );
        assert_eq!(check_host_route("example.com/"), Ok("example.com".into()));
        assert_eq!(
            check_host_route("{branch}.review.example.com/api"),
            Ok("{branch}.review.example.com/api".into())
        );
        assert!(
            check_host_route("example.com/a/../b")
                .unwrap_err()
                .contains("path prefix")
        );
        assert!(check_host_route("example.com/a?b=1").is_err());
        assert!(check_host_route("example.com:80/a").is_err());
        // Certificates take names only.
        assert!(check_host("example.com/shop").is_err());
        let cfg =
            parse("  prod: { tier: prod, hosts: { web: [example.com], admin: [example.com/shop/admin] } }\n")
                .unwrap();
        let prod = &cfg.environments[&EnvName::parse("prod").unwrap()];
        assert_eq!(
            prod.hosts[&ServiceName::parse("admin").unwrap()],
            vec!["example.com/shop/admin".to_owned()]
        );
        let e =
            parse("  prod: { tier: prod, hosts: { web: [example.com/shop], admin: [example.com/shop/] } }\n")
                .unwrap_err();
        assert!(e.contains("already used"), "{e}");
    }

    #[test]
    fn branch_labels() {
        assert_eq!(branch_label("feature/Login_2"), Ok("feature-login-2".into()));
        assert_eq!(branch_label("--Fix--#12--"), Ok("fix-12".into()));
        assert_eq!(branch_label("ünïcode/ß"), Ok("n-code".into()));
        assert!(branch_label("///").is_err());
        let long = branch_label(&format!("{}-x", "a".repeat(62))).unwrap();
        assert_eq!(long, "a".repeat(62), "63 bytes at most, no trailing '-'");
        assert_eq!(
            expand_host("{branch}.review.example.com", "feature-login-2"),
            "feature-login-2.review.example.com"
        );
        assert_eq!(expand_host("www.example.com", "x"), "www.example.com");
    }
}

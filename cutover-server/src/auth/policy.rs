//! The one table of who may call what: every API route (method and matched
//! path) maps to a [`Rule`] saying which role it needs, and on which
//! environment. The middleware in `auth` applies it; handlers check nothing.
//!
//! A route missing from the table needs admin on every environment (fail
//! closed), so a new route is unusable until it gets a line here.

use axum::http::Method;
use cutover_core::Role;

/// Where the environment of a request comes from, and the role it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token: health checks and Prometheus scrapes.
    Open,
    /// Any valid token (e.g. "who am I").
    Authenticated,
    /// `role` on the `{env}` of the path.
    PathEnv(Role),
    /// `role` on at least one environment; lists are filtered to what the
    /// token may see.
    AnyEnv(Role),
    /// `role` as the token's default, i.e. on every environment (`*`).
    Everywhere(Role),
    /// On the `{env}` of the path: `prod` on a `prod`-tier environment, `other` elsewhere.
    PathEnvByTier { prod: Role, other: Role },
    /// `role` on the environment of pipeline run `{id}`.
    Run(Role),
    /// `role` on the environment of scheduler job run `{id}`.
    JobRun(Role),
    /// `role` on the environment of scale request `{id}`.
    ScaleRequest(Role),
    /// A parameter key (`{*key}`): reading needs viewer, writing deployer, on
    /// the environment whose prefix holds it; outside every prefix, reading
    /// needs viewer somewhere and writing admin everywhere.
    Param { write: bool },
    /// `?prefix=`: viewer on the prefix's environment; a wider prefix needs
    /// viewer somewhere and the list is filtered.
    ParamList,
    /// `?env=`: viewer on it; without, viewer somewhere and the list is filtered.
    RunList,
    /// Body `{from, to}`: deployer on `to` and viewer on `from`; with `"flags": true` onto a
    /// production-tier `to`, approver on `to`.
    Promotion,
}

/// The rule for a request; `route` is axum's matched path (e.g.
/// `/api/v1/environments/{env}/releases`).
pub fn rule(method: &Method, route: &str) -> Rule {
    use Role::{Admin, Approver, Deployer, Viewer};
    // axum answers HEAD with the GET handler (without the body): the same rule applies.
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let put = *method == Method::PUT;
    match route {
        "/api/v1/health" | "/metrics" | "/api/v1/openapi.json" if get => Rule::Open,
        // The git host's push webhook is authenticated by its signature (cutover-engine's
        // `source_hook`), not by a bearer token.
        "/api/v1/hooks/git" if post => Rule::Open,
        "/api/v1/whoami" if get => Rule::Authenticated,
        "/api/v1/config" | "/api/v1/environments" if get => Rule::AnyEnv(Viewer),
        // Filtered per event by what the token may view.
        "/api/v1/events" if get => Rule::AnyEnv(Viewer),
        "/api/v1/environments/{env}"
        | "/api/v1/environments/{env}/versions"
        | "/api/v1/environments/{env}/status"
        | "/api/v1/environments/{env}/services/{service}/logs"
        | "/api/v1/environments/{env}/scheduler"
        | "/api/v1/environments/{env}/scheduler/runs"
            if get =>
        {
            Rule::PathEnv(Viewer)
        }
        "/api/v1/environments/{env}/releases"
        | "/api/v1/environments/{env}/rollback"
        | "/api/v1/environments/{env}/scheduler/suspend"
        | "/api/v1/environments/{env}/scheduler/resume"
        | "/api/v1/environments/{env}/scheduler/jobs/{job}/run"
            if post =>
        {
            Rule::PathEnv(Deployer)
        }
        "/api/v1/environments/{env}/services/{service}/scale" if post => Rule::PathEnv(Deployer),
        "/api/v1/environments/{env}/flags" if get => Rule::PathEnv(Viewer),
        "/api/v1/environments/{env}/flags/{name}" if put => Rule::PathEnv(Deployer),
        "/api/v1/environments/{env}/maintenance" if get => Rule::PathEnv(Viewer),
        // Maintenance takes an environment away from its users: on production that is an
        // approver's decision, elsewhere a deployer's.
        "/api/v1/environments/{env}/maintenance" if put => Rule::PathEnvByTier {
            prod: Approver,
            other: Deployer,
        },
        // An integration environment is made from a template for a branch: any deployer may
        // make one, and remove one (they are short-lived and carry no production data).
        "/api/v1/environments" if post => Rule::AnyEnv(Deployer),
        "/api/v1/environments/{env}" if *method == Method::DELETE => Rule::AnyEnv(Deployer),
        // The list is filtered to the environments the token may see.
        "/api/v1/scale-requests" if get => Rule::AnyEnv(Viewer),
        // "A scale change on a fixed-size environment is a change request that an
        // administrator approves" (SPEC §4).
        "/api/v1/scale-requests/{id}/approve" | "/api/v1/scale-requests/{id}/reject" if post => {
            Rule::ScaleRequest(Admin)
        }
        "/api/v1/promotions" if post => Rule::Promotion,
        // A fetch changes no environment; any deployer may bring the mirror up to date.
        "/api/v1/source/fetch" if post => Rule::AnyEnv(Deployer),
        "/api/v1/runs" if get => Rule::RunList,
        "/api/v1/runs/{id}" | "/api/v1/runs/{id}/logs" if get => Rule::Run(Viewer),
        "/api/v1/runs/{id}/cancel" if post => Rule::Run(Deployer),
        "/api/v1/runs/{id}/approve" | "/api/v1/runs/{id}/reject" if post => Rule::Run(Approver),
        "/api/v1/job-runs/{id}/logs" if get => Rule::JobRun(Viewer),
        "/api/v1/params" if get => Rule::ParamList,
        "/api/v1/params/{*key}" | "/api/v1/history/{*key}" if get => Rule::Param { write: false },
        "/api/v1/params/{*key}" if put => Rule::Param { write: true },
        // The audit log spans every environment and the tokens.
        "/api/v1/audit" if get => Rule::Everywhere(Viewer),
        "/api/v1/tokens" if get || post => Rule::Everywhere(Admin),
        "/api/v1/tokens/{name}/revoke" if post => Rule::Everywhere(Admin),
        "/api/v1/system" if get => Rule::AnyEnv(Viewer),
        "/api/v1/system/stop" | "/api/v1/system/upgrade" | "/api/v1/config/reload" if post => {
            Rule::Everywhere(Admin)
        }
        _ => Rule::Everywhere(Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::{Admin, Approver, Deployer, Viewer};

    #[test]
    fn every_route_has_its_rule() {
        let g = Method::GET;
        let p = Method::POST;
        let cases: &[(&Method, &str, Rule)] = &[
            (&g, "/api/v1/health", Rule::Open),
            (&g, "/metrics", Rule::Open),
            (&g, "/api/v1/openapi.json", Rule::Open),
            (
                &p,
                "/api/v1/environments/{env}/services/{service}/scale",
                Rule::PathEnv(Deployer),
            ),
            (&p, "/api/v1/environments", Rule::AnyEnv(Deployer)),
            (&g, "/api/v1/environments/{env}/flags", Rule::PathEnv(Viewer)),
            (
                &g,
                "/api/v1/environments/{env}/maintenance",
                Rule::PathEnv(Viewer),
            ),
            (
                &Method::PUT,
                "/api/v1/environments/{env}/maintenance",
                Rule::PathEnvByTier {
                    prod: Approver,
                    other: Deployer,
                },
            ),
            (
                &Method::PUT,
                "/api/v1/environments/{env}/flags/{name}",
                Rule::PathEnv(Deployer),
            ),
            (
                &Method::DELETE,
                "/api/v1/environments/{env}",
                Rule::AnyEnv(Deployer),
            ),
            (&g, "/api/v1/scale-requests", Rule::AnyEnv(Viewer)),
            (
                &p,
                "/api/v1/scale-requests/{id}/approve",
                Rule::ScaleRequest(Admin),
            ),
            (
                &p,
                "/api/v1/scale-requests/{id}/reject",
                Rule::ScaleRequest(Admin),
            ),
            (&g, "/api/v1/whoami", Rule::Authenticated),
            (&g, "/api/v1/config", Rule::AnyEnv(Viewer)),
            (&g, "/api/v1/environments", Rule::AnyEnv(Viewer)),
            (&g, "/api/v1/events", Rule::AnyEnv(Viewer)),
            (&g, "/api/v1/environments/{env}", Rule::PathEnv(Viewer)),
            (&g, "/api/v1/environments/{env}/versions", Rule::PathEnv(Viewer)),
            (&g, "/api/v1/environments/{env}/status", Rule::PathEnv(Viewer)),
            (
                &g,
                "/api/v1/environments/{env}/services/{service}/logs",
                Rule::PathEnv(Viewer),
            ),
            (&g, "/api/v1/environments/{env}/scheduler", Rule::PathEnv(Viewer)),
            (
                &g,
                "/api/v1/environments/{env}/scheduler/runs",
                Rule::PathEnv(Viewer),
            ),
            (&p, "/api/v1/environments/{env}/releases", Rule::PathEnv(Deployer)),
            (&p, "/api/v1/environments/{env}/rollback", Rule::PathEnv(Deployer)),
            (
                &p,
                "/api/v1/environments/{env}/scheduler/suspend",
                Rule::PathEnv(Deployer),
            ),
            (
                &p,
                "/api/v1/environments/{env}/scheduler/resume",
                Rule::PathEnv(Deployer),
            ),
            (
                &p,
                "/api/v1/environments/{env}/scheduler/jobs/{job}/run",
                Rule::PathEnv(Deployer),
            ),
            (&p, "/api/v1/promotions", Rule::Promotion),
            (&g, "/api/v1/runs", Rule::RunList),
            (&g, "/api/v1/runs/{id}", Rule::Run(Viewer)),
            (&g, "/api/v1/runs/{id}/logs", Rule::Run(Viewer)),
            (&p, "/api/v1/runs/{id}/cancel", Rule::Run(Deployer)),
            (&p, "/api/v1/runs/{id}/approve", Rule::Run(Approver)),
            (&p, "/api/v1/runs/{id}/reject", Rule::Run(Approver)),
            (&g, "/api/v1/job-runs/{id}/logs", Rule::JobRun(Viewer)),
            (&g, "/api/v1/params", Rule::ParamList),
            (&g, "/api/v1/params/{*key}", Rule::Param { write: false }),
            (&g, "/api/v1/history/{*key}", Rule::Param { write: false }),
            (&Method::PUT, "/api/v1/params/{*key}", Rule::Param { write: true }),
            (&g, "/api/v1/audit", Rule::Everywhere(Viewer)),
            (&g, "/api/v1/tokens", Rule::Everywhere(Admin)),
            (&p, "/api/v1/tokens", Rule::Everywhere(Admin)),
            (&p, "/api/v1/tokens/{name}/revoke", Rule::Everywhere(Admin)),
        ];
        for (method, route, want) in cases {
            assert_eq!(rule(method, route), *want, "{method} {route}");
        }
    }

    #[test]
    fn head_is_decided_like_get() {
        for route in [
            "/api/v1/health",
            "/api/v1/environments",
            "/api/v1/runs/{id}",
            "/api/v1/audit",
        ] {
            assert_eq!(rule(&Method::HEAD, route), rule(&Method::GET, route), "{route}");
        }
    }

    #[test]
    fn unknown_routes_and_methods_fail_closed() {
        assert_eq!(rule(&Method::GET, "/api/v1/new-thing"), Rule::Everywhere(Admin));
        assert_eq!(
            rule(&Method::DELETE, "/api/v1/runs/{id}"),
            Rule::Everywhere(Admin)
        );
        assert_eq!(
            rule(&Method::GET, "/api/v1/scale-requests/{id}/approve"),
            Rule::Everywhere(Admin)
        );
        assert_eq!(rule(&Method::POST, "/api/v1/health"), Rule::Everywhere(Admin));
        assert_eq!(
            rule(&Method::POST, "/api/v1/environments/{env}"),
            Rule::Everywhere(Admin),
            "a write on a read route is not a read"
        );
    }
}

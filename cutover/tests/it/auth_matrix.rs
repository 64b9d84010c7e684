//! The authorization matrix, derived from the OpenAPI document the server serves: every
//! documented operation, called with a token of every role (viewer, deployer, approver,
//! admin) held on the environment it targets, on another environment only, and on every
//! environment (`*`), and with no, a garbage, a revoked and an expired token. Each call must
//! be refused (401/403) exactly when the expectation below says so; the calls need not
//! succeed otherwise (bodies are deliberately invalid, so nothing changes).
//!
//! An operation in the document without an expectation here fails the test: a new route
//! cannot be forgotten. GET operations are also probed with HEAD, which must be decided the
//! same way.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::pipeline_support::App;
use crate::security::{mint, raw};

/// Roles in ascending order.
const ROLES: [&str; 4] = ["viewer", "deployer", "approver", "admin"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Granted on `dev`, the environment every request targets.
    Own,
    /// Granted on `staging` only.
    Other,
    /// Granted on every environment.
    Star,
}

/// What an operation needs (role index into [`ROLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Open,
    AnyToken,
    /// The role on the environment the request is about (dev).
    OnTarget(usize),
    /// The role on at least one environment (lists are filtered).
    Somewhere(usize),
    /// The role on every environment.
    Everywhere(usize),
    /// No token counts: the request's signature authenticates it (the git push webhook),
    /// so every probe here, which carries none, gets 401.
    Signed,
}

const VIEWER: usize = 0;
const DEPLOYER: usize = 1;
const APPROVER: usize = 2;
const ADMIN: usize = 3;

impl Need {
    fn allows(self, role: usize, scope: Scope) -> bool {
        match self {
            Need::Open | Need::AnyToken => true,
            Need::OnTarget(r) => role >= r && scope != Scope::Other,
            Need::Somewhere(r) => role >= r,
            Need::Everywhere(r) => role >= r && scope == Scope::Star,
            Need::Signed => false,
        }
    }
}

/// The expectation of each documented operation ("METHOD /path" as in the document).
fn expectations() -> BTreeMap<&'static str, Need> {
    use Need::*;
    BTreeMap::from([
        ("GET /api/v1/health", Open),
        ("GET /metrics", Open),
        ("GET /api/v1/openapi.json", Open),
        ("GET /api/v1/whoami", AnyToken),
        ("GET /api/v1/config", Somewhere(VIEWER)),
        ("GET /api/v1/environments", Somewhere(VIEWER)),
        ("GET /api/v1/events", Somewhere(VIEWER)),
        ("POST /api/v1/environments", Somewhere(DEPLOYER)),
        ("GET /api/v1/environments/{env}", OnTarget(VIEWER)),
        ("DELETE /api/v1/environments/{env}", Somewhere(DEPLOYER)),
        ("GET /api/v1/environments/{env}/versions", OnTarget(VIEWER)),
        ("GET /api/v1/environments/{env}/status", OnTarget(VIEWER)),
        (
            "GET /api/v1/environments/{env}/services/{service}/logs",
            OnTarget(VIEWER),
        ),
        (
            "POST /api/v1/environments/{env}/services/{service}/scale",
            OnTarget(DEPLOYER),
        ),
        ("GET /api/v1/environments/{env}/flags", OnTarget(VIEWER)),
        ("PUT /api/v1/environments/{env}/flags/{name}", OnTarget(DEPLOYER)),
        // dev is not production: a deployer's (approver on a prod environment).
        ("GET /api/v1/environments/{env}/maintenance", OnTarget(VIEWER)),
        ("PUT /api/v1/environments/{env}/maintenance", OnTarget(DEPLOYER)),
        ("GET /api/v1/environments/{env}/scheduler", OnTarget(VIEWER)),
        ("GET /api/v1/environments/{env}/scheduler/runs", OnTarget(VIEWER)),
        (
            "POST /api/v1/environments/{env}/scheduler/suspend",
            OnTarget(DEPLOYER),
        ),
        (
            "POST /api/v1/environments/{env}/scheduler/resume",
            OnTarget(DEPLOYER),
        ),
        (
            "POST /api/v1/environments/{env}/scheduler/jobs/{job}/run",
            OnTarget(DEPLOYER),
        ),
        ("POST /api/v1/environments/{env}/releases", OnTarget(DEPLOYER)),
        ("POST /api/v1/environments/{env}/rollback", OnTarget(DEPLOYER)),
        ("POST /api/v1/promotions", OnTarget(DEPLOYER)),
        ("GET /api/v1/runs", Somewhere(VIEWER)),
        ("GET /api/v1/runs/{id}", OnTarget(VIEWER)),
        ("GET /api/v1/runs/{id}/logs", OnTarget(VIEWER)),
        ("POST /api/v1/runs/{id}/cancel", OnTarget(DEPLOYER)),
        ("POST /api/v1/runs/{id}/approve", OnTarget(APPROVER)),
        ("POST /api/v1/runs/{id}/reject", OnTarget(APPROVER)),
        ("GET /api/v1/job-runs/{id}/logs", OnTarget(VIEWER)),
        ("GET /api/v1/scale-requests", Somewhere(VIEWER)),
        ("POST /api/v1/scale-requests/{id}/approve", OnTarget(ADMIN)),
        ("POST /api/v1/scale-requests/{id}/reject", OnTarget(ADMIN)),
        ("GET /api/v1/params", Somewhere(VIEWER)),
        ("GET /api/v1/params/{key}", OnTarget(VIEWER)),
        ("PUT /api/v1/params/{key}", OnTarget(DEPLOYER)),
        ("GET /api/v1/history/{key}", OnTarget(VIEWER)),
        ("GET /api/v1/audit", Everywhere(VIEWER)),
        ("GET /api/v1/tokens", Everywhere(ADMIN)),
        ("POST /api/v1/tokens", Everywhere(ADMIN)),
        ("POST /api/v1/tokens/{name}/revoke", Everywhere(ADMIN)),
        ("GET /api/v1/system", Somewhere(VIEWER)),
        ("POST /api/v1/system/stop", Everywhere(ADMIN)),
        ("POST /api/v1/system/upgrade", Everywhere(ADMIN)),
        ("POST /api/v1/config/reload", Everywhere(ADMIN)),
        ("POST /api/v1/source/fetch", Somewhere(DEPLOYER)),
        ("POST /api/v1/hooks/git", Signed),
    ])
}

/// Ids of objects that belong to dev.
struct Ids {
    run: i64,
    job_run: i64,
    scale_request: i64,
}

/// The concrete request for a documented path: everything targets dev; bodies are invalid
/// (an unknown field) so that an authorized call changes nothing.
fn concrete(method: &str, path: &str, ids: &Ids) -> (String, String) {
    let id = if path.starts_with("/api/v1/job-runs/") {
        ids.job_run
    } else if path.starts_with("/api/v1/scale-requests/") {
        ids.scale_request
    } else {
        ids.run
    };
    let concrete = path
        .replace("{env}", "dev")
        .replace("{service}", "api")
        .replace("{job}", "nosuch")
        .replace("{name}", "nosuch")
        .replace("{id}", &id.to_string())
        .replace("{key}", "shop-dev/env/COLOR");
    let body = match (method, path) {
        ("POST", "/api/v1/promotions") => r#"{"from": "dev", "to": "dev", "matrix": true}"#,
        ("POST" | "PUT", _) => r#"{"matrix": true}"#,
        _ => "",
    };
    (concrete, body.to_owned())
}

#[test]
fn every_documented_operation_is_authorized_exactly_as_expected_for_every_role_and_scope() {
    let app = App::new();
    // Garbage tokens are sent on purpose, many times, from one address.
    let server = app.start_with(&[("CUTOVER_AUTH_MAX_FAILURES", "100000")]);
    let run = server.deploy("admin", "dev", &app.good[0]);
    let admin = server.admin_token.clone();
    let (status, _, text) = raw(
        &server,
        "POST",
        "/api/v1/environments/dev/scheduler/jobs/report/run",
        Some(&admin),
        "",
    );
    assert_eq!(status, 200, "{text}");
    let job_run = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, _, text) = raw(
        &server,
        "POST",
        "/api/v1/environments/dev/services/worker/scale",
        Some(&admin),
        r#"{"replicas": 2}"#,
    );
    assert_eq!(status, 200, "{text}");
    let scale_request = serde_json::from_str::<Value>(&text).unwrap()["request"]["id"]
        .as_i64()
        .unwrap();
    let ids = Ids {
        run,
        job_run,
        scale_request,
    };
    server.cli_json("admin", &["param", "put", "/shop-dev/env/COLOR", "blue"]);

    let mut tokens = Vec::new();
    for (r, role) in ROLES.iter().enumerate() {
        for scope in [Scope::Own, Scope::Other, Scope::Star] {
            let name = format!("{role}-{scope:?}").to_lowercase();
            let mut args = vec!["--role", role];
            match scope {
                Scope::Own => args.extend(["--env", "dev"]),
                Scope::Other => args.extend(["--env", "staging"]),
                Scope::Star => {}
            }
            tokens.push((name.clone(), r, scope, mint(&server, &name, &args)));
        }
    }
    let revoked = mint(&server, "revoked", &["--role", "admin"]);
    server.cli_json("admin", &["token", "revoke", "revoked"]);
    let expired = mint(&server, "expired", &["--role", "admin", "--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let bad: [(&str, Option<&str>); 4] = [
        ("no token", None),
        (
            "garbage",
            Some("cut_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ),
        ("revoked", Some(&revoked)),
        ("expired", Some(&expired)),
    ];

    let (status, _, doc) = raw(&server, "GET", "/api/v1/openapi.json", None, "");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let expect = expectations();
    let mut unexpected = Vec::new();
    let mut wrong = Vec::new();
    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let op = format!("{method} {path}");
            let Some(need) = expect.get(op.as_str()).copied() else {
                unexpected.push(op);
                continue;
            };
            let (target, body) = concrete(&method, path, &ids);
            let methods: Vec<&str> = if method == "GET" {
                vec!["GET", "HEAD"]
            } else {
                vec![method.as_str()]
            };
            for m in methods {
                for (name, role, scope, token) in &tokens {
                    let (status, _, text) = raw(&server, m, &target, Some(token), &body);
                    probed += 1;
                    let refused = status == 401 || status == 403;
                    let allowed = need.allows(*role, *scope);
                    let expected_refusal = if need == Need::Signed { 401 } else { 403 };
                    if allowed == refused || (!allowed && status != expected_refusal) {
                        wrong.push(format!(
                            "{m} {target} as {name}: {status} but expected {} ({need:?}): {}",
                            if allowed { "not 401/403" } else { "403" },
                            text.chars().take(200).collect::<String>()
                        ));
                    }
                }
                for (what, token) in &bad {
                    let (status, _, text) = raw(&server, m, &target, *token, &body);
                    probed += 1;
                    let ok = match need {
                        Need::Open => status != 401 && status != 403,
                        Need::Signed => status == 401,
                        _ => status == 401,
                    };
                    if !ok {
                        wrong.push(format!(
                            "{m} {target} with {what}: {status} ({need:?}): {}",
                            text.chars().take(200).collect::<String>()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "documented operations without an expectation in the auth matrix (add them to `expectations`):\n  {}",
        unexpected.join("\n  ")
    );
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|i| i.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        expect.len(),
        "expectations for operations the document no longer has"
    );
    assert!(
        wrong.is_empty(),
        "{} wrong decisions:\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );
    assert!(probed > 500, "only {probed} calls");

    // Finding 3's list leaks: Cutover's own records (the scale request of dev, lifecycle
    // records, failed authentications) are not shown to a viewer of another environment.
    let staging_viewer = &tokens.iter().find(|t| t.0 == "viewer-other").unwrap().3;
    let (status, _, body) = raw(&server, "GET", "/api/v1/params", Some(staging_viewer), "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("/shop/") && !body.contains("/_cutover/"), "{body}");
    assert!(!body.contains("shop-dev"), "{body}");
    let (status, _, body) = raw(&server, "GET", "/api/v1/scale-requests", Some(staging_viewer), "");
    assert_eq!((status, body.as_str()), (200, "[]"));
    let key = format!("/api/v1/params/shop/scale-requests/{scale_request}");
    assert_eq!(raw(&server, "GET", &key, Some(staging_viewer), "").0, 403);
    let star_viewer = &tokens.iter().find(|t| t.0 == "viewer-star").unwrap().3;
    let (status, _, body) = raw(&server, "GET", "/api/v1/params", Some(star_viewer), "");
    assert_eq!(status, 200);
    assert!(
        body.contains("/shop/scale-requests/"),
        "a viewer of every environment sees them: {body}"
    );
}

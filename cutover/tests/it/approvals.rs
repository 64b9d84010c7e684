//! Issue 11, findings 2 and 9: a run's SHA is fixed when it is requested and
//! an approval approves that SHA (four-eyes covers whoever chose it), and a
//! production environment deploys only what succeeded on the environments it
//! `requires:` (by default every stage environment), unless an admin
//! overrides with a reason.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::{Server, fails_with, json, stdout};

fn mint(server: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend(args);
    let issued = server.cli_json("admin", &all);
    issued["secret"].as_str().unwrap().to_owned()
}

fn with_token(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    server.command_with_token(token).args(args).output().unwrap()
}

/// POSTs a JSON body with a bearer token; returns the status and the body.
fn post(server: &Server, token: &str, path: &str, body: &str) -> (u16, String) {
    let addr = server.url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out}"));
    (status, out)
}

fn run_of(server: &Server, id: i64) -> Value {
    server.cli_json("x", &["run", &id.to_string()])
}

/// The bypass of the issue, step by step: prod run A waits for approval; a
/// deployer queues run B; an approver sets desired_version to a SHA of their
/// own, cancels A and approves B. B deploys the SHA fixed when it was
/// requested, never the approver's.
#[test]
fn an_approver_cannot_swap_the_version_of_a_queued_production_run() {
    let app = App::new();
    let server = app.start();
    let dora = mint(&server, "dora", &["--role", "deployer"]);
    let ann = mint(&server, "ann", &["--role", "approver", "--env", "prod"]);

    let a = server.release("alice", "prod", &app.good[0]);
    server.wait_run(a, &["awaiting_approval"]);
    // The deployer queues B: prod's desired_version as it is now (alice's choice).
    let b = json(&with_token(&server, &dora, &["release", "prod", "-o", "json"]));
    let b_id = b["id"].as_i64().unwrap();

    // The approver picks a version of their own, cancels A and approves B.
    let set = with_token(
        &server,
        &ann,
        &["param", "put", "/shop-prod/desired_version", &app.good[2]],
    );
    assert!(set.status.success(), "{}", crate::support::stderr(&set));
    with_token(&server, &ann, &["cancel", &a.to_string()]);
    server.wait_run(b_id, &["awaiting_approval"]);
    let approved = json(&with_token(
        &server,
        &ann,
        &["approve", &b_id.to_string(), "-o", "json"],
    ));
    assert_eq!(approved["approvals"][0]["actor"], "ann");
    let done = server.wait_run(b_id, &["succeeded", "failed"]);
    assert_eq!(done["state"], "succeeded", "{}", server.logs(b_id));
    assert_eq!(done["version"], app.good[0]);
    assert_eq!(server.api_version("prod").as_deref(), Some(app.good[0].as_str()));
    assert_eq!(b["target_version"], app.good[0], "fixed at request: {b:#}");
    assert_eq!(b["version_chosen_by"], "alice");
    assert_eq!(b["requested_by"], "dora");
    let logs = server.logs(b_id);
    assert!(
        logs.contains(&format!(
            "deployment version: {} (fixed at request by dora, chosen by alice)",
            app.good[0]
        )),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("waiting for approval of version {}", app.good[0])),
        "{logs}"
    );
    assert!(!logs.contains(&app.good[2]), "{logs}");
    // The CLI shows the fixed SHA and its chooser.
    let table = stdout(&server.cli("x", &["run", &b_id.to_string()]));
    assert!(
        table.contains(&format!(
            "version fixed at request: {} (chosen by alice)",
            app.good[0]
        )),
        "{table}"
    );
}

/// Whoever wrote the desired_version a production run was resolved from
/// chose its version, and may not approve (or reject) it: 403, saying why.
#[test]
fn whoever_chose_the_version_of_a_production_run_cannot_approve_it() {
    let app = App::new();
    let server = app.start();
    let dora = mint(&server, "dora", &["--role", "deployer"]);
    let ann = mint(&server, "ann", &["--role", "approver", "--env", "prod"]);
    // Ann chooses; Dora requests the run of Ann's choice.
    let set = with_token(
        &server,
        &ann,
        &["param", "put", "/shop-prod/desired_version", &app.good[1]],
    );
    assert!(set.status.success(), "{}", crate::support::stderr(&set));
    let run = json(&with_token(&server, &dora, &["release", "prod", "-o", "json"]));
    let id = run["id"].as_i64().unwrap();
    assert_eq!(
        (&run["target_version"], &run["version_chosen_by"]),
        (&Value::from(app.good[1].as_str()), &Value::from("ann"))
    );
    server.wait_run(id, &["awaiting_approval"]);
    let (status, body) = post(&server, &ann, &format!("/api/v1/runs/{id}/approve"), "{}");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ann chose the version of run"), "{body}");
    assert!(body.contains("four-eyes"), "{body}");
    fails_with(
        &with_token(&server, &ann, &["reject", &id.to_string(), "-m", "no"]),
        &["chose the version", "four-eyes"],
    );
    // The requester may not either; someone who did neither may.
    let (status, body) = post(&server, &dora, &format!("/api/v1/runs/{id}/approve"), "{}");
    assert_eq!(status, 403, "{body}");
    // Approving another SHA than the run's is refused: the approval is about what was shown.
    let bob = server.token("bob");
    let (status, body) = post(
        &server,
        &bob,
        &format!("/api/v1/runs/{id}/approve"),
        &format!("{{\"version\": \"{}\"}}", &app.good[2][..12]),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(&app.good[1]), "{body}");
    let approved = server.cli_json(
        "bob",
        &["approve", &id.to_string(), "--version", &app.good[1][..12]],
    );
    assert_eq!(approved["approvals"][0]["actor"], "bob");
    assert_eq!(approved["target_version"], app.good[1]);
}

/// A queued run keeps the SHA it was requested with, whatever desired_version
/// says when it starts.
#[test]
fn changing_desired_version_does_not_change_a_queued_run() {
    let app = App::new();
    let server = app.start();
    app.hold("staging", "hold");
    let active = server.release("alice", "staging", &app.good[0]);
    server.wait_stage(active, "pre_deploy_hook");
    let queued = server.release("alice", "staging", &app.good[1]);
    assert_eq!(run_of(&server, queued)["state"], "queued");
    server.cli_json(
        "bob",
        &["param", "put", "/shop-staging/desired_version", &app.good[2]],
    );
    app.release_hold("staging", "hold");
    let done = server.wait_run(queued, &["succeeded", "failed"]);
    assert_eq!(done["state"], "succeeded", "{}", server.logs(queued));
    assert_eq!(done["version"], app.good[1]);
    assert_eq!(done["target_version"], app.good[1]);
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[1].as_str())
    );
}

/// `latest` is resolved at request time to the last build; with nothing built
/// the request is refused at once and nothing is written.
#[test]
fn a_release_of_latest_with_nothing_built_is_refused_at_request() {
    let app = App::new();
    let server = app.start();
    fails_with(
        &server.cli("alice", &["release", "staging", "--version", "latest"]),
        &["nothing has been built for staging yet", "--version REF"],
    );
    fails_with(
        &server.cli("alice", &["release", "staging"]),
        &["staging has no desired_version"],
    );
    assert_eq!(server.cli_json("x", &["runs", "staging"]), Value::Array(vec![]));
    fails_with(
        &server.cli("x", &["param", "get", "/shop-staging/desired_version"]),
        &["does not exist"],
    );
    server.deploy("alice", "staging", &app.good[0]);
    let run = server.cli_json("alice", &["release", "staging", "--version", "latest"]);
    assert_eq!(run["target_version"], app.good[0], "{run:#}");
    assert_eq!(run["version_chosen_by"], "alice");
}

/// The fixture's config with prod's `requires:` left to its default (every
/// stage environment: staging).
fn default_policy_config() -> String {
    let cfg = APP_CONFIG.replace(
        "prod:    { tier: prod, branch: main, requires: [] }",
        "prod:    { tier: prod, branch: main }",
    );
    assert!(!cfg.contains("requires: ["), "the fixture's prod line changed");
    cfg
}

#[test]
fn production_deploys_only_what_passed_staging_unless_an_admin_overrides() {
    let app = App::with_config(&default_policy_config());
    let server = app.start();
    // Refused at request, naming where it is missing; nothing queued or written.
    let short = &app.good[0][..12];
    fails_with(
        &server.cli("alice", &["release", "prod", "--version", &app.good[0]]),
        &[
            short,
            "has not succeeded on staging",
            "requires:",
            "--override-policy",
        ],
    );
    assert_eq!(server.cli_json("x", &["runs", "prod"]), Value::Array(vec![]));
    fails_with(
        &server.cli("x", &["param", "get", "/shop-prod/desired_version"]),
        &["does not exist"],
    );

    // An override needs an admin of prod: a deployer gets 403.
    let dora = mint(&server, "dora", &["--role", "deployer"]);
    let (status, body) = post(
        &server,
        &dora,
        "/api/v1/environments/prod/releases",
        &format!(
            "{{\"version\": \"{}\", \"override_policy\": \"urgent\"}}",
            app.good[0]
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only an admin of prod"), "{body}");
    assert_eq!(server.cli_json("x", &["runs", "prod"]), Value::Array(vec![]));

    // An admin overrides with a reason: queued, the reason on the run, audited.
    let run = server.cli_json(
        "alice",
        &[
            "release",
            "prod",
            "--version",
            &app.good[0],
            "--override-policy",
            "hotfix for incident 7",
        ],
    );
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("requires: overridden by alice (not on staging): hotfix for incident 7"),
        "{run:#}"
    );
    let audit = server.cli_json("x", &["audit"]);
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy.override")
        .unwrap_or_else(|| panic!("no policy.override in {audit:#}"));
    assert_eq!(entry["actor"], "alice");
    assert_eq!(entry["target"], "env/prod");
    assert_eq!(entry["detail"]["reason"], "hotfix for incident 7");
    assert_eq!(entry["detail"]["missing"], serde_json::json!(["staging"]));
    assert_eq!(entry["detail"]["version"], app.good[0]);
    let overridden = run["id"].as_i64().unwrap();
    server.wait_run(overridden, &["awaiting_approval"]);
    server.cli_json("bob", &["approve", &overridden.to_string()]);
    let done = server.wait_run(overridden, &["succeeded", "failed"]);
    assert_eq!(done["state"], "succeeded", "{}", server.logs(overridden));

    // What succeeded on staging may go to prod: by promotion, or released directly.
    server.deploy("alice", "staging", &app.good[1]);
    let promoted = server.cli_json("alice", &["promote", "staging", "prod"]);
    assert_eq!(promoted["target_version"], app.good[1], "{promoted:#}");
    let promoted = promoted["id"].as_i64().unwrap();
    server.wait_run(promoted, &["awaiting_approval"]);
    server.cli_json("bob", &["approve", &promoted.to_string()]);
    let done = server.wait_run(promoted, &["succeeded", "failed"]);
    assert_eq!(done["state"], "succeeded", "{}", server.logs(promoted));
    let direct = server.cli_json("alice", &["release", "prod", "--version", &app.good[1]]);
    assert_eq!(direct["target_version"], app.good[1], "{direct:#}");
    assert!(direct["reason"].is_null(), "{direct:#}");
    server.cli_json("bob", &["cancel", &direct["id"].to_string()]);
    server.wait_run(direct["id"].as_i64().unwrap(), &["cancelled"]);

    // A rollback to what prod itself ran passes, although it never ran on staging.
    let back = server.cli_json("alice", &["rollback", "prod"]);
    assert_eq!(back["target_version"], app.good[0], "{back:#}");
    assert!(
        !back["reason"].as_str().unwrap_or_default().contains("overridden"),
        "{back:#}"
    );
    // A version that never succeeded on staging (nor on prod) still does not go.
    fails_with(
        &server.cli("alice", &["release", "prod", "--version", &app.good[2]]),
        &["has not succeeded on staging"],
    );
    fails_with(
        &server.cli("alice", &["rollback", "prod", "--to", &app.good[2]]),
        &["has not succeeded on staging"],
    );
}

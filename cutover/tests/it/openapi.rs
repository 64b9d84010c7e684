//! The OpenAPI document served at `/api/v1/openapi.json` against the real server: every
//! documented operation is routed (no 404 without an error body, no 405), every error
//! answer has the documented shape, and real answers of a deployed environment match the
//! documented schemas, with no undocumented field; and the document works with the tools
//! people feed it to: a real validator (openapi-spec-validator) accepts it, and a client
//! generated from it (openapi-python-client) releases and approves a run. Both come from
//! PyPI into `target/tools/openapi` through `scripts/openapi-setup`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::pipeline_support::App;
use crate::support::{Fixture, Server};

/// One HTTP/1.1 request to the API with `Connection: close`: (status, body).
fn request(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("the API listens");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: application/json\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.admin_token,
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn get_json(server: &Server, path: &str) -> Value {
    let (status, body) = request(server, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// A small validator for the subset of JSON Schema (OpenAPI 3.1) the document uses:
/// `$ref`, `allOf`, `oneOf`/`anyOf`, `type` (one or a list), `properties`, `required`,
/// `items`, `enum`. It also reports fields present in an object but not documented.
struct Validator<'a> {
    schemas: &'a Value,
    errors: Vec<String>,
}

impl Validator<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                self.schemas.get(name).unwrap_or_else(|| panic!("unresolved {r}"))
            }
            None => schema,
        }
    }

    /// Property names an object may have under `schema` (through `allOf`).
    fn allowed(&self, schema: &Value, out: &mut Vec<String>) -> bool {
        let schema = self.resolve(schema);
        let mut closed = false;
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            out.extend(props.keys().cloned());
            closed = true;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                closed |= self.allowed(s, out);
            }
        }
        closed
    }

    fn check(&mut self, schema: &Value, v: &Value, at: &str) {
        self.check_part(schema, v, at, true);
    }

    /// `whole`: `schema` describes all of `v` (not one branch of an `allOf`), so fields
    /// it does not name are undocumented.
    fn check_part(&mut self, schema: &Value, v: &Value, at: &str, whole: bool) {
        let schema = self.resolve(schema).clone();
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.check_part(s, v, at, false);
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(any) = schema.get(key).and_then(Value::as_array) {
                let ok = any.iter().any(|s| {
                    let mut sub = Validator {
                        schemas: self.schemas,
                        errors: Vec::new(),
                    };
                    sub.check(s, v, at);
                    sub.errors.is_empty()
                });
                if !ok {
                    self.errors.push(format!("{at}: matches none of {key}: {v}"));
                }
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let actual = match v {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let fits = types
                .iter()
                .any(|t| *t == actual || (*t == "number" && actual == "integer"));
            if !fits {
                self.errors
                    .push(format!("{at}: is {actual}, documented as {types:?}: {v}"));
                return;
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.contains(v)
        {
            self.errors
                .push(format!("{at}: {v} is not one of the documented {values:?}"));
        }
        // The one pattern checked: a version is a full SHA.
        if schema.get("pattern").and_then(Value::as_str) == Some("^[0-9a-f]{40}$")
            && let Some(s) = v.as_str()
            && !(s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            self.errors.push(format!("{at}: {s:?} is not a full SHA"));
        }
        if let Value::Object(m) = v {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        self.errors.push(format!("{at}: required field {r} is missing"));
                    }
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if let Some(x) = m.get(k) {
                        self.check(s, x, &format!("{at}.{k}"));
                    }
                }
            }
            let mut allowed = Vec::new();
            if whole && self.allowed(&schema, &mut allowed) {
                for k in m.keys().filter(|k| !allowed.contains(k)) {
                    self.errors.push(format!("{at}: field {k} is not documented"));
                }
            }
        }
        if let (Some(items), Value::Array(a)) = (schema.get("items"), v) {
            for (i, x) in a.iter().enumerate() {
                self.check(items, x, &format!("{at}[{i}]"));
            }
        }
    }
}

/// The documented JSON schema of `method path`'s answer with `status`.
fn answer_schema<'d>(doc: &'d Value, method: &str, path: &str, status: u16) -> Option<&'d Value> {
    doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"].get("schema")
}

fn validate(doc: &Value, what: &str, schema: &Value, v: &Value) {
    let mut val = Validator {
        schemas: &doc["components"]["schemas"],
        errors: Vec::new(),
    };
    val.check(schema, v, "$");
    assert!(
        val.errors.is_empty(),
        "{what}: the answer does not match the OpenAPI document:\n  {}",
        val.errors.join("\n  ")
    );
}

#[test]
fn the_served_document_matches_the_real_api() {
    let app = App::new();
    let server = app.start();
    let doc = get_json(&server, "/api/v1/openapi.json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));

    // A deployed environment, so that answers carry runs, instances, parameters and audit.
    let run = server.deploy("alice", "dev", &app.good[0]);

    // Every documented operation is routed: probe it with names and ids that do not exist
    // (and an empty body), so that nothing changes; every error answer has the error shape.
    let mut probed = 0;
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .replace("{env}", "nosuch")
                .replace("{service}", "nosuch")
                .replace("{job}", "nosuch")
                .replace("{name}", "nosuch")
                .replace("{id}", "999999")
                .replace("{key}", "nosuch-app/nosuch");
            let body = op.get("requestBody").map(|_| "{}");
            let (status, text) = request(&server, &method.to_uppercase(), &concrete, body);
            probed += 1;
            if status == 405 {
                problems.push(format!("{method} {path}: not routed for this method"));
                continue;
            }
            if status < 400 {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                problems.push(format!(
                    "{method} {concrete}: {status} without a JSON error body: {text:?}"
                ));
                continue;
            };
            let Some(schema) = answer_schema(&doc, method, path, status) else {
                problems.push(format!(
                    "{method} {path}: answer {status} is not documented: {text}"
                ));
                continue;
            };
            let mut val = Validator {
                schemas: &doc["components"]["schemas"],
                errors: Vec::new(),
            };
            val.check(schema, &v, "$");
            problems.extend(
                val.errors
                    .iter()
                    .map(|e| format!("{method} {concrete} ({status}): {e}")),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "the API and its document disagree:\n  {}",
        problems.join("\n  ")
    );
    assert!(probed >= 29, "only {probed} operations probed");

    // Real answers against their documented schemas.
    let key = format!("{}-dev/desired_version", "shop");
    let reads = [
        ("/api/v1/environments", "/api/v1/environments".to_owned()),
        (
            "/api/v1/environments/{env}",
            "/api/v1/environments/dev".to_owned(),
        ),
        (
            "/api/v1/environments/{env}/versions",
            "/api/v1/environments/dev/versions".to_owned(),
        ),
        (
            "/api/v1/environments/{env}/status",
            "/api/v1/environments/dev/status".to_owned(),
        ),
        (
            "/api/v1/environments/{env}/scheduler",
            "/api/v1/environments/dev/scheduler".to_owned(),
        ),
        (
            "/api/v1/environments/{env}/scheduler/runs",
            "/api/v1/environments/dev/scheduler/runs".to_owned(),
        ),
        ("/api/v1/runs", "/api/v1/runs".to_owned()),
        ("/api/v1/runs/{id}", format!("/api/v1/runs/{run}")),
        ("/api/v1/runs/{id}/logs", format!("/api/v1/runs/{run}/logs")),
        ("/api/v1/params", "/api/v1/params".to_owned()),
        ("/api/v1/params/{key}", format!("/api/v1/params/{key}")),
        ("/api/v1/history/{key}", format!("/api/v1/history/{key}")),
        ("/api/v1/audit", "/api/v1/audit".to_owned()),
    ];
    for (path, concrete) in reads {
        let v = get_json(&server, &concrete);
        let schema = answer_schema(&doc, "get", path, 200)
            .unwrap_or_else(|| panic!("GET {path}: no JSON 200 answer documented"));
        validate(&doc, &format!("GET {concrete}"), schema, &v);
    }
    // The answers were not trivially empty.
    let status = get_json(&server, "/api/v1/environments/dev/status");
    assert!(!status["services"][0]["instances"].as_array().unwrap().is_empty());
    assert!(!get_json(&server, "/api/v1/audit").as_array().unwrap().is_empty());

    // A write: the run a release answers with matches RunRecord.
    let (status, text) = request(
        &server,
        "POST",
        "/api/v1/environments/dev/releases",
        Some(&format!("{{\"version\": \"{}\"}}", app.good[1])),
    );
    assert_eq!(status, 202, "{text}");
    let schema = answer_schema(&doc, "post", "/api/v1/environments/{env}/releases", 202).unwrap();
    validate(
        &doc,
        "POST releases",
        schema,
        &serde_json::from_str(&text).unwrap(),
    );
}

/// `<venv>/bin/<tool>` of the virtualenv with the OpenAPI tools: `CUTOVER_OPENAPI_VENV`,
/// else the one `scripts/openapi-setup` makes under `target/tools/openapi`.
fn openapi_tool(tool: &str) -> PathBuf {
    let venv = std::env::var_os("CUTOVER_OPENAPI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/openapi"));
    let program = venv.join("bin").join(tool);
    assert!(
        program.exists(),
        "{} is missing: run `scripts/openapi-setup` (it pip-installs openapi-spec-validator and \
         openapi-python-client into target/tools/openapi, as scripts/test does), or point \
         CUTOVER_OPENAPI_VENV at a virtualenv with both",
        program.display()
    );
    program
}

/// Runs the validator on `doc` (written to `dir/name`): (passed, its output).
fn run_spec_validator(dir: &Path, name: &str, doc: &Value) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let validator = openapi_tool("openapi-spec-validator");
    let out = Command::new(&validator)
        .args(["--validation-errors", "all"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", validator.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `GET /api/v1/openapi.json` without a token: tools fetch it before anyone has one.
fn served_document(server: &Server) -> Value {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("the API listens");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /api/v1/openapi.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET /api/v1/openapi.json: {head}"
    );
    serde_json::from_str(body).expect("the document is JSON")
}

#[test]
fn the_served_document_passes_openapi_spec_validator() {
    let fx = Fixture::new();
    let server = fx.start();
    let doc = served_document(&server);

    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_spec_validator(dir.path(), "openapi.json", &doc);
    assert!(ok, "openapi-spec-validator rejects /api/v1/openapi.json:\n{out}");

    // The validator really checks what generated clients need: a document with two
    // operations sharing an operationId, and an answer without a description, fails.
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/tokens"]["get"]["operationId"] = Value::from("list_runs");
    broken["paths"]["/api/v1/whoami"]["get"]["responses"]["200"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    let (ok, out) = run_spec_validator(dir.path(), "broken.json", &broken);
    assert!(!ok, "the validator accepted a broken document:\n{out}");
    assert!(out.contains("list_runs") && out.contains("description"), "{out}");
}

/// What a user of the generated client writes: alice releases prod, bob (four-eyes) waits
/// for the approval stage and approves; every answer is parsed into the generated models.
const CLIENT_SCRIPT: &str = r#"
import json, os, sys, time
from cutover_client import AuthenticatedClient
from cutover_client.api.runs import approve_run, release, show_run
from cutover_client.models import DecisionBody, ReleaseBody, RunRecord, RunView

url = os.environ["CUTOVER_URL"]
alice = AuthenticatedClient(base_url=url, token=os.environ["ALICE_TOKEN"], raise_on_unexpected_status=True)
bob = AuthenticatedClient(base_url=url, token=os.environ["BOB_TOKEN"], raise_on_unexpected_status=True)

run = release.sync(env="prod", client=alice, body=ReleaseBody(version=os.environ["VERSION"]))
if not isinstance(run, RunRecord):
    sys.exit(f"release answered {run!r}")
deadline = time.monotonic() + 60
while True:
    view = show_run.sync(id=run.id, client=bob)
    if not isinstance(view, RunView):
        sys.exit(f"show_run answered {view!r}")
    if view.state.value == "awaiting_approval":
        break
    if time.monotonic() > deadline:
        sys.exit(f"run {run.id} still {view.state.value} after 60 s")
    time.sleep(0.1)
approved = approve_run.sync(id=run.id, client=bob, body=DecisionBody(comment="looks good"))
if not isinstance(approved, RunView):
    sys.exit(f"approve_run answered {approved!r}")
print(json.dumps({
    "id": run.id,
    "requested_by": run.requested_by,
    "target_version": run.target_version,
    "approvals": [a.to_dict() for a in approved.approvals],
}))
"#;

#[test]
fn a_client_generated_from_the_document_releases_and_approves_a_run() {
    let app = App::new();
    let server = app.start();
    let doc = served_document(&server);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    // Generate the client package `cutover_client` (its formatter, ruff, is in the venv).
    let generator = openapi_tool("openapi-python-client");
    let bin = generator.parent().unwrap().to_owned();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new(&generator)
        .args(["generate", "--meta", "none", "--output-path"])
        .arg(dir.path().join("cutover_client"))
        .arg("--path")
        .arg(&spec)
        .env("PATH", &path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", generator.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openapi-python-client failed:\n{said}");
    assert!(
        !said.contains("Warning"),
        "openapi-python-client left parts of the document out:\n{said}"
    );

    let script = dir.path().join("release_and_approve.py");
    std::fs::write(&script, CLIENT_SCRIPT).unwrap();
    let out = Command::new(bin.join("python"))
        .arg(&script)
        .current_dir(dir.path())
        .env("PYTHONPATH", dir.path())
        .env("CUTOVER_URL", &server.url)
        .env("ALICE_TOKEN", server.token("alice"))
        .env("BOB_TOKEN", server.token("bob"))
        .env("VERSION", &app.good[1])
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the generated client could not release and approve:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(result["requested_by"], "alice", "{result}");
    assert_eq!(result["target_version"], app.good[1].as_str(), "{result}");
    assert_eq!(result["approvals"][0]["actor"], "bob", "{result}");

    // The server agrees: the run approved through the generated client deploys.
    let id = result["id"].as_i64().unwrap();
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{run:#}");
}

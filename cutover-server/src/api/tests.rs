//! The OpenAPI document: snapshot (review changes with `cargo insta review` or
//! `INSTA_UPDATE=always`), and its internal consistency.

use std::collections::BTreeSet;

use serde_json::Value;

use super::openapi;

fn doc() -> Value {
    serde_json::to_value(openapi()).expect("the document serializes")
}

#[test]
fn document_snapshot() {
    let mut doc = doc();
    // The crate version would churn the snapshot on every release.
    doc["info"]["version"] = Value::from("(crate version)");
    insta::assert_json_snapshot!("openapi", doc);
}

fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.insert(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_to_a_schema() {
    let doc = doc();
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    assert!(all.len() > 10, "expected schema references, found {all:?}");
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} is referenced but not defined"
        );
    }
}

#[test]
fn every_operation_has_a_tag_a_summary_and_a_success_answer() {
    let doc = doc();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 25, "only {} paths documented", paths.len());
    for (path, item) in paths {
        assert!(
            !path.contains('*') && !path.contains(':'),
            "{path}: an OpenAPI path has no wildcard"
        );
        for (method, op) in item.as_object().expect("path item") {
            let what = format!("{method} {path}");
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what}: no tag"
            );
            assert!(op["summary"].is_string(), "{what}: no summary (doc comment)");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{what}: no 2xx answer documented"
            );
            for p in path.split('/').filter_map(|s| s.strip_prefix('{')) {
                let name = p.trim_end_matches('}');
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|x| x["name"] == name && x["in"] == "path"));
                assert!(declared, "{what}: path parameter {name} is not declared");
            }
        }
    }
}

/// What OpenAPI validators and client generators require of every operation: an
/// `operationId` unique in the document (generated clients name their methods after it,
/// so two `list`s collide) and a `description` on every response (a required field).
#[test]
fn operation_ids_are_unique_and_every_response_has_a_description() {
    let doc = doc();
    let mut ids: std::collections::BTreeMap<String, String> = Default::default();
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let what = format!("{method} {path}");
            match op["operationId"].as_str() {
                None => problems.push(format!("{what}: no operationId")),
                Some(id) => {
                    if let Some(other) = ids.insert(id.to_owned(), what.clone()) {
                        problems.push(format!(
                            "{what}: operationId {id:?} is also {other}'s; give each handler \
                             its own `operation_id = \"...\"` in #[utoipa::path]"
                        ));
                    }
                }
            }
            for (status, answer) in op["responses"].as_object().expect("responses") {
                if !answer["description"].is_string() {
                    problems.push(format!(
                        "{what}: answer {status} has no description; add \
                         `description = \"...\"` to it in #[utoipa::path]"
                    ));
                }
            }
        }
    }
    assert!(ids.len() >= 40, "only {} operations found", ids.len());
    assert!(
        problems.is_empty(),
        "the OpenAPI document is invalid:\n  {}",
        problems.join("\n  ")
    );
}

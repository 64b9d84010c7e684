//! The schema against the parser: keys both ways, choices and defaults from the parser's own
//! tables, real configurations validated.

use std::collections::BTreeSet;

use super::*;

/// The schema of the mapping at `path` (as written in [`keys::SECTIONS`]).
fn at<'s>(schema: &'s Value, path: &str) -> &'s Value {
    let mut here = schema;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, item) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        here = if name == "*" {
            &here["additionalProperties"]
        } else {
            &here["properties"][name]
        };
        if item {
            here = &here["items"];
        }
        assert!(here.is_object(), "the schema has nothing at {path:?} ({segment})");
    }
    here
}

/// Every object schema with `properties`, by the path [`keys::SECTIONS`] would name it.
fn sections(schema: &Value, path: String, out: &mut Vec<(String, BTreeSet<String>)>) {
    if let Some(props) = schema["properties"].as_object() {
        assert_eq!(
            schema["additionalProperties"], false,
            "{path:?} must refuse unknown keys as the parser does"
        );
        out.push((path.clone(), props.keys().cloned().collect()));
        for (key, sub) in props {
            let joined = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            sections(sub, joined, out);
        }
    }
    if schema["additionalProperties"].is_object() {
        sections(&schema["additionalProperties"], format!("{path}.*"), out);
    }
    if schema["items"].is_object() {
        sections(&schema["items"], format!("{path}[]"), out);
    }
}

#[test]
fn every_section_has_exactly_the_keys_the_parser_accepts() {
    let schema = json_schema();
    for (path, accepted) in keys::SECTIONS {
        let described: BTreeSet<&str> = at(&schema, path)["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{path:?} has no properties"))
            .keys()
            .map(String::as_str)
            .collect();
        let accepted: BTreeSet<&str> = accepted.iter().copied().collect();
        let missing: Vec<_> = accepted.difference(&described).collect();
        let unknown: Vec<_> = described.difference(&accepted).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "section {path:?}: the parser accepts {missing:?} which the schema lacks; the schema has {unknown:?} which the parser refuses"
        );
        for key in &described {
            let property = &at(&schema, path)["properties"][key];
            assert!(
                property["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{path:?}.{key} has no description"
            );
        }
    }
    // The other way: no mapping in the schema that the parser's list does not know.
    let mut found = Vec::new();
    sections(&schema, String::new(), &mut found);
    let listed: BTreeSet<&str> = keys::SECTIONS.iter().map(|(p, _)| *p).collect();
    let found_paths: BTreeSet<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        found_paths, listed,
        "the schema's mappings and keys::SECTIONS differ"
    );
}

#[test]
fn the_parser_reads_every_mapping_through_the_key_lists() {
    // A `Fields::new` with its own inline key list would escape the comparison above.
    for (file, text) in [
        ("build.rs", include_str!("../build.rs")),
        ("services.rs", include_str!("../services.rs")),
        ("environments.rs", include_str!("../environments.rs")),
        ("router.rs", include_str!("../router.rs")),
    ] {
        for (i, call) in text.split("Fields::new(").skip(1).enumerate() {
            let args = &call[..call
                .find(")?")
                .or_else(|| call.find(") else"))
                .unwrap_or(call.len())];
            assert!(
                args.contains("keys::"),
                "{file}: Fields::new call #{} lists its keys inline: {args}",
                i + 1
            );
        }
    }
}

#[test]
fn enums_and_defaults_come_from_the_parser() {
    let schema = json_schema();
    let env = at(&schema, "environments.*");
    assert_eq!(
        env["properties"]["tier"]["enum"],
        json!(["dev", "stage", "prod-like", "prod", "integration"])
    );
    assert_eq!(
        env["properties"]["runtime"]["enum"],
        json!(["process", "docker", "swarm"])
    );
    assert_eq!(env["properties"]["hook_timeout"]["default"], "30m");
    assert_eq!(
        at(&schema, "services.*")["properties"]["health_timeout"]["default"],
        "1m"
    );
    assert_eq!(
        at(&schema, "scheduler")["properties"]["suspend_timeout"]["default"],
        "15m"
    );
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["required"], json!(["app", "services", "environments"]));
}

fn readme_example() -> String {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme
        .find("## Configuration")
        .expect("README has a configuration section")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    section[start..start + section[start..].find("```").expect("closed")].to_owned()
}

#[test]
fn real_configurations_validate_against_the_schema() {
    let schema = json_schema();
    let validator = jsonschema::draft202012::new(&schema).expect("the schema is valid draft 2020-12");
    for (name, text) in [
        (
            "examples/shop/cutover.yml",
            include_str!("../../../../examples/shop/cutover.yml").to_owned(),
        ),
        ("README's example", readme_example()),
    ] {
        let value: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    // And it refuses what the parser refuses: a typo'd key, a bad tier, a bare number of seconds.
    for bad in [
        "app: shop\nservices: { web: { run: x, replica: 2 } }\nenvironments: { dev: { tier: dev } }\n",
        "app: shop\nservices: { web: { run: x } }\nenvironments: { dev: { tier: production } }\n",
        "app: shop\nservices: { web: { run: x, health_timeout: 90 } }\nenvironments: { dev: { tier: dev } }\n",
        "app: shop\nservices: { web: { run: x } }\n",
    ] {
        let value: Value = serde_saphyr::from_str(bad).unwrap();
        assert!(!validator.is_valid(&value), "the schema accepts {bad}");
        assert!(
            crate::config::parse(bad, std::path::Path::new("cutover.yml")).is_err(),
            "the parser accepts {bad}"
        );
    }
}

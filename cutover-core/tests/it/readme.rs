//! The README's table of `cutover.yml` keys and their defaults, checked against the parser:
//! every key the parser accepts has a row (the accepted keys are read from the parser's own
//! "unknown key" answer, so a new key cannot be left out), and each default the table states
//! is the one parsing a file without that key gives.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cutover_core::ServiceName;
use cutover_core::config::{self, Config, RuntimeKind, Strategy, parse_duration};

fn readme_table() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme
        .find("Every key and its default")
        .expect("README.md has the table of keys and defaults");
    readme[start..]
        .lines()
        .skip(1)
        .skip_while(|l| l.is_empty())
        .take_while(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The default column of the row whose first key is `key`.
fn default_of(table: &str, key: &str) -> String {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| `{key}`")))
        .unwrap_or_else(|| panic!("no row for `{key}` in:\n{table}"));
    line.rsplit('|').nth(1).unwrap().trim().to_owned()
}

/// The first `quoted` value of a default, as a duration.
fn duration_in(text: &str) -> Duration {
    let value = text
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no `value` in {text:?}"));
    parse_duration(value).unwrap_or_else(|e| panic!("{value:?}: {e}"))
}

/// The keys a section accepts, from the error on a key far from all of them.
fn accepted(text: &str) -> Vec<String> {
    let errors = config::parse(text, Path::new("cutover.yml"))
        .unwrap_err()
        .to_string();
    let line = errors
        .lines()
        .find(|l| l.contains("unknown key \"zzzzzzzzzzzzzzzz\""))
        .unwrap_or_else(|| panic!("no unknown-key error in {errors}"));
    let list = line.split("accepted keys are ").nth(1).unwrap();
    list.split(", ").map(str::to_owned).collect()
}

#[test]
fn every_key_the_parser_accepts_has_a_row() {
    let table = readme_table();
    // Every name inside a `quoted` key of the first column: `a.*.b` gives a and b.
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).collect::<Vec<_>>())
        .flat_map(|key| {
            key.split('.')
                .map(|s| s.trim_end_matches("[]").to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let z = "zzzzzzzzzzzzzzzz";
    let base = "app: shop\nservices:\n  web: { run: bin/web }\nenvironments:\n  dev: { tier: dev }\n";
    let sections = [
        format!("{base}{z}: 1\n"),
        format!(
            "app: shop\nservices:\n  web: {{ run: bin/web, {z}: 1 }}\nenvironments:\n  dev: {{ tier: dev }}\n"
        ),
        format!(
            "app: shop\nservices:\n  web: {{ run: bin/web }}\nenvironments:\n  dev: {{ tier: dev, {z}: 1 }}\n"
        ),
        format!(
            "app: shop\nservices:\n  web: {{ run: bin/web }}\nenvironments:\n  p: {{ tier: prod, autoscale: {{ min: 1, max: 2, {z}: 1 }} }}\n"
        ),
        format!("{base}hooks: {{ {z}: 1 }}\n"),
        format!("{base}scheduler: {{ {z}: 1 }}\n"),
        format!("{base}notifications: {{ {z}: 1 }}\n"),
        format!("{base}notifications: {{ receivers: [{{ kind: slack, {z}: 1 }}] }}\n"),
        format!("{base}scheduler: {{ jobs: {{ j: {{ schedule: \"* * * * *\", run: x, {z}: 1 }} }} }}\n"),
        format!("{base}router: {{ {z}: 1 }}\n"),
        format!("{base}router: {{ access_log: {{ stdout: true, {z}: 1 }} }}\n"),
        format!(
            "{base}router: {{ tls: {{ port: 1, certificates: [{{ hosts: [a.b], cert: /c, key: /k }}], {z}: 1 }} }}\n"
        ),
        format!(
            "{base}router: {{ tls: {{ port: 1, certificates: [{{ hosts: [a.b], cert: /c, key: /k, {z}: 1 }}] }} }}\n"
        ),
        format!("{base}source: {{ {z}: 1 }}\n"),
        format!("{base}registry: {{ url: \"127.0.0.1:5000\", {z}: 1 }}\n"),
        format!("{base}webhooks: [{{ url: \"http://h/\", {z}: 1 }}]\n"),
        format!("{base}rabbitmq: {{ url: \"http://h:15672\", {z}: 1 }}\n"),
        format!("{base}rabbitmq: {{ url: \"http://h:15672\", vhosts: [{{ name: /s, {z}: 1 }}] }}\n"),
        format!(
            "{base}rabbitmq: {{ url: \"http://h:15672\", vhosts: [{{ name: /s, users: [{{ name: u, password_secret: p, configure: x, write: x, read: x, {z}: 1 }}] }}] }}\n"
        ),
    ];
    let mut missing = Vec::new();
    for text in &sections {
        for key in accepted(text) {
            if !documented.contains(&key) {
                missing.push(key);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys without a row in README.md's table: {missing:?}"
    );
}

#[test]
fn the_defaults_the_table_states_are_the_parsers() {
    let table = readme_table();
    let text = "app: shop\nservices:\n  web: { run: bin/web }\nenvironments:\n  \
                dev: { tier: dev }\n  staging: { tier: stage }\n  prod: { tier: prod }\n  \
                copy: { tier: prod-like }\n  review: { tier: integration }\n\
                webhooks: [{ url: \"http://h/\" }]\n";
    let cfg: Config = config::parse(text, Path::new("/srv/shop/cutover.yml")).unwrap();
    let web = &cfg.services[&ServiceName::parse("web").unwrap()];
    let env = |name: &str| cfg.environment(name).unwrap().1;
    let name = |name: &str| cfg.environment(name).unwrap().0;

    assert_eq!(
        duration_in(&default_of(&table, "services.*.health_timeout")),
        web.health_timeout
    );
    assert!(default_of(&table, "services.*.replicas").starts_with(&format!("`{}`", web.replicas)));
    assert!(default_of(&table, "services.*.public").starts_with(&format!("`{}`", web.public)));
    assert_eq!(
        (web.build.as_deref(), web.health.as_deref(), web.port),
        (None, None, None)
    );
    assert!(default_of(&table, "services.*.build").starts_with("none"));
    assert!(default_of(&table, "services.*.health").starts_with("none"));
    assert_eq!(
        duration_in(&default_of(&table, "scheduler.suspend_timeout")),
        cfg.scheduler.suspend_timeout
    );
    let action = serde_json::to_value(cfg.scheduler.on_suspend_timeout).unwrap();
    assert_eq!(
        default_of(&table, "scheduler.on_suspend_timeout"),
        format!("`{}`", action.as_str().unwrap())
    );
    let events: Vec<String> = cfg.webhooks[0]
        .events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap().as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        default_of(&table, "webhooks[].events"),
        format!("`[{}]`", events.join(", "))
    );

    let dev = env("dev");
    assert_eq!(
        duration_in(&default_of(&table, "environments.*.hook_timeout")),
        dev.hook_timeout
    );
    assert_eq!(
        duration_in(&default_of(&table, "environments.*.approval_timeout")),
        dev.approval_timeout
    );
    assert_eq!(
        (dev.strategy, dev.runtime),
        (Strategy::BlueGreen, RuntimeKind::Process)
    );
    assert!(default_of(&table, "environments.*.strategy").starts_with(&format!("`{}`", dev.strategy)));
    assert!(default_of(&table, "environments.*.runtime").starts_with(&format!("`{}`", dev.runtime)));
    assert!(default_of(&table, "environments.*.auto_deploy").starts_with(&format!("`{}`", dev.auto_deploy)));
    assert_eq!((env("prod").approval, dev.approval), (true, false));
    assert_eq!(
        default_of(&table, "environments.*.approval"),
        "`true` on `prod`, else `false`"
    );
    let ttl = default_of(&table, "environments.*.ttl");
    assert_eq!(Some(duration_in(&ttl)), env("copy").ttl);
    assert!(ttl.ends_with("integration: none (never expires)") && env("review").ttl.is_none());
    assert_eq!(env("copy").like.as_ref(), Some(name("prod")));
    let max_active = default_of(&table, "environments.*.max_active");
    assert!(max_active.starts_with(&format!("`{}`", env("review").max_active.unwrap())));
    assert_eq!(
        (
            cfg.accepted_branch(name("staging")),
            cfg.accepted_branch(name("prod"))
        ),
        (Some("main"), Some("main"))
    );
    assert!(default_of(&table, "environments.*.branch").starts_with("`stage`, `prod`: `main`"));
    assert_eq!(env("prod").requires, vec![name("staging").clone()]);
    assert!(dev.requires.is_empty());
    assert_eq!(
        default_of(&table, "environments.*.requires"),
        "`prod`: every `stage` environment; elsewhere none"
    );
}

//! Every fixture under `tests/fixtures/bad/` is refused with all its errors;
//! the full output is snapshotted, and the table pins the key message.

use std::path::Path;

use cutover_core::config;

/// (fixture, expected number of errors, a message every run must contain)
const CASES: &[(&str, usize, &str)] = &[
    ("01-malformed-yaml", 1, "cutover.yml:4:1: invalid YAML"),
    (
        "02-unknown-top-level-key",
        1,
        "unknown key \"enviroments\"; did you mean \"environments\"?",
    ),
    (
        "03-unknown-nested-key",
        3,
        "services.yves.replica: unknown key \"replica\"; did you mean \"replicas\"?",
    ),
    (
        "04-wrong-types",
        6,
        "services.yves.replicas: expected a whole number, found the string \"two\"",
    ),
    ("05-missing-app", 1, "missing required key \"app\""),
    (
        "06-app-capital",
        1,
        "app: application name \"Shop\" is not valid: it starts with a capital letter",
    ),
    (
        "07-service-name-slash",
        1,
        "services.back/office: service name \"back/office\" is not valid: it contains '/'",
    ),
    ("08-env-name-semicolon", 1, "it contains ';'"),
    (
        "09-unknown-tier",
        2,
        "cutover.yml:7:11: environments.prod.tier: unknown tier \"production\"; expected one of dev, stage, prod-like, prod, integration",
    ),
    (
        "10-like-pointing-nowhere",
        1,
        "environments.loadtest.like: environment \"prd\" does not exist; did you mean \"prod\"?",
    ),
    (
        "11-like-on-wrong-tier",
        1,
        "environments.staging.like: \"like\" is not allowed on a stage environment",
    ),
    (
        "12-bad-cron",
        3,
        "scheduler.jobs.late.schedule: schedule \"61 * * * *\": minute field \"61\": Number out of bounds (allowed: 0-59)",
    ),
    (
        "13-bad-ttl",
        2,
        "environments.prod-like.ttl: duration \"3 days\" must not contain spaces",
    ),
    (
        "14-autoscale-min-greater-than-max",
        1,
        "environments.prod.autoscale: min (9) is greater than max (8)",
    ),
    (
        "15-replicas-zero",
        1,
        "cutover.yml:5:15: services.web.replicas: must be at least 1, found 0",
    ),
    (
        "16-health-without-slash",
        1,
        "services.web.health: health path \"health\" must start with '/'",
    ),
    (
        "17-strategy-typo",
        2,
        "unknown strategy \"blue-gren\"; did you mean \"blue-green\"?",
    ),
    (
        "18-many-errors",
        12,
        "environments.qa: missing required key \"tier\"",
    ),
    ("19-empty-file", 1, "cutover.yml:1:1: the file is empty"),
    (
        "20-top-level-list",
        1,
        "cutover.yml:1:1: the file must be a mapping",
    ),
    (
        "21-duplicate-keys",
        3,
        "services.web: duplicate key \"web\" (first given at 3:3)",
    ),
    (
        "22-missing-required",
        3,
        "services.worker: has no `run` command, but environment(s) dev use the process runtime",
    ),
    ("23-empty-sections", 2, "services: must list at least one service"),
    (
        "24-bad-branch",
        3,
        "\"main..evil\" is not a valid branch name: it contains \"..\"",
    ),
    (
        "25-rabbitmq",
        5,
        "rabbitmq.url: \"amqp://localhost\" is not an http:// or https:// URL",
    ),
    (
        "26-tier-specific-keys",
        5,
        "environments.review.branch: \"branch\" is not allowed on an integration environment",
    ),
    (
        "27-like-target-not-prod",
        2,
        "environment \"staging\" is tier stage; a prod-like environment copies a tier prod environment",
    ),
    (
        "28-replicas-override",
        2,
        "environments.dev.replicas.yvse: unknown service \"yvse\"; did you mean \"yves\"?",
    ),
    (
        "29-router-runtime-timeouts",
        6,
        "unknown runtime \"kubernetes\"; expected one of process, docker, swarm",
    ),
    (
        "30-bad-job-and-hooks",
        4,
        "scheduler.jobs.Queue_Worker: job name \"Queue_Worker\" is not valid",
    ),
    (
        "31-bad-timezone",
        2,
        "cutover.yml:6:49: scheduler.jobs.report.timezone: unknown time zone \"Europe/Pariss\"; did you mean \"Europe/Paris\"?",
    ),
];

#[test]
fn bad_files_report_every_error() {
    let dir = crate::fixtures().join("bad");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    assert_eq!(on_disk, listed, "every fixture has a row in CASES");

    let mut failures = Vec::new();
    for (name, count, needle) in CASES {
        let text = std::fs::read_to_string(dir.join(format!("{name}.yml"))).unwrap();
        let errors = match config::parse(&text, Path::new("cutover.yml")) {
            Ok(cfg) => panic!("{name}: accepted: {cfg:#?}"),
            Err(e) => e,
        };
        let rendered = errors.to_string();
        if !rendered.contains(needle) {
            failures.push(format!("{name}: {needle:?} not in\n{rendered}"));
        }
        if errors.len() != *count {
            failures.push(format!(
                "{name}: {} errors, expected {count}:\n{rendered}",
                errors.len()
            ));
        }
        for e in &errors {
            if e.line == 0 || e.column == 0 {
                failures.push(format!("{name}: no location: {e}"));
            }
        }
        insta::assert_snapshot!(*name, rendered);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

//! The SPEC §9 example parses, with the documented defaults applied.

use std::path::Path;
use std::time::Duration;

use cutover_core::config::{self, RepoSource, RuntimeKind, Strategy, Tier};
use cutover_core::{EnvName, ServiceName};

fn spec_example() -> config::Config {
    let path = crate::fixtures().join("spec-example.yml");
    config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn spec_example_parses_with_the_documented_meaning() {
    let cfg = spec_example();
    assert_eq!(cfg.app.as_str(), "shop");
    match &cfg.repo {
        RepoSource::Path { raw, path } => {
            assert_eq!(raw, ".");
            assert_eq!(path, &crate::fixtures());
        }
        other => panic!("{other:?}"),
    }

    let yves = &cfg.services[&ServiceName::parse("yves").unwrap()];
    assert_eq!(yves.build.as_deref(), Some("make yves"));
    assert_eq!(yves.run, "bin/yves --port $PORT");
    assert_eq!(
        (yves.replicas, yves.public, yves.health.as_deref()),
        (2, true, Some("/health"))
    );
    let zed = &cfg.services[&ServiceName::parse("zed").unwrap()];
    assert_eq!((zed.replicas, zed.public, zed.build.as_deref()), (1, false, None));

    assert_eq!(
        cfg.hooks.pre_deploy.as_deref(),
        Some("vendor/bin/install -r pre-deploy -vvv")
    );
    assert_eq!(cfg.hooks.post_deploy, None, "an empty hook is not configured");
    assert_eq!(cfg.scheduler.jobs.len(), 1);

    let rabbit = cfg.rabbitmq.as_ref().unwrap();
    assert_eq!(rabbit.vhosts[0].name, "/shop-eu");
    assert_eq!(rabbit.vhosts[0].users[0].password_secret, "rabbit_shop");

    let env = |n: &str| cfg.environment(n).unwrap().1;
    assert_eq!(env("dev").tier, Tier::Dev);
    assert!(env("dev").auto_deploy && !env("dev").approval);
    assert_eq!(env("staging").tier, Tier::Stage);
    let prod = env("prod");
    assert!(prod.approval && prod.approval_for_rollback && prod.tier.is_production());
    assert_eq!(prod.strategy, Strategy::BlueGreen);
    assert_eq!(prod.runtime, RuntimeKind::Process);
    assert_eq!(prod.hook_timeout, Duration::from_secs(30 * 60));
    assert_eq!(prod.approval_timeout, Duration::from_secs(7 * 86_400));
    let like = env("prod-like");
    assert_eq!(like.like.as_ref().map(EnvName::as_str), Some("prod"));
    assert_eq!(like.ttl, Some(Duration::from_secs(72 * 3600)));
    assert_eq!(like.autoscale, prod.autoscale, "prod-like scales like production");
    assert!(!like.tier.is_production() && !like.approval);
    assert_eq!(env("review").max_active, Some(8));
    assert!(env("review").tier.accepts_any_branch());

    let staging = EnvName::parse("staging").unwrap();
    assert_eq!(cfg.param_prefix(&staging), "/shop-staging");
    assert_eq!(cfg.accepted_branch(&staging), Some("main"));
    assert_eq!(
        cfg.accepted_branch(&EnvName::parse("prod-like").unwrap()),
        Some("main")
    );
    assert_eq!(cfg.accepted_branch(&EnvName::parse("dev").unwrap()), None);
    assert!(cfg.environment("nope").is_none());
}

#[test]
fn spec_example_summary() {
    insta::assert_snapshot!(spec_example().summary());
}

#[test]
fn spec_example_serializes_to_json() {
    let mut cfg = spec_example();
    cfg.file = "cutover.yml".into();
    cfg.repo = RepoSource::Path {
        raw: ".".into(),
        path: "/abs/app".into(),
    };
    insta::assert_snapshot!(serde_json::to_string_pretty(&cfg).unwrap());
}

#[test]
fn defaults_for_a_minimal_file() {
    let text = "app: a\nservices: { web: { run: x } }\nenvironments: { prod: { tier: prod }, st: { tier: stage } }\n";
    let cfg = config::parse(text, Path::new("/srv/app/cutover.yml")).unwrap();
    assert_eq!(
        cfg.repo,
        RepoSource::Path {
            raw: ".".into(),
            path: "/srv/app".into()
        }
    );
    let prod = EnvName::parse("prod").unwrap();
    assert_eq!(cfg.accepted_branch(&prod), Some("main"));
    assert!(cfg.environments[&prod].approval);
    assert!(!cfg.environment("st").unwrap().1.approval);
    assert!(cfg.rabbitmq.is_none() && cfg.scheduler.jobs.is_empty() && cfg.router.port.is_none());
}

#[test]
fn load_reports_an_unreadable_file() {
    let err = config::load(Path::new("/nonexistent/cutover.yml")).unwrap_err();
    assert_eq!(err.len(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/cutover.yml: cannot read the configuration file"),
        "{text}"
    );
}

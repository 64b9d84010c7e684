use std::path::Path;

use super::*;
use crate::ServiceName;

const MINIMAL: &str = "app: shop\nservices:\n  web: { run: bin/web }\nenvironments:\n  dev: { tier: dev }\n";

fn ok(text: &str) -> Config {
    parse(text, Path::new("/srv/shop/cutover.yml")).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> String {
    match parse(text, Path::new("cutover.yml")) {
        Ok(cfg) => panic!("accepted: {cfg:#?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn error_display_has_file_line_column_path_and_message() {
    let e = ConfigError {
        file: "cutover.yml".into(),
        line: 12,
        column: 9,
        path: "environments.prod.tier".into(),
        message: "unknown tier \"production\"; expected one of dev, stage, prod-like, prod, integration"
            .into(),
    };
    assert_eq!(
        e.to_string(),
        "cutover.yml:12:9: environments.prod.tier: unknown tier \"production\"; expected one of dev, stage, prod-like, prod, integration"
    );
    let all = ConfigErrors {
        errors: vec![e.clone(), e],
    };
    assert_eq!(all.to_string().lines().count(), 2);
    assert!(serde_json::to_value(&all).unwrap()["errors"][0]["line"] == 12);
}

#[test]
fn minimal_file_gets_defaults() {
    let cfg = ok(MINIMAL);
    let web = &cfg.services[&ServiceName::parse("web").unwrap()];
    assert_eq!((web.replicas, web.public, web.port), (1, false, None));
    let (name, dev) = cfg.environment("dev").unwrap();
    assert_eq!(cfg.param_prefix(name), "/shop-dev");
    assert_eq!(
        cfg.artifact_name(name, &ServiceName::parse("web").unwrap()),
        "shop-dev-web"
    );
    assert_eq!(
        (dev.strategy, dev.runtime),
        (Strategy::BlueGreen, RuntimeKind::Process)
    );
    assert!(!dev.approval && !dev.auto_deploy && dev.ttl.is_none() && dev.max_active.is_none());
    assert_eq!(cfg.hooks, Hooks::default());
}

#[test]
fn repo_paths_resolve_against_the_file_and_urls_stay_urls() {
    let with_repo = |repo: &str| ok(&format!("repo: {repo:?}\n{MINIMAL}")).repo;
    assert_eq!(
        with_repo("."),
        RepoSource::Path {
            raw: ".".into(),
            path: "/srv/shop".into()
        }
    );
    assert_eq!(
        with_repo("../code/./app"),
        RepoSource::Path {
            raw: "../code/./app".into(),
            path: "/srv/code/app".into()
        }
    );
    assert_eq!(
        with_repo("/abs/repo"),
        RepoSource::Path {
            raw: "/abs/repo".into(),
            path: "/abs/repo".into()
        }
    );
    for url in [
        "https://github.com/acme/shop.git",
        "ssh://git@host/shop",
        "git@github.com:acme/shop.git",
        "file:///srv/git/shop",
    ] {
        assert_eq!(with_repo(url), RepoSource::Url { url: url.into() }, "{url}");
    }
    // A relative file name resolves against the current directory.
    let cfg = parse(MINIMAL, Path::new("cutover.yml")).unwrap();
    let RepoSource::Path { path, .. } = cfg.repo else {
        panic!()
    };
    assert!(path.is_absolute());
    assert_eq!(path, std::env::current_dir().unwrap());
}

#[test]
fn tiers_and_enums_print_and_serialize_as_written() {
    for tier in Tier::ALL {
        assert_eq!(tier.to_string().parse::<Tier>().unwrap(), tier);
        assert_eq!(serde_json::to_value(tier).unwrap(), tier.as_str());
    }
    assert_eq!(Tier::ProdLike.to_string(), "prod-like");
    assert!(Tier::Prod.is_production() && !Tier::ProdLike.is_production());
    assert!(Tier::Dev.accepts_any_branch() && Tier::Integration.accepts_any_branch());
    assert!(!Tier::Stage.accepts_any_branch() && !Tier::Prod.accepts_any_branch());
    assert!(
        "production"
            .parse::<Tier>()
            .unwrap_err()
            .contains("expected one of")
    );
    assert_eq!(serde_json::to_value(Strategy::BlueGreen).unwrap(), "blue-green");
    assert_eq!(RuntimeKind::Swarm.to_string(), "swarm");
}

#[test]
fn prod_defaults_and_overrides() {
    let cfg = ok("app: a\nservices: { web: { run: x } }\nenvironments:\n  \
                  prod: { tier: prod, runtime: docker, strategy: rolling, hook_timeout: 1h, approval_timeout: 2d }\n  \
                  p2: { tier: prod, approval: false, branch: release }\n  \
                  st: { tier: stage, approval: true, approval_for_rollback: false }\n");
    let prod = cfg.environment("prod").unwrap().1;
    assert!(prod.approval && prod.approval_for_rollback);
    assert_eq!(
        (prod.runtime, prod.strategy),
        (RuntimeKind::Docker, Strategy::Rolling)
    );
    assert_eq!(format_duration(prod.hook_timeout), "1h");
    assert_eq!(format_duration(prod.approval_timeout), "2d");
    let (p2_name, p2) = cfg.environment("p2").unwrap();
    assert!(!p2.approval && !p2.approval_for_rollback);
    assert_eq!(cfg.accepted_branch(p2_name), Some("release"));
    let st = cfg.environment("st").unwrap().1;
    assert!(st.approval && !st.approval_for_rollback);
}

#[test]
fn prod_like_inherits_from_its_target() {
    let cfg = ok("app: a\nservices: { web: { run: x } }\nenvironments:\n  \
                  prod: { tier: prod, branch: release, runtime: swarm, replicas: { web: 3 }, autoscale: { min: 1, max: 4 } }\n  \
                  copy: { tier: prod-like, ttl: 1d }\n  \
                  copy2: { tier: prod-like, like: prod, strategy: rolling, replicas: { web: 1 } }\n");
    let (name, copy) = cfg.environment("copy").unwrap();
    assert_eq!(
        copy.like.as_ref().unwrap().as_str(),
        "prod",
        "the only prod is the default target"
    );
    assert_eq!(copy.runtime, RuntimeKind::Swarm);
    assert_eq!(copy.autoscale.as_ref().map(|a| (a.min, a.max)), Some((1, 4)));
    assert_eq!(copy.replicas.values().copied().collect::<Vec<_>>(), [3]);
    assert_eq!(format_duration(copy.ttl.unwrap()), "1d");
    assert_eq!(cfg.accepted_branch(name), Some("release"));
    let copy2 = cfg.environment("copy2").unwrap().1;
    assert_eq!(copy2.strategy, Strategy::Rolling);
    assert_eq!(copy2.replicas.values().copied().collect::<Vec<_>>(), [1]);
    let web = ServiceName::parse("web").unwrap();
    assert_eq!(copy2.replicas_of(&web, &cfg.services[&web]), 1);
}

#[test]
fn prod_like_needs_a_target_when_ambiguous() {
    let text = "app: a\nservices: { web: { run: x } }\nenvironments:\n  \
                eu: { tier: prod }\n  us: { tier: prod }\n  copy: { tier: prod-like }\n";
    assert_eq!(
        errors(text),
        "cutover.yml:6:3: environments.copy: missing required key \"like\" (one of eu, us)"
    );
}

#[test]
fn references_to_invalid_environments_are_not_reported_twice() {
    let text = "app: a\nservices: { web: { run: x } }\nenvironments:\n  \
                prod: { tier: prod, replicas: 0 }\n  copy: { tier: prod-like, like: prod }\n";
    let out = errors(text);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("environments.prod.replicas"), "{out}");
}

#[test]
fn all_invalid_names_do_not_claim_the_section_is_empty() {
    let out = errors("app: a\nservices: { Web: { run: x } }\nenvironments: { dev: { tier: dev } }\n");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("service name \"Web\""), "{out}");
}

#[test]
fn anchors_and_merge_keys_work() {
    let cfg = ok(
        "app: a\nservices:\n  web: &base { run: x, replicas: 2 }\n  api: { <<: *base, run: y }\n\
                  environments: { dev: { tier: dev } }\n",
    );
    let api = &cfg.services[&ServiceName::parse("api").unwrap()];
    assert_eq!((api.run.as_str(), api.replicas), ("y", 2));
}

#[test]
fn quoted_numbers_and_booleans_get_a_hint() {
    let out = errors(
        "app: a\nservices: { web: { run: x, replicas: \"2\", public: \"true\" } }\nenvironments: { dev: { tier: dev } }\n",
    );
    assert!(
        out.contains("found the string \"2\" (remove the quotes)"),
        "{out}"
    );
    assert!(
        out.contains("found the string \"true\" (remove the quotes)"),
        "{out}"
    );
    let out = errors("app: 5\nservices: { web: { run: true } }\nenvironments: { dev: { tier: dev } }\n");
    assert!(
        out.contains("app: expected a string, found an integer 5 (put it in quotes"),
        "{out}"
    );
}

#[test]
fn rabbitmq_section_is_read() {
    let cfg = ok(&format!(
        "{MINIMAL}rabbitmq:\n  url: https://mq.example/\n  admin_user: admin\n  admin_password_secret: mq/admin\n  vhosts:\n    \
         - name: /a\n      users:\n        - {{ name: u, password_secret: s, configure: \"^a\\\\.\", write: \"\", read: \"[a-z]+\" }}\n    \
         - name: /b\n"
    ));
    let r = cfg.rabbitmq.unwrap();
    assert_eq!(r.url, "https://mq.example");
    assert_eq!(r.admin_password_secret.as_deref(), Some("mq/admin"));
    assert_eq!(r.vhosts.len(), 2);
    assert_eq!(r.vhosts[0].users[0].configure, "^a\\.");
    assert_eq!(r.vhosts[0].users[0].write, "");
    assert!(r.vhosts[1].users.is_empty());
}

#[test]
fn ports_dockerfile_router_and_job_defaults() {
    let cfg = ok(
        "app: a\nrouter: { port: 8080 }\nservices: { web: { run: x, port: 80, dockerfile: docker/web.Dockerfile, public: true } }\n\
                  scheduler: { suspend_timeout: 5m, jobs: { nightly: { schedule: '@daily', run: bin/n } } }\n\
                  environments: { review: { tier: integration, ttl: 2d, max_active: 3, auto_deploy: true } }\n",
    );
    assert_eq!(cfg.router.port, Some(8080));
    let web = &cfg.services[&ServiceName::parse("web").unwrap()];
    assert_eq!(
        (web.port, web.dockerfile.as_deref()),
        (Some(80), Some("docker/web.Dockerfile"))
    );
    assert_eq!(format_duration(cfg.scheduler.suspend_timeout), "5m");
    let review = cfg.environment("review").unwrap().1;
    assert_eq!(
        (review.max_active, review.ttl.map(format_duration)),
        (Some(3), Some("2d".into()))
    );
}

#[test]
fn null_optional_values_count_as_absent() {
    let cfg = ok(
        "app: a\nhooks: { install: ~, post_deploy: }\nrabbitmq:\nservices: { web: { run: x, health: ~ } }\n\
                  environments: { dev: { tier: dev, branch: } }\n",
    );
    assert_eq!(cfg.hooks, Hooks::default());
    assert!(cfg.rabbitmq.is_none());
}

#[test]
fn malformed_yaml_reports_the_parser_location() {
    let out = errors("app: a\nservices:\n  web:\n    run: x\n   bad: indent\n");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("cutover.yml:5:"), "{out}");
    assert!(out.contains("invalid YAML"), "{out}");
}

#[test]
fn odd_keys_are_reported_not_panicked_on() {
    for text in [
        "app: a\nservices: { 1: { run: x } }\nenvironments: { dev: { tier: dev } }\n",
        "app: a\ntrue: x\nservices: { web: { run: x } }\nenvironments: { dev: { tier: dev } }\n",
        "app: a\n~: x\nservices: { web: { run: x } }\nenvironments: { dev: { tier: dev } }\n",
        "app: a\n? [x, y]\n: z\nservices: { web: { run: x } }\n",
        "app: a\n---\napp: b\n",
        "app: [a\n",
        "\"app\": !!str 5\nservices: { web: { run: !custom x } }\nenvironments: { dev: { tier: dev } }\n",
    ] {
        let errors = parse(text, Path::new("c.yml")).unwrap_err();
        assert_eq!(errors.len(), 1, "{text:?}: {errors}");
        assert!(errors.errors[0].line >= 1, "{text:?}: {errors}");
    }
}

#[test]
fn fixed_router_ports_and_the_suspend_timeout_action() {
    let base =
        "app: a\nrouter: { port: 7080 }\nservices: { web: { run: x, public: true }, worker: { run: y } }\n";
    let cfg = ok(&format!(
        "{base}scheduler: {{ on_suspend_timeout: terminate }}\nenvironments: {{ prod: {{ tier: prod, ports: {{ web: 8001 }} }} }}\n"
    ));
    assert_eq!(
        cfg.environment("prod").unwrap().1.ports[&ServiceName::parse("web").unwrap()],
        8001
    );
    assert_eq!(cfg.scheduler.on_suspend_timeout, SuspendTimeoutAction::Terminate);
    assert_eq!(
        ok(&format!("{base}environments: {{ dev: {{ tier: dev }} }}\n"))
            .scheduler
            .on_suspend_timeout,
        SuspendTimeoutAction::Fail
    );

    let e = errors(&format!(
        "{base}scheduler: {{ on_suspend_timeout: kill }}\nenvironments:\n  dev: {{ tier: dev, ports: {{ worker: 8001, nope: 8002, web: 70000 }} }}\n"
    ));
    assert!(
        e.contains("environments.dev.ports.worker") && e.contains("is not public"),
        "{e}"
    );
    assert!(
        e.contains("environments.dev.ports.nope") && e.contains("is not a service"),
        "{e}"
    );
    assert!(e.contains("environments.dev.ports.web"), "{e}");
    assert!(
        e.contains("scheduler.on_suspend_timeout") && e.contains("terminate"),
        "{e}"
    );

    let e = errors(&format!(
        "{base}environments:\n  dev: {{ tier: dev, ports: {{ web: 7080 }} }}\n  qa: {{ tier: dev, ports: {{ web: 9000 }} }}\n  st: {{ tier: stage, ports: {{ web: 9000 }} }}\n"
    ));
    assert!(e.contains("port 7080 is already used by router.port"), "{e}");
    assert!(
        e.contains("port 9000 is already used by environments.qa.ports.web"),
        "{e}"
    );
}

#[test]
fn task_service_names_a_service() {
    let base = "services: { web: { run: x, public: true }, office: { run: y } }\nenvironments: { dev: { tier: dev } }\n";
    let cfg = ok(&format!("app: a\ntask_service: office\n{base}"));
    assert_eq!(cfg.task_service.as_ref().map(ServiceName::as_str), Some("office"));
    assert_eq!(ok(&format!("app: a\n{base}")).task_service, None);
    let e = errors(&format!("app: a\ntask_service: ofice\n{base}"));
    assert!(
        e.contains("task_service") && e.contains("did you mean \"office\""),
        "{e}"
    );
}

#[test]
fn registry_is_host_port_and_prefix_without_a_scheme() {
    assert_eq!(ok(MINIMAL).registry, None);
    assert_eq!(ok(&format!("{MINIMAL}registry:\n")).registry, None);
    for (raw, url) in [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost", "localhost"),
        ("registry.example.com/team/", "registry.example.com/team"),
        ("reg-1.example.com:443/a/b_c.d", "reg-1.example.com:443/a/b_c.d"),
    ] {
        let cfg = ok(&format!("{MINIMAL}registry: {{ url: {raw:?} }}\n"));
        assert_eq!(cfg.registry.map(|r| r.url).as_deref(), Some(url), "{raw}");
    }
    for (raw, says) in [
        ("http://127.0.0.1:5000", "without it"),
        ("127.0.0.1:99999", "not a port number"),
        ("127.0.0.1:", "not a port number"),
        ("myhost", "Docker Hub"),
        ("my host:5000", "expected host[:port][/prefix]"),
        ("under_score.example:5000", "not a host name"),
        ("127.0.0.1:5000/Team", "path prefix \"Team\""),
        ("127.0.0.1:5000//x", "path prefix"),
    ] {
        let e = errors(&format!("{MINIMAL}registry: {{ url: {raw:?} }}\n"));
        assert!(e.contains("registry.url") && e.contains(says), "{raw}: {e}");
    }
    let e = errors(&format!(
        "{MINIMAL}registry: {{ url: \"127.0.0.1:5000\", usr: x }}\n"
    ));
    assert!(e.contains("registry.usr: unknown key \"usr\""), "{e}");
    let e = errors(&format!("{MINIMAL}registry: {{}}\n"));
    assert!(e.contains("registry: missing required key \"url\""), "{e}");
    let e = errors(&format!("{MINIMAL}registy: {{ url: \"127.0.0.1:5000\" }}\n"));
    assert!(e.contains("did you mean \"registry\""), "{e}");
}

#[test]
fn webhooks_take_http_urls_and_known_events() {
    let base = "services: { web: { run: x } }\nenvironments: { dev: { tier: dev } }\n";
    let cfg = ok(&format!(
        "app: a\nwebhooks:\n  - {{ url: \"http://127.0.0.1:9000/hook\" }}\n  - {{ url: \"https://ci.example/x\", events: [run], ca_file: certs/ca.pem }}\n{base}"
    ));
    assert_eq!(cfg.webhooks.len(), 2);
    assert_eq!(cfg.webhooks[0].events, [WebhookEvent::Run, WebhookEvent::Stage]);
    assert_eq!(cfg.webhooks[1].events, [WebhookEvent::Run]);
    assert_eq!(cfg.webhooks[0].ca_file, None);
    let ca = cfg.webhooks[1].ca_file.as_ref().expect("ca_file kept");
    assert!(
        ca.ends_with("certs/ca.pem") && ca.is_absolute() == cfg.file.is_absolute(),
        "{ca:?}"
    );
    let e = errors(&format!(
        "app: a\nwebhooks:\n  - {{ url: \"https://\" }}\n  - {{ url: ftp://x, events: [deploy] }}\n  - {{ uri: x }}\n  - {{ url: \"http://x\", ca_file: ca.pem }}\n{base}"
    ));
    for needle in [
        "webhooks[0].url",
        "is not an http:// or https:// URL",
        "webhooks[1].url",
        "webhooks[1].events",
        "webhooks[2]",
        "webhooks[3].ca_file",
        "ca_file is for https:// URLs",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn prod_requires_every_stage_environment_unless_it_says_otherwise() {
    let env = |n: &str| crate::EnvName::parse(n).unwrap();
    let cfg = ok("app: a\nservices: { web: { run: x } }\nenvironments:\n  \
                  dev: { tier: dev }\n  staging: { tier: stage }\n  qa: { tier: stage }\n  \
                  prod: { tier: prod }\n  copy: { tier: prod-like, like: prod }\n");
    assert_eq!(
        cfg.environment("prod").unwrap().1.requires,
        [env("staging"), env("qa")]
    );
    for other in ["dev", "staging", "qa", "copy"] {
        assert!(cfg.environment(other).unwrap().1.requires.is_empty(), "{other}");
    }
    // Written: exactly what it says; `[]` turns the policy off.
    let cfg = ok("app: a\nservices: { web: { run: x } }\nenvironments:\n  \
                  staging: { tier: stage }\n  prod: { tier: prod, requires: [] }\n  \
                  copy: { tier: prod-like, like: prod, requires: [staging, prod] }\n");
    assert!(cfg.environment("prod").unwrap().1.requires.is_empty());
    assert_eq!(
        cfg.environment("copy").unwrap().1.requires,
        [env("staging"), env("prod")]
    );
    // Without a stage environment, nothing is required.
    let cfg = ok("app: a\nservices: { web: { run: x } }\nenvironments: { prod: { tier: prod } }\n");
    assert!(cfg.environment("prod").unwrap().1.requires.is_empty());
}

#[test]
fn requires_names_deployable_environments_with_file_line_column() {
    let out = errors(
        "app: a\nservices: { web: { run: x } }\nenvironments:\n  \
         staging: { tier: stage }\n  review: { tier: integration }\n  \
         prod: { tier: prod, requires: [stagin, prod, review] }\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().any(|l| l.starts_with("cutover.yml:6:34: environments.prod.requires[0]: environment \"stagin\" does not exist; did you mean \"staging\"?")), "{out}");
    assert!(
        out.contains(
            "environments.prod.requires[1]: cannot require \"prod\": an environment cannot require itself"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "environments.prod.requires[2]: cannot require \"review\": it is an integration template"
        ),
        "{out}"
    );
    let out = errors(
        "app: a\nservices: { web: { run: x } }\nenvironments:\n  \
         review: { tier: integration, requires: [] }\n  prod: { tier: prod, requires: staging }\n  \
         qa: { tier: stage, requires: [7] }\n",
    );
    assert!(
        out.contains("cutover.yml:6:33: environments.qa.requires[0]: expected a string"),
        "{out}"
    );
    assert!(
        out.contains("\"requires\" is not allowed on an integration environment"),
        "{out}"
    );
    assert!(
        out.contains("environments.prod.requires: expected a list of environment names"),
        "{out}"
    );
}

#[test]
fn run_as_names_a_user() {
    assert_eq!(ok(MINIMAL).run_as, None);
    let cfg = ok(&format!("run_as: cutover-app\n{MINIMAL}"));
    assert_eq!(cfg.run_as.as_deref(), Some("cutover-app"));
    let e = errors(&format!("run_as: Root User\n{MINIMAL}"));
    assert!(
        e.starts_with("cutover.yml:1:9: run_as: \"Root User\" is not a user name"),
        "{e}"
    );
    let e = errors(&format!("run_a: app\n{MINIMAL}"));
    assert!(e.contains("did you mean \"run_as\""), "{e}");
}

/// A service without `run:` runs its image's own command: accepted when every environment
/// is on docker or swarm (a prod-like copy inherits its target's runtime).
#[test]
fn run_is_optional_when_every_environment_runs_images() {
    let cfg = ok("app: shop\n\
                  services:\n  \
                    web: { public: true, port: 8080 }\n  \
                    worker: { run: bin/worker }\n\
                  environments:\n  \
                    dev: { tier: dev, runtime: docker }\n  \
                    prod: { tier: prod, runtime: swarm }\n  \
                    copy: { tier: prod-like, like: prod }\n");
    let web = &cfg.services[&ServiceName::parse("web").unwrap()];
    assert_eq!((web.run.as_str(), web.port), ("", Some(8080)));
    assert_eq!(
        cfg.services[&ServiceName::parse("worker").unwrap()].run,
        "bin/worker"
    );
    // An explicit empty command is still a mistake, not "use the image's".
    let e = errors(
        "app: shop\nservices:\n  web: { run: \"\" }\nenvironments:\n  dev: { tier: dev, runtime: docker }\n",
    );
    assert!(e.contains("services.web.run"), "{e}");
}

/// On the process runtime there is no image: a missing `run` is refused where the service
/// is named, saying which environments need it and both ways out.
#[test]
fn run_is_required_where_an_environment_uses_the_process_runtime() {
    let e = errors(
        "app: shop\n\
                    services:\n  \
                      web: { public: true }\n  \
                      worker: { run: bin/worker }\n\
                    environments:\n  \
                      dev: { tier: dev }\n  \
                      prod: { tier: prod, runtime: docker }\n",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("cutover.yml:3:3: services.web: has no `run` command"),
        "{e}"
    );
    assert!(e.contains("environment(s) dev use the process runtime"), "{e}");
    assert!(
        e.contains("add `run:`") && e.contains("runtime docker/swarm"),
        "{e}"
    );
}

#[test]
fn every_top_level_key_is_either_application_or_platform() {
    let mut split: Vec<&str> = super::APPLICATION_KEYS
        .iter()
        .chain(super::PLATFORM_KEYS)
        .copied()
        .collect();
    split.sort_unstable();
    let mut top: Vec<&str> = super::keys::TOP.to_vec();
    top.sort_unstable();
    assert_eq!(
        split, top,
        "a new top-level key must say which part it belongs to"
    );
}

#[test]
fn a_commits_definition_takes_the_application_keys_and_keeps_the_servers_platform() {
    let server_text = "app: shop\nrepo: .\nservices:\n  web: { run: ./web, port: 8080, public: true }\n\
                       environments:\n  dev: { tier: dev }\n";
    let server = parse(server_text, Path::new("/srv/cutover.yml")).unwrap();
    // The commit renames the app and adds an environment (ignored: platform keys are the
    // server's) and adds a service (taken).
    let commit = "app: other\nenvironments:\n  evil: { tier: dev }\nservices:\n  web: { run: ./web, port: 8080, public: true }\n  \
                  worker: { run: ./worker }\n";
    let def = super::parse_at_commit(&server, server_text, commit, Path::new("cutover.yml@abc")).unwrap();
    assert_eq!(
        def.services.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["web", "worker"]
    );
    // An unknown key and a bad value are reported with the commit's label, line and column.
    let bad = "services:\n  web: { run: ./web, replicas: many }\nhoks: {}\n";
    let errors = super::parse_at_commit(&server, server_text, bad, Path::new("cutover.yml@abc")).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("cutover.yml@abc:2:"), "{text}");
    assert!(text.contains("hoks") && text.contains("hooks"), "{text}");
}

#[test]
fn source_section_is_read_with_defaults_and_checked() {
    let cfg = parse(MINIMAL, Path::new("/srv/app/cutover.yml")).unwrap();
    assert_eq!(cfg.source, SourceSettings::default());
    assert_eq!(cfg.source.fetch_timeout, std::time::Duration::from_secs(60));
    let cfg = parse(
        &format!(
            "{MINIMAL}source: {{ token_secret: git-token, token_user: oauth2, fetch_timeout: 5s, ssh_key_file: keys/deploy }}\n"
        ),
        Path::new("/srv/app/cutover.yml"),
    )
    .unwrap();
    assert_eq!(cfg.source.token_secret.as_deref(), Some("git-token"));
    assert_eq!(cfg.source.token_user, "oauth2");
    assert_eq!(cfg.source.fetch_timeout, std::time::Duration::from_secs(5));
    assert_eq!(
        cfg.source.ssh_key_file.as_deref(),
        Some(Path::new("/srv/app/keys/deploy"))
    );
    let err = errors(&format!(
        "{MINIMAL}source: {{ ssh_key_file: k, ssh_key_secret: k }}\n"
    ));
    assert!(err.contains("keep one"), "{err}");
    let err = errors(&format!("{MINIMAL}source: {{ token_secret: \"a b\" }}\n"));
    assert!(err.contains("not a secret name"), "{err}");
}

#[test]
fn swarm_placement_is_constraints_and_spread_preferences() {
    let with = |placement: &str| {
        format!(
            "app: shop\nservices:\n  web: {{ run: bin/web, placement: {placement} }}\nenvironments:\n  dev: {{ tier: dev }}\n"
        )
    };
    assert!(ok(MINIMAL).services.values().all(|s| s.placement.is_empty()));
    let cfg = ok(&with(
        "{ constraints: [\"node.labels.zone==eu-1\", \"node.role != manager\"], preferences: [spread=node.labels.rack] }",
    ));
    let p = &cfg.services.values().next().unwrap().placement;
    assert_eq!(p.constraints, ["node.labels.zone==eu-1", "node.role != manager"]);
    assert_eq!(p.preferences, ["spread=node.labels.rack"]);
    assert!(ok(&with("{}")).services.values().all(|s| s.placement.is_empty()));
    for (placement, says) in [
        ("{ constraints: [zone] }", "is not a Swarm constraint"),
        ("{ constraints: [\"zone==eu\"] }", "node.* or engine.labels.*"),
        (
            "{ constraints: [\"node.labels.zone==\"] }",
            "is not a Swarm constraint",
        ),
        ("{ preferences: [node.labels.rack] }", "write spread=<attribute>"),
        ("{ preferences: [\"spread=a b\"] }", "write spread=<attribute>"),
        (
            "{ constraints: node.role==worker }",
            "a list of Swarm constraints",
        ),
        ("{ affinity: [x] }", "unknown key \"affinity\""),
    ] {
        let e = errors(&with(placement));
        assert!(
            e.contains("services.web.placement") && e.contains(says),
            "{placement}: {e}"
        );
    }
}

//! Integration environments' public host names: a template's `{branch}.review.localhost`
//! gives the environment of branch `feature/Login_2` the name
//! `feature-login-2.review.localhost`, served through the router while it lives and gone
//! when it is deleted; a second branch with the same label is refused; a static name added by
//! `config reload` reaches the router.

use std::time::{Duration, Instant};

use crate::pipeline_support::{App, header, http_get};
use crate::support::{Server, fails_with, git};

const CONFIG: &str = r#"
app: shop
repo: repo
services:
  api:
    run: "sh run.sh api"
    health: /health
    health_timeout: 5s
    public: true
hooks:
  install: "sh hooks/install.sh"
environments:
  prod:   { tier: prod, branch: main, approval: false, hosts: { api: [www.shop.localhost] } }
  review: { tier: integration, max_active: 3, hosts: { api: ["{branch}.review.localhost"] } }
"#;

const HOST: &str = "feature-login-2.review.localhost";

#[test]
fn an_integration_environment_is_served_at_its_branch_host_until_it_is_deleted() {
    let app = App::with_config(CONFIG);
    let repo = app.dir.path().join("repo");
    git(&repo, &["branch", "feature/Login_2", &app.good[1]]);
    git(&repo, &["branch", "Feature-login-2", &app.good[0]]);
    let shop = crate::example_shop::release().join("bin/shop");
    let server = Server::start_with(
        &app.dir.path().join("cutover.yml"),
        &app.dir.path().join("data"),
        &[("SHOP_BIN", shop.to_str().unwrap())],
    );
    // Nothing there before the environment exists.
    let (status, _, _) = http_get(server.router_port, HOST, "/health").unwrap();
    assert_eq!(status, 404);

    let created = server.cli_json(
        "alice",
        &[
            "env",
            "create",
            "review",
            "--branch",
            "feature/Login_2",
            "--deploy",
        ],
    );
    let name = created["environment"]["name"].as_str().unwrap().to_owned();
    let id = created["run"]["id"].as_i64().expect("--deploy started a run");
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));

    let (status, headers, _) = http_get(server.router_port, HOST, "/health").unwrap();
    assert_eq!(status, 200, "{headers}");
    assert_eq!(
        header(&headers, "x-cutover-version").as_deref(),
        Some(app.good[1].as_str())
    );
    // Upper case and a trailing dot are the same name.
    let (status, _, _) =
        http_get(server.router_port, "Feature-Login-2.review.localhost.", "/health").unwrap();
    assert_eq!(status, 200);

    // Another branch whose label is the same is refused, naming the owner.
    let out = server.cli("bob", &["env", "create", "review", "--branch", "Feature-login-2"]);
    fails_with(&out, &[HOST, &name, "same host label"]);

    let routes = app.dir.path().join("data/dataplane/routes.json");
    let hosts = || -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&routes).unwrap()).unwrap();
        v["edge"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| format!("{} {}", h["host"].as_str().unwrap(), h["env"].as_str().unwrap()))
            .collect()
    };
    let mut listed = hosts();
    listed.sort();
    assert_eq!(
        listed,
        vec![format!("{HOST} {name}"), "www.shop.localhost prod".to_owned()],
        "the template's pattern is not a host of its own"
    );

    // Deleted: the name is gone from the router.
    let out = server.cli("alice", &["env", "delete", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = http_get(server.router_port, HOST, "/health").unwrap();
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "still served after delete: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(hosts(), vec!["www.shop.localhost prod".to_owned()]);

    // A name added to cutover.yml reaches the router with `config reload`, no restart.
    let file = app.dir.path().join("cutover.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replace("[www.shop.localhost]", "[www.shop.localhost, shop.localhost]");
    std::fs::write(&file, text).unwrap();
    let out = server.cli("admin", &["config", "reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut listed = hosts();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            "shop.localhost prod".to_owned(),
            "www.shop.localhost prod".to_owned()
        ]
    );
}

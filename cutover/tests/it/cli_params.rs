//! The first steps of the platform documents: find the version to deploy and
//! set it as an environment's desired version — and every bad case of that.

use crate::support::{Fixture, Server, fails_with, serve_command, stdout};

const DESIRED_STAGING: &str = "/shop-staging/desired_version";

#[test]
fn short_sha_is_stored_as_full_sha_with_history() {
    let fx = Fixture::new();
    let server = fx.start();
    let short = &fx.main[1][..7];

    let put = server.cli_json("alice", &["param", "put", DESIRED_STAGING, short]);
    assert_eq!(put["value"], fx.main[1]);
    assert_eq!(put["version"], 1);
    assert_eq!(put["actor"], "alice");

    let get = server.cli("bob", &["param", "get", DESIRED_STAGING]);
    assert_eq!(stdout(&get).trim(), fx.main[1]);

    // A branch and a tag resolve too; `latest` is kept as the word.
    server.cli_json("bob", &["param", "put", DESIRED_STAGING, "main"]);
    server.cli_json("carol", &["param", "put", DESIRED_STAGING, "v1.0"]);
    server.cli_json("carol", &["param", "put", DESIRED_STAGING, "latest"]);

    let history = server.cli_json("x", &["param", "history", DESIRED_STAGING]);
    let values: Vec<(i64, &str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["version"].as_i64().unwrap(),
                h["value"].as_str().unwrap(),
                h["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        values,
        vec![
            (4, "latest", "carol"),
            (3, fx.main[0].as_str(), "carol"),
            (2, fx.main[2].as_str(), "bob"),
            (1, fx.main[1].as_str(), "alice"),
        ]
    );

    // The human table shows who and which version.
    let table = stdout(&server.cli("x", &["param", "history", DESIRED_STAGING]));
    assert!(table.starts_with("VERSION  VALUE"), "{table}");
    assert!(table.contains("alice"), "{table}");
}

#[test]
fn compare_and_set_refuses_a_stale_write_and_names_the_current_version() {
    let fx = Fixture::new();
    let server = fx.start();
    server.cli_json(
        "alice",
        &[
            "param",
            "put",
            "/shop-dev/feature_flag",
            "on",
            "--expect-version",
            "0",
        ],
    );
    server.cli_json(
        "alice",
        &[
            "param",
            "put",
            "/shop-dev/feature_flag",
            "off",
            "--expect-version",
            "1",
        ],
    );
    let stale = server.cli(
        "bob",
        &[
            "param",
            "put",
            "/shop-dev/feature_flag",
            "on",
            "--expect-version",
            "1",
        ],
    );
    fails_with(&stale, &["2"]);
    let exists = server.cli(
        "bob",
        &[
            "param",
            "put",
            "/shop-dev/feature_flag",
            "on",
            "--expect-version",
            "0",
        ],
    );
    fails_with(&exists, &["2"]);
    let get = server.cli_json("x", &["param", "get", "/shop-dev/feature_flag"]);
    assert_eq!(
        (get["version"].as_i64(), get["value"].as_str()),
        (Some(2), Some("off")),
        "nothing was written"
    );
}

#[test]
fn bad_versions_are_refused_and_nothing_is_written() {
    let fx = Fixture::new();
    let server = fx.start();
    let cases: &[(&str, &[&str])] = &[
        ("no-such-branch", &["no-such-branch", "repo"]),
        ("deadbeefdeadbeef", &["deadbeefdeadbeef"]),
        ("$(reboot)", &["'$'"]),
        ("a b", &["' '"]),
        ("-rf", &["starts with '-'"]),
    ];
    for (typed, needles) in cases {
        // `--` so that values starting with '-' reach Cutover rather than clap.
        let out = server.cli("alice", &["param", "put", "--", DESIRED_STAGING, typed]);
        fails_with(&out, needles);
    }
    // A develop-only commit is not on staging's branch.
    let out = server.cli("alice", &["param", "put", DESIRED_STAGING, &fx.develop_only]);
    fails_with(&out, &["not on branch \"main\"", "staging"]);
    // ...but dev accepts any branch.
    let ok = server.cli_json(
        "alice",
        &["param", "put", "/shop-dev/desired_version", &fx.develop_only[..8]],
    );
    assert_eq!(ok["value"], fx.develop_only);

    let missing = server.cli("x", &["param", "get", DESIRED_STAGING]);
    fails_with(&missing, &["does not exist"]);
}

#[test]
fn pipeline_owned_keys_invalid_keys_and_unknown_environments_are_refused() {
    let fx = Fixture::new();
    let server = fx.start();
    fails_with(
        &server.cli(
            "alice",
            &["param", "put", "/shop-prod/last_deployed_version", &fx.main[0]],
        ),
        &["pipeline", "desired_version"],
    );
    fails_with(
        &server.cli("alice", &["param", "put", "shop/x", "1"]),
        &["start with '/'"],
    );
    fails_with(
        &server.cli("alice", &["param", "put", "/shop//x", "1"]),
        &["/shop//x"],
    );
    fails_with(
        &server.cli("admin", &["token", "create", "Bad Actor", "--role", "viewer"]),
        &["actor", "' '"],
    );
    fails_with(
        &server.cli("alice", &["versions", "production"]),
        &["unknown environment", "prod, staging"],
    );
    fails_with(
        &server.cli("alice", &["env", "show", "Prod"]),
        &["unknown environment"],
    );
    let list = server.cli_json("x", &["param", "list", "/shop"]);
    assert_eq!(list, serde_json::json!([]), "nothing was written");
}

#[test]
fn environments_and_versions_show_desired_built_and_deployed() {
    let fx = Fixture::new();
    let server = fx.start();
    server.cli_json("alice", &["param", "put", DESIRED_STAGING, &fx.main[1]]);

    let envs = server.cli_json("x", &["env", "list"]);
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "prod", "staging"]);
    let staging = &envs[2];
    assert_eq!(staging["tier"], "stage");
    assert_eq!(staging["branch"], "main");
    assert_eq!(staging["desired_version"], fx.main[1]);
    assert!(staging["last_deployed_version"].is_null());

    let versions = server.cli_json("x", &["versions", "staging"]);
    let commits = versions["commits"].as_array().unwrap();
    let shas: Vec<&str> = commits.iter().map(|c| c["version"].as_str().unwrap()).collect();
    assert_eq!(
        shas,
        [fx.main[2].as_str(), fx.main[1].as_str(), fx.main[0].as_str()],
        "newest first, main only"
    );
    let desired: Vec<bool> = commits.iter().map(|c| c["desired"].as_bool().unwrap()).collect();
    assert_eq!(desired, [false, true, false]);
    assert_eq!(commits[0]["subject"], "release 3");

    let table = stdout(&server.cli("x", &["versions", "staging"]));
    assert!(
        table.contains(&fx.main[1][..12]) && table.contains("desired"),
        "{table}"
    );
    let dev = server.cli_json("x", &["versions", "dev"]);
    assert_eq!(dev["commits"][0]["version"], fx.develop_only);
}

#[test]
fn the_audit_log_records_every_change_but_never_a_setting_value() {
    let fx = Fixture::new();
    let server = fx.start();
    server.cli_json(
        "alice",
        &[
            "param",
            "put",
            "/shop-prod/env/DB_PASSWORD",
            "hunter2-very-secret",
        ],
    );
    server.cli_json("bob", &["param", "put", DESIRED_STAGING, &fx.main[0][..10]]);
    let audit = server.cli_json("x", &["audit"]);
    let text = audit.to_string();
    assert!(!text.contains("hunter2-very-secret"), "{text}");
    // Minting the test's tokens is audited too (without secrets); the rest
    // are the two parameter writes.
    let all = audit.as_array().unwrap();
    assert!(
        all.iter()
            .any(|e| e["action"] == "token.create" && e["target"] == "token/bob"),
        "{text}"
    );
    let entries: Vec<&serde_json::Value> = all
        .iter()
        .filter(|e| !e["action"].as_str().unwrap().starts_with("token."))
        .collect();
    assert_eq!(entries.len(), 2, "{text}");
    assert_eq!(
        (entries[0]["actor"].as_str(), entries[0]["target"].as_str()),
        (Some("bob"), Some(DESIRED_STAGING))
    );
    assert_eq!(entries[0]["detail"]["value"], fx.main[0]);
    assert_eq!(
        (
            entries[1]["actor"].as_str(),
            entries[1]["detail"]["value"].as_str()
        ),
        (Some("alice"), Some("****"))
    );
}

#[test]
fn secrets_are_encrypted_at_rest_and_never_printed_back() {
    let fx = Fixture::new();
    let server = fx.start();
    let put = server.cli_json(
        "alice",
        &[
            "param",
            "put",
            "/shop-prod/secrets/rabbit_shop",
            "hunter2-very-secret",
        ],
    );
    assert_eq!(
        (put["value"].as_str(), put["version"].as_i64()),
        (Some("****"), Some(1))
    );
    let get = server.cli_json("x", &["param", "get", "/shop-prod/secrets/rabbit_shop"]);
    assert_eq!(get["value"], "****");
    let listed = server.cli_json("x", &["param", "list", "/shop-prod"]);
    assert_eq!(listed[0]["value"], "****");
    let history = server.cli_json("x", &["param", "history", "/shop-prod/secrets/rabbit_shop"]);
    assert_eq!(history[0]["value"], "****");
    // Nothing on disk holds the plain value (database and its write-ahead log).
    for entry in std::fs::read_dir(fx.data_dir()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes
                .windows(b"hunter2-very-secret".len())
                .any(|w| w == b"hunter2-very-secret"),
            "{} holds the secret in plain text",
            entry.path().display()
        );
    }
    let key = std::fs::metadata(fx.data_dir().join("secret.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}

#[test]
fn rotating_the_secret_key_reencrypts_secrets_and_keeps_the_old_key_aside() {
    let fx = Fixture::new();
    let server = fx.start();
    server.cli_json(
        "alice",
        &["param", "put", "/shop-prod/secrets/db", "hunter2-very-secret"],
    );
    server.cli_json("alice", &["param", "put", "/shop-prod/env/MODE", "fast"]);
    assert!(server.terminate().success());
    let key_file = fx.data_dir().join("secret.key");
    let before = std::fs::read_to_string(&key_file).unwrap();

    let server = Server::start_with_args(&fx.config(), &fx.data_dir(), &[], &["--rotate-secret-key"]);
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(before, after, "a new key");
    assert_eq!(
        std::fs::read_to_string(fx.data_dir().join("secret.key.old")).unwrap(),
        before,
        "the old key kept aside"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = server.cli_json("x", &["param", "get", "/shop-prod/secrets/db"]);
    assert_eq!(
        (secret["value"].as_str(), secret["version"].as_i64()),
        (Some("****"), Some(2))
    );
    assert_eq!(
        secret["actor"], "cutover",
        "re-encrypted by Cutover, as a new version"
    );
    let setting = server.cli_json("x", &["param", "get", "/shop-prod/env/MODE"]);
    assert_eq!(
        (setting["value"].as_str(), setting["version"].as_i64()),
        (Some("fast"), Some(2)),
        "settings are encrypted too: re-encrypted as a new version, shown decrypted"
    );
    assert!(server.terminate().success());

    // A rotation cut short (its next key still there) stops a plain start with the way out.
    std::fs::write(fx.data_dir().join("secret.key.next"), &after).unwrap();
    let out = serve_command(fx.config(), fx.data_dir()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rotation was interrupted") && err.contains("--rotate-secret-key"),
        "{err}"
    );
}

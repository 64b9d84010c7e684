//! The CLI's own documentation: shell completions and man pages generated from the grammar, the
//! JSON Schema of cutover.yml, and durations refused the way cutover.yml refuses them. (That every
//! command's --help has an example is a unit test of `cli.rs`, which walks the clap tree.)

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::{BIN, stderr, stdout};

/// The top-level subcommands `cutover --help` lists.
fn subcommands() -> Vec<String> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = stdout(&out);
    let list = &help[help.find("Commands:").expect("a Commands section")..];
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    for expected in ["serve", "release", "scheduler", "completions", "man", "config"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }
    names
}

#[test]
fn completions_name_every_subcommand_and_bash_accepts_the_script() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell} completion lacks {name}");
        }
        // Nested subcommands and flags too.
        for nested in ["schema", "suspend", "--timeout"] {
            assert!(script.contains(nested), "{shell} completion lacks {nested}");
        }
    }
    let script = Command::new(BIN).args(["completions", "bash"]).output().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cutover.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));

    let out = Command::new(BIN).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bash"), "{}", stderr(&out));
}

#[test]
fn man_prints_a_page_naming_every_subcommand_and_writes_one_per_command() {
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH cutover 1"), "not a roff man page: {page}");
    for name in subcommands() {
        // roff escapes '-' as '\-'.
        let escaped = name.replace('-', "\\-");
        assert!(page.contains(&escaped), "the man page lacks {name}");
    }

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = Command::new(BIN)
        .arg("man")
        .arg("--dir")
        .arg(&pages)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let written: BTreeSet<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "cutover.1",
        "cutover-release.1",
        "cutover-env-create.1",
        "cutover-scheduler-run.1",
        "cutover-config-schema.1",
    ] {
        assert!(written.contains(expected), "{expected} not in {written:?}");
    }
    let release = std::fs::read_to_string(pages.join("cutover-release.1")).unwrap();
    assert!(release.contains("\\-\\-wait"), "{release}");
    assert!(
        release.contains("Example"),
        "the example of --help is in the page too: {release}"
    );
}

#[test]
fn a_duration_the_cli_refuses_is_refused_as_cutover_yml_refuses_it() {
    // `--expires 90days` used to be accepted (humantime) where cutover.yml says no; both now
    // read durations with the one parser, and the CLI refuses before asking any server.
    let out = Command::new(BIN)
        .args([
            "--server",
            "http://127.0.0.1:9",
            "token",
            "create",
            "ci",
            "--role",
            "viewer",
        ])
        .args(["--expires", "90days"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--expires") && err.contains("unknown unit \"days\""),
        "{err}"
    );
    assert!(err.contains("\"7d\""), "it says what is accepted: {err}");

    let out = Command::new(BIN)
        .args([
            "--server",
            "http://127.0.0.1:9",
            "release",
            "dev",
            "--wait",
            "--timeout",
            "0s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("zero"), "{}", stderr(&out));
}

#[test]
fn config_schema_is_json_schema_with_the_parsers_sections() {
    let out = Command::new(BIN).args(["config", "schema"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let top: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "app",
        "repo",
        "services",
        "environments",
        "scheduler",
        "webhooks",
        "run_as",
    ] {
        assert!(top.contains(key), "{key} not in {top:?}");
    }
    let env = &schema["properties"]["environments"]["additionalProperties"];
    assert_eq!(env["additionalProperties"], false);
    assert!(env["properties"]["tier"]["enum"].as_array().unwrap().len() >= 5);
    // -o table does not turn it into something else.
    let table = Command::new(BIN)
        .args(["config", "schema", "-o", "table"])
        .output()
        .unwrap();
    assert_eq!(table.stdout, out.stdout);
}

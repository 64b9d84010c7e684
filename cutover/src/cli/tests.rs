//! The grammar's own checks: every command teaches by example, durations read as in cutover.yml.

use clap::CommandFactory;

use super::*;

/// Every command and subcommand, by its full path (`cutover env create`), visiting hidden
/// ones too: a command a user can type has an example in its --help.
fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let help = [cmd.get_after_help(), cmd.get_after_long_help()]
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    out.push((path.to_owned(), help));
    for sub in cmd.get_subcommands() {
        walk(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let cli = Cli::command();
    cli.clone().debug_assert();
    let mut commands = Vec::new();
    walk(&cli, "cutover", &mut commands);
    // The tree is really walked: top level, nested, and the commands added last.
    for expected in [
        "cutover",
        "cutover scheduler run",
        "cutover scale approve",
        "cutover config schema",
        "cutover completions",
        "cutover man",
    ] {
        assert!(
            commands.iter().any(|(path, _)| path == expected),
            "{expected} not found"
        );
    }
    let without: Vec<&str> = commands
        .iter()
        .filter(|(path, help)| !(help.contains("Example") && help.contains(path.as_str())))
        .map(|(path, _)| path.as_str())
        .collect();
    assert!(
        without.is_empty(),
        "these commands have no `Example` that shows them (`cutover ...`) in --help; add one with after_help: {without:?}"
    );
}

/// Whether `cutover.yml` accepts `text` as a duration (`health_timeout`, `hook_timeout`).
fn yml_accepts(text: &str) -> bool {
    let ok = |key_line: String, env_extra: &str| {
        let yml = format!(
            "app: shop\nservices:\n  web:\n    run: x\n{key_line}\nenvironments:\n  dev: {{ tier: dev{env_extra} }}\n"
        );
        cutover_core::config::parse(&yml, std::path::Path::new("cutover.yml")).is_ok()
    };
    let service = ok(format!("    health_timeout: {text:?}"), "");
    let env = ok(String::new(), &format!(", hook_timeout: {text:?}"));
    assert_eq!(service, env, "{text:?}: health_timeout and hook_timeout disagree");
    service
}

fn cli_accepts(text: &str) -> bool {
    let timeout = Cli::try_parse_from(["cutover", "release", "dev", "--wait", "--timeout", text]).is_ok();
    let expires = Cli::try_parse_from([
        "cutover",
        "token",
        "create",
        "ci",
        "--role",
        "viewer",
        "--expires",
        text,
    ])
    .is_ok();
    assert_eq!(timeout, expires, "{text:?}: --timeout and --expires disagree");
    timeout
}

#[test]
fn durations_mean_the_same_in_the_cli_and_in_cutover_yml() {
    let accepted = ["90s", "5m", "1h30m", "7d", "2w", "30m"];
    let refused = [
        "0", "0s", "-1s", "abc", "90", "90days", "1.5h", "1h 30m", "", "5y",
    ];
    for text in accepted {
        assert!(yml_accepts(text), "cutover.yml refuses {text:?}");
        assert!(cli_accepts(text), "the CLI refuses {text:?}");
    }
    for text in refused {
        assert!(!yml_accepts(text), "cutover.yml accepts {text:?}");
        assert!(!cli_accepts(text), "the CLI accepts {text:?}");
    }
    let parsed = Cli::try_parse_from(["cutover", "release", "dev", "--wait", "--timeout", "1h30m"]).unwrap();
    let Command::Release(args) = parsed.command else {
        panic!("not a release")
    };
    assert_eq!(args.wait.timeout.value, Duration::from_secs(5400));
    assert_eq!(args.wait.timeout.text, "1h30m");
}

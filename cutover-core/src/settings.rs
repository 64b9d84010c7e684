//! Which names a setting (`/<app>-<env>/env/NAME`, an environment variable of
//! every hook, build, job and instance) may have.
//!
//! A setting is written by a deployer, but its value reaches processes that
//! run with the server's reach (a hook's `sh`, a build, an interpreter). Some
//! variable names change how those programs *start*: `BASH_ENV` makes every
//! non-interactive `bash` run a file's code, `LD_PRELOAD` loads a library into
//! every dynamically linked program, `PYTHONSTARTUP`, `PERL5OPT`,
//! `NODE_OPTIONS`, `GIT_SSH_COMMAND`... run code of the writer's choosing in
//! the operator's hooks. Such names are refused, when a setting is written and
//! again when settings are rendered for a run (a value stored by an older
//! version must not slip through). `CUTOVER_*` is Cutover's own namespace.
//!
//! Rejected: an allow-list of "ordinary" names (applications use any
//! `UPPER_CASE` name they like), and escaping values (the danger is the
//! name, not the value).

/// Names refused exactly, each with what it would change.
const EXACT: &[(&str, &str)] = &[
    ("BASH_ENV", "bash runs the file it names before every script"),
    ("ENV", "sh and dash run the file it names when they start"),
    ("PATH", "it decides which program every command name runs"),
    ("IFS", "it changes how the shell splits words"),
    ("SHELLOPTS", "it turns on shell options in every bash"),
    ("BASHOPTS", "it turns on shell options in every bash"),
    (
        "PS4",
        "bash expands it (running command substitutions) when tracing",
    ),
    ("PROMPT_COMMAND", "bash runs it before every prompt"),
    (
        "NODE_OPTIONS",
        "node reads extra options (e.g. --require) from it",
    ),
    (
        "JAVA_TOOL_OPTIONS",
        "every JVM reads extra options (e.g. -javaagent) from it",
    ),
    (
        "_JAVA_OPTIONS",
        "every JVM reads extra options (e.g. -javaagent) from it",
    ),
    (
        "JDK_JAVA_OPTIONS",
        "the java launcher reads extra options from it",
    ),
    ("BASH_FUNC", "bash imports functions from variables named like it"),
    ("CDPATH", "it changes where `cd` goes in every shell script"),
    ("GLOBIGNORE", "it changes how bash expands file names"),
    ("HOME", "shells and tools read start-up files from it"),
];

/// Name prefixes refused, each with what names like it change.
const PREFIXES: &[(&str, &str)] = &[
    ("CUTOVER_", "CUTOVER_* variables are set by Cutover itself"),
    (
        "LD_",
        "the dynamic loader reads LD_* (LD_PRELOAD loads a library into every program)",
    ),
    ("DYLD_", "the dynamic loader reads DYLD_*"),
    (
        "PYTHON",
        "python reads PYTHON* at start-up (PYTHONSTARTUP, PYTHONPATH run code)",
    ),
    (
        "PERL5",
        "perl reads PERL5* at start-up (PERL5OPT, PERL5LIB run code)",
    ),
    ("PERLLIB", "perl loads modules from it"),
    ("RUBY", "ruby reads RUBY* at start-up (RUBYOPT loads code)"),
    (
        "GIT_",
        "git reads GIT_* (GIT_SSH_COMMAND, GIT_CONFIG_* run commands)",
    ),
    ("BASH_FUNC_", "bash imports functions from BASH_FUNC_* variables"),
];

/// Why a setting may not be called `name`, or `None` when it may. The text
/// says what the name would change and what to do instead.
pub fn refused_setting_name(name: &str) -> Option<String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(format!(
            "setting names are letters, digits and '_' (an environment variable name); {name:?} is not"
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(format!(
            "setting name {name:?} starts with a digit; environment variable names may not"
        ));
    }
    let upper = name.to_ascii_uppercase();
    let why = EXACT
        .iter()
        .find(|(n, _)| *n == upper)
        .map(|(_, why)| *why)
        .or_else(|| {
            PREFIXES
                .iter()
                .find(|(p, _)| upper.starts_with(p))
                .map(|(_, why)| *why)
        })?;
    Some(format!(
        "setting name {name} is refused: {why}, so a setting could run code of its writer's choosing in \
         every hook, build, job and instance. Use another name (e.g. APP_{upper}) and have the application read it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_change_how_programs_start_are_refused() {
        for bad in [
            "BASH_ENV",
            "ENV",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "PATH",
            "IFS",
            "SHELLOPTS",
            "BASHOPTS",
            "PS4",
            "PROMPT_COMMAND",
            "PYTHONSTARTUP",
            "PYTHONPATH",
            "PERL5OPT",
            "RUBYOPT",
            "NODE_OPTIONS",
            "JAVA_TOOL_OPTIONS",
            "GIT_SSH_COMMAND",
            "CUTOVER_ENV_DIR",
            "bash_env",
            "Ld_Preload",
        ] {
            let why = refused_setting_name(bad).unwrap_or_else(|| panic!("{bad} must be refused"));
            assert!(why.contains("refused"), "{why}");
        }
        assert!(
            refused_setting_name("BASH_ENV")
                .unwrap()
                .contains("bash runs the file")
        );
    }

    #[test]
    fn ordinary_names_are_accepted() {
        for good in [
            "DATABASE_URL",
            "FEATURE_X",
            "LOG_LEVEL",
            "ENVIRONMENT",
            "PATHNAME",
            "APP_PATH",
            "a1",
        ] {
            assert_eq!(refused_setting_name(good), None, "{good}");
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in ["", "A-B", "A B", "1ABC", "Ä"] {
            assert!(refused_setting_name(bad).is_some(), "{bad:?}");
        }
    }
}

//! How large a parameter may be, checked when it is written (`param put`), not when a hook
//! or instance first fails to start.
//!
//! Settings (`/<app>-<env>/env/NAME`) become environment variables of every hook, build,
//! job and instance. Linux refuses to start a program when one `NAME=value` string exceeds
//! `MAX_ARG_STRLEN` (128 KiB) or all arguments and variables together exceed `ARG_MAX`
//! (a quarter of the stack limit, usually 2 MiB): `execve` fails with `E2BIG` and every
//! hook of the environment fails with no useful reason. So every value is at most
//! [`MAX_VALUE_BYTES`] (below the per-string limit with room for the name) and an
//! environment's settings together at most [`MAX_SETTINGS_BYTES`] (leaving half of the
//! usual `ARG_MAX` for Cutover's own variables and the inherited environment).
//!
//! Rejected: checking only when settings are rendered (the refusal would come at deploy
//! time, to someone else) and a larger per-value limit for keys that never become
//! variables (one rule is easier to document; large blobs belong in files).

use crate::EngineError;

/// The largest value of one parameter, in bytes (64 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The largest total of one environment's settings, counted as the `NAME=value` strings
/// they become, in bytes (1 MiB).
pub const MAX_SETTINGS_BYTES: usize = 1024 * 1024;

/// Refuses a value over [`MAX_VALUE_BYTES`].
pub(crate) fn check_value(key: &str, value: &str) -> Result<(), EngineError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(EngineError::Refused(format!(
            "the value for {key} is {} bytes; a parameter value may be at most {MAX_VALUE_BYTES} bytes (64 KiB), \
             because settings become environment variables and the kernel refuses larger ones. \
             Put large data in a file of the release and name the file in the setting instead",
            value.len()
        )));
    }
    Ok(())
}

/// Refuses a write that would take an environment's settings over [`MAX_SETTINGS_BYTES`].
/// `others` are the other settings of that environment as (name, value).
pub(crate) fn check_settings_total<'a>(
    key: &str,
    name: &str,
    value: &str,
    others: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), EngineError> {
    let size = |n: &str, v: &str| n.len() + v.len() + 2;
    let total = others.map(|(n, v)| size(n, v)).sum::<usize>() + size(name, value);
    if total > MAX_SETTINGS_BYTES {
        return Err(EngineError::Refused(format!(
            "writing {key} would make this environment's settings {total} bytes as environment variables; \
             together they may be at most {MAX_SETTINGS_BYTES} bytes (1 MiB), or programs cannot be started. \
             Remove or shorten other settings first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_totals_over_the_limits_are_refused_naming_the_limit() {
        assert!(check_value("/a-dev/env/X", &"x".repeat(MAX_VALUE_BYTES)).is_ok());
        let err = check_value("/a-dev/env/X", &"x".repeat(MAX_VALUE_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("at most 65536 bytes"), "{err}");
        let big = "y".repeat(MAX_VALUE_BYTES);
        let others: Vec<(String, String)> = (0..15).map(|i| (format!("V{i}"), big.clone())).collect();
        let iter = || others.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        assert!(check_settings_total("/a-dev/env/X", "X", "1", iter()).is_ok());
        let err = check_settings_total("/a-dev/env/X", "X", &big, iter()).unwrap_err();
        assert!(err.to_string().contains("at most 1048576 bytes"), "{err}");
    }
}

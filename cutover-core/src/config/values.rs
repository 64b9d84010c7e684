//! Small value grammars used by `cutover.yml`: durations (`72h`, `1h30m`),
//! branch names, and the edit distance behind "did you mean" suggestions.
//! The two grammars are hand-written because each is a few lines and a crate
//! per grammar would cost more than it saves; the edit distance is `strsim`'s
//! optimal string alignment (it replaced a hand-written copy of the same).

use std::time::Duration;

use serde::Serializer;

const DURATION_RULE: &str =
    "write a number followed by a unit s, m, h, d or w, e.g. \"30m\", \"72h\", \"7d\" or \"1h30m\"";

/// Parses `72h`, `30m`, `7d`, `45s`, `2w` and sums like `1h30m`. Zero and
/// bare numbers are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_RULE}"));
    }
    if s.contains(char::is_whitespace) {
        return Err(format!(
            "duration {text:?} must not contain spaces; {DURATION_RULE}"
        ));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {text:?}; {DURATION_RULE}"));
        }
        let (num, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let secs_per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            "" => return Err(format!("duration {text:?} has no unit; {DURATION_RULE}")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {text:?}; {DURATION_RULE}"
                ));
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        total = n
            .checked_mul(secs_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = tail;
    }
    if total == 0 {
        return Err(format!("duration {text:?} is zero; it must be longer than that"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a whole-second duration compactly: `3d`, `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

pub(crate) fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

const BRANCH_RULE: &str = "a branch name has no spaces, no \"..\", no leading '-' and none of ~ ^ : ? * [ \\";

/// Checks that `name` could be a git branch (a subset of `git check-ref-format`).
pub(crate) fn check_branch(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.starts_with('-') {
        Some("it starts with '-'".to_owned())
    } else if name.contains("..") {
        Some("it contains \"..\"".to_owned())
    } else if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(*c))
    {
        Some(format!("it contains {c:?}"))
    } else if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        Some("it has an empty path component ('/' at the start or end, or \"//\")".to_owned())
    } else if name.ends_with('.') || name.ends_with(".lock") || name.contains("@{") || name == "@" {
        Some("git does not allow it (ends with '.' or \".lock\", or contains \"@{\")".to_owned())
    } else if name.len() > 255 {
        Some("it is longer than 255 characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!("{name:?} is not a valid branch name: {p}; {BRANCH_RULE}")),
        None => Ok(()),
    }
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), by `strsim`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

/// The candidate closest to `input`, if it is close enough to be a likely typo
/// (at most a third of the input's length, and at least one edit allowed).
pub(crate) fn nearest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lowered = input.to_lowercase();
    let limit = (input.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(&lowered, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("72h").unwrap(), Duration::from_secs(72 * 3600));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(14 * 86_400));
        for bad in [
            "",
            "72",
            "h",
            "3 days",
            "5y",
            "0m",
            "1.5h",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(72 * 3600)), "3d");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn branches() {
        for ok in ["main", "develop", "feature/x-1", "release/2024.1"] {
            check_branch(ok).unwrap();
        }
        for bad in [
            "", "-x", "a..b", "a b", "a:b", "a~1", "x/", "/x", "a.lock", "a\tb",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("replica", "replicas"), 1);
        assert_eq!(edit_distance("teir", "tier"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        // Counted in characters, not bytes: one accented letter is one edit.
        assert_eq!(edit_distance("déploy", "deploy"), 1);
        assert_eq!(nearest("régistry", &["registry"]), Some("registry"));
        assert_eq!(nearest("replica", &["run", "replicas"]), Some("replicas"));
        assert_eq!(
            nearest("enviroments", &["environments", "services"]),
            Some("environments")
        );
        assert_eq!(nearest("Tier", &["tier"]), Some("tier"));
        assert_eq!(nearest("healthcheck", &["health"]), None);
        assert_eq!(nearest("xyz", &["app"]), None);
    }
}

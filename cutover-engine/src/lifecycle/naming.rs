//! The name of an integration environment: `<template>-<branch slug>`,
//! lowercase, at most [`MAX_NAME`] characters, and never one that is taken.
//!
//! Two branches can give the same slug (`feature/x`, `feature-x`) and a long
//! branch is truncated, so a taken name gets a suffix of six hex digits of a
//! hash of the branch (stable across restarts and machines), then a counter.
//! Rejected: a random suffix (the same branch would get a different name
//! every time it is re-created, and its history would be split).

use cutover_core::EnvName;

use crate::EngineError;

/// Longest derived name: room for `<service>.<env>.<app>.localhost` host
/// names and `<app>-<env>-<service>` artifact names.
pub const MAX_NAME: usize = 40;

/// `feature/Checkout_v2` → `feature-checkout-v2`: lowercase ASCII letters
/// and digits, every other run of characters one `-`, none at either end.
pub fn slug(branch: &str) -> String {
    let mut out = String::new();
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// FNV-1a of the branch, as six hex digits.
fn branch_hash(branch: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in branch.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

fn cut(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// The name for `branch`'s environment made from `template`; `taken` says
/// whether a candidate is already used.
pub fn derive_name(
    template: &EnvName,
    branch: &str,
    taken: impl Fn(&str) -> bool,
) -> Result<EnvName, EngineError> {
    let s = slug(branch);
    let hash = branch_hash(branch);
    let base = if s.is_empty() {
        cut(&format!("{template}-{hash}"), MAX_NAME)
    } else {
        cut(&format!("{template}-{s}"), MAX_NAME)
    };
    let mut candidates = vec![base.clone()];
    candidates.push(format!("{}-{hash}", cut(&base, MAX_NAME - 7)));
    for n in 2..100 {
        let suffix = format!("-{hash}-{n}");
        candidates.push(format!("{}{suffix}", cut(&base, MAX_NAME - suffix.len())));
    }
    for c in candidates {
        if taken(&c) {
            continue;
        }
        return EnvName::parse(&c).map_err(|e| {
            EngineError::Refused(format!(
                "cannot derive an environment name from template {template} and branch {branch:?}: {e}; \
                 use a shorter template name"
            ))
        });
    }
    Err(EngineError::Refused(format!(
        "every name derived from template {template} and branch {branch:?} is taken; delete unused \
         integration environments (cutover env list)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> EnvName {
        EnvName::parse(name).unwrap()
    }

    #[test]
    fn slugs_are_lowercase_with_single_dashes() {
        assert_eq!(slug("feature/Checkout_v2"), "feature-checkout-v2");
        assert_eq!(slug("--Fix--it--"), "fix-it");
        assert_eq!(slug("ÄÖ/x"), "x");
        assert_eq!(slug("___"), "");
    }

    #[test]
    fn the_name_is_template_and_slug() {
        let name = derive_name(&t("review"), "feature/login", |_| false).unwrap();
        assert_eq!(name.as_str(), "review-feature-login");
    }

    #[test]
    fn long_branches_are_truncated_to_a_valid_name() {
        let branch = "feature/".to_owned() + &"a-very-long-branch-name-".repeat(10);
        let name = derive_name(&t("review"), &branch, |_| false).unwrap();
        assert!(name.as_str().len() <= MAX_NAME, "{name}");
        assert!(name.as_str().starts_with("review-feature-a-very-long"));
        assert!(!name.as_str().ends_with('-'));
    }

    #[test]
    fn a_taken_name_gets_the_branch_hash_then_a_counter() {
        let first = derive_name(&t("review"), "feature/x", |_| false).unwrap();
        let other = derive_name(&t("review"), "feature-x", |c| c == first.as_str()).unwrap();
        assert_ne!(other, first);
        assert!(other.as_str().starts_with("review-feature-x-"), "{other}");
        assert_eq!(other.as_str().len(), "review-feature-x-".len() + 6);
        // Stable: the same branch gives the same name again.
        let again = derive_name(&t("review"), "feature-x", |c| c == first.as_str()).unwrap();
        assert_eq!(again, other);
        let third = derive_name(&t("review"), "feature-x", |c| {
            c == first.as_str() || c == other.as_str()
        })
        .unwrap();
        assert!(third.as_str().ends_with("-2"), "{third}");
        assert!(derive_name(&t("review"), "x", |_| true).is_err());
    }

    #[test]
    fn a_branch_without_letters_or_digits_gets_its_hash() {
        let name = derive_name(&t("review"), "___", |_| false).unwrap();
        assert_eq!(name.as_str().len(), "review-".len() + 6);
    }
}

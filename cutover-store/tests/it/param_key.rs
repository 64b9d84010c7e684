//! The parameter key grammar, as a table of accepted and refused keys.

use cutover_store::{PARAM_KEY_MAX_LEN, ParamKey};

#[test]
fn good_keys_are_accepted_unchanged() {
    let longest = format!("/{}", "a".repeat(PARAM_KEY_MAX_LEN - 1));
    for good in [
        "/a",
        "/shop-prod/desired_version",
        "/shop-prod/last_deployed_version",
        "/shop-prod",
        "/Shop_Prod/DB.Password-2",
        "/a/b/c/d/e",
        "/x/.hidden",
        "/x/a..b",
        "/x/...",
        longest.as_str(),
    ] {
        let key = ParamKey::parse(good).unwrap_or_else(|e| panic!("{good:?} should be valid: {e}"));
        assert_eq!(key.as_str(), good);
        assert_eq!(key.to_string(), good);
    }
}

#[test]
fn bad_keys_are_refused_with_a_reason_and_the_rule() {
    let too_long = format!("/{}", "a".repeat(PARAM_KEY_MAX_LEN));
    for (bad, reason) in [
        ("", "empty"),
        ("shop-prod/x", "does not start with '/'"),
        ("/", "no segment"),
        ("/shop-prod/", "ends with '/'"),
        ("//shop-prod", "empty segment"),
        ("/shop-prod//x", "empty segment"),
        ("/shop-prod/./x", "segment 2 is \".\""),
        ("/shop-prod/..", "segment 2 is \"..\""),
        ("/../etc/passwd", "segment 1 is \"..\""),
        ("/shop prod", "' '"),
        ("/shop-prod/x;rm", "';'"),
        ("/shop-prod/$(id)", "'$'"),
        ("/shop-prod/\\x", "'\\\\'"),
        ("/zażółć", "'ż'"),
        ("/a\nb", "'\\n'"),
        (too_long.as_str(), "too long (513 characters)"),
    ] {
        let err = ParamKey::parse(bad).expect_err(bad).to_string();
        assert!(err.contains(reason), "{bad:?}: expected {reason:?} in {err:?}");
        assert!(
            err.contains("parameter key"),
            "{bad:?}: the message should say what was checked: {err}"
        );
        assert!(
            err.contains("/shop-prod/desired_version"),
            "{bad:?}: the message should show a valid example: {err}"
        );
    }
}

#[test]
fn keys_serialize_as_strings_and_validate_when_deserialized() {
    let key = ParamKey::parse("/shop-prod/desired_version").unwrap();
    assert_eq!(
        serde_json::to_string(&key).unwrap(),
        "\"/shop-prod/desired_version\""
    );
    assert_eq!(
        serde_json::from_str::<ParamKey>("\"/shop-prod/desired_version\"").unwrap(),
        key
    );
    assert!(serde_json::from_str::<ParamKey>("\"/shop-prod/../x\"").is_err());
}

#[test]
fn is_under_uses_path_segments() {
    let prefix = ParamKey::parse("/shop-prod").unwrap();
    let under = |k: &str| ParamKey::parse(k).unwrap().is_under(&prefix);
    assert!(under("/shop-prod"));
    assert!(under("/shop-prod/x"));
    assert!(under("/shop-prod/x/y"));
    assert!(!under("/shop-production/x"));
    assert!(!under("/shop-pro"));
    assert_eq!(
        ParamKey::parse("/a/b/c").unwrap().segments().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

//! Conformance: the parameter store (versions, history, listing, compare-and-set).

use serde_json::json;

use super::{audit, key, keys_of, wall_ms};
use crate::{Store, StoreError};

/// Get of a missing key is `None`; put returns what get then returns.
pub async fn put_then_get(store: &dyn Store) {
    let k = key("/shop-prod/desired_version");
    assert_eq!(store.param_get(&k).await.unwrap(), None);
    let before = wall_ms();
    let put = store.param_put(&k, "abc123", "alice", None).await.unwrap();
    let after = wall_ms();
    assert_eq!(
        (
            put.key.as_str(),
            put.version,
            put.value.as_str(),
            put.actor.as_str()
        ),
        (k.as_str(), 1, "abc123", "alice")
    );
    assert!(
        before <= put.at_ms && put.at_ms <= after,
        "at_ms {} not within [{before}, {after}]",
        put.at_ms
    );
    assert_eq!(store.param_get(&k).await.unwrap(), Some(put));
}

/// Versions are 1, 2, 3... per key, independently of other keys.
pub async fn versions_are_numbered_per_key(store: &dyn Store) {
    let (a, b) = (key("/app-dev/a"), key("/app-dev/b"));
    for expected in 1..=3 {
        assert_eq!(
            store
                .param_put(&a, &format!("a{expected}"), "bob", None)
                .await
                .unwrap()
                .version,
            expected
        );
    }
    assert_eq!(store.param_put(&b, "b1", "bob", None).await.unwrap().version, 1);
    let newest = store.param_get(&a).await.unwrap().unwrap();
    assert_eq!((newest.version, newest.value.as_str()), (3, "a3"));
}

/// History lists every version, newest first, with its own actor and value.
pub async fn history_is_newest_first(store: &dyn Store) {
    let k = key("/app-stage/setting");
    assert!(store.param_history(&k).await.unwrap().is_empty());
    for (value, actor) in [("one", "alice"), ("two", "bob"), ("three", "carol")] {
        store.param_put(&k, value, actor, None).await.unwrap();
    }
    let history = store.param_history(&k).await.unwrap();
    let seen: Vec<_> = history
        .iter()
        .map(|p| (p.version, p.value.as_str(), p.actor.as_str()))
        .collect();
    assert_eq!(
        seen,
        [(3, "three", "carol"), (2, "two", "bob"), (1, "one", "alice")]
    );
    assert!(
        history.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
        "times go backwards in history"
    );
    assert!(history.iter().all(|p| p.key == k.as_str()));
}

/// Listing is by path prefix: `/shop-prod` is not a prefix of `/shop-production/x`.
pub async fn list_by_path_prefix(store: &dyn Store) {
    for raw in [
        "/shop-prod",
        "/shop-prod/desired_version",
        "/shop-prod/db/password",
        "/shop-production/desired_version",
        "/shop-prod-eu/x",
        "/shop-prod_eu/x",
        "/shop-prod.eu/x",
        "/shop-pro/x",
        "/other/y",
    ] {
        store.param_put(&key(raw), "v1", "alice", None).await.unwrap();
    }
    store
        .param_put(&key("/shop-prod/desired_version"), "v2", "bob", None)
        .await
        .unwrap();

    let listed = store.param_list("/shop-prod").await.unwrap();
    assert_eq!(
        keys_of(&listed),
        [
            "/shop-prod",
            "/shop-prod/db/password",
            "/shop-prod/desired_version"
        ]
    );
    let desired = &listed[2];
    assert_eq!(
        (desired.version, desired.value.as_str(), desired.actor.as_str()),
        (2, "v2", "bob"),
        "newest only"
    );

    assert_eq!(
        store.param_list("/shop-prod/").await.unwrap(),
        listed,
        "a trailing '/' changes nothing"
    );
    assert_eq!(
        keys_of(&store.param_list("/shop-prod/db").await.unwrap()),
        ["/shop-prod/db/password"]
    );
    assert_eq!(
        keys_of(&store.param_list("/shop-production").await.unwrap()),
        ["/shop-production/desired_version"]
    );
    assert!(store.param_list("/nothing-here").await.unwrap().is_empty());
    assert!(
        store.param_list("/shop").await.unwrap().is_empty(),
        "a prefix matches whole segments only"
    );

    let all = store.param_list("/").await.unwrap();
    assert_eq!(all.len(), 9);
    assert!(
        keys_of(&all).windows(2).all(|w| w[0] < w[1]),
        "sorted by key: {:?}",
        keys_of(&all)
    );
    assert_eq!(store.param_list("").await.unwrap(), all);
}

/// A prefix that is not a key is refused, naming what was given.
pub async fn list_rejects_invalid_prefix(store: &dyn Store) {
    for bad in ["shop-prod", "/shop prod", "/a//b", "/a/../b"] {
        match store.param_list(bad).await {
            Err(StoreError::InvalidKey { key, .. }) => assert_eq!(key, bad),
            other => panic!("param_list({bad:?}) should be InvalidKey, got {other:?}"),
        }
    }
}

/// Compare-and-set succeeds when the expected version is the newest.
pub async fn cas_success(store: &dyn Store) {
    let k = key("/app-prod/desired_version");
    assert_eq!(
        store.param_put(&k, "v1", "alice", Some(0)).await.unwrap().version,
        1
    );
    assert_eq!(
        store.param_put(&k, "v2", "alice", Some(1)).await.unwrap().version,
        2
    );
    assert_eq!(store.param_put(&k, "v3", "alice", None).await.unwrap().version, 3);
    assert_eq!(
        store.param_put(&k, "v4", "alice", Some(3)).await.unwrap().version,
        4
    );
}

/// A stale expected version fails, names the current version, writes nothing.
pub async fn cas_mismatch_names_current_and_writes_nothing(store: &dyn Store) {
    let k = key("/app-prod/desired_version");
    store.param_put(&k, "v1", "alice", None).await.unwrap();
    store.param_put(&k, "v2", "alice", None).await.unwrap();
    let err = store.param_put(&k, "stale", "bob", Some(1)).await.unwrap_err();
    let message = err.to_string();
    match err {
        StoreError::VersionMismatch {
            key: got,
            expected,
            current,
        } => {
            assert_eq!((got.as_str(), expected, current), (k.as_str(), 1, Some(2)));
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    assert!(
        message.contains(k.as_str()) && message.contains("version 2"),
        "{message}"
    );
    let history = store.param_history(&k).await.unwrap();
    assert_eq!(
        history.len(),
        2,
        "a failed compare-and-set wrote something: {history:?}"
    );
    assert_eq!(history[0].value, "v2");

    let missing = key("/app-prod/never_written");
    match store.param_put(&missing, "x", "bob", Some(5)).await {
        Err(StoreError::VersionMismatch {
            expected: 5,
            current: None,
            ..
        }) => {}
        other => panic!("expected VersionMismatch with current None, got {other:?}"),
    }
    assert_eq!(store.param_get(&missing).await.unwrap(), None);
}

/// `Some(0)` means "create": it fails once the key exists.
pub async fn cas_zero_on_existing_key(store: &dyn Store) {
    let k = key("/app-dev/feature_flag");
    store.param_put(&k, "on", "alice", Some(0)).await.unwrap();
    match store.param_put(&k, "off", "bob", Some(0)).await {
        Err(StoreError::VersionMismatch {
            expected: 0,
            current: Some(1),
            ..
        }) => {}
        other => panic!("expected VersionMismatch(expected 0, current 1), got {other:?}"),
    }
    assert_eq!(store.param_get(&k).await.unwrap().unwrap().value, "on");
}

/// Values and actors come back byte for byte, whatever they contain.
pub async fn values_round_trip_verbatim(store: &dyn Store) {
    let k = key("/app-dev/odd_values");
    let big = "x".repeat(256 * 1024);
    let values = [
        "",
        " leading and trailing ",
        "multi\nline\r\n",
        "quote ' \" ; DROP TABLE param_versions; --",
        "zażółć 🚀 \u{1}",
        &big,
    ];
    for value in values {
        let written = store
            .param_put(&k, value, "o'brien \"the\" admin", None)
            .await
            .unwrap();
        let read = store.param_get(&k).await.unwrap().unwrap();
        assert_eq!(read, written);
        assert_eq!(read.value, value);
        assert_eq!(read.actor, "o'brien \"the\" admin");
    }
}

/// NUL cannot be stored on every backend: it is refused and nothing is written.
pub async fn nul_characters_are_refused(store: &dyn Store) {
    let k = key("/app-dev/nul");
    for (value, actor, field) in [("a\0b", "alice", "value"), ("ok", "al\0ice", "actor")] {
        match store.param_put(&k, value, actor, None).await {
            Err(StoreError::InvalidText { field: got, target }) => {
                assert_eq!((got, target.as_str()), (field, k.as_str()))
            }
            other => panic!("expected InvalidText for the {field}, got {other:?}"),
        }
    }
    assert_eq!(store.param_get(&k).await.unwrap(), None);
    let err = store
        .audit_append(audit(
            "alice",
            "param.put",
            "/a\0",
            json!("\0 is fine inside JSON"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidText { field: "target", .. }),
        "{err:?}"
    );
    assert!(store.audit_list(10, None).await.unwrap().is_empty());
    let ok = store
        .audit_append(audit("alice", "param.put", "/a", json!("\0 is fine inside JSON")))
        .await
        .unwrap();
    assert_eq!(store.audit_list(1, None).await.unwrap()[0].detail, ok.detail);
}

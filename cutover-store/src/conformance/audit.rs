//! Conformance: the audit log.

use serde_json::json;

use super::{audit, wall_ms};
use crate::Store;

/// Audit entries come back newest first with increasing ids and their detail.
pub async fn audit_append_and_list(store: &dyn Store) {
    assert!(store.audit_list(10, None).await.unwrap().is_empty());
    let before = wall_ms();
    let detail =
        json!({ "version": 3, "value": "abc", "typed": null, "nested": { "list": [1, "two", false] } });
    let first = store
        .audit_append(audit(
            "alice",
            "param.put",
            "/shop-prod/desired_version",
            detail.clone(),
        ))
        .await
        .unwrap();
    let second = store
        .audit_append(audit("bob", "run.approve", "run-17", json!("ok")))
        .await
        .unwrap();
    let third = store
        .audit_append(audit("carol", "env.scale", "shop/prod", json!({})))
        .await
        .unwrap();
    let after = wall_ms();
    assert!(first.id < second.id && second.id < third.id, "ids must increase");
    assert!(before <= first.at_ms && third.at_ms <= after);
    assert_eq!(first.detail, detail);

    let listed = store.audit_list(10, None).await.unwrap();
    assert_eq!(listed, [third, second, first.clone()]);
    assert_eq!(
        (listed[2].actor.as_str(), listed[2].action.as_str()),
        ("alice", "param.put")
    );
    assert_eq!(listed[2].target, "/shop-prod/desired_version");
}

/// `limit` and `before_id` page through the log without gaps or repeats.
pub async fn audit_paging(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            store
                .audit_append(audit("alice", "test.page", &format!("t{i}"), json!({ "i": i })))
                .await
                .unwrap()
                .id,
        );
    }
    assert!(store.audit_list(0, None).await.unwrap().is_empty());
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store.audit_list(10, before).await.unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 10);
        assert!(
            page.windows(2).all(|w| w[0].id > w[1].id),
            "newest first within a page"
        );
        before = page.last().map(|e| e.id);
        seen.extend(page.iter().map(|e| e.id));
    }
    assert_eq!(pages, 3, "25 entries in pages of 10");
    ids.reverse();
    assert_eq!(seen, ids, "paging must return every entry once, newest first");
    assert_eq!(store.audit_list(3, Some(ids[0])).await.unwrap().len(), 3);
    assert!(store.audit_list(10, Some(ids[24])).await.unwrap().is_empty());
}

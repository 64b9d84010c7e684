//! Conformance: what was written survives closing and reopening the store.

use serde_json::json;

use super::{audit, key, keys_of};
use crate::Store;

/// First half of the persistence test: write, then the backend closes and reopens.
pub async fn reopen_write(store: &dyn Store) {
    let (a, b) = (key("/keep-prod/desired_version"), key("/keep-prod/db/host"));
    for v in ["one", "two", "three"] {
        store.param_put(&a, v, "alice", None).await.unwrap();
    }
    store.param_put(&b, "db.internal", "bob", Some(0)).await.unwrap();
    store
        .audit_append(audit("alice", "param.put", a.as_str(), json!({ "version": 3 })))
        .await
        .unwrap();
    store
        .audit_append(audit("bob", "param.put", b.as_str(), json!({ "version": 1 })))
        .await
        .unwrap();
}

/// Second half: everything written before the reopen is there, and numbering continues.
pub async fn reopen_check(store: &dyn Store) {
    let (a, b) = (key("/keep-prod/desired_version"), key("/keep-prod/db/host"));
    let history = store.param_history(&a).await.unwrap();
    let seen: Vec<_> = history.iter().map(|p| (p.version, p.value.as_str())).collect();
    assert_eq!(seen, [(3, "three"), (2, "two"), (1, "one")]);
    assert_eq!(
        keys_of(&store.param_list("/keep-prod").await.unwrap()),
        [b.as_str(), a.as_str()]
    );
    let log = store.audit_list(10, None).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
        ["bob", "alice"]
    );
    assert_eq!(log[1].detail, json!({ "version": 3 }));
    assert_eq!(
        store
            .param_put(&a, "four", "carol", Some(3))
            .await
            .unwrap()
            .version,
        4
    );
    let next = store
        .audit_append(audit("carol", "param.put", a.as_str(), json!(null)))
        .await
        .unwrap();
    assert!(next.id > log[0].id, "audit ids continue after a reopen");
}

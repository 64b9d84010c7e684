//! Conformance: API tokens (stored by hash, one live token per name, revoke,
//! bootstrap only into an empty table) and reading one job run.

use cutover_core::{EnvName, Grants, Role};

use super::wall_ms;
use crate::{JobRunState, NewToken, Store, StoreError};

fn new_token(name: &str, hash: &str) -> NewToken {
    let mut grants = Grants::everywhere(Role::Viewer);
    grants.envs.insert(EnvName::parse("dev").unwrap(), Role::Deployer);
    NewToken {
        name: name.into(),
        secret_hash: hash.into(),
        grants,
        created_by: "admin".into(),
        expires_at_ms: Some(4_102_444_800_000),
    }
}

/// A created token comes back by its hash with its grants, never by another hash.
pub async fn token_create_and_find_by_hash(store: &dyn Store) {
    assert!(store.token_list().await.unwrap().is_empty());
    let before = wall_ms();
    let created = store.token_create(new_token("alice", "hash-a")).await.unwrap();
    assert_eq!(created.name, "alice");
    assert_eq!(created.created_by, "admin");
    assert_eq!(created.grants, new_token("alice", "hash-a").grants);
    assert_eq!(created.expires_at_ms, Some(4_102_444_800_000));
    assert_eq!(
        (created.revoked_at_ms, created.revoked_by.as_deref()),
        (None, None)
    );
    assert!(before <= created.created_at_ms && created.created_at_ms <= wall_ms());
    assert_eq!(store.token_find("hash-a").await.unwrap(), Some(created.clone()));
    assert_eq!(store.token_find("hash-b").await.unwrap(), None);
    assert_eq!(
        store.token_find("HASH-A").await.unwrap(),
        None,
        "hashes compare exactly"
    );
    let bob = store
        .token_create(NewToken {
            expires_at_ms: None,
            grants: Grants::default(),
            ..new_token("bob", "hash-b")
        })
        .await
        .unwrap();
    assert!(bob.id > created.id);
    assert_eq!(bob.grants, Grants::default());
    assert_eq!(store.token_list().await.unwrap(), [created, bob]);
}

/// Two live tokens cannot share a name; after a revoke the name is free again,
/// and the revoked token stays listed and findable (marked revoked).
pub async fn token_names_are_unique_among_live_tokens(store: &dyn Store) {
    store.token_create(new_token("alice", "h1")).await.unwrap();
    let err = store.token_create(new_token("alice", "h2")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenNameTaken { name } if name == "alice"),
        "{err:?}"
    );
    assert!(err.to_string().contains("cutover token revoke alice"), "{err}");
    assert_eq!(store.token_find("h2").await.unwrap(), None, "nothing written");

    let revoked = store.token_revoke("alice", "root").await.unwrap();
    assert!(revoked.revoked_at_ms.is_some());
    assert_eq!(revoked.revoked_by.as_deref(), Some("root"));
    assert!(!revoked.is_live(wall_ms()));
    assert_eq!(store.token_find("h1").await.unwrap(), Some(revoked.clone()));
    let err = store.token_revoke("alice", "root").await.unwrap_err();
    assert!(matches!(err, StoreError::TokenNotFound { .. }), "{err:?}");
    let err = store.token_revoke("nobody", "root").await.unwrap_err();
    assert!(err.to_string().contains("cutover token list"), "{err}");

    let again = store.token_create(new_token("alice", "h3")).await.unwrap();
    assert!(again.is_live(wall_ms()));
    let names: Vec<_> = store
        .token_list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.revoked_at_ms.is_some()))
        .collect();
    assert_eq!(names, [("alice".to_owned(), true), ("alice".to_owned(), false)]);
    let err = store.token_create(new_token("carol", "h3")).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TokenNameTaken { .. } | StoreError::Database { .. }
        ),
        "a reused hash is refused: {err:?}"
    );
    let err = store.token_create(new_token("nul\0", "h4")).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidText { .. }), "{err:?}");
}

/// The bootstrap token goes in only while the store holds no token at all.
pub async fn token_bootstrap_only_into_an_empty_store(store: &dyn Store) {
    let first = store.token_bootstrap(new_token("admin", "b1")).await.unwrap();
    assert_eq!(first.as_ref().map(|t| t.name.as_str()), Some("admin"));
    assert_eq!(
        store.token_bootstrap(new_token("admin2", "b2")).await.unwrap(),
        None
    );
    store.token_revoke("admin", "admin").await.unwrap();
    assert_eq!(
        store.token_bootstrap(new_token("admin3", "b3")).await.unwrap(),
        None,
        "a revoked token still counts: bootstrap happens once"
    );
    assert_eq!(store.token_list().await.unwrap().len(), 1);
}

/// Expiry is the caller's to judge; `is_live` compares with the time given.
pub async fn token_expiry_is_stored_verbatim(store: &dyn Store) {
    let t = store
        .token_create(NewToken {
            expires_at_ms: Some(1_000),
            ..new_token("old", "e1")
        })
        .await
        .unwrap();
    assert_eq!(
        store.token_find("e1").await.unwrap().unwrap().expires_at_ms,
        Some(1_000)
    );
    assert!(t.is_live(999) && !t.is_live(1_000));
}

/// One job run by id.
pub async fn job_run_get_by_id(store: &dyn Store) {
    assert_eq!(store.job_run_get(1).await.unwrap(), None);
    let run = store
        .job_run_start("dev", "import", "abc", "schedule")
        .await
        .unwrap();
    assert_eq!(store.job_run_get(run.id).await.unwrap(), Some(run.clone()));
    let done = store
        .job_run_finish(run.id, JobRunState::Succeeded, Some(0), None)
        .await
        .unwrap();
    assert_eq!(store.job_run_get(run.id).await.unwrap(), Some(done));
    assert_eq!(store.job_run_get(run.id + 1).await.unwrap(), None);
}

/// Of bootstraps racing on one store, exactly one creates a token.
pub async fn concurrent_bootstraps_create_one_token(store: std::sync::Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .token_bootstrap(new_token(&format!("admin{i}"), &format!("race{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(created, 1);
    assert_eq!(store.token_list().await.unwrap().len(), 1);
}

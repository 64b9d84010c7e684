//! Conformance: writers racing from tokio tasks.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Barrier;

use super::key;
use crate::{Store, StoreError};

/// 20 tasks race compare-and-set on one key: exactly one wins each version.
pub async fn concurrent_cas_writers_one_winner_per_version(store: Arc<dyn Store>) {
    const WRITERS: usize = 20;
    // Round 1: everyone tries to create the same key at once.
    let create = key("/race-prod/create");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, barrier, k) = (store.clone(), barrier.clone(), create.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .param_put(&k, &format!("writer-{i}"), &format!("w{i}"), Some(0))
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(p) => {
                winners += 1;
                assert_eq!(p.version, 1);
            }
            Err(StoreError::VersionMismatch {
                expected: 0,
                current: Some(1),
                ..
            }) => {}
            Err(e) => panic!("unexpected error from a racing create: {e:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one racing create may win");
    assert_eq!(store.param_history(&create).await.unwrap().len(), 1);

    // Round 2: everyone read-modify-writes until they succeed once.
    let k = key("/race-prod/counter");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _attempt in 0..(WRITERS * 5) {
                    let seen = store.param_get(&k).await.unwrap().map_or(0, |p| p.version);
                    match store
                        .param_put(&k, &format!("writer-{i}"), &format!("w{i}"), Some(seen))
                        .await
                    {
                        Ok(p) => {
                            assert_eq!(p.version, seen + 1);
                            return p.version;
                        }
                        Err(StoreError::VersionMismatch { current, .. }) => {
                            assert!(
                                current.unwrap_or(0) > seen,
                                "a mismatch must mean someone else wrote"
                            )
                        }
                        Err(e) => panic!("unexpected error from a CAS writer: {e:?}"),
                    }
                    tokio::task::yield_now().await;
                }
                panic!("writer {i} never won a compare-and-set");
            })
        })
        .collect();
    let mut won = BTreeSet::new();
    for task in tasks {
        assert!(
            won.insert(task.await.unwrap()),
            "two writers won the same version"
        );
    }
    assert_eq!(won, (1..=WRITERS as i64).collect::<BTreeSet<_>>());
    let history = store.param_history(&k).await.unwrap();
    let versions: Vec<i64> = history.iter().map(|p| p.version).collect();
    assert_eq!(versions, (1..=WRITERS as i64).rev().collect::<Vec<_>>());
    let values: BTreeSet<&str> = history.iter().map(|p| p.value.as_str()).collect();
    assert_eq!(values.len(), WRITERS, "every writer's value is kept exactly once");
}

/// 20 tasks append without compare-and-set: no write is lost, no version repeats.
pub async fn concurrent_writers_without_cas_lose_nothing(store: Arc<dyn Store>) {
    const WRITERS: usize = 20;
    const EACH: usize = 5;
    let k = key("/race-dev/log");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut versions = Vec::new();
                for j in 0..EACH {
                    versions.push(
                        store
                            .param_put(&k, &format!("{i}-{j}"), "w", None)
                            .await
                            .unwrap()
                            .version,
                    );
                }
                versions
            })
        })
        .collect();
    let mut returned = BTreeSet::new();
    for task in tasks {
        for v in task.await.unwrap() {
            assert!(returned.insert(v), "version {v} handed out twice");
        }
    }
    let total = (WRITERS * EACH) as i64;
    assert_eq!(returned, (1..=total).collect::<BTreeSet<_>>());
    let history = store.param_history(&k).await.unwrap();
    assert_eq!(
        history.iter().map(|p| p.version).collect::<Vec<_>>(),
        (1..=total).rev().collect::<Vec<_>>()
    );
    let values: BTreeSet<&str> = history.iter().map(|p| p.value.as_str()).collect();
    assert_eq!(values.len(), WRITERS * EACH, "a write was lost");
}

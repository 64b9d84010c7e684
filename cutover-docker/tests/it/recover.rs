//! Leftovers of a previous server are removed; a runtime's own containers
//! and other servers' are not.

use cutover_docker::labels;
use cutover_runtime::{RecoveryAction, Runtime};

use crate::support::{Cleanup, Fixture, connect, container_exists, container_labels};

#[tokio::test]
async fn recover_removes_what_a_previous_server_left() {
    let f = Fixture::new("itrecover").await;
    let state = f.dir.path().join("state");
    // The "previous server": its instance is still running.
    let left = f.rt.start(f.spec(0)).await.expect("start");
    // Another server (another data directory) must not be touched.
    let other_dir = tempfile::tempdir().unwrap();
    let other = connect(other_dir.path()).await;
    let _cleanup = Cleanup(other.owner().to_owned());
    let foreign = other.start(f.spec(1)).await.expect("start");

    // The next server on the same data directory.
    let next = connect(&state).await;
    let own = next.start(f.spec(2)).await.expect("start");
    let report = next.recover().await.expect("recover");
    assert_eq!(report.instances.len(), 1, "{report:#?}");
    let entry = &report.instances[0];
    assert!(
        matches!(entry.action, RecoveryAction::Terminated { .. }),
        "{entry:#?}"
    );
    assert_eq!(entry.state.as_ref().map(|s| s.id.clone()), Some(left.id.clone()));
    assert_eq!(report.terminated(), 1);
    assert!(
        !container_exists(&next, left.id.as_str()).await,
        "the leftover is still there"
    );
    assert!(
        container_exists(&next, own.id.as_str()).await,
        "recover removed its own runtime's container"
    );
    assert!(
        container_exists(&next, foreign.id.as_str()).await,
        "recover removed another server's container"
    );
    assert_eq!(
        container_labels(&next, own.id.as_str()).await[labels::OWNER],
        next.owner()
    );

    // Nothing left to do the second time.
    assert!(next.recover().await.unwrap().instances.is_empty());
    assert_eq!(next.shutdown().await.unwrap().len(), 1);
    assert!(!container_exists(&next, own.id.as_str()).await);
    other.shutdown().await.unwrap();
    assert!(!container_exists(&other, foreign.id.as_str()).await);
}

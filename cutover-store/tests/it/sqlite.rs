//! SQLite: the conformance suite on a file database and an in-memory one, and
//! what only a file database has (directories, reopening, migrations, two
//! stores on one file as two processes would have).

use std::path::Path;
use std::sync::Arc;

use cutover_store::{SCHEMA_VERSION, SqliteStore, Store, StoreError, conformance, migrate};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;

async fn fresh_file() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    (Arc::new(store), dir)
}

async fn fresh_memory() -> (Arc<dyn Store>, ()) {
    (Arc::new(SqliteStore::open_in_memory().await.unwrap()), ())
}

mod file {
    cutover_store::conformance_tests!(super::fresh_file);
}

mod memory {
    cutover_store::conformance_tests!(super::fresh_memory);
}

/// A plain pool on the database file, to look behind the store's back.
async fn raw(data_dir: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(data_dir.join(SqliteStore::FILE_NAME));
    SqlitePool::connect_with(options).await.unwrap()
}

async fn schema(pool: &SqlitePool) -> Vec<String> {
    sqlx::query(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "{} {} {:?}",
            r.get::<String, _>(0),
            r.get::<String, _>(1),
            r.get::<Option<String>, _>(2)
        )
    })
    .collect()
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::reopen_write(&store).await;
    store.close().await;
    drop(store);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::reopen_check(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a_run_caught_mid_way_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::runs_reopen_write(&store).await;
    store.close().await;
    drop(store);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::runs_reopen_check(&store).await;
    store.close().await;
}

/// A database created by a Cutover that knew only 0001 is upgraded in place.
#[tokio::test]
async fn a_schema_1_database_is_upgraded_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join(SqliteStore::FILE_NAME))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
         applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let first = &migrate::SQLITE[0];
    sqlx::raw_sql(first.sql).execute(&pool).await.unwrap();
    // The old runner recorded an FNV-1a hex checksum.
    sqlx::query("INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) VALUES (1, ?, '00ff00ff00ff00ff', 0)")
        .bind(first.name)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO param_versions (key, version, value, actor, at_ms) VALUES ('/old-prod/x', 1, 'v', 'a', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let key = cutover_store::ParamKey::parse("/old-prod/x").unwrap();
    assert_eq!(store.param_get(&key).await.unwrap().unwrap().value, "v");
    let (run, _) = store.run_enqueue(run_request("old-prod")).await.unwrap();
    assert_eq!(run.stages.len(), 13);
    store.close().await;
    // The old runner's bookkeeping now lives in sqlx's table, and the old table carries a
    // version no older Cutover knows, so one would refuse the file instead of migrating it again.
    let pool = raw(dir.path()).await;
    let recorded: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        migrate::SQLITE.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let old: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(old, Some(migrate::MOVED_VERSION));
    pool.close().await;
    // And it opens again as a plain sqlx-migrated database.
    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(store.param_get(&key).await.unwrap().unwrap().value, "v");
    store.close().await;
}

fn run_request(env: &str) -> cutover_store::NewRun {
    cutover_store::NewRun {
        env: env.into(),
        kind: cutover_core::RunKind::Normal,
        requested_by: "alice".into(),
        target_version: None,
        version_chosen_by: None,
        reason: None,
    }
}

/// Log seqs stay gapless when two stores (two processes) append to one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_seqs_are_gapless_across_two_stores_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (run, _) = a.run_enqueue(run_request("two-procs")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for j in 0..10 {
                    let line = format!("{i}-{j}");
                    seqs.push(
                        store
                            .log_append(run.id, cutover_core::Stage::Build, &line)
                            .await
                            .unwrap()
                            .seq,
                    );
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=80).collect::<Vec<i64>>());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn open_creates_the_data_dir_and_a_wal_database_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data/dir");
    let store = SqliteStore::open(&data_dir).await.unwrap();
    assert_eq!(store.path(), data_dir.join("cutover.db"));
    assert!(store.path().is_file());
    store.close().await;
    let pool = raw(&data_dir).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn migrations_are_recorded_and_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store.close().await;
    let first = schema(&raw(dir.path()).await).await;
    assert!(first.iter().any(|s| s.contains("param_versions")), "{first:#?}");

    for _ in 0..3 {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        store.close().await;
    }
    let pool = raw(dir.path()).await;
    assert_eq!(schema(&pool).await, first, "reopening must not change the schema");
    let rows = sqlx::query("SELECT version, description, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    let recorded: Vec<(i64, String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let expected: Vec<(i64, String, Vec<u8>)> = migrate::SQLITE
        .iter()
        .map(|m| (m.version, m.name.to_owned(), m.checksum()))
        .collect();
    assert_eq!(recorded, expected, "each migration recorded exactly once");
}

#[tokio::test]
async fn refuses_a_database_written_by_a_newer_cutover() {
    let dir = tempfile::tempdir().unwrap();
    SqliteStore::open(dir.path()).await.unwrap().close().await;
    let pool = raw(dir.path()).await;
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, 'from_the_future', TRUE, x'00', 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    let message = err.to_string();
    match err {
        StoreError::SchemaTooNew { path, found, known } => {
            assert_eq!(path, dir.path().join("cutover.db"));
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(
        message.contains("newer Cutover") && message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_in_place_of_the_data_dir_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let data_dir = file.join("data");
    let err = SqliteStore::open(&data_dir).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::CreateDataDir { ref path, .. } if *path == data_dir),
        "{err:?}"
    );
    assert!(
        message.contains(&data_dir.display().to_string()) && message.contains("data directory"),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let garbage =
        "this is not a sqlite database, it is a text file that is long enough to have a header. ".repeat(20);
    std::fs::write(dir.path().join("cutover.db"), &garbage).unwrap();
    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        message.contains("cutover.db") && message.contains("not a SQLite database"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cutover.db")).unwrap(),
        garbage
    );
}

/// Two stores on one file stand in for two processes: the write lock, not
/// anything in one process, must keep compare-and-set atomic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_is_atomic_across_two_stores_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let key = cutover_store::ParamKey::parse("/two-procs/desired_version").unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tokio::spawn(async move {
                loop {
                    let seen = store.param_get(&key).await.unwrap().map_or(0, |p| p.version);
                    match store.param_put(&key, &format!("w{i}"), "t", Some(seen)).await {
                        Ok(p) => return p.version,
                        Err(StoreError::VersionMismatch { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        won.push(t.await.unwrap());
    }
    won.sort_unstable();
    assert_eq!(won, (1..=20).collect::<Vec<i64>>());
    assert_eq!(a.param_history(&key).await.unwrap().len(), 20);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_opening_a_new_file_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(SqliteStore::open(dir.path()), SqliteStore::open(dir.path()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    a.close().await;
    b.close().await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&raw(dir.path()).await)
        .await
        .unwrap();
    assert_eq!(count, migrate::SQLITE.len() as i64);
}

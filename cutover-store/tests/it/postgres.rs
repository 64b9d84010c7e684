//! PostgreSQL: the same conformance suite as SQLite, each test in a fresh
//! schema of a real server, and what only a shared server has (reconnecting,
//! migrations, two stores on one schema as two control-plane instances would
//! have).
//!
//! The server is `CUTOVER_TEST_POSTGRES_URL`, by default
//! `postgres://cutover:cutover@127.0.0.1:5432/cutover_test`, as
//! `scripts/postgres-setup` makes it. An unreachable server fails the tests
//! (it is never a skip): run `sudo scripts/postgres-setup`.
//!
//! Each test creates a schema `t_<random>` and connects with
//! `options[search_path]=<schema>`, so tests run in parallel on one database
//! without seeing each other; the guard drops the schema afterwards.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use cutover_store::{PostgresStore, SCHEMA_VERSION, SqliteStore, Store, StoreError, conformance, migrate};
use sqlx::postgres::{PgPool, PgPoolOptions};

const DEFAULT_URL: &str = "postgres://cutover:cutover@127.0.0.1:5432/cutover_test";

fn base_url() -> String {
    std::env::var("CUTOVER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh schema on the test server; dropped (with everything in it) on drop.
pub struct Schema {
    name: String,
    url: String,
}

impl Schema {
    async fn new() -> Schema {
        let name = format!("t_{:016x}", RandomState::new().hash_one(std::process::id()));
        let admin = admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("creating schema {name}: {e}"));
        admin.close().await;
        let base = base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options[search_path]={name}");
        Schema { name, url }
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to schema {}: {e:?}", self.name))
    }

    /// A plain pool on the schema, to look behind the store's back.
    async fn raw(&self) -> PgPool {
        PgPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs outside async; a thread with its own runtime does the I/O.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = admin().await;
                let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE");
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&admin).await {
                    eprintln!("leaving schema {name} behind: {e}");
                }
                admin.close().await;
            });
        })
        .join();
    }
}

/// A pool on the test database itself; panics with what to do if it is unreachable.
async fn admin() -> PgPool {
    let url = base_url();
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test PostgreSQL server ({}): {e}. Run `sudo scripts/postgres-setup` \
                 (it installs and starts one on 127.0.0.1:5432), or point CUTOVER_TEST_POSTGRES_URL at one",
                url.split('@').next_back().unwrap_or_default()
            )
        })
}

async fn fresh_pg() -> (Arc<dyn Store>, Schema) {
    let schema = Schema::new().await;
    (Arc::new(schema.store().await), schema)
}

mod suite {
    cutover_store::conformance_tests!(super::fresh_pg);
}

/// Tables, columns and indexes of the schema, as text.
async fn shape(pool: &PgPool, schema: &str) -> Vec<String> {
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    columns
        .into_iter()
        .map(|c| format!("{c:?}"))
        .chain(indexes.into_iter().map(|i| format!("{i:?}")))
        .collect()
}

#[tokio::test]
async fn data_survives_close_and_reconnect() {
    let schema = Schema::new().await;
    let store = schema.store().await;
    conformance::reopen_write(&store).await;
    store.close().await;
    let store = schema.store().await;
    conformance::reopen_check(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a_run_caught_mid_way_survives_close_and_reconnect() {
    let schema = Schema::new().await;
    let store = schema.store().await;
    conformance::runs_reopen_write(&store).await;
    store.close().await;
    let store = schema.store().await;
    conformance::runs_reopen_check(&store).await;
    store.close().await;
}

#[tokio::test]
async fn migrations_are_recorded_and_idempotent_on_reconnect() {
    let schema = Schema::new().await;
    let store = schema.store().await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store.close().await;
    let pool = schema.raw().await;
    let first = shape(&pool, &schema.name).await;
    assert!(first.iter().any(|s| s.contains("param_versions")), "{first:#?}");

    for _ in 0..3 {
        let store = schema.store().await;
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        store.close().await;
    }
    assert_eq!(
        shape(&pool, &schema.name).await,
        first,
        "reconnecting must not change the schema"
    );
    let recorded: Vec<(i64, String, Vec<u8>)> =
        sqlx::query_as("SELECT version, description, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(i64, String, Vec<u8>)> = migrate::POSTGRES
        .iter()
        .map(|m| (m.version, m.name.to_owned(), m.checksum()))
        .collect();
    assert_eq!(recorded, expected, "each migration recorded exactly once");
    pool.close().await;
}

/// A schema made by the hand-written runner that sqlx's migrator replaced (its
/// `schema_migrations` table, at version 1) is converted and upgraded in place.
#[tokio::test]
async fn a_schema_made_by_the_old_runner_is_converted_and_keeps_its_data() {
    let schema = Schema::new().await;
    let pool = schema.raw().await;
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
         applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let first = &migrate::POSTGRES[0];
    sqlx::raw_sql(first.sql).execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, checksum, applied_at_ms) VALUES (1, $1, '00ff00ff00ff00ff', 0)")
        .bind(first.name)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO param_versions (key, version, value, actor, at_ms) VALUES ('/old-prod/x', 1, 'v', 'a', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = schema.store().await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let key = cutover_store::ParamKey::parse("/old-prod/x").unwrap();
    assert_eq!(store.param_get(&key).await.unwrap().unwrap().value, "v");
    store.close().await;
    let pool = schema.raw().await;
    let recorded: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        migrate::POSTGRES.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let old: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(old, Some(migrate::MOVED_VERSION), "an older Cutover refuses it");
    pool.close().await;
    let store = schema.store().await;
    assert_eq!(store.param_get(&key).await.unwrap().unwrap().value, "v");
    store.close().await;
}

/// The two backends' migrations give the same tables with the same columns.
#[tokio::test]
async fn the_schema_has_the_same_tables_and_columns_as_sqlite() {
    let schema = Schema::new().await;
    schema.store().await.close().await;
    let pool = schema.raw().await;
    let pg: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
    )
    .bind(&schema.name)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;

    let dir = tempfile::tempdir().unwrap();
    SqliteStore::open(dir.path()).await.unwrap().close().await;
    let lite = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join(SqliteStore::FILE_NAME).display()
    ))
    .await
    .unwrap();
    let sqlite: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    lite.close().await;
    assert_eq!(pg, sqlite);
}

#[tokio::test]
async fn refuses_a_database_written_by_a_newer_cutover() {
    let schema = Schema::new().await;
    schema.store().await.close().await;
    let pool = schema.raw().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from_the_future', TRUE, '\\x00', 0)",
    )
    .bind(SCHEMA_VERSION + 1)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let err = PostgresStore::connect(&schema.url).await.unwrap_err();
    let message = err.to_string();
    match err {
        StoreError::SchemaTooNew { path, found, known } => {
            assert!(path.display().to_string().starts_with("postgres://"), "{path:?}");
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(message.contains("newer Cutover"), "{message}");
    assert!(
        !message.contains("cutover:cutover@"),
        "no password in messages: {message}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_reported_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::connect("postgres://u:secret@127.0.0.1:1/db")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(message.contains("postgres://u@127.0.0.1:1/db"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    assert!(message.contains("no PostgreSQL server answers"), "{message}");
}

/// Two stores on one schema stand in for two control-plane instances: the
/// database, not anything in one process, must keep compare-and-set atomic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_is_atomic_across_two_stores_on_one_schema() {
    let schema = Schema::new().await;
    let a: Arc<dyn Store> = Arc::new(schema.store().await);
    let b: Arc<dyn Store> = Arc::new(schema.store().await);
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
async fn two_stores_connecting_to_a_new_schema_at_once_migrate_it_once() {
    let schema = Schema::new().await;
    let (a, b) = tokio::join!(
        PostgresStore::connect(&schema.url),
        PostgresStore::connect(&schema.url)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    a.close().await;
    b.close().await;
    let pool = schema.raw().await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, migrate::POSTGRES.len() as i64);
    pool.close().await;
}

/// Two runs queued at once in one environment: exactly one stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_in_one_env_leave_one_queued_run() {
    let schema = Schema::new().await;
    let a: Arc<dyn Store> = Arc::new(schema.store().await);
    let b: Arc<dyn Store> = Arc::new(schema.store().await);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .run_enqueue(cutover_store::NewRun {
                        env: "race-prod".into(),
                        kind: cutover_core::RunKind::Normal,
                        requested_by: "alice".into(),
                        target_version: None,
                        version_chosen_by: None,
                        reason: None,
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let unfinished = a.runs_unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1, "{unfinished:#?}");
    a.close().await;
    b.close().await;
}

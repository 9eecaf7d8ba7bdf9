//! The PostgreSQL store's foundation on a real server: migrations, racing
//! connects, reconnects and pool options. Each test has its own schema
//! (`drover_postgres::testing`); without `DROVER_TEST_POSTGRES_URL` they
//! skip, and with `DROVER_REQUIRE_POSTGRES=1` they fail instead.

use drover_postgres::testing::TestDb;
use drover_postgres::{MIGRATIONS_TABLE, PgOptions, PgStore, SCHEMA_VERSION};
use drover_store::StoreError;
use sqlx::postgres::PgConnection;
use std::time::Duration;

/// Every table of the schema, as the SQLite store has them after its
/// migrations 0001-0009, plus the migrations table and the PostgreSQL-only
/// [`PG_ONLY`] tables.
const TABLES: &[&str] = &[
    "batches",
    "drover_migrations",
    "job_attempts",
    "job_logs",
    "jobs",
    "queue_count_deltas",
    "queue_counts",
    "queues",
    "rate_limit_rules",
    "schedules",
    "throttles",
];

/// Tables only the PostgreSQL store needs: count deltas of inserts made in
/// an application's own transaction (migration 0002).
const PG_ONLY: &[&str] = &["queue_count_deltas"];

/// Every secondary index, with the predicate each partial one must keep.
const INDEXES: &[(&str, &str)] = &[
    ("jobs_ready", "WHERE (state = 'waiting'::text)"),
    ("jobs_delayed", "WHERE (state = 'delayed'::text)"),
    ("jobs_leases", "WHERE (state = 'active'::text)"),
    ("jobs_finished", "WHERE (state = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text]))"),
    ("jobs_expiring", "WHERE ((expires_at IS NOT NULL) AND (started_at IS NULL)"),
    ("jobs_unique", "WHERE (unique_key IS NOT NULL)"),
    ("jobs_active_key", "WHERE ((state = 'active'::text) AND (rate_limit_key IS NOT NULL))"),
    ("jobs_active_queue", "WHERE (state = 'active'::text)"),
    ("jobs_parent", "WHERE (parent_id IS NOT NULL)"),
    ("jobs_batch", "WHERE (batch_id IS NOT NULL)"),
    ("schedules_due", "WHERE (NOT paused)"),
];

/// Every column of `jobs`, with its type: the SQLite columns after 0009.
const JOB_COLUMNS: &[(&str, &str)] = &[
    ("seq", "bigint"),
    ("id", "text"),
    ("queue", "text"),
    ("name", "text"),
    ("payload", "jsonb"),
    ("state", "text"),
    ("priority", "integer"),
    ("attempts_made", "integer"),
    ("max_attempts", "integer"),
    ("attempts_budget", "integer"),
    ("attempt_seq", "integer"),
    ("backoff", "jsonb"),
    ("timeout_ms", "bigint"),
    ("stalls", "integer"),
    ("max_stalls", "integer"),
    ("progress", "jsonb"),
    ("result", "jsonb"),
    ("error", "jsonb"),
    ("unique_key", "text"),
    ("rate_limit_key", "text"),
    ("parent_id", "text"),
    ("batch_id", "text"),
    ("tags", "jsonb"),
    ("created_at", "bigint"),
    ("run_at", "bigint"),
    ("started_at", "bigint"),
    ("finished_at", "bigint"),
    ("worker_id", "text"),
    ("lease_token", "bigint"),
    ("lease_expires_at", "bigint"),
    ("cancel_requested", "boolean"),
    ("expires_at", "bigint"),
    ("pending_children", "integer"),
    ("on_failure", "text"),
    ("failed_child", "text"),
    ("fanned_out", "boolean"),
];

async fn tables(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename")
        .bind(schema)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// The applied migrations: (version, installed_on as text).
async fn applied(conn: &mut PgConnection) -> Vec<(i64, String)> {
    let sql = format!("SELECT version, installed_on::text FROM {MIGRATIONS_TABLE} ORDER BY version");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(conn).await.unwrap()
}

#[tokio::test]
async fn migrations_create_every_table_and_index() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.connect().await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let mut conn = db.raw_connection().await;

    assert_eq!(tables(&mut conn, db.schema()).await, TABLES);

    let indexes: Vec<(String, String)> =
        sqlx::query_as("SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1")
            .bind(db.schema())
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for (name, predicate) in INDEXES {
        let def = indexes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("index {name} missing; have {indexes:?}"));
        assert!(def.contains(predicate), "{name}: {def} lacks {predicate}");
    }
    let ready = &indexes.iter().find(|(n, _)| n == "jobs_ready").unwrap().1;
    assert!(ready.contains("(queue, priority, run_at, seq)"), "{ready}");

    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'jobs' ORDER BY ordinal_position",
    )
    .bind(db.schema())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = JOB_COLUMNS.iter().map(|(c, t)| (c.to_string(), t.to_string())).collect();
    assert_eq!(columns, expected);

    // The CHECKs hold: an unknown state and an over-long id are refused.
    let insert = "INSERT INTO jobs (id, queue, name, payload, state, priority, max_attempts, attempts_budget,
                  backoff, max_stalls, created_at, run_at) VALUES ($1, 'q', 'n', '{}', $2, 0, 3, 3, '{}', 3, 0, 0)";
    sqlx::query(insert).bind("ok").bind("waiting").execute(&mut conn).await.unwrap();
    assert!(sqlx::query(insert).bind("bad-state").bind("runnning").execute(&mut conn).await.is_err());
    assert!(sqlx::query(insert).bind("x".repeat(256)).bind("waiting").execute(&mut conn).await.is_err());
    // Attempts and logs go with their job.
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM jobs WHERE id = 'ok'").fetch_one(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO job_logs (job_seq, n, at, level, message) VALUES ($1, 1, 0, 'info', 'hi')")
        .bind(seq)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM jobs WHERE seq = $1").bind(seq).execute(&mut conn).await.unwrap();
    let logs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_logs").fetch_one(&mut conn).await.unwrap();
    assert_eq!(logs, 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_connects_migrate_once() {
    let Some(db) = TestDb::new().await else { return };
    // Four servers start at once on a schema that does not exist yet.
    let connects = (0..4).map(|_| db.connect_with(PgOptions::default().max_connections(2)));
    let stores = futures::future::join_all(connects).await;
    let stores: Vec<PgStore> = stores.into_iter().map(|r| r.expect("every racing connect succeeds")).collect();
    for store in &stores {
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    }
    // One row per migration: applied once (a second run of 0001 would also
    // have failed on `CREATE TABLE jobs`).
    let mut conn = db.raw_connection().await;
    let rows = applied(&mut conn).await;
    assert_eq!(rows.iter().map(|(v, _)| *v).collect::<Vec<_>>(), (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    for store in stores {
        store.close().await;
    }
}

#[tokio::test]
async fn reconnect_does_not_rerun_migrations() {
    let Some(db) = TestDb::new().await else { return };
    let first = db.connect().await;
    sqlx::query("INSERT INTO queues (name, paused) VALUES ('kept', true)").execute(first.pool()).await.unwrap();
    first.close().await;
    let mut conn = db.raw_connection().await;
    let before = applied(&mut conn).await;

    // Reopen twice: nothing is applied again and the data stays.
    for _ in 0..2 {
        let again = db.connect().await;
        assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
        let paused: bool =
            sqlx::query_scalar("SELECT paused FROM queues WHERE name = 'kept'").fetch_one(again.pool()).await.unwrap();
        assert!(paused);
        again.close().await;
    }
    assert_eq!(applied(&mut conn).await, before);
}

#[tokio::test]
async fn changed_migration_is_refused_and_releases_the_lock() {
    // sqlx refuses to start when an applied migration's file changed: a
    // released migration must never be edited.
    let Some(db) = TestDb::new().await else { return };
    db.connect().await.close().await;
    let mut conn = db.raw_connection().await;
    let sql = format!("UPDATE {MIGRATIONS_TABLE} SET checksum = '\\x00'::bytea WHERE version = 1");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    match db.connect_with(PgOptions::default()).await {
        Err(StoreError::Backend(message)) => assert!(message.contains("migration"), "{message}"),
        other => panic!("expected a migration error, got {other:?}"),
    }
    // The failed run released the advisory lock: another connect is not
    // blocked behind it but fails the same way. (A leaked lock would block
    // it forever; the deadline turns that into a failure, not a hang.)
    let again = tokio::time::timeout(Duration::from_secs(30), db.connect_with(PgOptions::default())).await;
    assert!(matches!(again, Ok(Err(StoreError::Backend(_)))), "{again:?}");
}

#[tokio::test]
async fn pool_options_are_applied() {
    let Some(db) = TestDb::new().await else { return };
    let app = format!("drover-test-{:08x}", fastrand::u32(..));
    let options = PgOptions::default()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .application_name(app.clone());
    let store = db.connect_with(options.clone()).await.unwrap();
    assert_eq!(store.options(), &options.clone().schema(db.schema()));
    let pool_options = store.pool().options();
    assert_eq!(pool_options.get_max_connections(), 2);
    assert_eq!(pool_options.get_acquire_timeout(), Duration::from_millis(300));
    assert_eq!(pool_options.get_idle_timeout(), Some(Duration::from_secs(600)));
    assert_eq!(pool_options.get_max_lifetime(), Some(Duration::from_secs(1_800)));

    // The server sees the application name and the schema on the pool's
    // connections.
    let mut a = store.pool().acquire().await.unwrap();
    let (name, schema): (String, String) =
        sqlx::query_as("SELECT current_setting('application_name'), current_schema()::text")
            .fetch_one(&mut *a)
            .await
            .unwrap();
    assert_eq!((name.as_str(), schema.as_str()), (app.as_str(), db.schema()));

    // The cap holds: with both connections borrowed, a third caller times
    // out after the acquire timeout with a transient error.
    let b = store.pool().acquire().await.unwrap();
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&app)
        .fetch_one(&mut *a)
        .await
        .unwrap();
    assert_eq!(open, 2);
    let third = store.pool().acquire().await.map(|_| ());
    assert!(matches!(third, Err(sqlx::Error::PoolTimedOut)), "{third:?}");
    drop((a, b));
    store.close().await;
    assert!(store.pool().acquire().await.is_err());
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers() {
    // No server needed: these fail before or at connecting.
    assert!(matches!(
        PgStore::connect("mysql://nope", PgOptions::default()).await,
        Err(StoreError::Invalid { field, .. }) if field == "database"
    ));
    assert!(matches!(
        PgStore::connect("postgres://127.0.0.1:1/x", PgOptions::default().schema("Bad")).await,
        Err(StoreError::Invalid { field, .. }) if field == "schema"
    ));
    // Port 1 on loopback: nothing listens, the refusal is immediate.
    let refused = PgStore::connect("postgres://postgres@127.0.0.1:1/test", PgOptions::default()).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
}

/// The PostgreSQL schema mirrors the SQLite store's, table for table and
/// column for column (in the same order), and has every index SQLite has:
/// a migration added to one store and not the other fails here.
#[tokio::test]
async fn schema_mirrors_the_sqlite_schema() {
    let Some(db) = TestDb::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.db");
    drover_sqlite::SqliteStore::open(&path, drover_sqlite::SqliteOptions::default()).unwrap().close().await;
    let sqlite = rusqlite::Connection::open(&path).unwrap();
    let names = |sql: &str| -> Vec<String> {
        let mut stmt = sqlite.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let sqlite_tables = names("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
    let sqlite_indexes = names("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name");

    assert!(sqlite_tables.len() >= 9 && sqlite_indexes.len() >= 10, "{sqlite_tables:?} {sqlite_indexes:?}");

    let store = db.connect().await;
    let mut conn = db.raw_connection().await;
    let pg_tables: Vec<String> = tables(&mut conn, db.schema())
        .await
        .into_iter()
        .filter(|t| t != MIGRATIONS_TABLE && !PG_ONLY.contains(&t.as_str()))
        .collect();
    assert_eq!(pg_tables, sqlite_tables);

    for table in &sqlite_tables {
        let sqlite_columns = names(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"));
        let pg_columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind(db.schema())
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(pg_columns, sqlite_columns, "columns of {table}");
    }

    let pg_indexes: Vec<String> = sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1")
        .bind(db.schema())
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for index in &sqlite_indexes {
        assert!(pg_indexes.contains(index), "SQLite index {index} has no PostgreSQL twin");
    }
    store.close().await;
}

/// The harness leaves nothing behind: a test's schema goes with its `TestDb`.
#[tokio::test]
async fn test_schema_is_dropped_with_its_test_db() {
    let Some(db) = TestDb::new().await else { return };
    let schema = db.schema().to_owned();
    let store = db.connect().await;
    let mut conn = db.raw_connection().await;
    let exists = "SELECT count(*) FROM pg_namespace WHERE nspname = $1";
    let n: i64 = sqlx::query_scalar(exists).bind(&schema).fetch_one(&mut conn).await.unwrap();
    assert_eq!(n, 1);
    store.close().await;
    drop(db);
    let n: i64 = sqlx::query_scalar(exists).bind(&schema).fetch_one(&mut conn).await.unwrap();
    assert_eq!(n, 0, "schema {schema} survived its TestDb");
}

/// `sslmode=require` in the URL gives TLS connections (rustls), for managed
/// servers that refuse plain ones. Skips when the test server has TLS off.
#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let Some(db) = TestDb::new().await else { return };
    let mut raw = db.raw_connection().await;
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut raw).await.unwrap();
    if ssl != "on" {
        eprintln!("skipped: the test server has ssl = {ssl}");
        return;
    }
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}sslmode=require", db.url());
    let store = PgStore::connect(&url, db.options()).await.unwrap();
    let over_tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(over_tls, "the pool's connections use TLS");
    store.close().await;
}

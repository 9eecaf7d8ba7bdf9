//! The PostgreSQL test harness (feature `testing`): every test gets a
//! schema of its own on the server named by [`URL_VAR`], so tests run in
//! parallel on one database and never see each other's rows.
//!
//! ```no_run
//! # async fn a_test() {
//! let Some(db) = drover_postgres::testing::TestDb::new().await else { return }; // skipped
//! let store = db.connect().await;
//! # let _ = store; }
//! ```
//!
//! Without [`URL_VAR`], [`TestDb::new`] prints how to run the tests and
//! returns `None` (the test passes without running), unless
//! [`REQUIRE_VAR`] is `1` (CI), where it panics. A URL that is set but
//! does not answer fails the test either way.
//!
//! The schema is dropped when the [`TestDb`] is dropped (also when the
//! test panics). Schemas left by a killed run are dropped by a later run
//! once they are an hour old (their name carries their creation time).

use crate::{PgOptions, PgStore};
use drover_store::StoreResult;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The variable holding the test server's URL, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const URL_VAR: &str = "DROVER_TEST_POSTGRES_URL";

/// When `1`, a missing [`URL_VAR`] fails the test instead of skipping it.
pub const REQUIRE_VAR: &str = "DROVER_REQUIRE_POSTGRES";

/// Every test schema's name starts with this.
pub const SCHEMA_PREFIX: &str = "drover_test_";

/// Test schemas older than this are leftovers of a killed run.
const LEFTOVER_AGE: Duration = Duration::from_secs(3_600);

/// One test's schema on the test server. Its name is fresh; the schema
/// itself is created by the first [`TestDb::connect`] (as
/// [`PgStore::connect`] creates a configured schema), and dropped with
/// this value.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    schema: String,
}

/// Whether the PostgreSQL tests can run here: true when [`URL_VAR`] is
/// set; else false (after printing why, once), unless [`REQUIRE_VAR`] is
/// `1`, which panics instead.
pub async fn available() -> bool {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => true,
        _ if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_VAR}=1 but {URL_VAR} is not set: the PostgreSQL tests must run here")
        }
        _ => {
            announce_skip();
            false
        }
    }
}

/// A store on a fresh schema reading `clock`, with the schema's guard: the
/// conformance suite's factory. Boxed here, where the future's types are
/// concrete, since proving `Send` for it in the test crate trips over
/// rustc's higher-ranked lifetime check.
pub fn store_for_test(
    clock: drover_core::ManualClock,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = (PgStore, TestDb)> + Send>> {
    Box::pin(async move {
        let db = TestDb::new().await.expect("checked by `available`");
        let store = db.connect().await.with_clock(std::sync::Arc::new(clock));
        (store, db)
    })
}

impl TestDb {
    /// A fresh schema name on the test server, or `None` (after printing
    /// why) when no server is configured and none is required.
    ///
    /// Panics when [`REQUIRE_VAR`] is `1` and [`URL_VAR`] is missing, or
    /// when the server does not answer.
    pub async fn new() -> Option<TestDb> {
        let url = match std::env::var(URL_VAR) {
            Ok(url) if !url.trim().is_empty() => url,
            _ if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => panic!(
                "{REQUIRE_VAR}=1 but {URL_VAR} is not set: the PostgreSQL tests must run here; \
                 set {URL_VAR}=postgres://USER@HOST:PORT/DATABASE"
            ),
            _ => {
                announce_skip();
                return None;
            }
        };
        let mut admin =
            PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("{URL_VAR}={url} does not answer: {e}"));
        drop_leftovers(&mut admin).await;
        let _ = admin.close().await;
        let schema = format!("{SCHEMA_PREFIX}{}_{:08x}", unix_secs(), fastrand::u32(..));
        Some(TestDb { url, schema })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Default options pointed at this test's schema, with a small pool.
    pub fn options(&self) -> PgOptions {
        PgOptions::default().schema(self.schema.clone()).max_connections(4)
    }

    /// A store on this test's schema with [`TestDb::options`]; panics on
    /// failure.
    pub async fn connect(&self) -> PgStore {
        self.connect_with(self.options()).await.unwrap_or_else(|e| panic!("connect to {}: {e}", self.schema))
    }

    /// A store on this test's schema with `options` (its `schema` is
    /// replaced by this test's).
    pub async fn connect_with(&self, options: PgOptions) -> StoreResult<PgStore> {
        PgStore::connect(&self.url, options.schema(self.schema.clone())).await
    }

    /// A plain connection (not a store) whose `search_path` is this test's
    /// schema, for reading the catalog or the tables directly.
    pub async fn raw_connection(&self) -> PgConnection {
        let sql = format!("SET search_path = {}", self.schema);
        let mut conn = PgConnection::connect(&self.url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        conn
    }

    /// `n` stores on this test's schema, as `n` servers would be, all
    /// reading one [`drover_core::ManualClock`] set to `start`.
    pub async fn servers(&self, n: usize, start: drover_core::Timestamp) -> (Vec<PgStore>, drover_core::ManualClock) {
        let clock = drover_core::ManualClock::new(start);
        let mut stores = Vec::with_capacity(n);
        for _ in 0..n {
            stores.push(self.connect().await.with_clock(std::sync::Arc::new(clock.clone())));
        }
        (stores, clock)
    }

    /// The per-queue counts as stored (`queue_counts` plus the deltas not
    /// folded in yet), by `(queue, state)`, zero counts left out: what a
    /// test compares with a `GROUP BY` of the jobs.
    pub async fn stored_counts(&self) -> BTreeMap<(String, String), i64> {
        let mut conn = self.raw_connection().await;
        let sql = format!(
            "SELECT queue, state, n FROM ({}) AS c(queue, state, n) WHERE n <> 0",
            crate::counts::COUNTS_OF_ALL
        );
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap();
        let _ = conn.close().await;
        rows.into_iter().map(|(q, s, n)| ((q, s), n)).collect()
    }
}

impl Drop for TestDb {
    /// Drops the schema. `Drop` cannot await, and may run on a runtime's
    /// worker thread, so the statement runs on a thread of its own with its
    /// own small runtime.
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
                conn.close().await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            // A leftover schema is harmless: a later run drops it.
            let _ = writeln!(std::io::stderr(), "warning: could not drop test schema {}", self.schema);
        }
    }
}

/// Tells once per test binary, on the real stderr (the test harness
/// captures `eprintln!` of passing tests), that the tests were skipped.
fn announce_skip() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the PostgreSQL tests did not run; set {URL_VAR}=postgres://USER@HOST:PORT/DATABASE \
             (e.g. postgres://postgres@127.0.0.1:5432/test) to run them"
        );
    });
}

/// Drops test schemas created more than [`LEFTOVER_AGE`] ago.
async fn drop_leftovers(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(SCHEMA_PREFIX)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let cutoff = unix_secs().saturating_sub(LEFTOVER_AGE.as_secs());
    for name in names {
        let created = name[SCHEMA_PREFIX.len()..].split('_').next().and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

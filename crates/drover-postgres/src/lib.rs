//! Drover's PostgreSQL store, for several servers and many workers on one
//! database: [`PgStore`] implements the whole [`drover_store::Store`]
//! contract (the conformance suite runs against it), with every rule that
//! must hold across servers (claims, caps, rate limits, uniqueness,
//! schedules, flows) enforced in the database. The design is
//! `docs/decisions/0009-postgres-store.md`.
//!
//! | module | what it holds |
//! |---|---|
//! | `options` | [`PgOptions`]: pool sizes, timeouts, schema, application name |
//! | `schema` | migrations: a dedicated connection, sqlx's advisory lock |
//! | `error` | sqlx errors to [`StoreError`] (lost connections: `Unavailable`) |
//! | `store` | the `Store` impl: each method calls its module's function |
//! | `fx` | a method's transaction and its effects (counts, events, wake-ups) |
//! | `notify` | what a transaction announces over `NOTIFY`, per schema |
//! | `listen` | the listener: other servers' wake-ups and events |
//! | `jobs` | inserts (uniqueness under advisory locks) and `job_get` |
//! | `enqueue_in` | [`PgStore::job_insert_many_in`]: enqueue in the caller's transaction |
//! | `claim` | claims: TTL expiry, promotion, `FOR UPDATE SKIP LOCKED` picks |
//! | `limits` | caps and rate windows under advisory locks; rate-limit rules |
//! | `attempts` | appending closed attempts to `job_attempts`, one statement |
//! | `finish` | completions, failures, releases: lease fencing, `decide_failure` |
//! | `flow` | flows and batches: the ending hook, parents, batch counters |
//! | `lease` | heartbeats, progress, logs, custom events |
//! | `admin` | cancel and manual retry |
//! | `maintenance` | stall rescue, promotion, TTL expiry |
//! | `retention` | removing finished jobs by their queue's rules |
//! | `schedules` | cron and interval schedules, one job per tick |
//! | `queues` | queue counts, settings, pause |
//! | `list` | job lists with cursors |
//! | `rows` | rows to [`drover_core::Job`] and attempts |
//! | `counts` | `queue_counts` deltas, one sorted upsert per transaction |
//! | `testing` | a fresh schema per test (feature `testing`) |
//!
//! Queries are runtime-checked (`sqlx::query`, never the `query!` macros),
//! so a fresh checkout builds without a database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), drover_store::StoreError> {
//! use drover_postgres::{PgOptions, PgStore};
//!
//! let store = PgStore::connect("postgres://drover@db.internal/drover", PgOptions::default()).await?;
//! assert_eq!(store.schema_version().await?, drover_postgres::SCHEMA_VERSION);
//! store.close().await;
//! # Ok(()) }
//! ```

mod admin;
mod attempts;
mod claim;
mod counts;
mod enqueue_in;
mod error;
mod finish;
mod flow;
mod fx;
mod jobs;
mod lease;
mod limits;
mod list;
mod listen;
mod maintenance;
mod notify;
mod options;
mod queues;
mod retention;
mod rows;
mod schedules;
mod schema;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use options::PgOptions;
pub use schema::{MIGRATIONS_TABLE, SCHEMA_VERSION};

use drover_core::{Clock, SystemClock, Timestamp};
use drover_store::{EventBus, ReadySignal, StoreError, StoreResult};
use error::SqlResultExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::watch;

/// The PostgreSQL store: a connection pool on a migrated schema.
///
/// Cheap to clone (the pool is shared). Every server and worker process
/// connects its own; they coordinate through the database alone.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    options: PgOptions,
    /// Where every instant the store writes or compares comes from; SQL
    /// never calls `now()` (ADR 0009).
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
}

/// What the clones of one store share: this process's signals and event
/// bus, fed by its own commits and by the listener (other servers').
#[derive(Debug)]
pub(crate) struct Shared {
    /// Numbers and broadcasts events to this process's subscribers.
    pub bus: EventBus,
    /// Wakes fetchers.
    pub ready: ReadySignal,
    /// Wakes schedulers.
    pub schedules: ReadySignal,
    /// Tells this store's notifications from other servers' (random, never
    /// [`notify::FOREIGN`]).
    pub origin: u64,
    /// Whether caps existed when this store last looked (saves finishes a
    /// query while none exists).
    pub caps: limits::CapsSeen,
    /// This schema's notification channels.
    pub channels: notify::Channels,
    /// The listener's own one-connection pool.
    listen_pool: PgPool,
    /// Dropped with the last clone: stops the listener.
    _stop_listener: watch::Sender<()>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// with any libpq-style query parameters sqlx accepts), brings its schema
    /// to [`SCHEMA_VERSION`] and opens the pool.
    ///
    /// Migrations run on a connection of their own under sqlx's PostgreSQL
    /// advisory lock (one per database), so several servers starting at
    /// once are safe: one migrates, the others wait for it and find nothing
    /// left to do. The connection is closed afterwards, which releases the
    /// lock even when a migration failed. When `options.schema` is set,
    /// that schema is created (under the same lock) if missing.
    ///
    /// Errors: [`StoreError::Invalid`] for a malformed URL or options
    /// (field `database` or the option's name); [`StoreError::Unavailable`]
    /// when the server cannot be reached within `options.acquire_timeout`;
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        options.validate()?;
        let connect_options = connect_options(url, &options)?;
        schema::migrate(&connect_options, &options).await?;
        // The listener's connection has a pool of its own, so it never
        // takes one of the `max_connections` the store's work needs; its
        // application name tells it apart in `pg_stat_activity`.
        let listen_pool =
            PgPoolOptions::new().max_connections(1).acquire_timeout(options.acquire_timeout).connect_lazy_with(
                connect_options.clone().application_name(&format!("{}-listener", options.application_name)),
            );
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .max_lifetime(options.max_lifetime)
            .connect_with(connect_options)
            .await
            .db()?;
        tracing::debug!(schema = ?options.schema, max_connections = options.max_connections, "postgres store connected");
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            bus: EventBus::default(),
            ready: ReadySignal::default(),
            schedules: ReadySignal::default(),
            origin: fastrand::u64(1..),
            channels: notify::Channels::of_schema(options.schema.as_deref()),
            caps: limits::CapsSeen::default(),
            listen_pool: listen_pool.clone(),
            _stop_listener: stop,
        });
        listen::spawn(listen_pool, &shared, stopped);
        Ok(PgStore { pool, options, clock: Arc::new(SystemClock), shared })
    }

    /// This store reading the time from `clock` instead of the wall clock
    /// (tests move a [`drover_core::ManualClock`]). Clones made before keep
    /// their clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> PgStore {
        self.clock = clock;
        self
    }

    /// The time as this store sees it (its clock), as `Store::now`.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The connection pool, for the store's own queries and for callers
    /// that enqueue inside their own transaction
    /// ([`PgStore::job_insert_many_in`]).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The options this store was connected with.
    pub fn options(&self) -> &PgOptions {
        &self.options
    }

    /// The newest migration applied to the database (for diagnostics and
    /// `/readyz`: it also proves the database answers).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let query = format!("SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE} WHERE success");
        sqlx::query_scalar(sqlx::AssertSqlSafe(query)).fetch_one(&self.pool).await.db()
    }

    /// Drops this store's schema (its `PgOptions::schema`) with every
    /// table in it, then closes the pool: for scratch schemas such as
    /// `drover bench`'s. Refuses (Invalid) when no schema was set, so the
    /// server's default schema is never dropped by it.
    pub async fn drop_schema_and_close(&self) -> StoreResult<()> {
        let Some(schema) = &self.options.schema else {
            return Err(StoreError::invalid("schema", "no schema of its own to drop"));
        };
        // `PgOptions::validate` allows plain lowercase identifiers only,
        // so the name needs no quoting.
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&self.pool).await.db();
        self.close().await;
        dropped.map(|_| ())
    }

    /// Closes the pool: waits for borrowed connections to come back, then
    /// closes every connection. Later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.shared.listen_pool.close().await;
        self.pool.close().await;
    }
}

/// The connection options every connection of the store (pool and
/// migrations) uses: the URL, plus the application name and, when set, the
/// schema as the `search_path` startup parameter (no extra round trip).
fn connect_options(url: &str, options: &PgOptions) -> StoreResult<PgConnectOptions> {
    // sqlx parses any scheme as PostgreSQL; a `mysql://` or a file path
    // given to `--database` by mistake deserves a clear refusal.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::invalid("database", "must start with postgres:// or postgresql://"));
    }
    let mut connect = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::invalid("database", format!("not a PostgreSQL URL: {e}")))?
        .application_name(&options.application_name);
    if loopback_without_sslmode(url, connect.get_host()) {
        // libpq's default, `prefer`, would encrypt a connection that never
        // leaves the machine; with rustls that halves throughput (measured
        // with `drover bench`, docs/benchmarks.md). An explicit `sslmode`
        // in the URL still decides.
        connect = connect.ssl_mode(PgSslMode::Disable);
    }
    if let Some(schema) = &options.schema {
        connect = connect.options([("search_path", schema.as_str())]);
    }
    Ok(connect)
}

/// True for a URL without `sslmode` whose host is this machine (a loopback
/// address, `localhost`, or a Unix socket directory).
fn loopback_without_sslmode(url: &str, host: &str) -> bool {
    let has_sslmode = url.split_once('?').is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("sslmode=")));
    let local = host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !has_sslmode && local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connections_skip_tls_unless_asked() {
        let mode = |url: &str| connect_options(url, &PgOptions::default()).unwrap().get_ssl_mode();
        assert!(matches!(mode("postgres://u@127.0.0.1:5432/db"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://u@localhost/db"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://u@[::1]:5432/db"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://u@127.0.0.1/db?sslmode=require"), PgSslMode::Require));
        assert!(matches!(mode("postgres://u@db.internal/db"), PgSslMode::Prefer));
        assert!(matches!(mode("postgres://u@10.0.0.5/db?application_name=x"), PgSslMode::Prefer));
    }
}

//! Opening connections: pragmas (each read back, since SQLite ignores a
//! pragma it cannot apply without saying so) and schema migrations.

use crate::error::SqlResultExt;
use crate::{SqlitePragmas, Synchronous};
use drover_store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Migrations in order; migration `i` brings the schema to version `i + 1`,
/// tracked in `PRAGMA user_version`. Never edit a released one: add a file.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_queue_counts.sql"),
    include_str!("../migrations/0003_retention.sql"),
    include_str!("../migrations/0004_expires_at.sql"),
    include_str!("../migrations/0005_unique_key.sql"),
    include_str!("../migrations/0006_partial_index_or.sql"),
    include_str!("../migrations/0007_limits.sql"),
    include_str!("../migrations/0008_schedules.sql"),
    include_str!("../migrations/0009_flows_batches.sql"),
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits on a lock before giving up with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const BUSY_TIMEOUT_MS: i64 = BUSY_TIMEOUT.as_millis() as i64;

/// The writer's page cache, in KiB (negative: SQLite's unit for KiB).
///
/// 16 MiB: enough for the hot index pages of a large backlog (claims read
/// the head of the ready index, finishes the rows just claimed), and small
/// enough that SQLite's page-cache scan at each commit
/// (`pcache1TruncateUnsafe`, which walks the cache's hash table) stays
/// cheap. 64 MiB cost about 30 MB more RSS and a few percent of processing
/// speed in `drover bench` (docs/benchmarks.md, issue 4).
const WRITER_CACHE_KIB: i64 = -16_384;

/// Prepared statements kept per connection; the store uses a few dozen.
const STATEMENT_CACHE: usize = 128;

/// Opens the writer's connection, creating the file, and migrates it.
pub(crate) fn open_writer(path: &Path, sync: Synchronous, wal_limit_bytes: u64) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .db()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    set_checked(&conn, "busy_timeout", BUSY_TIMEOUT_MS)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).db()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "journal_mode=WAL did not take (got {mode}); is the file on a network drive?"
        )));
    }
    set_checked(&conn, "synchronous", sync.pragma_value())?;
    // The writer checkpoints by itself (see `checkpoint`), so that a commit
    // never pays for a checkpoint it did not plan.
    set_checked(&conn, "wal_autocheckpoint", 0)?;
    // The WAL is cut back to the limit whenever it resets, so one burst does
    // not leave a huge file behind.
    set_checked(&conn, "journal_size_limit", i64::try_from(wal_limit_bytes).unwrap_or(i64::MAX))?;
    set_checked(&conn, "temp_store", 2)?;
    // The default 2 MB page cache makes the writer re-read index pages from
    // the OS on every claim once the ready set outgrows it.
    set_checked(&conn, "cache_size", WRITER_CACHE_KIB)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Opens one read-only connection of the reader pool.
pub(crate) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).db()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    set_checked(&conn, "busy_timeout", BUSY_TIMEOUT_MS)?;
    set_checked(&conn, "query_only", 1)?;
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).db()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("reader sees journal_mode={mode}, expected wal")));
    }
    Ok(conn)
}

/// Sets an integer pragma and fails unless reading it back gives the value.
fn set_checked(conn: &Connection, name: &str, value: i64) -> StoreResult<()> {
    conn.pragma_update(None, name, value).db()?;
    let got: i64 = conn.pragma_query_value(None, name, |r| r.get(0)).db()?;
    if got != value {
        return Err(StoreError::Backend(format!("PRAGMA {name}={value} did not take (reads back {got})")));
    }
    Ok(())
}

/// Applies the migrations the file has not seen, all in one transaction.
fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).db()?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema is version {version}, newer than this build understands ({SCHEMA_VERSION})"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").db()?;
    let applied = (|| {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        conn.execute_batch("COMMIT")
    })();
    if let Err(e) = applied {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(StoreError::Backend(format!("schema migration failed: {e}")));
    }
    Ok(())
}

/// Reads back the pragmas that matter from a connection.
pub(crate) fn pragmas(conn: &Connection) -> StoreResult<SqlitePragmas> {
    let int = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0)).db();
    Ok(SqlitePragmas {
        journal_mode: conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).db()?,
        synchronous: int("synchronous")?,
        commit_fsync: false,
        busy_timeout_ms: int("busy_timeout")?,
        wal_autocheckpoint: int("wal_autocheckpoint")?,
        user_version: int("user_version")?,
    })
}

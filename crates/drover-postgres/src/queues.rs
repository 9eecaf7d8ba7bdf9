//! Queues: their counts, settings and pause flag (as SQLite's
//! `queue_sql.rs`). Counts come from `queue_counts` plus the deltas of
//! transactional enqueues not folded in yet (`counts::COUNTS_OF_*`).

use crate::PgStore;
use crate::counts::{COUNTS_OF_ALL, COUNTS_OF_QUEUE};
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::limits::{self, Throttle};
use crate::rows;
use drover_core::spec::validate_queue_name;
use drover_core::{EventKind, QueueConfig, Timestamp};
use drover_store::{PendingEvent, QueueInfo, StateCounts, StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;

/// `Store::queue_list`: every queue that is configured or holds jobs,
/// sorted by name (byte order, as SQLite), with its counts and until when
/// it is held back. Three statements, none of which scans the jobs.
pub(crate) async fn queue_list(store: &PgStore) -> StoreResult<Vec<QueueInfo>> {
    let now = store.now();
    let mut conn = store.pool().acquire().await.db()?;
    let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
    for row in &sqlx::query("SELECT name, paused, config FROM queues").fetch_all(&mut *conn).await.db()? {
        let name: String = row.try_get(0).db()?;
        let mut info = blank(&name);
        info.paused = row.try_get(1).db()?;
        info.config = rows::opt_json(row, 2)?.unwrap_or_default();
        queues.insert(name, info);
    }
    // A queue appears only if it holds a job (or is configured), as with a
    // `GROUP BY` over the jobs: states summing to zero are left out.
    for row in &sqlx::query(COUNTS_OF_ALL).fetch_all(&mut *conn).await.db()? {
        let n: i64 = row.try_get(2).db()?;
        if n <= 0 {
            continue;
        }
        let name: String = row.try_get(0).db()?;
        let state = rows::state(row, 1)?;
        queues.entry(name).or_insert_with_key(|name| blank(name)).counts.add(state, n as u64);
    }
    let throttles =
        sqlx::query("SELECT substr(scope, 3), starts, held_until FROM throttles WHERE starts_with(scope, 'q:')")
            .fetch_all(&mut *conn)
            .await
            .db()?;
    for row in &throttles {
        let name: String = row.try_get(0).db()?;
        if let Some(info) = queues.get_mut(&name) {
            let throttle = Throttle::from_row(row, 1)?;
            info.throttled_until = limits::queue_throttled_until(&throttle, &info.config, now);
        }
    }
    Ok(queues.into_values().collect())
}

/// `Store::queue_get`: one queue with its counts; a queue never configured
/// reads as unpaused, with the default config.
pub(crate) async fn queue_get(store: &PgStore, name: &str) -> StoreResult<QueueInfo> {
    let now = store.now();
    let mut conn = store.pool().acquire().await.db()?;
    get_in(&mut conn, name, now).await
}

/// `Store::queue_config_set`: replaces the queue's whole config, keeping
/// its pause flag. Invalid for a bad name, a `concurrency` of 0 or a bad
/// `rate_limit` (as SQLite). Wakes fetchers: a raised cap or rate may let
/// waiting jobs go now.
pub(crate) async fn queue_config_set(store: &PgStore, name: &str, config: QueueConfig) -> StoreResult<QueueInfo> {
    validate_queue_name(name)?;
    if config.concurrency == Some(0) {
        return Err(StoreError::invalid("concurrency", "must be at least 1 (pause the queue to stop it)"));
    }
    if let Some(limit) = &config.rate_limit {
        limit.validate().map_err(|m| StoreError::invalid("rate_limit", m))?;
    }
    let mut w = store.begin().await?;
    let result = config_set_in(&mut w.tx, &mut w.fx, name, &config).await;
    let info = store.commit(w, result).await?;
    store.shared.caps.forget();
    Ok(info)
}

/// The config's transaction body.
async fn config_set_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    name: &str,
    config: &QueueConfig,
) -> StoreResult<QueueInfo> {
    sqlx::query(
        "INSERT INTO queues (name, config) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET config = excluded.config",
    )
    .bind(name)
    .bind(Json(config))
    .execute(&mut *conn)
    .await
    .db()?;
    fx.ready = true;
    get_in(conn, name, fx.now).await
}

/// `Store::queue_pause_set`: a paused queue hands out no jobs (active ones
/// run on). A change publishes `queue:paused` or `queue:resumed`, once per
/// change even with two servers racing (the row is locked before it is
/// read); a resume wakes fetchers. Invalid for a bad name.
pub(crate) async fn queue_pause_set(store: &PgStore, name: &str, paused: bool) -> StoreResult<QueueInfo> {
    validate_queue_name(name)?;
    let mut w = store.begin().await?;
    let result = pause_set_in(&mut w.tx, &mut w.fx, name, paused).await;
    store.commit(w, result).await
}

/// The pause's transaction body.
async fn pause_set_in(conn: &mut PgConnection, fx: &mut Effects, name: &str, paused: bool) -> StoreResult<QueueInfo> {
    // Creates the row if missing, else locks it; either way returns the
    // flag as it was (a no-op update returns the row unchanged).
    let was: bool = sqlx::query_scalar(
        "INSERT INTO queues (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING paused",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    if was != paused {
        sqlx::query("UPDATE queues SET paused = $2 WHERE name = $1")
            .bind(name)
            .bind(paused)
            .execute(&mut *conn)
            .await
            .db()?;
        let kind = if paused { EventKind::QueuePaused } else { EventKind::QueueResumed };
        fx.event(PendingEvent::queue(kind, name, fx.now));
        // A resumed queue's waiting jobs are claimable again.
        fx.ready |= !paused;
    }
    get_in(conn, name, fx.now).await
}

/// A queue with nothing stored about it.
fn blank(name: &str) -> QueueInfo {
    QueueInfo {
        name: name.to_owned(),
        paused: false,
        config: QueueConfig::default(),
        counts: StateCounts::default(),
        throttled_until: None,
    }
}

/// [`queue_get`] on a given connection (or transaction): settings and
/// throttle row in one statement, counts in another.
async fn get_in(conn: &mut PgConnection, name: &str, now: Timestamp) -> StoreResult<QueueInfo> {
    let row = sqlx::query(
        "SELECT s.paused, s.config, t.starts, t.held_until FROM (SELECT 1) AS one \
         LEFT JOIN queues s ON s.name = $1 LEFT JOIN throttles t ON t.scope = 'q:' || $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    let mut info = blank(name);
    info.paused = row.try_get::<Option<bool>, _>(0).db()?.unwrap_or(false);
    info.config = rows::opt_json(&row, 1)?.unwrap_or_default();
    let throttle = Throttle::from_row(&row, 2)?;
    info.throttled_until = limits::queue_throttled_until(&throttle, &info.config, now);
    for row in &sqlx::query(COUNTS_OF_QUEUE).bind(name).fetch_all(&mut *conn).await.db()? {
        let n: i64 = row.try_get(1).db()?;
        if n > 0 {
            info.counts.add(rows::state(row, 0)?, n as u64);
        }
    }
    Ok(info)
}

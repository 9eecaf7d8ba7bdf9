//! Queues: their stored config and pause flag, and their job counts.

use crate::error::SqlResultExt;
use crate::writer::Ctx;
use crate::{limits, rows};
use drover_core::{EventKind, QueueConfig, Timestamp};
use drover_store::{PendingEvent, QueueInfo, StateCounts, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;

/// One queue with its counts; defaults for a queue never configured.
pub(crate) fn get(conn: &Connection, name: &str, now: Timestamp) -> StoreResult<QueueInfo> {
    let stored: Option<(bool, Option<QueueConfig>)> = conn
        .prepare_cached("SELECT paused, config FROM queues WHERE name = ?1")
        .db()?
        .query_row([name], |r| Ok((r.get(0)?, rows::opt_json(r, 1)?)))
        .optional()
        .db()?;
    let (paused, config) = stored.unwrap_or_default();
    let mut counts = StateCounts::default();
    // Kept by the writer per batch (see `counts`), so no scan of the jobs.
    let mut stmt = conn.prepare_cached("SELECT state, n FROM queue_counts WHERE queue = ?1 AND n > 0").db()?;
    let mut found = stmt.query([name]).db()?;
    while let Some(row) = found.next().db()? {
        counts.add(rows::state(row, 0).db()?, row.get::<_, i64>(1).db()? as u64);
    }
    let config = config.unwrap_or_default();
    let throttled_until = limits::queue_throttled_until(conn, name, &config, now)?;
    Ok(QueueInfo { name: name.to_owned(), paused, config, counts, throttled_until })
}

/// Every queue that is configured or holds jobs, sorted by name.
pub(crate) fn list(conn: &Connection, now: Timestamp) -> StoreResult<Vec<QueueInfo>> {
    let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
    let blank = |name: &str| QueueInfo {
        name: name.to_owned(),
        paused: false,
        config: QueueConfig::default(),
        counts: StateCounts::default(),
        throttled_until: None,
    };
    let mut stmt = conn.prepare_cached("SELECT name, paused, config FROM queues").db()?;
    let mut found = stmt.query([]).db()?;
    while let Some(row) = found.next().db()? {
        let name: String = row.get(0).db()?;
        let mut info = blank(&name);
        info.paused = row.get(1).db()?;
        info.config = rows::opt_json(row, 2).db()?.unwrap_or_default();
        queues.insert(name, info);
    }
    // Zero rows are queues whose jobs all moved on from a state; a queue
    // appears only if it holds a job, as with a `GROUP BY` over the jobs.
    let mut stmt = conn.prepare_cached("SELECT queue, state, n FROM queue_counts WHERE n > 0").db()?;
    let mut found = stmt.query([]).db()?;
    while let Some(row) = found.next().db()? {
        let name: &str = row.get_ref(0).db()?.as_str().map_err(rusqlite::Error::from).db()?;
        let state = rows::state(row, 1).db()?;
        let n = row.get::<_, i64>(2).db()? as u64;
        if !queues.contains_key(name) {
            queues.insert(name.to_owned(), blank(name));
        }
        if let Some(info) = queues.get_mut(name) {
            info.counts.add(state, n);
        }
    }
    for info in queues.values_mut() {
        info.throttled_until = limits::queue_throttled_until(conn, &info.name, &info.config, now)?;
    }
    Ok(queues.into_values().collect())
}

/// [`drover_store::Store::queue_config_set`]; the name was checked by the caller.
pub(crate) fn config_set(ctx: &mut Ctx<'_>, name: &str, config: &QueueConfig) -> StoreResult<QueueInfo> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO queues (name, config) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET config = excluded.config",
        )
        .db()?
        .execute(params![name, rows::to_json(config)])
        .db()?;
    // A raised cap or rate may let waiting jobs go now.
    ctx.ready = true;
    get_in_batch(ctx, name)
}

/// [`drover_store::Store::queue_pause_set`]; the name was checked by the caller.
pub(crate) fn pause_set(ctx: &mut Ctx<'_>, name: &str, paused: bool) -> StoreResult<QueueInfo> {
    let was: Option<bool> = ctx
        .conn
        .prepare_cached("SELECT paused FROM queues WHERE name = ?1")
        .db()?
        .query_row([name], |r| r.get(0))
        .optional()
        .db()?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO queues (name, paused) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        )
        .db()?
        .execute(params![name, paused])
        .db()?;
    if was.unwrap_or(false) != paused {
        let now = ctx.now();
        let kind = if paused { EventKind::QueuePaused } else { EventKind::QueueResumed };
        ctx.event(|| PendingEvent::queue(kind, name, now));
        // A resumed queue's waiting jobs are claimable again.
        ctx.ready |= !paused;
    }
    get_in_batch(ctx, name)
}

/// [`get`] from inside the writer's batch. The batch's count changes so far
/// are written first: `queue_counts` otherwise receives them only just
/// before `COMMIT`, and the answer would show the jobs of earlier commands
/// of the same batch in their old states (a claimed job still `waiting`)
/// beside a pause flag those commands already ran before. Should this
/// command roll back, its savepoint takes the written counts with it and
/// `apply_isolated` restores the in-memory ones.
fn get_in_batch(ctx: &mut Ctx<'_>, name: &str) -> StoreResult<QueueInfo> {
    ctx.counts.flush(ctx.conn).db()?;
    get(ctx.conn, name, ctx.now())
}

//! Schedules: create or replace, delete and fire in the writer; get, list
//! and the next due time on the readers. Firing enqueues through
//! [`job_sql::insert`], the one insert path, so a scheduled job is stored,
//! counted and announced like any other.

use crate::error::SqlResultExt;
use crate::job_sql::{self, InsertOutcome};
use crate::rows::{self, to_json};
use crate::writer::Ctx;
use drover_core::schedule::DEFAULT_TIMEZONE;
use drover_core::{JobId, Schedule, ScheduleRule, ScheduleSpec, Timestamp};
use drover_store::{
    MAX_PAGE, ScheduleFired, ScheduleListParams, SchedulePage, ScheduleUpserted, StoreError, StoreResult,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// The columns [`schedule_row`] decodes, in order.
const COLS: &str =
    "id, cron, every_ms, timezone, job, next_run_at, last_run_at, last_job_id, created_at, updated_at, paused";

/// How far a schedule that cannot fire (its stored rule no longer validates,
/// say its time zone left the system's database, or it has no next tick)
/// is pushed back, so that it neither
/// blocks the others nor keeps the scheduler awake.
const BROKEN_RETRY_MS: i64 = 3_600_000;

/// Decodes a row of [`COLS`].
fn schedule_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let every_ms: Option<i64> = row.get(2)?;
    Ok(Schedule {
        spec: ScheduleSpec {
            id: row.get(0)?,
            cron: row.get(1)?,
            every_ms: every_ms.map(|ms| ms as u64),
            timezone: row.get(3)?,
            job: rows::json(row, 4)?,
        },
        next_run_at: Timestamp(row.get(5)?),
        last_run_at: row.get::<_, Option<i64>>(6)?.map(Timestamp),
        last_job_id: row.get::<_, Option<String>>(7)?.map(JobId::from_trusted),
        created_at: Timestamp(row.get(8)?),
        updated_at: Timestamp(row.get(9)?),
        paused: row.get(10)?,
    })
}

/// One schedule, or `None`.
pub(crate) fn get(conn: &Connection, id: &str) -> StoreResult<Option<Schedule>> {
    conn.prepare_cached(&format!("SELECT {COLS} FROM schedules WHERE id = ?1"))
        .db()?
        .query_row([id], schedule_row)
        .optional()
        .db()
}

/// [`drover_store::Store::schedule_list`]: by id; the cursor is the last id
/// of the previous page.
pub(crate) fn list(conn: &Connection, p: &ScheduleListParams) -> StoreResult<SchedulePage> {
    let limit = match p.limit {
        0 => 50,
        n => n.min(MAX_PAGE),
    };
    if let Some(cursor) = &p.cursor {
        drover_core::schedule::validate_schedule_id(cursor)
            .map_err(|_| StoreError::invalid("cursor", "not a cursor this store issued"))?;
    }
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLS} FROM schedules WHERE id > ?1 ORDER BY id LIMIT ?2")).db()?;
    // One more than the page, to learn whether another page follows.
    let mut items = stmt
        .query_map(params![p.cursor.as_deref().unwrap_or(""), i64::from(limit) + 1], schedule_row)
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|s| s.spec.id.clone())
    } else {
        None
    };
    Ok(SchedulePage { items, next_cursor })
}

/// The earliest `next_run_at`.
pub(crate) fn next_due(conn: &Connection) -> StoreResult<Option<Timestamp>> {
    let at: Option<i64> = conn
        .prepare_cached("SELECT min(next_run_at) FROM schedules WHERE paused = 0")
        .db()?
        .query_row([], |r| r.get(0))
        .db()?;
    Ok(at.map(Timestamp))
}

/// [`drover_store::Store::schedule_upsert`], for a spec the caller validated
/// into `rule`.
pub(crate) fn upsert(ctx: &mut Ctx<'_>, spec: &ScheduleSpec, rule: &ScheduleRule) -> StoreResult<ScheduleUpserted> {
    let now = ctx.now();
    // The zone a cron expression was read in is stored, so that reading the
    // schedule back says which one applies.
    let timezone = match (&spec.cron, &spec.timezone) {
        (Some(_), None) => Some(DEFAULT_TIMEZONE.to_owned()),
        (_, tz) => tz.clone(),
    };
    // Posting the same cadence again (a deploy script re-applying its
    // schedules) keeps the next tick: recomputing it from now would push an
    // hourly schedule re-posted every few minutes back forever.
    let existing = get(ctx.conn, &spec.id)?;
    let next_run_at = match existing {
        Some(old)
            if old.spec.cron == spec.cron && old.spec.every_ms == spec.every_ms && old.spec.timezone == timezone =>
        {
            old.next_run_at
        }
        _ => rule.next_after(now, None)?,
    };
    let changed = ctx
        .conn
        .prepare_cached(
            "UPDATE schedules SET cron = ?2, every_ms = ?3, timezone = ?4, job = ?5, next_run_at = ?6, \
             updated_at = ?7 WHERE id = ?1",
        )
        .db()?
        .execute(params![
            spec.id,
            spec.cron,
            spec.every_ms.map(|ms| ms as i64),
            timezone,
            to_json(&spec.job),
            next_run_at.0,
            now.0
        ])
        .db()?;
    let created = changed == 0;
    if created {
        ctx.conn
            .prepare_cached(
                "INSERT INTO schedules (id, cron, every_ms, timezone, job, next_run_at, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )
            .db()?
            .execute(params![
                spec.id,
                spec.cron,
                spec.every_ms.map(|ms| ms as i64),
                timezone,
                to_json(&spec.job),
                next_run_at.0,
                now.0
            ])
            .db()?;
    }
    let schedule =
        get(ctx.conn, &spec.id)?.ok_or_else(|| StoreError::Backend("a schedule just written cannot be read".into()))?;
    Ok(ScheduleUpserted { schedule, created })
}

/// [`drover_store::Store::schedule_delete`].
pub(crate) fn delete(ctx: &mut Ctx<'_>, id: &str) -> StoreResult<bool> {
    let removed = ctx.conn.prepare_cached("DELETE FROM schedules WHERE id = ?1").db()?.execute([id]).db()?;
    Ok(removed > 0)
}

/// [`drover_store::Store::schedule_pause_set`].
pub(crate) fn pause_set(ctx: &mut Ctx<'_>, id: &str, paused: bool) -> StoreResult<Schedule> {
    let schedule = get(ctx.conn, id)?.ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))?;
    if schedule.paused != paused {
        // Resuming starts from now: ticks that passed while paused were
        // skipped on purpose, so none of them runs.
        let next_run_at = if paused {
            schedule.next_run_at
        } else {
            schedule.spec.validate()?.next_after(ctx.now(), Some(schedule.next_run_at))?
        };
        ctx.conn
            .prepare_cached("UPDATE schedules SET paused = ?2, next_run_at = ?3 WHERE id = ?1")
            .db()?
            .execute(params![id, paused, next_run_at.0])
            .db()?;
    }
    get(ctx.conn, id)?.ok_or_else(|| StoreError::Backend("a schedule just written cannot be read".into()))
}

/// [`drover_store::Store::schedule_fire_due`].
pub(crate) fn fire_due(ctx: &mut Ctx<'_>) -> StoreResult<Vec<ScheduleFired>> {
    let now = ctx.now();
    // Copied out of `ctx`, so statements do not hold `ctx` borrowed while
    // the insert path takes it mutably.
    let conn = ctx.conn;
    let due = conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM schedules WHERE next_run_at <= ?1 AND paused = 0 ORDER BY next_run_at, id"
        ))
        .db()?
        .query_map([now.0], schedule_row)
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    let mut fired = Vec::with_capacity(due.len());
    for schedule in due {
        let tick = schedule.next_run_at;
        let spec = &schedule.spec;
        // Ticks missed meanwhile collapse into this run: the next one is
        // the first strictly after now, on the interval's grid. The insert
        // runs in a savepoint, so one schedule that cannot fire (its rule
        // no longer parses, or its job is refused, e.g. a `batch_id` of a
        // batch that completed) is pushed back instead of failing the
        // others.
        let outcome =
            spec.validate().and_then(|rule| rule.next_after(now, Some(tick))).map_err(StoreError::from).and_then(
                |next_run_at| {
                    ctx.isolated(|ctx| {
                        let (_, rows) = job_sql::prepare_insert(vec![spec.job_for_tick(tick)])?;
                        let outcome = job_sql::insert(ctx, &rows)?.pop();
                        Ok((next_run_at, outcome))
                    })
                },
            );
        let (next_run_at, outcome) = match outcome {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(schedule = %spec.id, error = %e, "a stored schedule cannot fire; skipping it for now");
                conn.prepare_cached("UPDATE schedules SET next_run_at = ?2 WHERE id = ?1")
                    .db()?
                    .execute(params![spec.id, now.plus_ms(BROKEN_RETRY_MS).0])
                    .db()?;
                continue;
            }
        };
        let (job_id, duplicate) = match outcome {
            Some(InsertOutcome::New { .. }) => (spec.job_id_for_tick(tick), false),
            // The tick's job exists (another scheduler fired it), or the
            // template's unique key matched a job still unfinished.
            Some(InsertOutcome::Duplicate(job)) => (job.id, true),
            None => return Err(StoreError::Backend("an insert returned no outcome".into())),
        };
        conn.prepare_cached("UPDATE schedules SET next_run_at = ?2, last_run_at = ?3, last_job_id = ?4 WHERE id = ?1")
            .db()?
            .execute(params![spec.id, next_run_at.0, tick.0, job_id.as_str()])
            .db()?;
        fired.push(ScheduleFired { schedule_id: spec.id.clone(), tick, job_id, duplicate, next_run_at });
    }
    Ok(fired)
}

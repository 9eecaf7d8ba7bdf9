//! Schedules (ADR 0006): cron and interval job templates, fired by every
//! server's scheduler, each tick once. As the SQLite store's
//! `schedule_sql.rs`; firing enqueues through [`jobs::insert_in`], the one
//! insert path, so a scheduled job is stored, counted and announced like
//! any other.
//!
//! Where several servers need more than SQLite's single writer (ADR 0009):
//! - `schedule_fire_due` locks the due rows `FOR UPDATE SKIP LOCKED`, so
//!   two schedulers firing at once take different schedules and never wait
//!   for each other; the tick's job id (`sched:{id}:{tick}`) makes a tick
//!   fired twice anyway (a stale view) a duplicate.
//! - `schedule_upsert` serialises on a transaction-scoped advisory lock on
//!   the schedule's id (scope `s:{id}`): the row may not exist yet, so
//!   there is no row to lock, and two servers creating the same schedule
//!   must not both insert it.
//! - One schedule's failure is isolated in a savepoint, as SQLite's
//!   `Ctx::isolated`, except for errors worth a retry (a lost connection, a
//!   deadlock): those fail the whole call, since pushing the schedule back
//!   an hour for them would drop its ticks.

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::jobs;
use crate::rows;
use drover_core::schedule::{DEFAULT_TIMEZONE, validate_schedule_id};
use drover_core::{JobId, Schedule, ScheduleRule, ScheduleSpec, Timestamp};
use drover_store::{
    MAX_PAGE, ScheduleFired, ScheduleListParams, SchedulePage, ScheduleUpserted, StoreError, StoreResult,
};
use sqlx::postgres::PgRow;
use sqlx::{Acquire, PgConnection, Row};

/// The columns [`schedule_row`] decodes, in order.
const COLS: &str =
    "id, cron, every_ms, timezone, job, next_run_at, last_run_at, last_job_id, created_at, updated_at, paused";

/// How far a schedule that cannot fire (its stored rule no longer
/// validates, say its time zone left the system's database, or its job is
/// refused) is pushed back, so that it neither blocks the others nor keeps
/// the scheduler awake. As SQLite.
const BROKEN_RETRY_MS: i64 = 3_600_000;

/// Page size when the caller asks for 0.
const DEFAULT_PAGE: u32 = 50;

/// `Store::schedule_upsert`: creates the schedule or replaces it, keeping
/// its history, paused flag and (for an unchanged cadence) its next tick.
pub(crate) async fn schedule_upsert(store: &PgStore, spec: ScheduleSpec) -> StoreResult<ScheduleUpserted> {
    // Parsed before the transaction: nothing is locked while it runs.
    let rule = spec.validate()?;
    let mut w = store.begin().await?;
    let result = upsert_in(&mut w.tx, &mut w.fx, &spec, &rule).await;
    store.commit(w, result).await
}

/// `Store::schedule_get`.
pub(crate) async fn schedule_get(store: &PgStore, id: &str) -> StoreResult<Option<Schedule>> {
    let mut conn = store.pool().acquire().await.db()?;
    get_in(&mut conn, id, false).await
}

/// `Store::schedule_list`: by id in byte order (as SQLite); the cursor is
/// the last id of the previous page. A limit of 0 means 50; limits above
/// [`MAX_PAGE`] are clamped to it.
pub(crate) async fn schedule_list(store: &PgStore, params: ScheduleListParams) -> StoreResult<SchedulePage> {
    let limit = match params.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    // Every id this store issues as a cursor is a valid schedule id.
    if let Some(cursor) = &params.cursor {
        validate_schedule_id(cursor).map_err(|_| StoreError::invalid("cursor", "not a cursor this store issued"))?;
    }
    let mut conn = store.pool().acquire().await.db()?;
    // `COLLATE "C"` compares bytes, whatever the database's collation, so
    // the order and the cursor agree with SQLite's. One row more than the
    // page tells whether another page follows.
    let sql = format!("SELECT {COLS} FROM schedules WHERE id COLLATE \"C\" > $1 ORDER BY id COLLATE \"C\" LIMIT $2");
    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(params.cursor.as_deref().unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *conn)
        .await
        .db()?;
    let mut items = found.iter().map(schedule_row).collect::<StoreResult<Vec<_>>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|s| s.spec.id.clone())
    } else {
        None
    };
    Ok(SchedulePage { items, next_cursor })
}

/// `Store::schedule_pause_set`: resuming moves the next tick to the first
/// one after now, so the ticks that passed while paused never run.
pub(crate) async fn schedule_pause_set(store: &PgStore, id: &str, paused: bool) -> StoreResult<Schedule> {
    let mut w = store.begin().await?;
    let result = pause_set_in(&mut w.tx, &mut w.fx, id, paused).await;
    store.commit(w, result).await
}

/// `Store::schedule_delete`: true when it existed; its jobs stay.
pub(crate) async fn schedule_delete(store: &PgStore, id: &str) -> StoreResult<bool> {
    let mut w = store.begin().await?;
    let result = async {
        let removed = sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id).execute(&mut *w.tx).await.db()?;
        let existed = removed.rows_affected() > 0;
        w.fx.schedules_changed = existed;
        Ok(existed)
    }
    .await;
    store.commit(w, result).await
}

/// `Store::schedule_fire_due`: every due schedule not paused enqueues its
/// tick's job, in one transaction; returns what fired, by `next_run_at`.
pub(crate) async fn schedule_fire_due(store: &PgStore) -> StoreResult<Vec<ScheduleFired>> {
    let mut w = store.begin().await?;
    let result = fire_due_in(&mut w.tx, &mut w.fx).await;
    store.commit(w, result).await
}

/// `Store::schedule_next_due`: the earliest tick of any schedule not
/// paused (the head of `schedules_due`).
pub(crate) async fn schedule_next_due(store: &PgStore) -> StoreResult<Option<Timestamp>> {
    let mut conn = store.pool().acquire().await.db()?;
    let at: Option<i64> = sqlx::query_scalar("SELECT min(next_run_at) FROM schedules WHERE NOT paused")
        .fetch_one(&mut *conn)
        .await
        .db()?;
    Ok(at.map(Timestamp))
}

/// Decodes a row of [`COLS`].
fn schedule_row(row: &PgRow) -> StoreResult<Schedule> {
    let every_ms: Option<i64> = row.try_get(2).db()?;
    Ok(Schedule {
        spec: ScheduleSpec {
            id: row.try_get(0).db()?,
            cron: row.try_get(1).db()?,
            // The table's CHECK keeps it positive.
            every_ms: every_ms.map(|ms| ms as u64),
            timezone: row.try_get(3).db()?,
            job: rows::json(row, 4)?,
        },
        next_run_at: Timestamp(row.try_get(5).db()?),
        last_run_at: row.try_get::<Option<i64>, _>(6).db()?.map(Timestamp),
        last_job_id: row.try_get::<Option<String>, _>(7).db()?.map(JobId::from_trusted),
        created_at: Timestamp(row.try_get(8).db()?),
        updated_at: Timestamp(row.try_get(9).db()?),
        paused: row.try_get(10).db()?,
    })
}

/// One schedule, or `None`; `lock` takes its row lock (`FOR UPDATE`) for
/// the rest of the transaction.
async fn get_in(conn: &mut PgConnection, id: &str, lock: bool) -> StoreResult<Option<Schedule>> {
    let sql = format!("SELECT {COLS} FROM schedules WHERE id = $1{}", if lock { " FOR UPDATE" } else { "" });
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *conn).await.db()?;
    row.as_ref().map(schedule_row).transpose()
}

/// The upsert's transaction body, for a spec validated into `rule`.
async fn upsert_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    spec: &ScheduleSpec,
    rule: &ScheduleRule,
) -> StoreResult<ScheduleUpserted> {
    let now = fx.now;
    // The zone a cron expression was read in is stored, so that reading the
    // schedule back says which one applies.
    let timezone = match (&spec.cron, &spec.timezone) {
        (Some(_), None) => Some(DEFAULT_TIMEZONE.to_owned()),
        (_, tz) => tz.clone(),
    };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("s:{}", spec.id))
        .execute(&mut *conn)
        .await
        .db()?;
    let fresh_tick = rule.next_after(now, None)?;
    // Posting the same cadence again (a deploy script re-applying its
    // schedules) keeps the next tick: recomputing it from now would push an
    // hourly schedule re-posted every few minutes back forever. The
    // comparison reads the row as it is now, after any firing committed.
    let replace = format!(
        "UPDATE schedules SET cron = $2, every_ms = $3, timezone = $4, job = $5, updated_at = $7, \
         next_run_at = CASE WHEN cron IS NOT DISTINCT FROM $2 AND every_ms IS NOT DISTINCT FROM $3 \
             AND timezone IS NOT DISTINCT FROM $4 THEN next_run_at ELSE $6 END \
         WHERE id = $1 RETURNING {COLS}"
    );
    let create = format!(
        "INSERT INTO schedules (id, cron, every_ms, timezone, job, next_run_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {COLS}"
    );
    // Both statements take the same parameters.
    let run = async |conn: &mut PgConnection, sql: String| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&spec.id)
            .bind(&spec.cron)
            .bind(spec.every_ms.map(|ms| ms as i64))
            .bind(&timezone)
            .bind(sqlx::types::Json(&spec.job))
            .bind(fresh_tick.0)
            .bind(now.0)
            .fetch_optional(conn)
            .await
            .db()
    };
    fx.schedules_changed = true;
    if let Some(row) = run(conn, replace).await? {
        return Ok(ScheduleUpserted { schedule: schedule_row(&row)?, created: false });
    }
    // Under the lock, no other upsert can have inserted it meanwhile.
    let row = run(conn, create).await?.ok_or_else(|| crate::fx::vanished("a schedule just inserted"))?;
    Ok(ScheduleUpserted { schedule: schedule_row(&row)?, created: true })
}

/// The pause's transaction body.
async fn pause_set_in(conn: &mut PgConnection, fx: &mut Effects, id: &str, paused: bool) -> StoreResult<Schedule> {
    // Locked, so a scheduler firing it meanwhile cannot move the tick this
    // resume computes from.
    let schedule = get_in(conn, id, true).await?.ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))?;
    // Schedulers wake on every call, as in SQLite.
    fx.schedules_changed = true;
    if schedule.paused == paused {
        return Ok(schedule);
    }
    // Resuming starts from now: ticks that passed while paused were skipped
    // on purpose, so none of them runs.
    let next_run_at = if paused {
        schedule.next_run_at
    } else {
        schedule.spec.validate()?.next_after(fx.now, Some(schedule.next_run_at))?
    };
    let sql = format!("UPDATE schedules SET paused = $2, next_run_at = $3 WHERE id = $1 RETURNING {COLS}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(paused)
        .bind(next_run_at.0)
        .fetch_one(&mut *conn)
        .await
        .db()?;
    schedule_row(&row)
}

/// Where one fired (or skipped) schedule moves: its next tick, and the
/// tick and job it fired (`None` when it could not fire).
struct Advance {
    id: String,
    next_run_at: Timestamp,
    fired: Option<(Timestamp, JobId)>,
}

/// The firing's transaction body.
async fn fire_due_in(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<Vec<ScheduleFired>> {
    let now = fx.now;
    // Rows another scheduler is firing right now are skipped: that one
    // fires them. Reading them after it commits finds them not due.
    let sql = format!(
        "SELECT {COLS} FROM schedules WHERE NOT paused AND next_run_at <= $1 ORDER BY next_run_at, id \
         FOR UPDATE SKIP LOCKED"
    );
    let due = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now.0).fetch_all(&mut *conn).await.db()?;
    let mut fired = Vec::with_capacity(due.len());
    let mut advances = Vec::with_capacity(due.len());
    for row in &due {
        let schedule = schedule_row(row)?;
        let id = schedule.spec.id.clone();
        match fire_one(conn, fx, &schedule).await {
            Ok(f) => {
                advances.push(Advance { id, next_run_at: f.next_run_at, fired: Some((f.tick, f.job_id.clone())) });
                fired.push(f);
            }
            Err(e) if retry_worthy(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(schedule = %id, error = %e, "a stored schedule cannot fire; skipping it for now");
                advances.push(Advance { id, next_run_at: now.plus_ms(BROKEN_RETRY_MS), fired: None });
            }
        }
    }
    advance(conn, &advances).await?;
    Ok(fired)
}

/// Errors that say nothing about the schedule (the database is unreachable,
/// a deadlock, the store closed): the whole firing fails and is retried.
fn retry_worthy(e: &StoreError) -> bool {
    e.is_transient() || matches!(e, StoreError::Closed)
}

/// Fires one due schedule: its tick's job is inserted in a savepoint, so a
/// refused job (say a template joining a batch that completed) rolls back
/// alone, with what it recorded in `fx`. Ticks missed meanwhile collapse
/// into this run: the next one is the first strictly after now, on the
/// interval's grid.
async fn fire_one(conn: &mut PgConnection, fx: &mut Effects, schedule: &Schedule) -> StoreResult<ScheduleFired> {
    let tick = schedule.next_run_at;
    let spec = &schedule.spec;
    let next_run_at = spec.validate()?.next_after(fx.now, Some(tick))?;
    let job = spec.job_for_tick(tick);
    job.validate()?;
    let mark = fx.mark();
    let mut part = conn.begin().await.db()?;
    let inserted = jobs::insert_in(&mut part, fx, vec![job]).await;
    let inserted = match inserted {
        Ok(mut inserted) => {
            part.commit().await.db()?;
            inserted.pop().ok_or_else(|| StoreError::Backend("an insert returned no outcome".into()))?
        }
        Err(e) => {
            part.rollback().await.db()?;
            fx.restore(mark);
            return Err(e);
        }
    };
    // A duplicate: the tick's job exists (another scheduler fired it), or
    // the template's unique key matched a job still unfinished.
    Ok(ScheduleFired {
        schedule_id: spec.id.clone(),
        tick,
        job_id: inserted.job.id,
        duplicate: inserted.duplicate,
        next_run_at,
    })
}

/// Writes every schedule's new tick (and, for those that fired, the tick
/// and job) in one statement.
async fn advance(conn: &mut PgConnection, advances: &[Advance]) -> StoreResult<()> {
    if advances.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = advances.iter().map(|a| a.id.as_str()).collect();
    let next: Vec<i64> = advances.iter().map(|a| a.next_run_at.0).collect();
    let ticks: Vec<Option<i64>> = advances.iter().map(|a| a.fired.as_ref().map(|(tick, _)| tick.0)).collect();
    let jobs: Vec<Option<&str>> = advances.iter().map(|a| a.fired.as_ref().map(|(_, job)| job.as_str())).collect();
    sqlx::query(
        "UPDATE schedules SET next_run_at = a.next_run_at, \
             last_run_at = coalesce(a.tick, schedules.last_run_at), \
             last_job_id = CASE WHEN a.tick IS NULL THEN schedules.last_job_id ELSE a.job END \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS a(id, next_run_at, tick, job) \
         WHERE schedules.id = a.id",
    )
    .bind(&ids)
    .bind(&next)
    .bind(&ticks)
    .bind(&jobs)
    .execute(&mut *conn)
    .await
    .db()?;
    Ok(())
}

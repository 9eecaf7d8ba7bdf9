//! Calls a worker makes while it holds a lease: heartbeats, progress, log
//! lines, custom events; and reading a job's log (as SQLite's
//! `job_sql::{heartbeat, progress, log_append, event_emit}`).
//!
//! Every lease check sits in the statement that acts on it (`... AND
//! lease_token = $t AND state = 'active'`, or a row lock taken by it), so a
//! rescue or a re-claim committing meanwhile on another server is either
//! seen (the call fails with `LeaseLost`) or waits for the call to commit.

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use drover_core::{EventKind, JobId, LeaseToken, LogEntry, LogLevel, Progress, Timestamp};
use drover_store::{
    HeartbeatReply, JobEventEmit, JobHeartbeat, JobLogAppend, MAX_PAGE, PendingEvent, StoreError, StoreResult,
};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::time::Duration;

/// Log lines a `job_log_list` with limit 0 returns (as SQLite).
const DEFAULT_PAGE: u32 = 50;

/// `Store::job_heartbeat_many`: per beat, the lease moves to now +
/// `lease_ms` and the progress, if any, is recorded (`job:progress`);
/// [`StoreError::LeaseLost`] when the job is not active under that token,
/// [`StoreError::Invalid`] for a bad progress value; the other beats
/// still apply. Replies carry `cancel_requested`.
///
/// One statement updates every beat of the call (beats naming the same
/// job more than once go in later rounds, one statement each, so they
/// apply in order as in SQLite). It locks its rows in `seq` order first,
/// like `job_finish_many`, so a heartbeat and a finish sharing jobs cannot
/// deadlock.
pub(crate) async fn job_heartbeat_many(
    store: &PgStore,
    beats: Vec<JobHeartbeat>,
) -> StoreResult<Vec<StoreResult<HeartbeatReply>>> {
    if beats.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = store.begin().await?;
    let result = heartbeat_in(&mut w.tx, &mut w.fx, &beats).await;
    store.commit(w, result).await
}

/// One beat ready for the statement.
struct Beat {
    /// Its position in the call.
    index: i32,
    /// The progress as JSON text, when it carries one.
    progress: Option<String>,
}

/// The heartbeat's transaction body.
async fn heartbeat_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    beats: &[JobHeartbeat],
) -> StoreResult<Vec<StoreResult<HeartbeatReply>>> {
    let now = fx.now;
    let mut out: Vec<Option<StoreResult<HeartbeatReply>>> = vec![None; beats.len()];
    // Round k holds the k-th beat of each job, so no statement names a job
    // twice (an `UPDATE ... FROM` applies one source row per target row).
    let mut rounds: Vec<Vec<Beat>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, beat) in beats.iter().enumerate() {
        let progress = match beat.progress.as_ref().map(progress_json).transpose() {
            Ok(progress) => progress,
            Err(e) => {
                out[i] = Some(Err(e));
                continue;
            }
        };
        let round = seen.entry(beat.id.as_str()).or_default();
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(Beat { index: i32::try_from(i).unwrap_or(i32::MAX), progress });
        *round += 1;
    }
    let mut events: Vec<(usize, PendingEvent)> = Vec::new();
    for round in rounds {
        let mut ids = Vec::with_capacity(round.len());
        let mut tokens = Vec::with_capacity(round.len());
        let mut expires = Vec::with_capacity(round.len());
        let mut indexes = Vec::with_capacity(round.len());
        let mut progress = Vec::with_capacity(round.len());
        for b in round {
            let beat = &beats[b.index as usize];
            ids.push(beat.id.as_str());
            tokens.push(beat.lease_token.0);
            expires.push(now.plus(Duration::from_millis(beat.lease_ms)).0);
            indexes.push(b.index);
            progress.push(b.progress);
        }
        let updated = sqlx::query(
            "WITH b AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::integer[]) \
                 AS b(id, token, expires, progress, i)), \
             locked AS (SELECT jobs.seq, b.expires, b.progress, b.i FROM jobs JOIN b ON jobs.id = b.id \
                 WHERE jobs.lease_token = b.token AND jobs.state = 'active' ORDER BY jobs.seq \
                 FOR NO KEY UPDATE OF jobs) \
             UPDATE jobs SET lease_expires_at = locked.expires, \
                 progress = coalesce(locked.progress::jsonb, jobs.progress) \
             FROM locked WHERE jobs.seq = locked.seq \
             RETURNING locked.i, jobs.lease_expires_at, jobs.cancel_requested, jobs.queue, jobs.batch_id",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(&expires)
        .bind(&progress)
        .bind(&indexes)
        .fetch_all(&mut *conn)
        .await
        .db()?;
        for row in &updated {
            let i = row.try_get::<i32, _>(0).db()? as usize;
            let lease_expires_at = Timestamp(row.try_get(1).db()?);
            let cancel_requested: bool = row.try_get(2).db()?;
            let beat = &beats[i];
            if let Some(p) = &beat.progress {
                let queue: &str = row.try_get(3).db()?;
                let batch_id: Option<&str> = row.try_get(4).db()?;
                events.push((i, progress_event(&beat.id, queue, batch_id, now, p)));
            }
            out[i] = Some(Ok(HeartbeatReply { lease_expires_at, cancel_requested }));
        }
    }
    // Events in the order of the beats, as SQLite publishes them.
    events.sort_by_key(|(i, _)| *i);
    for (_, event) in events {
        fx.event(event);
    }
    Ok(out
        .into_iter()
        .zip(beats)
        .map(|(reply, beat)| reply.unwrap_or_else(|| Err(StoreError::LeaseLost(beat.id.to_string()))))
        .collect())
}

/// `Store::job_progress`: records the progress of a job active under
/// `lease_token`, replacing the last value (`job:progress`). Errors:
/// [`StoreError::Invalid`] (field `progress`), [`StoreError::LeaseLost`],
/// [`StoreError::NotFound`].
pub(crate) async fn job_progress(
    store: &PgStore,
    id: &JobId,
    lease_token: LeaseToken,
    progress: Progress,
) -> StoreResult<()> {
    let json = progress_json(&progress)?;
    let mut w = store.begin().await?;
    let result = async {
        let conn = &mut *w.tx;
        let now = w.fx.now;
        let row = sqlx::query(
            "UPDATE jobs SET progress = $1::text::jsonb WHERE id = $2 AND lease_token = $3 AND state = 'active' \
             RETURNING queue, batch_id",
        )
        .bind(&json)
        .bind(id.as_str())
        .bind(lease_token.0)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
        let Some(row) = row else { return Err(lease_error(conn, id).await) };
        let queue: &str = row.try_get(0).db()?;
        let batch_id: Option<&str> = row.try_get(1).db()?;
        w.fx.event(progress_event(id, queue, batch_id, now, &progress));
        Ok(())
    }
    .await;
    store.commit(w, result).await
}

/// `Store::job_log_append`: appends a line to the log of a job active
/// under the lease, numbered after the job's last line. Errors:
/// [`StoreError::LeaseLost`], [`StoreError::NotFound`],
/// [`StoreError::Invalid`] for text PostgreSQL cannot store (a NUL
/// character).
pub(crate) async fn job_log_append(store: &PgStore, params: JobLogAppend) -> StoreResult<()> {
    if params.message.contains('\0') {
        return Err(StoreError::invalid("message", "must not contain NUL characters"));
    }
    storable("metadata", &params.metadata)?;
    let mut w = store.begin().await?;
    let result = log_append_in(&mut w.tx, w.fx.now, &params).await;
    store.commit(w, result).await
}

/// The log append's transaction body.
async fn log_append_in(conn: &mut PgConnection, now: Timestamp, p: &JobLogAppend) -> StoreResult<()> {
    // The row lock serialises the appends of one job, so the next line
    // number below, read by a later statement, is never taken twice; it
    // also keeps the lease from changing hands before this commits.
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'active' FOR NO KEY UPDATE",
    )
    .bind(p.id.as_str())
    .bind(p.lease_token.0)
    .fetch_optional(&mut *conn)
    .await
    .db()?;
    let Some(seq) = seq else { return Err(lease_error(conn, &p.id).await) };
    sqlx::query(
        "INSERT INTO job_logs (job_seq, n, at, level, message, metadata) \
         SELECT $1, coalesce(max(n), 0) + 1, $2, $3, $4, $5 FROM job_logs WHERE job_seq = $1",
    )
    .bind(seq)
    .bind(now.0)
    .bind(p.level.as_str())
    .bind(&p.message)
    .bind((!p.metadata.is_null()).then_some(Json(&p.metadata)))
    .execute(&mut *conn)
    .await
    .db()?;
    Ok(())
}

/// `Store::job_log_list`: up to `limit` lines (0 means 50, at most
/// [`MAX_PAGE`]) after the first `after`, oldest first. Errors:
/// [`StoreError::NotFound`].
pub(crate) async fn job_log_list(store: &PgStore, id: &JobId, after: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
    let limit = match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    // One statement: the job's existence and its lines from one snapshot.
    let found = sqlx::query(
        "SELECT l.at, l.level, l.message, l.metadata FROM jobs j \
         LEFT JOIN LATERAL (SELECT n, at, level, message, metadata FROM job_logs \
             WHERE job_seq = j.seq AND n > $2 ORDER BY n LIMIT $3) AS l ON true \
         WHERE j.id = $1 ORDER BY l.n",
    )
    .bind(id.as_str())
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await
    .db()?;
    if found.is_empty() {
        return Err(StoreError::NotFound(format!("job {id}")));
    }
    let mut lines = Vec::with_capacity(found.len());
    for row in &found {
        // The one row of a job without lines (past `after`) is all NULL.
        let Some(at) = row.try_get::<Option<i64>, _>(0).db()? else { continue };
        let level: &str = row.try_get(1).db()?;
        lines.push(LogEntry {
            at: Timestamp(at),
            level: LogLevel::parse(level)
                .ok_or_else(|| StoreError::Backend(format!("unknown log level {level} in job_logs")))?,
            message: row.try_get(2).db()?,
            metadata: crate::rows::opt_json(row, 3)?.unwrap_or_default(),
        });
    }
    Ok(lines)
}

/// `Store::job_event_emit`: publishes a handler-defined event of a job
/// active under the lease (on every server, after commit). Errors:
/// [`StoreError::Invalid`] (field `type`) for a reserved or malformed
/// type, [`StoreError::LeaseLost`], [`StoreError::NotFound`].
pub(crate) async fn job_event_emit(store: &PgStore, params: JobEventEmit) -> StoreResult<()> {
    EventKind::validate_custom(&params.kind).map_err(|m| StoreError::invalid("type", m))?;
    let mut w = store.begin().await?;
    let result = async {
        let conn = &mut *w.tx;
        // `FOR SHARE` keeps a rescue or finish from ending the lease
        // before this commits, so the event never follows its end.
        let row = sqlx::query(
            "SELECT queue, batch_id FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'active' FOR SHARE",
        )
        .bind(params.id.as_str())
        .bind(params.lease_token.0)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
        let Some(row) = row else { return Err(lease_error(conn, &params.id).await) };
        let queue: &str = row.try_get(0).db()?;
        let batch_id: Option<&str> = row.try_get(1).db()?;
        let kind = EventKind::Custom(params.kind.clone());
        w.fx.event(PendingEvent::job(kind, &params.id, queue, batch_id, w.fx.now, params.data.clone()));
        Ok(())
    }
    .await;
    store.commit(w, result).await
}

/// The `job:progress` event of a recorded progress.
fn progress_event(id: &JobId, queue: &str, batch_id: Option<&str>, at: Timestamp, progress: &Progress) -> PendingEvent {
    PendingEvent::job(EventKind::Progress, id, queue, batch_id, at, serde_json::to_value(progress).unwrap_or_default())
}

/// A progress value checked and encoded for a `jsonb` column.
fn progress_json(progress: &Progress) -> StoreResult<String> {
    progress.validate().map_err(|m| StoreError::invalid("progress", m))?;
    let value = serde_json::to_value(progress).map_err(|e| StoreError::invalid("progress", e.to_string()))?;
    storable("progress", &value)?;
    Ok(value.to_string())
}

/// Refuses a value `jsonb` cannot hold: a string (or key) with a NUL
/// character, which SQLite would store (ADR 0009).
fn storable(field: &str, value: &Value) -> StoreResult<()> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(StoreError::invalid(field, "strings must not contain NUL characters (\\u0000)"));
    }
    Ok(())
}

/// Why a lease check failed: the job is gone, or the lease is not current.
async fn lease_error(conn: &mut PgConnection, id: &JobId) -> StoreError {
    let found = sqlx::query_scalar::<_, i64>("SELECT seq FROM jobs WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .db();
    match found {
        Ok(None) => StoreError::NotFound(format!("job {id}")),
        Ok(Some(_)) => StoreError::LeaseLost(id.to_string()),
        Err(e) => e,
    }
}

//! Job reads: they run on the reader pool, and inside the writer when a
//! mutation must return the job it changed.

use crate::error::SqlResultExt;
use crate::rows::{self, job_cols};
use drover_core::{Attempt, Job, JobId, LogEntry, Timestamp};
use drover_store::{JobListParams, JobPage, MAX_PAGE, StoreError, StoreResult};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

/// Page size when the caller asks for 0.
const DEFAULT_PAGE: u32 = 50;

/// One job with its attempt history.
pub(crate) fn get(conn: &Connection, id: &JobId) -> StoreResult<Option<Job>> {
    let found = conn
        .prepare_cached(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = ?1"))
        .db()?
        .query_row([id.as_str()], |r| Ok((r.get::<_, i64>(0)?, rows::job(r)?)))
        .optional()
        .db()?;
    let Some((seq, mut job)) = found else { return Ok(None) };
    job.attempts = attempts_of(conn, seq, &job)?;
    Ok(Some(job))
}

/// The attempt history of `job` (row `seq`), oldest first, including the
/// attempt that `finish::complete` leaves on the row alone: a `completed`
/// job with no history row was completed by its first attempt, and its row
/// holds that attempt's times and worker. (Stores written before this rule
/// have a history row for it, which is then read as before.)
pub(crate) fn attempts_of(conn: &Connection, seq: i64, job: &Job) -> StoreResult<Vec<Attempt>> {
    let mut found = attempts(conn, seq)?;
    if found.is_empty() {
        found.extend(job.implied_first_attempt());
    }
    Ok(found)
}

/// A job's attempt history rows, oldest first; see [`attempts_of`].
fn attempts(conn: &Connection, seq: i64) -> StoreResult<Vec<Attempt>> {
    conn.prepare_cached(
        "SELECT attempt, started_at, finished_at, outcome, error, worker_id FROM job_attempts \
         WHERE job_seq = ?1 ORDER BY attempt",
    )
    .db()?
    .query_map([seq], rows::attempt)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// [`drover_store::Store::job_list`]. The cursor is the `seq` of the last
/// job of the previous page, in decimal. A limit of 0 means 50; limits above
/// [`MAX_PAGE`] are clamped to it.
pub(crate) fn list(conn: &Connection, p: &JobListParams) -> StoreResult<JobPage> {
    let limit = match p.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let before = match &p.cursor {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| StoreError::invalid("cursor", "not a cursor this store issued"))?,
        ),
    };
    let mut sql = String::from(concat!("SELECT ", job_cols!(), " FROM jobs WHERE 1 = 1"));
    let mut args: Vec<SqlValue> = Vec::new();
    let mut filter = |column: &str, value: Option<SqlValue>| {
        if let Some(value) = value {
            sql.push_str(" AND ");
            sql.push_str(column);
            sql.push_str(" = ?");
            args.push(value);
        }
    };
    filter("queue", p.queue.clone().map(SqlValue::Text));
    filter("state", p.state.map(|s| SqlValue::Text(s.as_str().to_owned())));
    filter("name", p.name.clone().map(SqlValue::Text));
    filter("batch_id", p.batch_id.clone().map(SqlValue::Text));
    filter("parent_id", p.parent_id.as_ref().map(|id| SqlValue::Text(id.to_string())));
    if let Some(seq) = before {
        sql.push_str(" AND seq < ?");
        args.push(SqlValue::Integer(seq));
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(SqlValue::Integer(i64::from(limit) + 1));

    let mut stmt = conn.prepare_cached(&sql).db()?;
    let mut found: Vec<(i64, Job)> = stmt
        .query_map(params_from_iter(args), |r| Ok((r.get(0)?, rows::job(r)?)))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    let next_cursor = if found.len() > limit as usize {
        found.truncate(limit as usize);
        found.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    Ok(JobPage { items: found.into_iter().map(|(_, job)| job).collect(), next_cursor })
}

/// [`drover_store::Store::job_log_list`]: lines numbered after `after`.
pub(crate) fn log_list(conn: &Connection, id: &JobId, after: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
    let seq: i64 = conn
        .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
        .db()?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()
        .db()?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    let limit = match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    conn.prepare_cached(
        "SELECT at, level, message, metadata FROM job_logs WHERE job_seq = ?1 AND n > ?2 ORDER BY n LIMIT ?3",
    )
    .db()?
    .query_map(params![seq, i64::try_from(after).unwrap_or(i64::MAX), limit], rows::log_entry)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// [`drover_store::Store::job_next_due`].
pub(crate) fn next_due(conn: &Connection, queues: &[String]) -> StoreResult<Option<Timestamp>> {
    let at: Option<i64> = if queues.is_empty() {
        conn.prepare_cached("SELECT min(run_at) FROM jobs WHERE state = 'delayed'")
            .db()?
            .query_row([], |r| r.get(0))
            .db()?
    } else {
        // One indexed probe per queue beats an IN list, which would sort.
        let mut stmt =
            conn.prepare_cached("SELECT min(run_at) FROM jobs WHERE state = 'delayed' AND queue = ?1").db()?;
        let mut earliest: Option<i64> = None;
        for queue in queues {
            let at: Option<i64> = stmt.query_row([queue], |r| r.get(0)).db()?;
            earliest = match (earliest, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        earliest
    };
    Ok(at.map(Timestamp))
}

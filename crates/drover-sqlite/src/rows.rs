//! Rows to model types: the one column list every job query selects, and its
//! decoder.

use drover_core::{Attempt, AttemptOutcome, Job, JobError, JobId, JobState, LogEntry, LogLevel, Progress, Timestamp};
use rusqlite::Row;
use rusqlite::types::Type;
use serde::de::DeserializeOwned;

/// The columns [`job`] decodes, in its order. Queries splice it in as
/// `SELECT {JOB_COLS} FROM jobs ...` or `... RETURNING {JOB_COLS}`.
macro_rules! job_cols {
    () => {
        "seq, id, queue, name, payload, state, priority, attempts_made, max_attempts, backoff, timeout_ms, \
         stalls, max_stalls, progress, result, error, unique_key, rate_limit_key, parent_id, batch_id, tags, \
         created_at, run_at, started_at, finished_at, worker_id, lease_expires_at, cancel_requested, expires_at, \
         on_failure"
    };
}
pub(crate) use job_cols;

/// Decodes a row selected with [`job_cols`]; `attempts` is left empty.
pub(crate) fn job(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: JobId::from_trusted(row.get(1)?),
        queue: row.get(2)?,
        name: row.get(3)?,
        payload: json(row, 4)?,
        state: state(row, 5)?,
        priority: row.get(6)?,
        attempts_made: row.get(7)?,
        max_attempts: row.get(8)?,
        backoff: json(row, 9)?,
        timeout_ms: row.get(10)?,
        stalls: row.get(11)?,
        max_stalls: row.get(12)?,
        progress: opt_json::<Progress>(row, 13)?.unwrap_or_default(),
        result: opt_json(row, 14)?,
        error: opt_json(row, 15)?,
        unique_key: row.get(16)?,
        rate_limit_key: row.get(17)?,
        parent_id: row.get::<_, Option<String>>(18)?.map(JobId::from_trusted),
        batch_id: row.get(19)?,
        tags: opt_json(row, 20)?.unwrap_or_default(),
        created_at: Timestamp(row.get(21)?),
        run_at: Timestamp(row.get(22)?),
        started_at: row.get::<_, Option<i64>>(23)?.map(Timestamp),
        finished_at: row.get::<_, Option<i64>>(24)?.map(Timestamp),
        worker_id: row.get(25)?,
        lease_expires_at: row.get::<_, Option<i64>>(26)?.map(Timestamp),
        cancel_requested: row.get(27)?,
        expires_at: row.get::<_, Option<i64>>(28)?.map(Timestamp),
        // NULL is the default policy (migration 0009).
        on_failure: match row.get_ref(29)?.as_str_or_null()? {
            Some("ignore") => drover_core::ChildFailure::Ignore,
            _ => drover_core::ChildFailure::FailParent,
        },
        attempts: Vec::new(),
    })
}

/// Decodes `attempt, started_at, finished_at, outcome, error, worker_id`.
pub(crate) fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let outcome: String = row.get(3)?;
    Ok(Attempt {
        attempt: row.get(0)?,
        started_at: Timestamp(row.get(1)?),
        finished_at: Timestamp(row.get(2)?),
        outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| bad(3, format!("unknown attempt outcome {outcome}")))?,
        error: opt_json::<JobError>(row, 4)?,
        worker_id: row.get(5)?,
    })
}

/// Decodes `at, level, message, metadata`.
pub(crate) fn log_entry(row: &Row<'_>) -> rusqlite::Result<LogEntry> {
    let level: String = row.get(1)?;
    Ok(LogEntry {
        at: Timestamp(row.get(0)?),
        level: LogLevel::parse(&level).ok_or_else(|| bad(1, format!("unknown log level {level}")))?,
        message: row.get(2)?,
        metadata: opt_json(row, 3)?.unwrap_or_default(),
    })
}

/// Decodes a state column.
pub(crate) fn state(row: &Row<'_>, idx: usize) -> rusqlite::Result<JobState> {
    let raw = row.get_ref(idx)?.as_str()?;
    raw.parse().map_err(|e: drover_core::state::UnknownState| bad(idx, e.to_string()))
}

/// Decodes a JSON text column.
pub(crate) fn json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let raw = row.get_ref(idx)?.as_str()?;
    serde_json::from_str(raw).map_err(|e| bad(idx, e.to_string()))
}

/// Decodes a nullable JSON text column.
pub(crate) fn opt_json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    match row.get_ref(idx)?.as_str_or_null()? {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw).map(Some).map_err(|e| bad(idx, e.to_string())),
    }
}

/// A column whose stored text does not decode: the file was written by
/// something else, or by a bug.
fn bad(idx: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, message.into())
}

/// JSON text of a value that always serializes (model types, `Value`).
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("model types serialize to JSON")
}

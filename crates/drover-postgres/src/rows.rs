//! Rows to model types: the one column list every job query selects, and its
//! decoder (as the SQLite store's `rows.rs`, for PostgreSQL's types).

use crate::error::SqlResultExt;
use drover_core::{Attempt, AttemptOutcome, ChildFailure, Job, JobError, JobId, JobState, Progress, Timestamp};
use drover_store::{StoreError, StoreResult};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

/// The columns [`job`] decodes, in its order. Queries splice it in as
/// `SELECT {JOB_COLS} FROM jobs ...` or `... RETURNING {JOB_COLS}`; every
/// column is qualified, so a query may join `jobs` with another relation.
pub(crate) const JOB_COLS: &str = "jobs.seq, jobs.id, jobs.queue, jobs.name, jobs.payload, jobs.state, \
     jobs.priority, jobs.attempts_made, jobs.max_attempts, jobs.backoff, jobs.timeout_ms, jobs.stalls, \
     jobs.max_stalls, jobs.progress, jobs.result, jobs.error, jobs.unique_key, jobs.rate_limit_key, \
     jobs.parent_id, jobs.batch_id, jobs.tags, jobs.created_at, jobs.run_at, jobs.started_at, jobs.finished_at, \
     jobs.worker_id, jobs.lease_expires_at, jobs.cancel_requested, jobs.expires_at, jobs.on_failure";

/// How many columns [`JOB_COLS`] names (a query may select more after
/// them).
pub(crate) const JOB_COLS_LEN: usize = 30;

/// Decodes a row selected with [`JOB_COLS`] into its `seq` and the job;
/// `attempts` is left empty.
pub(crate) fn job(row: &PgRow) -> StoreResult<(i64, Job)> {
    let job = Job {
        id: JobId::from_trusted(row.try_get(1).db()?),
        queue: row.try_get(2).db()?,
        name: row.try_get(3).db()?,
        payload: json(row, 4)?,
        state: state(row, 5)?,
        priority: row.try_get(6).db()?,
        attempts_made: unsigned(row, 7)?,
        max_attempts: unsigned(row, 8)?,
        backoff: json(row, 9)?,
        timeout_ms: row.try_get::<Option<i64>, _>(10).db()?.map(|ms| ms.max(0) as u64),
        stalls: unsigned(row, 11)?,
        max_stalls: unsigned(row, 12)?,
        progress: opt_json::<Progress>(row, 13)?.unwrap_or_default(),
        result: opt_json(row, 14)?,
        error: opt_json(row, 15)?,
        unique_key: row.try_get(16).db()?,
        rate_limit_key: row.try_get(17).db()?,
        parent_id: row.try_get::<Option<String>, _>(18).db()?.map(JobId::from_trusted),
        batch_id: row.try_get(19).db()?,
        tags: opt_json(row, 20)?.unwrap_or_default(),
        created_at: Timestamp(row.try_get(21).db()?),
        run_at: Timestamp(row.try_get(22).db()?),
        started_at: row.try_get::<Option<i64>, _>(23).db()?.map(Timestamp),
        finished_at: row.try_get::<Option<i64>, _>(24).db()?.map(Timestamp),
        worker_id: row.try_get(25).db()?,
        lease_expires_at: row.try_get::<Option<i64>, _>(26).db()?.map(Timestamp),
        cancel_requested: row.try_get(27).db()?,
        expires_at: row.try_get::<Option<i64>, _>(28).db()?.map(Timestamp),
        // NULL is the default policy, as in SQLite.
        on_failure: match row.try_get::<Option<&str>, _>(29).db()? {
            Some("ignore") => ChildFailure::Ignore,
            _ => ChildFailure::FailParent,
        },
        attempts: Vec::new(),
    };
    Ok((row.try_get(0).db()?, job))
}

/// Decodes `attempt, started_at, finished_at, outcome, error, worker_id`.
pub(crate) fn attempt(row: &PgRow) -> StoreResult<Attempt> {
    let outcome: &str = row.try_get(3).db()?;
    Ok(Attempt {
        attempt: unsigned(row, 0)?,
        started_at: Timestamp(row.try_get(1).db()?),
        finished_at: Timestamp(row.try_get(2).db()?),
        outcome: AttemptOutcome::parse(outcome).ok_or_else(|| bad(3, format!("unknown attempt outcome {outcome}")))?,
        error: opt_json::<JobError>(row, 4)?,
        worker_id: row.try_get(5).db()?,
    })
}

/// Decodes a state column.
pub(crate) fn state(row: &PgRow, idx: usize) -> StoreResult<JobState> {
    let raw: &str = row.try_get(idx).db()?;
    raw.parse().map_err(|e: drover_core::state::UnknownState| bad(idx, e.to_string()))
}

/// Decodes an `integer` column holding a count (never negative).
pub(crate) fn unsigned(row: &PgRow, idx: usize) -> StoreResult<u32> {
    let raw: i32 = row.try_get(idx).db()?;
    u32::try_from(raw).map_err(|_| bad(idx, format!("negative count {raw}")))
}

/// Decodes a `jsonb` column.
pub(crate) fn json<T: DeserializeOwned>(row: &PgRow, idx: usize) -> StoreResult<T> {
    Ok(row.try_get::<Json<T>, _>(idx).map_err(|e| bad(idx, e.to_string()))?.0)
}

/// Decodes a nullable `jsonb` column.
pub(crate) fn opt_json<T: DeserializeOwned>(row: &PgRow, idx: usize) -> StoreResult<Option<T>> {
    Ok(row.try_get::<Option<Json<T>>, _>(idx).map_err(|e| bad(idx, e.to_string()))?.map(|j| j.0))
}

/// A column whose stored value does not decode: written by something else,
/// or by a bug.
fn bad(idx: usize, message: String) -> StoreError {
    StoreError::Backend(format!("column {idx} of a job row does not decode: {message}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_cols_len_counts_job_cols() {
        assert_eq!(super::JOB_COLS.split(',').count(), super::JOB_COLS_LEN);
    }
}

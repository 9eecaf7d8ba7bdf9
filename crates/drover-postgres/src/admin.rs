//! Operator actions on one job: cancel and manual retry (as SQLite's
//! `job_sql::cancel` and `job_sql::retry`).
//!
//! Each locks the job's row first (`FOR UPDATE`) and decides on the state
//! that lock returns: at `READ COMMITTED` a claim or finish committing
//! meanwhile is waited for and its result seen, so the decision and the
//! update agree even with other servers working on the job.

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::flow::{self, EndedJob};
use crate::fx::Effects;
use crate::rows::{self, JOB_COLS};
use drover_core::{EventKind, Job, JobId, JobState};
use drover_store::{CancelOutcome, PendingEvent, StoreError, StoreResult};
use serde_json::Value;
use sqlx::{PgConnection, Row};

/// `Store::job_cancel`: a `waiting`, `delayed` or `waiting-children` job
/// becomes `cancelled` at once (`job:cancelled`, then the flow hook); an
/// `active` one gets `cancel_requested` (`job:cancel_requested`) and ends
/// when its worker reports back or its lease runs out. Errors:
/// [`StoreError::NotFound`]; [`StoreError::InvalidState`] for a finished
/// job (nothing changes).
pub(crate) async fn job_cancel(store: &PgStore, id: &JobId) -> StoreResult<CancelOutcome> {
    let mut w = store.begin().await?;
    let result = cancel_in(&mut w.tx, &mut w.fx, id).await;
    store.commit(w, result).await
}

/// The cancel's transaction body.
async fn cancel_in(conn: &mut PgConnection, fx: &mut Effects, id: &JobId) -> StoreResult<CancelOutcome> {
    let now = fx.now;
    let (_, state) = lock_job(conn, id).await?;
    if state.is_cancellable_at_once() {
        let sql = format!(
            "UPDATE jobs SET state = 'cancelled', finished_at = $2, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 RETURNING {JOB_COLS}"
        );
        let (seq, job) = update_returning(conn, &sql, id, Some(now.0)).await?;
        fx.counts.moved(&job.queue, state, JobState::Cancelled);
        fx.event(PendingEvent::job(EventKind::Cancelled, id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        let ended = EndedJob {
            seq,
            id: id.as_str(),
            parent_id: job.parent_id.as_ref().map(JobId::as_str),
            batch_id: job.batch_id.as_deref(),
            state: JobState::Cancelled,
        };
        flow::ended(conn, fx, ended).await?;
        Ok(CancelOutcome::Cancelled(job))
    } else if state == JobState::Active {
        let sql = format!("UPDATE jobs SET cancel_requested = true WHERE id = $1 RETURNING {JOB_COLS}");
        let (_, job) = update_returning(conn, &sql, id, None).await?;
        fx.event(PendingEvent::job(
            EventKind::CancelRequested,
            id,
            &job.queue,
            job.batch_id.as_deref(),
            now,
            Value::Null,
        ));
        Ok(CancelOutcome::Requested(job))
    } else {
        Err(StoreError::InvalidState { state, message: "a finished job cannot be cancelled".into() })
    }
}

/// `Store::job_retry`: a `failed` or `cancelled` job goes back to
/// `waiting` (`waiting-children` while children of it still run) with
/// `max_attempts = attempts_made + attempts_budget`, its error, stalls,
/// TTL and cancel request cleared and its attempt history kept; then the
/// flow hook counts it in again. Events: `job:waiting` when it became
/// `waiting`. Errors: [`StoreError::NotFound`]; [`StoreError::InvalidState`]
/// for any other state (nothing changes).
pub(crate) async fn job_retry(store: &PgStore, id: &JobId) -> StoreResult<Job> {
    let mut w = store.begin().await?;
    let result = retry_in(&mut w.tx, &mut w.fx, id).await;
    store.commit(w, result).await
}

/// The retry's transaction body.
async fn retry_in(conn: &mut PgConnection, fx: &mut Effects, id: &JobId) -> StoreResult<Job> {
    let now = fx.now;
    let (_, state) = lock_job(conn, id).await?;
    if !state.is_retryable_by_hand() {
        return Err(StoreError::InvalidState { state, message: "only failed or cancelled jobs can be retried".into() });
    }
    // A parent whose children still run waits for them first. A manual
    // retry is a decision to run the job now: its TTL is lifted; a child
    // failure that failed it, and a fan-out, belong to the run before.
    let sql = format!(
        "UPDATE jobs SET state = CASE WHEN pending_children > 0 THEN 'waiting-children' ELSE 'waiting' END, \
         max_attempts = attempts_made + attempts_budget, error = NULL, stalls = 0, run_at = $2, \
         finished_at = NULL, cancel_requested = false, lease_token = NULL, lease_expires_at = NULL, \
         expires_at = NULL, failed_child = NULL, fanned_out = false WHERE id = $1 RETURNING {JOB_COLS}"
    );
    let (_, job) = update_returning(conn, &sql, id, Some(now.0)).await?;
    fx.counts.moved(&job.queue, state, job.state);
    if job.state == JobState::Waiting {
        fx.event(PendingEvent::job(EventKind::Waiting, id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        fx.ready = true;
    }
    flow::retried(conn, fx, state, job.parent_id.as_ref().map(JobId::as_str), job.batch_id.as_deref()).await?;
    Ok(job)
}

/// Locks job `id`'s row and returns its `seq` and state, or
/// [`StoreError::NotFound`].
async fn lock_job(conn: &mut PgConnection, id: &JobId) -> StoreResult<(i64, JobState)> {
    let row = sqlx::query("SELECT seq, state FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .db()?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    Ok((row.try_get(0).db()?, rows::state(&row, 1)?))
}

/// Runs an update of the locked job `id` (`$1`; `$2` the time, when the
/// statement takes it) returning [`JOB_COLS`], and reads its attempt
/// history.
async fn update_returning(conn: &mut PgConnection, sql: &str, id: &JobId, now: Option<i64>) -> StoreResult<(i64, Job)> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(id.as_str());
    if let Some(now) = now {
        query = query.bind(now);
    }
    let row = query.fetch_optional(&mut *conn).await.db()?.ok_or_else(|| crate::fx::vanished("job"))?;
    let (seq, mut job) = rows::job(&row)?;
    job.attempts = crate::jobs::attempts_of(conn, seq, &job).await?;
    Ok((seq, job))
}

//! The ends of attempts reported by workers: `job_finish_many`, an
//! inherent method of [`PgStore`] until the `Store` trait is implemented
//! whole (ADR 0009). The decisions are `drover_core::failure`'s, as in
//! SQLite; attempt numbers come from `attempt_seq` (bumped by each claim,
//! never handed back).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows;
use drover_core::decide_failure;
use drover_core::{AttemptOutcome, Backoff, FailureDecision, FailureReport, JobError, JobId, JobState, Timestamp};
use drover_store::{FinishOutcome, Finished, JobFinish, StoreError, StoreResult};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

/// Ends attempts, completions and failures, in one transaction.
/// Becomes `Store::job_finish_many` and follows its contract: per item,
/// [`StoreError::LeaseLost`] when the job is not active under that
/// token (nothing changes for it; the others apply). A completion makes
/// the job `completed` with its result (`cancelled`, keeping the
/// result, when a cancel was requested). A failure follows
/// [`drover_core::decide_failure`]: `delayed` for a retry or a
/// rate-limit deferral (which hands the attempt back and holds back,
/// until its `run_at`, the job's `rate_limit_key`, or its queue when it
/// has none), else `failed` (`cancelled` when a cancel was requested).
/// A release sends the job back to `waiting`, the attempt handed back.
/// Every item appends one attempt to the history, except a completion
/// by the first attempt, which the job row records (as in SQLite).
///
/// The items' rows are locked first, in `seq` order, so two finishes
/// sharing jobs cannot deadlock. Flows and batches need no hook here:
/// the PostgreSQL store does not insert jobs with a parent or a batch
/// yet. Events come with the events table; none are published yet.
pub(crate) async fn job_finish_many(store: &PgStore, items: Vec<JobFinish>) -> StoreResult<Vec<StoreResult<Finished>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = store.begin().await?;
    let result = finish_in(&mut w.tx, &mut w.fx, &items).await;
    store.commit(w, result).await
}

/// The finish's transaction body.
async fn finish_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    items: &[JobFinish],
) -> StoreResult<Vec<StoreResult<Finished>>> {
    let now = fx.now;
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    sqlx::query("SELECT seq FROM jobs WHERE id = ANY($1) ORDER BY seq FOR UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .db()?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(active) = Active::read(conn, &item.id, item.lease_token.0).await? else {
            out.push(Err(StoreError::LeaseLost(item.id.to_string())));
            continue;
        };
        let finished = match &item.outcome {
            FinishOutcome::Complete(value) => complete(conn, &active, value, now).await?,
            FinishOutcome::Fail(report) => fail(conn, &active, report, now).await?,
            FinishOutcome::Release => release(conn, &active, now).await?,
        };
        fx.counts.moved(&active.queue, JobState::Active, finished.state);
        fx.left_active(&active.queue, active.rate_limit_key.as_deref());
        out.push(Ok(finished));
    }
    Ok(out)
}

/// The attempt being closed, read from its job row.
struct Active {
    seq: i64,
    attempt: i32,
    started_at: Option<i64>,
    worker_id: Option<String>,
    queue: String,
    attempts_made: u32,
    max_attempts: u32,
    backoff: Backoff,
    cancel_requested: bool,
    rate_limit_key: Option<String>,
}

impl Active {
    /// The row of job `id` if it is `active` under `lease`.
    async fn read(conn: &mut PgConnection, id: &JobId, lease: i64) -> StoreResult<Option<Active>> {
        let row = sqlx::query(
            "SELECT seq, attempt_seq, started_at, worker_id, queue, attempts_made, max_attempts, backoff, \
             cancel_requested, rate_limit_key FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'active'",
        )
        .bind(id.as_str())
        .bind(lease)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Active {
            seq: r.try_get(0).db()?,
            attempt: r.try_get(1).db()?,
            started_at: r.try_get(2).db()?,
            worker_id: r.try_get(3).db()?,
            queue: r.try_get(4).db()?,
            attempts_made: rows::unsigned(&r, 5)?,
            max_attempts: rows::unsigned(&r, 6)?,
            backoff: rows::json(&r, 7)?,
            cancel_requested: r.try_get(8).db()?,
            rate_limit_key: r.try_get(9).db()?,
        }))
    }
}

/// A completion.
async fn complete(conn: &mut PgConnection, job: &Active, value: &Value, now: Timestamp) -> StoreResult<Finished> {
    let (state, outcome) = if job.cancel_requested {
        (JobState::Cancelled, AttemptOutcome::Cancelled)
    } else {
        (JobState::Completed, AttemptOutcome::Completed)
    };
    sqlx::query(
        "UPDATE jobs SET state = $1, result = $2, finished_at = $3, lease_token = NULL, lease_expires_at = NULL, \
         fanned_out = false WHERE seq = $4",
    )
    .bind(state.as_str())
    .bind(Json(value))
    .bind(now.0)
    .bind(job.seq)
    .execute(&mut *conn)
    .await
    .db()?;
    // A completion by the first attempt stays on the job row alone (reads
    // rebuild it, see `jobs::attempts_of`).
    if !(state == JobState::Completed && job.attempt == 1) {
        append_attempt(conn, job, now, outcome, None).await?;
    }
    Ok(Finished { state, run_at: None })
}

/// A failure: decide, write the outcome, hold back a deferred scope.
async fn fail(conn: &mut PgConnection, job: &Active, report: &FailureReport, now: Timestamp) -> StoreResult<Finished> {
    let decision = decide_failure(report, job.attempts_made, job.max_attempts, &job.backoff, now, fastrand::f64());
    // (state, attempts_made, run_at, outcome)
    let (state, attempts, run_at, outcome) = match decision {
        _ if job.cancel_requested => (JobState::Cancelled, job.attempts_made, None, AttemptOutcome::Cancelled),
        FailureDecision::Retry { run_at } => {
            (JobState::Delayed, job.attempts_made, Some(run_at), AttemptOutcome::Failed)
        }
        FailureDecision::Defer { run_at } => {
            (JobState::Delayed, job.attempts_made.saturating_sub(1), Some(run_at), AttemptOutcome::RateLimited)
        }
        FailureDecision::Dead => (JobState::Failed, job.attempts_made, None, AttemptOutcome::Failed),
    };
    let finished_at = state.is_finished().then_some(now.0);
    sqlx::query(
        "UPDATE jobs SET state = $1, attempts_made = $2, run_at = coalesce($3, run_at), error = $4, \
         finished_at = $5, lease_token = NULL, lease_expires_at = NULL, fanned_out = false WHERE seq = $6",
    )
    .bind(state.as_str())
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(run_at.map(|t| t.0))
    .bind(Json(&report.error))
    .bind(finished_at)
    .bind(job.seq)
    .execute(&mut *conn)
    .await
    .db()?;
    append_attempt(conn, job, now, outcome, Some(&report.error)).await?;
    if let (AttemptOutcome::RateLimited, Some(until)) = (outcome, run_at) {
        hold(conn, &job.queue, job.rate_limit_key.as_deref(), until).await?;
    }
    Ok(Finished { state, run_at })
}

/// A release: `waiting` again at once with the attempt handed back, or
/// `cancelled` when a cancel was asked for meanwhile.
async fn release(conn: &mut PgConnection, job: &Active, now: Timestamp) -> StoreResult<Finished> {
    let (state, attempts, outcome) = if job.cancel_requested {
        (JobState::Cancelled, job.attempts_made, AttemptOutcome::Cancelled)
    } else {
        (JobState::Waiting, job.attempts_made.saturating_sub(1), AttemptOutcome::Released)
    };
    sqlx::query(
        "UPDATE jobs SET state = $1, attempts_made = $2, finished_at = $3, lease_token = NULL, \
         lease_expires_at = NULL, fanned_out = false WHERE seq = $4",
    )
    .bind(state.as_str())
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(state.is_finished().then_some(now.0))
    .bind(job.seq)
    .execute(&mut *conn)
    .await
    .db()?;
    append_attempt(conn, job, now, outcome, None).await?;
    Ok(Finished { state, run_at: None })
}

/// Holds back a key (`k:key`) or, for a job without one, its queue
/// (`q:queue`) until `until`: a later hold never shortens an earlier one.
/// Claims skip held queues and step over jobs of held keys.
async fn hold(conn: &mut PgConnection, queue: &str, key: Option<&str>, until: Timestamp) -> StoreResult<()> {
    let scope = key.map_or_else(|| format!("q:{queue}"), |key| format!("k:{key}"));
    sqlx::query(
        "INSERT INTO throttles (scope, held_until) VALUES ($1, $2) \
         ON CONFLICT (scope) DO UPDATE SET held_until = greatest(throttles.held_until, excluded.held_until)",
    )
    .bind(scope)
    .bind(until.0)
    .execute(&mut *conn)
    .await
    .db()?;
    Ok(())
}

async fn append_attempt(
    conn: &mut PgConnection,
    job: &Active,
    now: Timestamp,
    outcome: AttemptOutcome,
    error: Option<&JobError>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO job_attempts (job_seq, attempt, started_at, finished_at, outcome, error, worker_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(job.seq)
    .bind(job.attempt)
    .bind(job.started_at.unwrap_or(now.0))
    .bind(now.0)
    .bind(outcome.as_str())
    .bind(error.map(Json))
    .bind(&job.worker_id)
    .execute(&mut *conn)
    .await
    .db()?;
    Ok(())
}

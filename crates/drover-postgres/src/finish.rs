//! The ends of attempts reported by workers: `Store::job_finish_many`.
//! The decisions are `drover_core::failure`'s and the flow rules
//! (ADR 0007) SQLite's, event for event; attempt numbers come from
//! `attempt_seq` (bumped by each claim, never handed back).

use crate::PgStore;
use crate::attempts::{self, Closed};
use crate::error::SqlResultExt;
use crate::flow::{self, EndedJob};
use crate::fx::Effects;
use crate::rows;
use drover_core::decide_failure;
use drover_core::{
    AttemptOutcome, Backoff, EventKind, FailureDecision, FailureReport, JobError, JobId, JobState, Timestamp,
};
use drover_store::{FinishOutcome, Finished, JobFinish, PendingEvent, StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// `Store::job_finish_many`: ends attempts, completions and failures, in
/// one transaction. Per item, [`StoreError::LeaseLost`] when the job is
/// not active under that token (nothing changes for it; the others
/// apply), and [`StoreError::Invalid`] (`result`) for a result holding a
/// NUL character, which `jsonb` cannot store (the job stays active). A
/// completion makes the job `completed` with its result (`cancelled`,
/// keeping the result, when a cancel was requested); a parent whose
/// children run, fanned out or failed it goes on as ADR 0007 says. A
/// failure follows [`drover_core::decide_failure`]: `delayed` for a retry
/// or a rate-limit deferral (which hands the attempt back and holds back,
/// until its `run_at`, the job's `rate_limit_key`, or its queue when it has
/// none), else `failed` (`cancelled` when a cancel was requested). A
/// release sends the job back to `waiting`, the attempt handed back. Every
/// item appends one attempt to the history, except a completion by the
/// first attempt, which the job row records (as in SQLite). Every job
/// reaching a final state goes through [`flow::ended`].
///
/// Locks, one statement each (ADR 0009): the items and their parents in
/// descending `seq` order (a child's `seq` is above its parent's, so this
/// is the upward order every other path follows), then their batches in
/// id order. The same statement reads the items, so a call of any size
/// costs two round trips before its writes; plain completions (no flow,
/// batch or cancel) are then written together, by one update and one
/// insert, the others one by one with their hooks.
pub(crate) async fn job_finish_many(store: &PgStore, items: Vec<JobFinish>) -> StoreResult<Vec<StoreResult<Finished>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = store.begin().await?;
    let result = finish_in(&mut w.tx, &mut w.fx, &items).await;
    store.commit(w, result).await
}

/// The columns [`Active::decode`] reads, `id` and `state` last.
const ACTIVE_COLS: &str = "seq, attempt_seq, started_at, worker_id, queue, batch_id, parent_id, attempts_made, \
     max_attempts, backoff, cancel_requested, pending_children, rate_limit_key, failed_child, fanned_out, \
     lease_token, id, state";

/// The finish's transaction body.
async fn finish_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    items: &[JobFinish],
) -> StoreResult<Vec<StoreResult<Finished>>> {
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let sql = format!(
        "SELECT {ACTIVE_COLS} FROM jobs WHERE seq = ANY(ARRAY( \
             SELECT seq FROM jobs WHERE id = ANY($1) \
             UNION ALL SELECT p.seq FROM jobs c JOIN jobs p ON p.id = c.parent_id WHERE c.id = ANY($1))) \
         ORDER BY seq DESC FOR UPDATE"
    );
    let locked = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&ids).fetch_all(&mut *conn).await.db()?;
    let mut batches = Vec::new();
    let mut rows = HashMap::with_capacity(items.len());
    for row in &locked {
        let job = Active::decode(row)?;
        batches.extend(job.batch_id.clone());
        if job.state == JobState::Active {
            rows.insert(job.id.clone(), job);
        }
    }
    if !batches.is_empty() {
        batches.sort_unstable();
        batches.dedup();
        sqlx::query("SELECT 1 FROM batches WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&batches)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    // Once a job with a parent has ended, the rows read above may be stale
    // (the parent may be an item of this call): the rest are read again.
    let mut stale = false;
    // Jobs ended by an earlier item: a repeated item finds them gone.
    let mut ended: HashSet<&str> = HashSet::new();
    // Plain completions, written together (see `Completion`).
    let mut plain = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let lease = item.lease_token.0;
        let job = if ended.contains(item.id.as_str()) {
            None
        } else if stale {
            read_active(conn, &item.id).await?
        } else {
            rows.get(item.id.as_str()).cloned()
        };
        let Some(job) = job.filter(|j| j.lease_token == Some(lease)) else {
            out.push(Err(StoreError::LeaseLost(item.id.to_string())));
            continue;
        };
        let finished = match &item.outcome {
            FinishOutcome::Complete(value) if crate::jobs::json_has_nul(value) => {
                out.push(Err(StoreError::invalid("result", "must not contain the NUL character (\\u0000)")));
                continue;
            }
            FinishOutcome::Complete(value) if job.is_plain() => {
                fx.counts.moved(&job.queue, JobState::Active, JobState::Completed);
                fx.event(job.event(EventKind::Completed, &item.id, fx.now, value.clone()));
                plain.push(Completion {
                    seq: job.seq,
                    attempt: job.attempt,
                    started_at: job.started_at,
                    worker_id: job.worker_id.clone(),
                    result: value,
                });
                Finished { state: JobState::Completed, run_at: None }
            }
            outcome => {
                // What follows may read or change rows (hooks): the plain
                // completions before it are written first, as if one by one.
                write_completions(conn, fx.now, &mut plain).await?;
                match outcome {
                    FinishOutcome::Complete(value) => complete(conn, fx, &item.id, &job, value).await?,
                    FinishOutcome::Fail(report) => fail(conn, fx, &item.id, &job, Some(report)).await?,
                    FinishOutcome::Release => fail(conn, fx, &item.id, &job, None).await?,
                }
            }
        };
        ended.insert(item.id.as_str());
        fx.left_active(&job.queue, job.rate_limit_key.as_deref());
        stale |= job.parent_id.is_some() && finished.state.is_finished();
        out.push(Ok(finished));
    }
    write_completions(conn, fx.now, &mut plain).await?;
    Ok(out)
}

/// A completion that needs nothing but its own row written (no flow, no
/// batch, no cancel): such completions, the bulk of a busy worker's
/// reports, are written by one update and one insert per call.
struct Completion<'a> {
    seq: i64,
    attempt: i32,
    started_at: Option<i64>,
    worker_id: Option<String>,
    result: &'a Value,
}

/// Writes the completions gathered so far (see [`Completion`]) and
/// empties the list; a completion by the first attempt stays on the job
/// row alone (reads rebuild it, see `jobs::attempts_of`).
async fn write_completions(
    conn: &mut PgConnection,
    now: Timestamp,
    plain: &mut Vec<Completion<'_>>,
) -> StoreResult<()> {
    if plain.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = plain.iter().map(|c| c.seq).collect();
    let results: Vec<Json<&Value>> = plain.iter().map(|c| Json(c.result)).collect();
    sqlx::query(
        "UPDATE jobs SET state = 'completed', result = u.result, finished_at = $1, lease_token = NULL, \
         lease_expires_at = NULL, fanned_out = false FROM unnest($2::bigint[], $3::jsonb[]) AS u(seq, result) \
         WHERE jobs.seq = u.seq",
    )
    .bind(now.0)
    .bind(&seqs)
    .bind(&results)
    .execute(&mut *conn)
    .await
    .db()?;
    // A first attempt's completion lives in the job row (as SQLite).
    let later: Vec<Closed<'_>> = plain
        .iter()
        .filter(|c| c.attempt != 1)
        .map(|c| Closed {
            seq: c.seq,
            attempt: c.attempt,
            started_at: c.started_at,
            worker_id: c.worker_id.as_deref(),
            outcome: AttemptOutcome::Completed,
            error: None,
        })
        .collect();
    attempts::append(conn, now, &later).await?;
    plain.clear();
    Ok(())
}

/// An item's row read again, after an earlier item's flow hook may have
/// changed it (it is locked already).
async fn read_active(conn: &mut PgConnection, id: &JobId) -> StoreResult<Option<Active>> {
    let sql = format!("SELECT {ACTIVE_COLS} FROM jobs WHERE id = $1 AND state = 'active'");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(&mut *conn).await.db()?;
    row.as_ref().map(Active::decode).transpose()
}

/// The attempt being closed, read from its job row.
#[derive(Clone)]
struct Active {
    seq: i64,
    attempt: i32,
    started_at: Option<i64>,
    worker_id: Option<String>,
    queue: String,
    batch_id: Option<String>,
    parent_id: Option<String>,
    attempts_made: u32,
    max_attempts: u32,
    backoff: Backoff,
    cancel_requested: bool,
    pending_children: i32,
    rate_limit_key: Option<String>,
    failed_child: Option<String>,
    fanned_out: bool,
    lease_token: Option<i64>,
    id: String,
    state: JobState,
}

impl Active {
    /// Decodes a row selected with [`ACTIVE_COLS`].
    fn decode(r: &PgRow) -> StoreResult<Active> {
        Ok(Active {
            seq: r.try_get(0).db()?,
            attempt: r.try_get(1).db()?,
            started_at: r.try_get(2).db()?,
            worker_id: r.try_get(3).db()?,
            queue: r.try_get(4).db()?,
            batch_id: r.try_get(5).db()?,
            parent_id: r.try_get(6).db()?,
            attempts_made: rows::unsigned(r, 7)?,
            max_attempts: rows::unsigned(r, 8)?,
            backoff: rows::json(r, 9)?,
            cancel_requested: r.try_get(10).db()?,
            pending_children: r.try_get(11).db()?,
            rate_limit_key: r.try_get(12).db()?,
            failed_child: r.try_get(13).db()?,
            fanned_out: r.try_get(14).db()?,
            lease_token: r.try_get(15).db()?,
            id: r.try_get(16).db()?,
            state: rows::state(r, 17)?,
        })
    }

    /// A completion of this job changes nothing but its row: no cancel to
    /// honour, no children, no parent or batch to tell.
    fn is_plain(&self) -> bool {
        !self.cancel_requested
            && self.pending_children == 0
            && self.failed_child.is_none()
            && !self.fanned_out
            && self.parent_id.is_none()
            && self.batch_id.is_none()
    }

    /// The flow and batch hook's view of this job, now in `state`.
    fn ended<'a>(&'a self, id: &'a JobId, state: JobState) -> EndedJob<'a> {
        EndedJob {
            seq: self.seq,
            id: id.as_str(),
            parent_id: self.parent_id.as_deref(),
            batch_id: self.batch_id.as_deref(),
            state,
        }
    }

    /// An event about this job.
    fn event(&self, kind: EventKind, id: &JobId, now: Timestamp, data: Value) -> PendingEvent {
        PendingEvent::job(kind, id, &self.queue, self.batch_id.as_deref(), now, data)
    }
}

/// A completion.
async fn complete(
    conn: &mut PgConnection,
    fx: &mut Effects,
    id: &JobId,
    job: &Active,
    value: &Value,
) -> StoreResult<Finished> {
    let now = fx.now;
    if !job.cancel_requested && (job.pending_children > 0 || job.failed_child.is_some() || job.fanned_out) {
        return complete_parent(conn, fx, id, job, value).await;
    }
    let (state, outcome, kind) = if job.cancel_requested {
        (JobState::Cancelled, AttemptOutcome::Cancelled, EventKind::Cancelled)
    } else {
        (JobState::Completed, AttemptOutcome::Completed, EventKind::Completed)
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
    fx.counts.moved(&job.queue, JobState::Active, state);
    // A completion by the first attempt stays on the job row alone (reads
    // rebuild it, see `jobs::attempts_of`).
    if !(state == JobState::Completed && job.attempt == 1) {
        append_attempt(conn, job, now, outcome, None).await?;
    }
    fx.event(job.event(kind, id, now, value.clone()));
    // After the job's own event, so subscribers hear of the child first.
    flow::ended(conn, fx, job.ended(id, state)).await?;
    Ok(Finished { state, run_at: None })
}

/// The handler of a parent returned successfully after enqueuing
/// children, or after one failed under `fail_parent`: the attempt is
/// recorded as completed, its result kept, and the job fails with
/// `child_failed`, or waits for its children (`waiting-children`), or, when
/// they all finished while it ran, is `waiting` to run again at once.
async fn complete_parent(
    conn: &mut PgConnection,
    fx: &mut Effects,
    id: &JobId,
    job: &Active,
    value: &Value,
) -> StoreResult<Finished> {
    let now = fx.now;
    let error = job.failed_child.as_deref().map(|child| flow::child_failed_error(child, None));
    let state = match (&error, job.pending_children) {
        (Some(_), _) => JobState::Failed,
        (None, 0) => JobState::Waiting,
        (None, _) => JobState::WaitingChildren,
    };
    sqlx::query(
        "UPDATE jobs SET state = $1, result = $2, error = coalesce($3, error), finished_at = $4, \
         lease_token = NULL, lease_expires_at = NULL, fanned_out = false WHERE seq = $5",
    )
    .bind(state.as_str())
    .bind(Json(value))
    .bind(error.as_ref().map(Json))
    .bind(state.is_finished().then_some(now.0))
    .bind(job.seq)
    .execute(&mut *conn)
    .await
    .db()?;
    fx.counts.moved(&job.queue, JobState::Active, state);
    append_attempt(conn, job, now, AttemptOutcome::Completed, None).await?;
    if state == JobState::Waiting {
        fx.ready = true;
        fx.event(job.event(EventKind::Waiting, id, now, Value::Null));
    }
    if let Some(error) = error {
        fx.event(job.event(EventKind::Failed, id, now, json!({ "error": error, "result": value })));
        flow::ended(conn, fx, job.ended(id, state)).await?;
    }
    Ok(Finished { state, run_at: None })
}

/// A failure (`Some(report)`) or a release (`None`): decide, write the
/// outcome.
async fn fail(
    conn: &mut PgConnection,
    fx: &mut Effects,
    id: &JobId,
    job: &Active,
    report: Option<&FailureReport>,
) -> StoreResult<Finished> {
    let now = fx.now;
    let has_pending = job.pending_children > 0;
    // A child failed under `fail_parent` while this ran: however the run
    // ends (short of a cancel), the parent fails with `child_failed`, as
    // when its handler returns successfully (ADR 0007).
    let child_error =
        job.failed_child.as_deref().filter(|_| !job.cancel_requested).map(|c| flow::child_failed_error(c, None));
    let Some(report) = report else {
        return release(conn, fx, id, job, has_pending, child_error).await;
    };
    let decision = decide_failure(report, job.attempts_made, job.max_attempts, &job.backoff, now, fastrand::f64());
    // (state, attempts_made, run_at, outcome, event)
    let (state, attempts, run_at, outcome, kind) = match decision {
        _ if job.cancel_requested => {
            (JobState::Cancelled, job.attempts_made, None, AttemptOutcome::Cancelled, EventKind::Cancelled)
        }
        FailureDecision::Retry { run_at } => {
            (JobState::Delayed, job.attempts_made, Some(run_at), AttemptOutcome::Failed, EventKind::Retrying)
        }
        FailureDecision::Defer { run_at } => (
            JobState::Delayed,
            job.attempts_made.saturating_sub(1),
            Some(run_at),
            AttemptOutcome::RateLimited,
            EventKind::Retrying,
        ),
        FailureDecision::Dead => (JobState::Failed, job.attempts_made, None, AttemptOutcome::Failed, EventKind::Failed),
    };
    // A parent whose children it enqueued are still running retries after
    // them (released at its `run_at`), not beside them; see ADR 0007.
    let state = if state == JobState::Delayed && has_pending { JobState::WaitingChildren } else { state };
    let (state, run_at, kind) =
        if child_error.is_some() { (JobState::Failed, None, EventKind::Failed) } else { (state, run_at, kind) };
    // The handler's own error stays in the attempt history.
    let error = storable_error(&report.error);
    let job_error = child_error.as_ref().unwrap_or(&error);
    // `fanned_out` belongs to the run that ends here: the next run decides
    // afresh whether it fans out.
    sqlx::query(
        "UPDATE jobs SET state = $1, attempts_made = $2, run_at = coalesce($3, run_at), error = $4, \
         finished_at = $5, lease_token = NULL, lease_expires_at = NULL, fanned_out = false WHERE seq = $6",
    )
    .bind(state.as_str())
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(run_at.map(|t| t.0))
    .bind(Json(job_error))
    .bind(state.is_finished().then_some(now.0))
    .bind(job.seq)
    .execute(&mut *conn)
    .await
    .db()?;
    fx.counts.moved(&job.queue, JobState::Active, state);
    append_attempt(conn, job, now, outcome, Some(&error)).await?;
    if let (AttemptOutcome::RateLimited, Some(until)) = (outcome, run_at) {
        let held_until = hold(conn, &job.queue, job.rate_limit_key.as_deref(), until).await?;
        // Announced before `job:retrying`, as SQLite does.
        fx.event(PendingEvent::throttled(&job.queue, held_until, job.rate_limit_key.as_deref(), now));
    }
    if run_at.is_some() {
        // A fetcher sleeping until the next due time may need to wake sooner.
        fx.ready = true;
    }
    let data = match (run_at, &child_error) {
        (Some(at), _) => json!({ "error": error, "run_at": at }),
        (None, Some(child_error)) => json!({ "error": child_error }),
        (None, None) => json!({ "error": error }),
    };
    fx.event(job.event(kind, id, now, data));
    if state.is_finished() {
        flow::ended(conn, fx, job.ended(id, state)).await?;
    }
    Ok(Finished { state, run_at })
}

/// A worker handing a job back unfinished: `waiting` again at once, the
/// attempt handed back; `waiting-children` if children it enqueued still
/// run; `cancelled` if a cancel was asked for meanwhile; `failed` with
/// `child_error` if a child failed it meanwhile.
async fn release(
    conn: &mut PgConnection,
    fx: &mut Effects,
    id: &JobId,
    job: &Active,
    has_pending: bool,
    child_error: Option<JobError>,
) -> StoreResult<Finished> {
    let now = fx.now;
    let handed_back = job.attempts_made.saturating_sub(1);
    let (state, attempts, outcome, kind) = if job.cancel_requested {
        (JobState::Cancelled, job.attempts_made, AttemptOutcome::Cancelled, EventKind::Cancelled)
    } else if child_error.is_some() {
        (JobState::Failed, handed_back, AttemptOutcome::Released, EventKind::Failed)
    } else if has_pending {
        // Handed back while its children run: it waits for them first.
        (JobState::WaitingChildren, handed_back, AttemptOutcome::Released, EventKind::Waiting)
    } else {
        (JobState::Waiting, handed_back, AttemptOutcome::Released, EventKind::Waiting)
    };
    sqlx::query(
        "UPDATE jobs SET state = $1, attempts_made = $2, finished_at = $3, lease_token = NULL, \
         lease_expires_at = NULL, fanned_out = false, error = coalesce($5, error) WHERE seq = $4",
    )
    .bind(state.as_str())
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(state.is_finished().then_some(now.0))
    .bind(job.seq)
    .bind(child_error.as_ref().map(Json))
    .execute(&mut *conn)
    .await
    .db()?;
    fx.counts.moved(&job.queue, JobState::Active, state);
    append_attempt(conn, job, now, outcome, None).await?;
    fx.ready |= state == JobState::Waiting;
    if state != JobState::WaitingChildren {
        let data = child_error.map_or(Value::Null, |error| json!({ "error": error }));
        fx.event(job.event(kind, id, now, data));
    }
    if state.is_finished() {
        flow::ended(conn, fx, job.ended(id, state)).await?;
    }
    Ok(Finished { state, run_at: None })
}

/// A worker's error as PostgreSQL can store it: `jsonb` refuses the NUL
/// character, which becomes U+FFFD (the finish must never be lost for the
/// sake of one character of an error text).
fn storable_error(error: &JobError) -> Cow<'_, JobError> {
    let nul = error.message.contains('\0')
        || error.code.as_deref().is_some_and(|c| c.contains('\0'))
        || crate::jobs::json_has_nul(&error.details);
    if !nul {
        return Cow::Borrowed(error);
    }
    Cow::Owned(JobError {
        message: error.message.replace('\0', "\u{FFFD}"),
        code: error.code.as_ref().map(|c| c.replace('\0', "\u{FFFD}")),
        details: without_nul(&error.details),
    })
}

/// `value` with every NUL character of its strings (keys too) replaced by
/// U+FFFD.
fn without_nul(value: &Value) -> Value {
    let fix = |s: &str| s.replace('\0', "\u{FFFD}");
    match value {
        Value::String(s) => Value::String(fix(s)),
        Value::Array(items) => Value::Array(items.iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (fix(k), without_nul(v))).collect()),
        other => other.clone(),
    }
}

/// Holds back a key (`k:key`) or, for a job without one, its queue
/// (`q:queue`) until `until`: a later hold never shortens an earlier one.
/// Claims skip held queues and step over jobs of held keys. Returns the
/// hold's end (the later of the old and the new one), which the
/// `queue:throttled` event announces.
async fn hold(conn: &mut PgConnection, queue: &str, key: Option<&str>, until: Timestamp) -> StoreResult<Timestamp> {
    let scope = key.map_or_else(|| crate::limits::queue_scope(queue), crate::limits::key_scope);
    let held_until: i64 = sqlx::query_scalar(
        "INSERT INTO throttles (scope, held_until) VALUES ($1, $2) \
         ON CONFLICT (scope) DO UPDATE SET held_until = greatest(throttles.held_until, excluded.held_until) \
         RETURNING held_until",
    )
    .bind(scope)
    .bind(until.0)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    Ok(Timestamp(held_until))
}

/// Appends the closed attempt to the job's history.
async fn append_attempt(
    conn: &mut PgConnection,
    job: &Active,
    now: Timestamp,
    outcome: AttemptOutcome,
    error: Option<&JobError>,
) -> StoreResult<()> {
    let closed = Closed {
        seq: job.seq,
        attempt: job.attempt,
        started_at: job.started_at,
        worker_id: job.worker_id.as_deref(),
        outcome,
        error,
    };
    attempts::append(conn, now, &[closed]).await
}

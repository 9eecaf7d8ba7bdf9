//! The ends of attempts: finishes reported by workers, and rescues of
//! attempts whose lease ran out. Both follow the pure rules of
//! `drover_core::failure`, and both append one row to the attempt history,
//! except a completion by the first attempt, which the job row records.
//!
//! Attempt numbers come from the job's `attempt_seq` counter, bumped at each
//! claim and never handed back, so the history stays numbered in order even
//! though stalls and rate-limit deferrals give `attempts_made` back.

use crate::error::SqlResultExt;
use crate::rows::to_json;
use crate::writer::Ctx;
use drover_core::{
    AttemptOutcome, Backoff, EventKind, FailureDecision, JobError, JobId, JobState, StallDecision, Timestamp,
    decide_failure, decide_stall,
};
use drover_store::{FinishOutcome, Finished, JobFinish, PendingEvent, RescueReport, StoreError, StoreResult};
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

/// The attempt being closed, as read from (or returned by) its job row.
struct Ending {
    seq: i64,
    attempt: i64,
    started_at: Option<i64>,
    worker_id: Option<String>,
    queue: String,
    batch_id: Option<String>,
    parent_id: Option<String>,
}

impl Ending {
    /// Reads the first seven columns of a row selected with `seq, attempt_seq,
    /// started_at, worker_id, queue, batch_id, parent_id` first, as every
    /// ending query does.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            attempt: r.get(1)?,
            started_at: r.get(2)?,
            worker_id: r.get(3)?,
            queue: r.get(4)?,
            batch_id: r.get(5)?,
            parent_id: r.get(6)?,
        })
    }

    /// The flow and batch hook's view of this job, now in `state`.
    fn ended<'a>(&'a self, id: &'a str, state: JobState) -> crate::flow::EndedJob<'a> {
        crate::flow::EndedJob {
            seq: self.seq,
            id,
            parent_id: self.parent_id.as_deref(),
            batch_id: self.batch_id.as_deref(),
            state,
        }
    }
}

/// [`drover_store::Store::job_finish_many`].
pub(crate) fn finish(ctx: &mut Ctx<'_>, items: &[JobFinish]) -> StoreResult<Vec<StoreResult<Finished>>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let result = match &item.outcome {
            FinishOutcome::Complete(value) => complete(ctx, &item.id, item.lease_token.0, value)?,
            FinishOutcome::Fail(report) => fail(ctx, &item.id, item.lease_token.0, Some(report))?,
            FinishOutcome::Release => fail(ctx, &item.id, item.lease_token.0, None)?,
        };
        if result.is_ok() {
            ctx.slot_freed();
        }
        out.push(result);
    }
    Ok(out)
}

/// Reads the row of job `id` if it is `active` under `lease`, with `read`,
/// from a query selecting `cols` (whose last column must be `id`).
///
/// The writer remembers which row each of its leases went to
/// ([`crate::writer::LeaseRows`]), so the row is found by `seq` and the id
/// only compared; the `id` index is searched only when the writer does not
/// know the lease (a restart) or the hint is stale.
fn active_row<T>(
    ctx: &mut Ctx<'_>,
    id: &JobId,
    lease: i64,
    sql: [&str; 2],
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    let [by_seq, by_id] = sql;
    if let Some(seq) = ctx.leases.take(lease) {
        let found = ctx
            .conn
            .prepare_cached(by_seq)
            .db()?
            .query_row(params![seq, lease], |r| {
                let id_col = r.as_ref().column_count() - 1;
                if r.get_ref(id_col)?.as_str()? == id.as_str() { read(r).map(Some) } else { Ok(None) }
            })
            .optional()
            .db()?
            .flatten();
        if found.is_some() {
            return Ok(found);
        }
    }
    ctx.conn.prepare_cached(by_id).db()?.query_row(params![id.as_str(), lease], read).optional().db()
}

/// The two forms of a lookup of an active job under its lease (`?2`): by
/// `seq` and by `id` (`?1`), selecting `$cols` and then `id`.
macro_rules! active_sql {
    ($cols:literal) => {
        [
            concat!("SELECT ", $cols, ", id FROM jobs WHERE seq = ?1 AND lease_token = ?2 AND state = 'active'"),
            concat!("SELECT ", $cols, ", id FROM jobs WHERE id = ?1 AND lease_token = ?2 AND state = 'active'"),
        ]
    };
}

/// A completion: check the lease, end the job.
fn complete(ctx: &mut Ctx<'_>, id: &JobId, lease: i64, value: &Value) -> StoreResult<StoreResult<Finished>> {
    let now = ctx.now();
    let result = to_json(value);
    let row = active_row(
        ctx,
        id,
        lease,
        active_sql!(
            "seq, attempt_seq, started_at, worker_id, queue, batch_id, parent_id, cancel_requested, \
             pending_children, failed_child, fanned_out"
        ),
        |r| {
            Ok((
                Ending::from_row(r)?,
                r.get::<_, bool>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, bool>(10)?,
            ))
        },
    )?;
    let Some((ending, cancelled, pending_children, failed_child, fanned_out)) = row else {
        return Ok(Err(StoreError::LeaseLost(id.to_string())));
    };
    if !cancelled && (pending_children > 0 || failed_child.is_some() || fanned_out) {
        return complete_parent(ctx, id, ending, value, result, failed_child, pending_children).map(Ok);
    }
    let (state, outcome, kind) = if cancelled {
        (JobState::Cancelled, AttemptOutcome::Cancelled, EventKind::Cancelled)
    } else {
        (JobState::Completed, AttemptOutcome::Completed, EventKind::Completed)
    };
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET state = ?1, result = ?2, finished_at = ?3, lease_token = NULL, lease_expires_at = NULL, \
             fanned_out = 0 WHERE seq = ?4",
        )
        .db()?
        .execute(params![state.as_str(), result, now.0, ending.seq])
        .db()?;
    ctx.counts.moved(&ending.queue, JobState::Active, state);
    // A job completed by its first attempt keeps that attempt on its own
    // row (started_at, finished_at, worker_id, state `completed`), which no
    // later change touches: `completed` is final. Reads rebuild it (see
    // `job_query::attempts_of`), and the history row, one more B-tree insert
    // per job on the busiest path, is written only for every other ending.
    if !(state == JobState::Completed && ending.attempt == 1) {
        append_attempt(ctx, &ending, now, outcome, None)?;
    }
    ctx.event(|| PendingEvent::job(kind, id, &ending.queue, ending.batch_id.as_deref(), now, value.clone()));
    // After the job's own event, so subscribers hear of the child first.
    crate::flow::ended(ctx, ending.ended(id.as_str(), state))?;
    Ok(Ok(Finished { state, run_at: None }))
}

/// The handler of a parent returned successfully after enqueuing
/// children, or after one failed under `fail_parent`: the attempt is
/// recorded as completed, its result kept, and the job fails with
/// `child_failed`, or waits for its children (`waiting-children`), or, when
/// they all finished while it ran, is `waiting` to run again at once.
fn complete_parent(
    ctx: &mut Ctx<'_>,
    id: &JobId,
    ending: Ending,
    value: &Value,
    result: String,
    failed_child: Option<String>,
    pending_children: i64,
) -> StoreResult<Finished> {
    let now = ctx.now();
    let error = failed_child.map(|child| crate::flow::child_failed_error(&child, None));
    let state = match (&error, pending_children) {
        (Some(_), _) => JobState::Failed,
        (None, 0) => JobState::Waiting,
        (None, _) => JobState::WaitingChildren,
    };
    let error_json = error.as_ref().map(to_json);
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET state = ?1, result = ?2, error = coalesce(?3, error), finished_at = ?4, \
             lease_token = NULL, lease_expires_at = NULL, fanned_out = 0 WHERE seq = ?5",
        )
        .db()?
        .execute(params![state.as_str(), result, error_json, state.is_finished().then_some(now.0), ending.seq])
        .db()?;
    ctx.counts.moved(&ending.queue, JobState::Active, state);
    append_attempt(ctx, &ending, now, AttemptOutcome::Completed, None)?;
    if state == JobState::Waiting {
        ctx.ready = true;
        ctx.event(|| {
            PendingEvent::job(EventKind::Waiting, id, &ending.queue, ending.batch_id.as_deref(), now, Value::Null)
        });
    }
    if let Some(error) = error {
        ctx.event(|| {
            PendingEvent::job(
                EventKind::Failed,
                id,
                &ending.queue,
                ending.batch_id.as_deref(),
                now,
                json!({ "error": error, "result": value }),
            )
        });
        crate::flow::ended(ctx, ending.ended(id.as_str(), state))?;
    }
    Ok(Finished { state, run_at: None })
}

/// A failure (`Some(report)`) or a release (`None`): read the job, decide,
/// write the outcome.
fn fail(
    ctx: &mut Ctx<'_>,
    id: &JobId,
    lease: i64,
    report: Option<&drover_core::FailureReport>,
) -> StoreResult<StoreResult<Finished>> {
    let now = ctx.now();
    let row = active_row(
        ctx,
        id,
        lease,
        active_sql!(
            "seq, attempt_seq, started_at, worker_id, queue, batch_id, parent_id, attempts_made, max_attempts, \
             backoff, cancel_requested, pending_children, rate_limit_key, failed_child"
        ),
        |r| {
            Ok((
                Ending::from_row(r)?,
                r.get::<_, u32>(7)?,
                r.get::<_, u32>(8)?,
                crate::rows::json::<Backoff>(r, 9)?,
                r.get::<_, bool>(10)?,
                r.get::<_, i64>(11)? > 0,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, Option<String>>(13)?,
            ))
        },
    )?;
    let Some((ending, attempts_made, max_attempts, backoff, cancel_requested, has_pending, key, failed_child)) = row
    else {
        return Ok(Err(StoreError::LeaseLost(id.to_string())));
    };
    // A child failed under `fail_parent` while this ran: however the run
    // ends (short of a cancel), the parent fails with `child_failed`, as
    // when its handler returns successfully (ADR 0007).
    let child_error = failed_child.filter(|_| !cancel_requested).map(|c| crate::flow::child_failed_error(&c, None));
    let Some(report) = report else {
        return release(ctx, id, ending, attempts_made, cancel_requested, has_pending, child_error).map(Ok);
    };
    let decision = decide_failure(report, attempts_made, max_attempts, &backoff, now, fastrand::f64());
    // (state, attempts_made, run_at, outcome, event)
    let (state, attempts, run_at, outcome, kind) = match decision {
        _ if cancel_requested => {
            (JobState::Cancelled, attempts_made, None, AttemptOutcome::Cancelled, EventKind::Cancelled)
        }
        FailureDecision::Retry { run_at } => {
            (JobState::Delayed, attempts_made, Some(run_at), AttemptOutcome::Failed, EventKind::Retrying)
        }
        FailureDecision::Defer { run_at } => (
            JobState::Delayed,
            attempts_made.saturating_sub(1),
            Some(run_at),
            AttemptOutcome::RateLimited,
            EventKind::Retrying,
        ),
        FailureDecision::Dead => (JobState::Failed, attempts_made, None, AttemptOutcome::Failed, EventKind::Failed),
    };
    // A parent whose children it enqueued are still running retries after
    // them (released at its `run_at`), not beside them; see ADR 0007.
    let state = if state == JobState::Delayed && has_pending { JobState::WaitingChildren } else { state };
    let (state, run_at, kind) =
        if child_error.is_some() { (JobState::Failed, None, EventKind::Failed) } else { (state, run_at, kind) };
    let finished_at = state.is_finished().then_some(now.0);
    // The handler's own error stays in the attempt history.
    let error = to_json(&report.error);
    let job_error = child_error.as_ref().map(to_json);
    // `fanned_out` belongs to the run that ends here: the next run decides
    // afresh whether it fans out.
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET state = ?1, attempts_made = ?2, run_at = coalesce(?3, run_at), error = ?4, \
             finished_at = ?5, lease_token = NULL, lease_expires_at = NULL, fanned_out = 0 WHERE seq = ?6",
        )
        .db()?
        .execute(params![
            state.as_str(),
            attempts,
            run_at.map(|t| t.0),
            job_error.as_deref().unwrap_or(&error),
            finished_at,
            ending.seq
        ])
        .db()?;
    ctx.counts.moved(&ending.queue, JobState::Active, state);
    append_attempt(ctx, &ending, now, outcome, Some(&error))?;
    if let (AttemptOutcome::RateLimited, Some(until)) = (outcome, run_at) {
        crate::limits::hold(ctx, &ending.queue, key.as_deref(), until)?;
    }
    if run_at.is_some() {
        // A fetcher sleeping until the next due time may need to wake sooner.
        ctx.ready = true;
    }
    ctx.event(|| {
        let data = match (run_at, &child_error) {
            (Some(at), _) => json!({ "error": report.error, "run_at": at }),
            (None, Some(child_error)) => json!({ "error": child_error }),
            (None, None) => json!({ "error": report.error }),
        };
        PendingEvent::job(kind, id, &ending.queue, ending.batch_id.as_deref(), now, data)
    });
    if state.is_finished() {
        crate::flow::ended(ctx, ending.ended(id.as_str(), state))?;
    }
    Ok(Ok(Finished { state, run_at }))
}

/// A worker handing a job back unfinished: `waiting` again at once, the
/// attempt handed back; `cancelled` if a cancel was asked for meanwhile;
/// `failed` with `child_error` if a child failed it meanwhile.
fn release(
    ctx: &mut Ctx<'_>,
    id: &JobId,
    ending: Ending,
    attempts_made: u32,
    cancel_requested: bool,
    has_pending: bool,
    child_error: Option<JobError>,
) -> StoreResult<Finished> {
    let now = ctx.now();
    let (state, attempts, outcome, kind) = if cancel_requested {
        (JobState::Cancelled, attempts_made, AttemptOutcome::Cancelled, EventKind::Cancelled)
    } else if child_error.is_some() {
        (JobState::Failed, attempts_made.saturating_sub(1), AttemptOutcome::Released, EventKind::Failed)
    } else if has_pending {
        // Handed back while its children run: it waits for them first.
        (JobState::WaitingChildren, attempts_made.saturating_sub(1), AttemptOutcome::Released, EventKind::Waiting)
    } else {
        (JobState::Waiting, attempts_made.saturating_sub(1), AttemptOutcome::Released, EventKind::Waiting)
    };
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET state = ?1, attempts_made = ?2, finished_at = ?3, lease_token = NULL, \
             lease_expires_at = NULL, fanned_out = 0, error = coalesce(?5, error) WHERE seq = ?4",
        )
        .db()?
        .execute(params![
            state.as_str(),
            attempts,
            state.is_finished().then_some(now.0),
            ending.seq,
            child_error.as_ref().map(to_json)
        ])
        .db()?;
    ctx.counts.moved(&ending.queue, JobState::Active, state);
    append_attempt(ctx, &ending, now, outcome, None)?;
    ctx.ready |= state == JobState::Waiting;
    if state != JobState::WaitingChildren {
        let data = child_error.map_or(Value::Null, |error| json!({ "error": error }));
        ctx.event(|| PendingEvent::job(kind, id, &ending.queue, ending.batch_id.as_deref(), now, data));
    }
    if state.is_finished() {
        crate::flow::ended(ctx, ending.ended(id.as_str(), state))?;
    }
    Ok(Finished { state, run_at: None })
}

fn append_attempt(
    ctx: &Ctx<'_>,
    ending: &Ending,
    now: Timestamp,
    outcome: AttemptOutcome,
    error: Option<&str>,
) -> StoreResult<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO job_attempts (job_seq, attempt, started_at, finished_at, outcome, error, worker_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .db()?
        .execute(params![
            ending.seq,
            ending.attempt,
            ending.started_at.unwrap_or(now.0),
            now.0,
            outcome.as_str(),
            error,
            ending.worker_id
        ])
        .db()?;
    Ok(())
}

/// [`drover_store::Store::job_rescue_expired`].
pub(crate) fn rescue(ctx: &mut Ctx<'_>) -> StoreResult<RescueReport> {
    let now = ctx.now();
    type Expired = (Ending, String, u32, u32, bool, i64, bool, Option<String>);
    let expired: Vec<Expired> = ctx
        .conn
        .prepare_cached(
            "SELECT seq, attempt_seq, started_at, worker_id, queue, batch_id, parent_id, id, stalls, max_stalls, \
             cancel_requested, lease_token, pending_children, failed_child FROM jobs WHERE state = 'active' \
             AND lease_expires_at <= ?1 ORDER BY lease_expires_at",
        )
        .db()?
        .query_map([now.0], |r| {
            Ok((
                Ending::from_row(r)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get::<_, i64>(12)? > 0,
                r.get(13)?,
            ))
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;

    let mut report = RescueReport::default();
    for (ending, id, stalls, max_stalls, cancel_requested, lease, has_pending, failed_child) in expired {
        // The lease ends here; its row hint would only take up room.
        ctx.leases.take(lease);
        let id = JobId::from_trusted(id);
        let stalls = stalls + 1;
        let stall_error = JobError::with_code("stalled", format!("lease expired without a heartbeat (stall {stalls})"));
        let decision = decide_stall(stalls, max_stalls, cancel_requested);
        // A parent a child failed while it ran fails instead of running
        // again (ADR 0007); the stall stays in its attempt history.
        let child_error = match (&failed_child, decision) {
            (Some(child), StallDecision::Requeue) => Some(crate::flow::child_failed_error(child, None)),
            _ => None,
        };
        let (state, hand_back, kind) = match decision {
            StallDecision::Requeue if child_error.is_some() => (JobState::Failed, 1, EventKind::Failed),
            // A parent whose children still run waits for them first.
            StallDecision::Requeue if has_pending => (JobState::WaitingChildren, 1, EventKind::Waiting),
            StallDecision::Requeue => (JobState::Waiting, 1, EventKind::Waiting),
            StallDecision::Dead => (JobState::Failed, 0, EventKind::Failed),
            StallDecision::Cancel => (JobState::Cancelled, 0, EventKind::Cancelled),
        };
        let finished_at = state.is_finished().then_some(now.0);
        let error_json = to_json(&stall_error);
        let job_error = child_error.as_ref().map(to_json);
        ctx.conn
            .prepare_cached(
                "UPDATE jobs SET state = ?1, stalls = ?2, attempts_made = attempts_made - ?3, \
                 error = CASE WHEN ?1 = 'failed' THEN ?4 ELSE error END, finished_at = ?5, \
                 lease_token = NULL, lease_expires_at = NULL, fanned_out = 0 WHERE seq = ?6",
            )
            .db()?
            .execute(params![
                state.as_str(),
                stalls,
                hand_back,
                job_error.as_deref().unwrap_or(&error_json),
                finished_at,
                ending.seq
            ])
            .db()?;
        ctx.counts.moved(&ending.queue, JobState::Active, state);
        append_attempt(ctx, &ending, now, AttemptOutcome::Stalled, Some(&error_json))?;
        ctx.slot_freed();
        let batch = ending.batch_id.as_deref();
        ctx.event(|| {
            PendingEvent::job(EventKind::Stalled, &id, &ending.queue, batch, now, json!({ "stalls": stalls }))
        });
        let data = match (&child_error, decision) {
            (Some(error), _) => json!({ "error": error }),
            (None, StallDecision::Dead) => json!({ "error": stall_error }),
            (None, _) => Value::Null,
        };
        if state != JobState::WaitingChildren {
            ctx.event(|| PendingEvent::job(kind, &id, &ending.queue, batch, now, data));
        }
        if state.is_finished() {
            crate::flow::ended(ctx, ending.ended(id.as_str(), state))?;
        }
        match decision {
            StallDecision::Requeue if state == JobState::Failed => report.failed.push(id),
            StallDecision::Requeue => {
                ctx.ready |= state == JobState::Waiting;
                report.requeued.push(id);
            }
            StallDecision::Dead => report.failed.push(id),
            StallDecision::Cancel => report.cancelled.push(id),
        }
    }
    Ok(report)
}

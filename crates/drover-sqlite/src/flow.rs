//! Flows and batches (ADR 0007): the one hook that runs when a job reaches
//! a final state ([`ended`]), what an insert does for a parent or a batch,
//! and the reads and inserts of the flow and batch store methods.
//!
//! Every path that ends a job (finish, release, cancel, stall rescue,
//! expiry, a parent failed by its child) calls [`ended`] with the job's
//! `parent_id` and `batch_id`, which those paths read anyway; a job with
//! neither returns at the first branch, so the finish hot path pays nothing
//! for flows.

use crate::error::SqlResultExt;
use crate::job_sql;
use crate::rows::{self, job_cols, to_json};
use crate::writer::Ctx;
use drover_core::{EventKind, Job, JobId, JobSpec, JobState, Timestamp};
use drover_store::flow::{ParentFound, batch_closed, parent_gains_child, tally};
use drover_store::{BatchInfo, BatchState, PendingEvent, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

pub(crate) use drover_core::flow::child_failed_error;

/// A job that just reached a final state, as [`ended`] needs it.
pub(crate) struct EndedJob<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub parent_id: Option<&'a str>,
    pub batch_id: Option<&'a str>,
    pub state: JobState,
}

/// The hook: job `job` reached `completed`, `failed` or `cancelled`.
/// Updates its parent (one child fewer pending; released, or failed by the
/// child's policy) and its batch (counters; completion once).
#[inline]
pub(crate) fn ended(ctx: &mut Ctx<'_>, job: EndedJob<'_>) -> StoreResult<()> {
    if job.parent_id.is_none() && job.batch_id.is_none() {
        return Ok(());
    }
    ended_slow(ctx, job)
}

/// One loop from the job itself up the tree: a failure climbs one parent
/// at a time, in a loop rather than by recursion, since the depth of a tree
/// built with `parent_id` is unbounded and the writer thread's stack is not.
#[inline(never)]
fn ended_slow(ctx: &mut Ctx<'_>, job: EndedJob<'_>) -> StoreResult<()> {
    let mut failed = one_ended(ctx, &job)?;
    while let Some(parent) = failed.take() {
        failed = one_ended(ctx, &parent.ended())?;
    }
    Ok(())
}

/// Tells `job`'s parent and batch; the parent, if this failed it.
fn one_ended(ctx: &mut Ctx<'_>, job: &EndedJob<'_>) -> StoreResult<Option<Parent>> {
    let failed = match job.parent_id {
        Some(parent) => child_ended(ctx, job, parent)?,
        None => None,
    };
    if let Some(batch) = job.batch_id {
        batch_job_ended(ctx, batch, job.state)?;
    }
    Ok(failed)
}

/// A parent as [`child_ended`] reads it after counting its child off.
struct Parent {
    seq: i64,
    id: String,
    state: JobState,
    pending: i64,
    queue: String,
    parent_id: Option<String>,
    batch_id: Option<String>,
    run_at: i64,
}

impl Parent {
    /// The hook's view of a parent its child just failed.
    fn ended(&self) -> EndedJob<'_> {
        EndedJob {
            seq: self.seq,
            id: &self.id,
            parent_id: self.parent_id.as_deref(),
            batch_id: self.batch_id.as_deref(),
            state: JobState::Failed,
        }
    }
}

/// Counts `child` off its parent; the parent, if the child's failure
/// failed it (it reached a final state too, and its own parent and batch
/// must hear of it).
fn child_ended(ctx: &mut Ctx<'_>, child: &EndedJob<'_>, parent_id: &str) -> StoreResult<Option<Parent>> {
    let now = ctx.now();
    let fails_parent = child.state != JobState::Completed && {
        let policy: Option<String> = ctx
            .conn
            .prepare_cached("SELECT on_failure FROM jobs WHERE seq = ?1")
            .db()?
            .query_row([child.seq], |r| r.get(0))
            .db()?;
        policy.as_deref() != Some("ignore")
    };
    let parent = ctx
        .conn
        .prepare_cached(
            "UPDATE jobs SET pending_children = max(pending_children - 1, 0) WHERE id = ?1 \
             RETURNING seq, id, state, pending_children, queue, parent_id, batch_id, run_at",
        )
        .db()?
        .query_row([parent_id], |r| {
            Ok(Parent {
                seq: r.get(0)?,
                id: r.get(1)?,
                state: rows::state(r, 2)?,
                pending: r.get(3)?,
                queue: r.get(4)?,
                parent_id: r.get(5)?,
                batch_id: r.get(6)?,
                run_at: r.get(7)?,
            })
        })
        .optional()
        .db()?;
    // Gone (retention) or never stored: nobody to tell.
    let Some(parent) = parent else { return Ok(None) };
    if fails_parent {
        return fail_parent(ctx, parent, child, now);
    }
    if parent.state == JobState::WaitingChildren && parent.pending == 0 {
        let state = if parent.run_at > now.0 { JobState::Delayed } else { JobState::Waiting };
        ctx.conn
            .prepare_cached("UPDATE jobs SET state = ?1 WHERE seq = ?2")
            .db()?
            .execute(params![state.as_str(), parent.seq])
            .db()?;
        ctx.counts.moved(&parent.queue, JobState::WaitingChildren, state);
        ctx.ready = true;
        let kind = if state == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
        let id = JobId::from_trusted(parent.id);
        ctx.event(|| PendingEvent::job(kind, &id, &parent.queue, parent.batch_id.as_deref(), now, Value::Null));
    }
    Ok(None)
}

/// A child failed (or was cancelled) under `fail_parent`: an unfinished,
/// not running parent fails now (and is returned, see [`child_ended`]); a
/// running one when its handler returns.
fn fail_parent(ctx: &mut Ctx<'_>, parent: Parent, child: &EndedJob<'_>, now: Timestamp) -> StoreResult<Option<Parent>> {
    match parent.state {
        JobState::Active => {
            ctx.conn
                .prepare_cached("UPDATE jobs SET failed_child = coalesce(failed_child, ?1) WHERE seq = ?2")
                .db()?
                .execute(params![child.id, parent.seq])
                .db()?;
            Ok(None)
        }
        JobState::Waiting | JobState::Delayed | JobState::WaitingChildren => {
            let error = child_failed_error(child.id, Some(child.state));
            let error_json = to_json(&error);
            ctx.conn
                .prepare_cached("UPDATE jobs SET state = 'failed', error = ?1, finished_at = ?2 WHERE seq = ?3")
                .db()?
                .execute(params![error_json, now.0, parent.seq])
                .db()?;
            ctx.counts.moved(&parent.queue, parent.state, JobState::Failed);
            let id = JobId::from_trusted(parent.id.clone());
            ctx.event(|| {
                PendingEvent::job(
                    EventKind::Failed,
                    &id,
                    &parent.queue,
                    parent.batch_id.as_deref(),
                    now,
                    json!({ "error": error }),
                )
            });
            Ok(Some(parent))
        }
        // Already finished: a late child changes nothing.
        _ => Ok(None),
    }
}

/// An insert with `parent_id`: checks the parent and counts the child in
/// ([`count_child_in`]).
pub(crate) fn attach_child(ctx: &mut Ctx<'_>, parent_id: &str) -> StoreResult<()> {
    count_child_in(ctx, parent_id)?.into_result(parent_id)
}

/// One unfinished child more for an unfinished parent, whether the child is
/// new (an insert) or back (a manual retry). A `waiting` or `delayed`
/// parent waits for it (`waiting-children`); a running one runs again
/// after it (`fanned_out`).
fn count_child_in(ctx: &mut Ctx<'_>, parent_id: &str) -> StoreResult<ParentFound> {
    let found: Option<(i64, JobState, String)> = ctx
        .conn
        .prepare_cached("SELECT seq, state, queue FROM jobs WHERE id = ?1")
        .db()?
        .query_row([parent_id], |r| Ok((r.get(0)?, rows::state(r, 1)?, r.get(2)?)))
        .optional()
        .db()?;
    let Some((seq, state, queue)) = found else { return Ok(ParentFound::Missing) };
    if state.is_finished() {
        return Ok(ParentFound::Finished(state));
    }
    let (new_state, fanned_out) = parent_gains_child(state);
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET pending_children = pending_children + 1, state = ?1, \
             fanned_out = max(fanned_out, ?3) WHERE seq = ?2",
        )
        .db()?
        .execute(params![new_state.as_str(), seq, fanned_out])
        .db()?;
    if new_state != state {
        ctx.counts.moved(&queue, state, new_state);
    }
    Ok(ParentFound::Counted)
}

/// An insert with a `batch_id` naming a batch: one job more in it. A
/// `batch_id` that names no batch is a plain label, as before batches.
pub(crate) fn batch_add(ctx: &mut Ctx<'_>, batch_id: &str) -> StoreResult<()> {
    let done: Option<bool> = ctx
        .conn
        .prepare_cached("UPDATE batches SET total = total + 1 WHERE id = ?1 RETURNING completed_at IS NOT NULL")
        .db()?
        .query_row([batch_id], |r| r.get(0))
        .optional()
        .db()?;
    if done == Some(true) {
        return Err(batch_closed(batch_id));
    }
    Ok(())
}

fn batch_job_ended(ctx: &mut Ctx<'_>, batch_id: &str, state: JobState) -> StoreResult<()> {
    let (c, f, x) = tally(state);
    let found = ctx
        .conn
        .prepare_cached(
            "UPDATE batches SET completed = completed + ?2, failed = failed + ?3, cancelled = cancelled + ?4 \
             WHERE id = ?1 RETURNING completed_at IS NULL AND completed + failed + cancelled >= total",
        )
        .db()?
        .query_row(params![batch_id, c, f, x], |r| r.get::<_, bool>(0))
        .optional()
        .db()?;
    if found == Some(true) {
        batch_complete(ctx, batch_id)?;
    }
    Ok(())
}

/// Every job of the batch has finished, for the first time: mark it,
/// insert its completion job, announce it. `completed_at` is the guard that
/// makes this happen once.
///
/// The completion job cannot fail the command that ended the batch's last
/// job: it is inserted in a savepoint of its own, and if that insert fails
/// (a spec stored before `batch_insert` refused `parent_id` and `batch_id`
/// in it, or one that no longer decodes) it is rolled back, logged, and
/// reported in `batch:completed` (`on_complete_error`); the batch completes
/// without it. Otherwise one bad batch would keep its last job `active`
/// and fail every stall rescue after it for good.
pub(crate) fn batch_complete(ctx: &mut Ctx<'_>, batch_id: &str) -> StoreResult<()> {
    let now = ctx.now();
    let (on_complete, total, completed, failed, cancelled): (Option<String>, i64, i64, i64, i64) = ctx
        .conn
        .prepare_cached(
            "UPDATE batches SET completed_at = ?2 WHERE id = ?1 AND completed_at IS NULL \
             RETURNING on_complete, total, completed, failed, cancelled",
        )
        .db()?
        .query_row(params![batch_id, now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .db()?;
    let (mut on_complete_id, mut on_complete_error) = (None, None);
    if let Some(spec) = on_complete {
        match ctx.isolated(|ctx| insert_on_complete(ctx, batch_id, &spec)) {
            Ok(id) => on_complete_id = Some(id),
            Err(e) => {
                tracing::warn!(batch = %batch_id, error = %e, "the batch completed but its on_complete job could not be inserted");
                on_complete_error = Some(e.to_string());
            }
        }
    }
    ctx.event(|| {
        let mut data = json!({
            "id": batch_id, "total": total, "completed": completed, "failed": failed,
            "cancelled": cancelled, "on_complete_id": on_complete_id,
        });
        if let Some(error) = on_complete_error {
            data["on_complete_error"] = json!(error);
        }
        PendingEvent {
            kind: EventKind::BatchCompleted,
            job_id: None,
            queue: None,
            batch_id: Some(batch_id.to_owned()),
            at: now,
            data,
        }
    });
    Ok(())
}

/// Inserts a batch's completion job and records its id on the batch. Runs
/// in a savepoint ([`Ctx::isolated`]): a refused insert is rolled back with
/// everything it recorded, and must not fail the job whose ending completed
/// the batch.
fn insert_on_complete(ctx: &mut Ctx<'_>, batch_id: &str, spec: &str) -> StoreResult<String> {
    let spec: JobSpec = serde_json::from_str(spec)
        .map_err(|e| StoreError::Backend(format!("the stored on_complete does not decode: {e}")))?;
    let (jobs, rows) = job_sql::prepare_insert(vec![spec])?;
    let outcome = job_sql::insert(ctx, &rows)?.pop();
    // A unique-key duplicate is the job that already exists.
    let id = match outcome {
        Some(job_sql::InsertOutcome::Duplicate(existing)) => existing.id.to_string(),
        _ => jobs[0].id.to_string(),
    };
    ctx.conn
        .prepare_cached("UPDATE batches SET on_complete_id = ?2 WHERE id = ?1")
        .db()?
        .execute(params![batch_id, id])
        .db()?;
    Ok(id)
}

/// A manual retry took a finished job back: its batch counts it as
/// unfinished again, and an unfinished parent counts it in again, as for a
/// new child ([`count_child_in`]).
pub(crate) fn retried(
    ctx: &mut Ctx<'_>,
    from: JobState,
    parent_id: Option<&JobId>,
    batch_id: Option<&str>,
) -> StoreResult<()> {
    if let Some(batch) = batch_id {
        let (c, f, x) = tally(from);
        ctx.conn
            .prepare_cached(
                "UPDATE batches SET completed = completed - ?2, failed = failed - ?3, cancelled = cancelled - ?4 \
                 WHERE id = ?1",
            )
            .db()?
            .execute(params![batch, c, f, x])
            .db()?;
    }
    if let Some(parent) = parent_id {
        // A finished or removed parent has nothing to wait for.
        count_child_in(ctx, parent.as_str())?;
    }
    Ok(())
}

/// [`drover_store::Store::batch_insert`] in the writer: the batch row, then
/// its jobs (each counted in by [`batch_add`]). A batch none of whose jobs
/// was inserted (none given, or all duplicates) is complete at once.
pub(crate) fn batch_insert(
    ctx: &mut Ctx<'_>,
    id: &str,
    rows: &[job_sql::NewRow],
    on_complete: Option<&str>,
) -> StoreResult<Vec<job_sql::InsertOutcome>> {
    ctx.conn
        .prepare_cached("INSERT INTO batches (id, on_complete, created_at) VALUES (?1, ?2, ?3)")
        .db()?
        .execute(params![id, on_complete, ctx.now().0])
        .db()?;
    let out = job_sql::insert(ctx, rows)?;
    if out.iter().all(|o| matches!(o, job_sql::InsertOutcome::Duplicate(_))) {
        batch_complete(ctx, id)?;
    }
    Ok(out)
}

/// [`drover_store::Store::batch_get`], on a reader.
pub(crate) fn batch_get(conn: &Connection, id: &str) -> StoreResult<Option<BatchInfo>> {
    type Row = (i64, i64, i64, i64, i64, Option<i64>, Option<String>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT total, completed, failed, cancelled, created_at, completed_at, on_complete_id \
             FROM batches WHERE id = ?1",
        )
        .db()?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .optional()
        .db()?;
    let Some((total, completed, failed, cancelled, created_at, completed_at, on_complete_id)) = row else {
        return Ok(None);
    };
    // Unfinished jobs are never removed by retention: counting them is exact.
    let mut active = 0u64;
    let mut waiting = 0u64;
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, count(*) FROM jobs WHERE batch_id IS NOT NULL AND batch_id = ?1 \
             AND state IN ('waiting', 'delayed', 'waiting-children', 'active') GROUP BY state",
        )
        .db()?;
    let counted = stmt.query_map([id], |r| Ok((rows::state(r, 0)?, r.get::<_, i64>(1)?))).db()?;
    for c in counted {
        let (state, n) = c.db()?;
        if state == JobState::Active {
            active += n as u64;
        } else {
            waiting += n as u64;
        }
    }
    let finished = (completed + failed + cancelled) as f64;
    let progress = if total == 0 { 100.0 } else { (finished * 100.0 / total as f64).min(100.0) };
    Ok(Some(BatchInfo {
        id: id.to_owned(),
        total: total as u64,
        completed: completed as u64,
        failed: failed as u64,
        active,
        waiting,
        cancelled: cancelled as u64,
        progress,
        state: if completed_at.is_some() { BatchState::Completed } else { BatchState::Running },
        created_at: Timestamp(created_at),
        completed_at: completed_at.map(Timestamp),
        on_complete_id: on_complete_id.map(JobId::from_trusted),
    }))
}

/// [`drover_store::Store::job_children`], on a reader.
pub(crate) fn children(conn: &Connection, id: &JobId) -> StoreResult<Vec<Job>> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
        .db()?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()
        .db()?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!("job {id}")));
    }
    conn.prepare_cached(concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE parent_id IS NOT NULL AND parent_id = ?1 ORDER BY seq"
    ))
    .db()?
    .query_map([id.as_str()], rows::job)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

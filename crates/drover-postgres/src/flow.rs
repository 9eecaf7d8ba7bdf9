//! Flows and batches (ADR 0007): the hook every path that ends a job calls
//! ([`ended`]), what an insert does for a parent or a batch, and the flow
//! and batch store methods. The rules are SQLite's (`drover-sqlite`'s
//! `flow.rs`); what differs is how they hold across servers (ADR 0009):
//! a parent is counted off by `pending_children - 1 ... RETURNING`, which
//! locks its row, so of two children ending at once on two servers exactly
//! one sees the last count; a batch completes under the `completed_at IS
//! NULL` guard of its row, so exactly once. Locks go upward only (child,
//! parent, batch).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows::{self, JOB_COLS};
use drover_core::{EventKind, Job, JobId, JobSpec, JobState, Timestamp};
use drover_store::flow::{ParentFound, batch_closed, parent_gains_child, tally};
use drover_store::{BatchInfo, BatchInserted, BatchState, Inserted, PendingEvent, StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{Acquire, PgConnection, Row};

pub(crate) use drover_core::flow::child_failed_error;

/// A job that just reached a final state, as [`ended`] needs it.
pub(crate) struct EndedJob<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub parent_id: Option<&'a str>,
    pub batch_id: Option<&'a str>,
    pub state: JobState,
}

/// The hook: `job` reached `completed`, `failed` or `cancelled` in the
/// transaction on `conn`. Updates its parent (one child fewer pending;
/// released, or failed by the child's policy) and its batch (counters;
/// completion once). A parent the child fails climbs on to its own parent
/// and batch, in a loop (a tree built with `parent_id` has no depth bound).
pub(crate) async fn ended(conn: &mut PgConnection, fx: &mut Effects, job: EndedJob<'_>) -> StoreResult<()> {
    if job.parent_id.is_none() && job.batch_id.is_none() {
        return Ok(());
    }
    let mut failed = one_ended(conn, fx, &job).await?;
    while let Some(parent) = failed.take() {
        failed = one_ended(conn, fx, &parent.ended()).await?;
    }
    Ok(())
}

/// Locks, before a method ends several jobs, the rows their hooks will
/// update: the parents (`parent_ids`), in descending `seq` order, then the
/// batches of the jobs (`batch_ids`) and of those parents, in id order.
/// Taken up front, in the one order every such method uses, rather than
/// as each job's hook reaches them (a batch's lock before a later job's
/// parent's could close a cycle with a finish locking the other way).
pub(crate) async fn lock_upward(
    conn: &mut PgConnection,
    parent_ids: &[&str],
    mut batch_ids: Vec<String>,
) -> StoreResult<()> {
    if !parent_ids.is_empty() {
        let theirs: Vec<Option<String>> =
            sqlx::query_scalar("SELECT batch_id FROM jobs WHERE id = ANY($1) ORDER BY seq DESC FOR UPDATE")
                .bind(parent_ids)
                .fetch_all(&mut *conn)
                .await
                .db()?;
        batch_ids.extend(theirs.into_iter().flatten());
    }
    if !batch_ids.is_empty() {
        batch_ids.sort_unstable();
        batch_ids.dedup();
        sqlx::query("SELECT 1 FROM batches WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&batch_ids)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    Ok(())
}

/// Tells `job`'s parent and batch; returns the parent if this failed it.
async fn one_ended(conn: &mut PgConnection, fx: &mut Effects, job: &EndedJob<'_>) -> StoreResult<Option<Parent>> {
    let failed = match job.parent_id {
        Some(parent) => child_ended(conn, fx, job, parent).await?,
        None => None,
    };
    if let Some(batch) = job.batch_id {
        batch_job_ended(conn, fx, batch, job.state).await?;
    }
    Ok(failed)
}

/// A parent as [`child_ended`] reads it after counting its child off.
struct Parent {
    seq: i64,
    id: String,
    state: JobState,
    pending: i32,
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

/// Counts `child` off its parent (one statement: the update locks the
/// parent and reads the child's policy); returns the parent if the child's
/// failure failed it (it reached a final state too, and its own parent and
/// batch must hear of it).
async fn child_ended(
    conn: &mut PgConnection,
    fx: &mut Effects,
    child: &EndedJob<'_>,
    parent_id: &str,
) -> StoreResult<Option<Parent>> {
    let now = fx.now;
    let row = sqlx::query(
        "UPDATE jobs p SET pending_children = greatest(p.pending_children - 1, 0) FROM jobs c \
         WHERE p.id = $1 AND c.seq = $2 \
         RETURNING p.seq, p.id, p.state, p.pending_children, p.queue, p.parent_id, p.batch_id, p.run_at, c.on_failure",
    )
    .bind(parent_id)
    .bind(child.seq)
    .fetch_optional(&mut *conn)
    .await
    .db()?;
    // Gone (retention) or never stored: nobody to tell.
    let Some(r) = row else { return Ok(None) };
    let parent = Parent {
        seq: r.try_get(0).db()?,
        id: r.try_get(1).db()?,
        state: rows::state(&r, 2)?,
        pending: r.try_get(3).db()?,
        queue: r.try_get(4).db()?,
        parent_id: r.try_get(5).db()?,
        batch_id: r.try_get(6).db()?,
        run_at: r.try_get(7).db()?,
    };
    let policy: Option<&str> = r.try_get(8).db()?;
    if child.state != JobState::Completed && policy != Some("ignore") {
        return fail_parent(conn, fx, parent, child, now).await;
    }
    if parent.state == JobState::WaitingChildren && parent.pending == 0 {
        let state = if parent.run_at > now.0 { JobState::Delayed } else { JobState::Waiting };
        sqlx::query("UPDATE jobs SET state = $1 WHERE seq = $2")
            .bind(state.as_str())
            .bind(parent.seq)
            .execute(&mut *conn)
            .await
            .db()?;
        fx.counts.moved(&parent.queue, JobState::WaitingChildren, state);
        fx.ready = true;
        let kind = if state == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
        let id = JobId::from_trusted(parent.id);
        fx.event(PendingEvent::job(kind, &id, &parent.queue, parent.batch_id.as_deref(), now, Value::Null));
    }
    Ok(None)
}

/// A child failed (or was cancelled) under `fail_parent`: an unfinished,
/// not running parent fails now (and is returned, see [`child_ended`]); a
/// running one when its handler returns (`failed_child`).
async fn fail_parent(
    conn: &mut PgConnection,
    fx: &mut Effects,
    parent: Parent,
    child: &EndedJob<'_>,
    now: Timestamp,
) -> StoreResult<Option<Parent>> {
    match parent.state {
        JobState::Active => {
            sqlx::query("UPDATE jobs SET failed_child = coalesce(failed_child, $1) WHERE seq = $2")
                .bind(child.id)
                .bind(parent.seq)
                .execute(&mut *conn)
                .await
                .db()?;
            Ok(None)
        }
        JobState::Waiting | JobState::Delayed | JobState::WaitingChildren => {
            let error = child_failed_error(child.id, Some(child.state));
            sqlx::query("UPDATE jobs SET state = 'failed', error = $1, finished_at = $2 WHERE seq = $3")
                .bind(Json(&error))
                .bind(now.0)
                .bind(parent.seq)
                .execute(&mut *conn)
                .await
                .db()?;
            fx.counts.moved(&parent.queue, parent.state, JobState::Failed);
            let id = JobId::from_trusted(parent.id.clone());
            fx.event(PendingEvent::job(
                EventKind::Failed,
                &id,
                &parent.queue,
                parent.batch_id.as_deref(),
                now,
                json!({ "error": error }),
            ));
            Ok(Some(parent))
        }
        // Already finished: a late child changes nothing.
        _ => Ok(None),
    }
}

/// An insert with `parent_id`: checks the parent and counts the child in
/// ([`count_child_in`]).
pub(crate) async fn attach_child(conn: &mut PgConnection, fx: &mut Effects, parent_id: &str) -> StoreResult<()> {
    count_child_in(conn, fx, parent_id).await?.into_result(parent_id)
}

/// One unfinished child more for an unfinished parent, whether the child is
/// new (an insert) or back (a manual retry). A `waiting` or `delayed`
/// parent waits for it (`waiting-children`); a running one runs again
/// after it (`fanned_out`). The parent's row is locked first, so a parent
/// finishing on another server is seen finished, never counted after.
async fn count_child_in(conn: &mut PgConnection, fx: &mut Effects, parent_id: &str) -> StoreResult<ParentFound> {
    let found = sqlx::query("SELECT seq, state, queue FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(parent_id)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
    let Some(r) = found else { return Ok(ParentFound::Missing) };
    let seq: i64 = r.try_get(0).db()?;
    let state = rows::state(&r, 1)?;
    let queue: String = r.try_get(2).db()?;
    if state.is_finished() {
        return Ok(ParentFound::Finished(state));
    }
    let (new_state, fanned_out) = parent_gains_child(state);
    sqlx::query(
        "UPDATE jobs SET pending_children = pending_children + 1, state = $1, fanned_out = fanned_out OR $3 \
         WHERE seq = $2",
    )
    .bind(new_state.as_str())
    .bind(seq)
    .bind(fanned_out)
    .execute(&mut *conn)
    .await
    .db()?;
    if new_state != state {
        fx.counts.moved(&queue, state, new_state);
    }
    Ok(ParentFound::Counted)
}

/// An insert with a `batch_id` naming a batch: `n` jobs more in it. A
/// `batch_id` that names no batch is a plain label, as before batches.
pub(crate) async fn batch_add(conn: &mut PgConnection, batch_id: &str, n: i32) -> StoreResult<()> {
    let done: Option<bool> =
        sqlx::query_scalar("UPDATE batches SET total = total + $2 WHERE id = $1 RETURNING completed_at IS NOT NULL")
            .bind(batch_id)
            .bind(n)
            .fetch_optional(&mut *conn)
            .await
            .db()?;
    if done == Some(true) {
        return Err(batch_closed(batch_id));
    }
    Ok(())
}

/// Counts a finished job of batch `batch_id`; completes the batch when it
/// was the last. The update locks the batch row, so the job that brings the
/// count to the total is seen by exactly one transaction.
async fn batch_job_ended(
    conn: &mut PgConnection,
    fx: &mut Effects,
    batch_id: &str,
    state: JobState,
) -> StoreResult<()> {
    let (c, f, x) = tally(state);
    let last: Option<bool> = sqlx::query_scalar(
        "UPDATE batches SET completed = completed + $2, failed = failed + $3, cancelled = cancelled + $4 \
         WHERE id = $1 RETURNING completed_at IS NULL AND completed + failed + cancelled >= total",
    )
    .bind(batch_id)
    .bind(c)
    .bind(f)
    .bind(x)
    .fetch_optional(&mut *conn)
    .await
    .db()?;
    if last == Some(true) {
        batch_complete(conn, fx, batch_id).await?;
    }
    Ok(())
}

/// Every job of the batch has finished, for the first time: mark it,
/// insert its completion job, announce it. `completed_at` is the guard that
/// makes this happen once, on any number of servers.
///
/// The completion job cannot fail the method that ended the batch's last
/// job: it is inserted in a savepoint, and if that insert fails it is
/// rolled back with its effects, logged, and reported in `batch:completed`
/// (`on_complete_error`); the batch completes without it (as in SQLite).
async fn batch_complete(conn: &mut PgConnection, fx: &mut Effects, batch_id: &str) -> StoreResult<()> {
    let now = fx.now;
    let row = sqlx::query(
        "UPDATE batches SET completed_at = $2 WHERE id = $1 AND completed_at IS NULL \
         RETURNING on_complete, total, completed, failed, cancelled",
    )
    .bind(batch_id)
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await
    .db()?;
    // Completed meanwhile by another transaction: it announced it.
    let Some(r) = row else { return Ok(()) };
    let on_complete: Option<Json<Value>> = r.try_get(0).db()?;
    let (total, completed, failed, cancelled): (i32, i32, i32, i32) =
        (r.try_get(1).db()?, r.try_get(2).db()?, r.try_get(3).db()?, r.try_get(4).db()?);
    let (mut on_complete_id, mut on_complete_error) = (None, None);
    if let Some(Json(spec)) = on_complete {
        let mark = fx.mark();
        let mut savepoint = conn.begin().await.db()?;
        let inserted = insert_on_complete(&mut savepoint, fx, batch_id, spec).await;
        match inserted {
            Ok(id) => {
                savepoint.commit().await.db()?;
                on_complete_id = Some(id);
            }
            Err(e) => {
                savepoint.rollback().await.db()?;
                fx.restore(mark);
                tracing::warn!(batch = %batch_id, error = %e, "the batch completed but its on_complete job could not be inserted");
                on_complete_error = Some(e.to_string());
            }
        }
    }
    let mut data = json!({
        "id": batch_id, "total": total, "completed": completed, "failed": failed,
        "cancelled": cancelled, "on_complete_id": on_complete_id,
    });
    if let Some(error) = on_complete_error {
        data["on_complete_error"] = json!(error);
    }
    fx.event(PendingEvent {
        kind: EventKind::BatchCompleted,
        job_id: None,
        queue: None,
        batch_id: Some(batch_id.to_owned()),
        at: now,
        data,
    });
    Ok(())
}

/// Inserts a batch's completion job and records its id on the batch.
async fn insert_on_complete(
    conn: &mut PgConnection,
    fx: &mut Effects,
    batch_id: &str,
    spec: Value,
) -> StoreResult<String> {
    let spec: JobSpec = serde_json::from_value(spec)
        .map_err(|e| StoreError::Backend(format!("the stored on_complete does not decode: {e}")))?;
    let inserted = crate::jobs::insert_in(conn, fx, vec![spec]).await?;
    // A unique-key duplicate is the job that already exists.
    let id = inserted
        .into_iter()
        .next()
        .map(|i| i.job.id.to_string())
        .ok_or_else(|| StoreError::Backend("the on_complete insert returned nothing".into()))?;
    sqlx::query("UPDATE batches SET on_complete_id = $2 WHERE id = $1")
        .bind(batch_id)
        .bind(&id)
        .execute(&mut *conn)
        .await
        .db()?;
    Ok(id)
}

/// A manual retry took a finished job (that was in `from`) back: its batch
/// counts it as unfinished again, and an unfinished parent counts it in
/// again (as SQLite's `flow::retried`).
pub(crate) async fn retried(
    conn: &mut PgConnection,
    fx: &mut Effects,
    from: JobState,
    parent_id: Option<&str>,
    batch_id: Option<&str>,
) -> StoreResult<()> {
    if let Some(batch) = batch_id {
        let (c, f, x) = tally(from);
        sqlx::query(
            "UPDATE batches SET completed = completed - $2, failed = failed - $3, cancelled = cancelled - $4 \
             WHERE id = $1",
        )
        .bind(batch)
        .bind(c)
        .bind(f)
        .bind(x)
        .execute(&mut *conn)
        .await
        .db()?;
    }
    if let Some(parent) = parent_id {
        // A finished or removed parent has nothing to wait for.
        count_child_in(conn, fx, parent).await?;
    }
    Ok(())
}

/// `Store::job_children`: the children of job `id` in enqueue order
/// (without their attempt histories, as in SQLite); NotFound when `id`
/// names no job.
pub(crate) async fn job_children(store: &PgStore, id: &JobId) -> StoreResult<Vec<Job>> {
    let mut conn = store.pool().acquire().await.db()?;
    let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE parent_id IS NOT NULL AND parent_id = $1 ORDER BY seq");
    let found = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_all(&mut *conn).await.db()?;
    if found.is_empty() {
        // Only a childless answer needs to know whether the job exists.
        let exists: Option<i64> = sqlx::query_scalar("SELECT seq FROM jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .db()?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
    }
    found.iter().map(|r| rows::job(r).map(|(_, job)| job)).collect()
}

/// `Store::flow_insert`: a tree of jobs in one transaction, in pre-order;
/// each parent starts `waiting-children` and is released when its last
/// child finishes.
pub(crate) async fn flow_insert(store: &PgStore, flow: drover_core::FlowSpec) -> StoreResult<Vec<Inserted>> {
    let flat = flow.flatten()?;
    for (spec, _) in &flat {
        spec.validate()?;
        crate::jobs::check_storable(spec, "")?;
    }
    let mut w = store.begin().await?;
    let result = crate::jobs::insert_rows(&mut w.tx, &mut w.fx, flat).await;
    store.commit(w, result).await
}

/// `Store::batch_insert`: a new batch with its jobs, in one transaction. A
/// batch none of whose jobs was inserted (none given, or all duplicates) is
/// complete at once. The `on_complete` spec is checked now and stored, to
/// be inserted when the batch completes.
pub(crate) async fn batch_insert(store: &PgStore, batch: drover_core::BatchSpec) -> StoreResult<BatchInserted> {
    let drover_store::flow::PreparedBatch { id, jobs, on_complete } = drover_store::flow::prepare_batch(batch)?;
    let on_complete = match on_complete {
        None => None,
        Some(spec) => {
            crate::jobs::check_storable(&spec, "on_complete.")?;
            Some(serde_json::to_value(&spec).map_err(|e| StoreError::Backend(e.to_string()))?)
        }
    };
    crate::jobs::validate(&jobs)?;
    let mut w = store.begin().await?;
    let result = batch_insert_in(&mut w.tx, &mut w.fx, &id, jobs, on_complete).await;
    let jobs = store.commit(w, result).await?;
    // A duplicate (an existing id) stays where it was and is not counted.
    let total = jobs.iter().filter(|j| !j.duplicate).count() as u64;
    Ok(BatchInserted { id, total, jobs })
}

/// The batch insert's transaction body: the batch row, then its jobs (each
/// counted in by [`batch_add`]).
async fn batch_insert_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    id: &str,
    jobs: Vec<JobSpec>,
    on_complete: Option<Value>,
) -> StoreResult<Vec<Inserted>> {
    sqlx::query("INSERT INTO batches (id, on_complete, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(on_complete.map(Json))
        .bind(fx.now.0)
        .execute(&mut *conn)
        .await
        .db()?;
    let out = crate::jobs::insert_rows(conn, fx, jobs.into_iter().map(|spec| (spec, 0)).collect()).await?;
    if out.iter().all(|i| i.duplicate) {
        batch_complete(conn, fx, id).await?;
    }
    Ok(out)
}

/// `Store::batch_get`: the counters, and the batch's unfinished jobs
/// counted in the same statement (one snapshot). Unfinished jobs are
/// never removed by retention, so counting them is exact.
pub(crate) async fn batch_get(store: &PgStore, id: &str) -> StoreResult<Option<BatchInfo>> {
    let row = sqlx::query(
        "SELECT b.total, b.completed, b.failed, b.cancelled, b.created_at, b.completed_at, b.on_complete_id, \
         (SELECT count(*) FROM jobs WHERE batch_id IS NOT NULL AND batch_id = b.id AND state = 'active'), \
         (SELECT count(*) FROM jobs WHERE batch_id IS NOT NULL AND batch_id = b.id \
          AND state IN ('waiting', 'delayed', 'waiting-children')) \
         FROM batches b WHERE b.id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await
    .db()?;
    let Some(r) = row else { return Ok(None) };
    let count = |idx: usize| -> StoreResult<u64> { Ok(u64::try_from(r.try_get::<i32, _>(idx).db()?).unwrap_or(0)) };
    let (total, completed, failed, cancelled) = (count(0)?, count(1)?, count(2)?, count(3)?);
    let created_at: i64 = r.try_get(4).db()?;
    let completed_at: Option<i64> = r.try_get(5).db()?;
    let on_complete_id: Option<String> = r.try_get(6).db()?;
    let active: i64 = r.try_get(7).db()?;
    let waiting: i64 = r.try_get(8).db()?;
    let finished = (completed + failed + cancelled) as f64;
    let progress = if total == 0 { 100.0 } else { (finished * 100.0 / total as f64).min(100.0) };
    Ok(Some(BatchInfo {
        id: id.to_owned(),
        total,
        completed,
        failed,
        active: active.max(0) as u64,
        waiting: waiting.max(0) as u64,
        cancelled,
        progress,
        state: if completed_at.is_some() { BatchState::Completed } else { BatchState::Running },
        created_at: Timestamp(created_at),
        completed_at: completed_at.map(Timestamp),
        on_complete_id: on_complete_id.map(JobId::from_trusted),
    }))
}

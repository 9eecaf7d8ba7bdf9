//! Job mutations other than claims and finishes: insert, heartbeat,
//! progress, logs, custom events, cancel and manual retry. Each runs in the
//! writer, inside its command's savepoint.

use crate::error::SqlResultExt;
use crate::job_query;
use crate::rows::{self, job_cols, to_json};
use crate::writer::Ctx;
use drover_core::{ChildFailure, EventKind, Job, JobId, JobSpec, JobState, LeaseToken, Progress, Timestamp};
use drover_store::{
    CancelOutcome, HeartbeatReply, Inserted, JobEventEmit, JobHeartbeat, JobLogAppend, PendingEvent, StoreError,
    StoreResult,
};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

/// A validated spec as the writer binds it, serialized on the caller's task.
pub(crate) struct NewRow {
    id: String,
    queue: String,
    name: String,
    payload: String,
    priority: i32,
    max_attempts: u32,
    backoff: String,
    timeout_ms: Option<u64>,
    max_stalls: u32,
    unique_key: Option<String>,
    unique_for_ms: Option<u64>,
    rate_limit_key: Option<String>,
    parent_id: Option<String>,
    batch_id: Option<String>,
    tags: Option<String>,
    delay_ms: Option<u64>,
    run_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    /// `None` for the default `fail_parent`, so most rows store NULL.
    on_failure: Option<&'static str>,
    /// Children inserted after it in the same call (a flow): the job
    /// starts `waiting-children`.
    pub children: usize,
}

/// What the writer did with one [`NewRow`].
pub(crate) enum InsertOutcome {
    /// Inserted at `now`, running first at `run_at`, in `state`.
    New { now: Timestamp, run_at: Timestamp, state: JobState },
    /// The id existed: the stored job.
    Duplicate(Box<Job>),
}

/// Validates specs (the first bad one fails the whole call) and splits each
/// into the job the caller will get back and the row the writer binds, so
/// that the writer neither serializes nor builds jobs.
pub(crate) fn prepare_insert(specs: Vec<JobSpec>) -> StoreResult<(Vec<Job>, Vec<NewRow>)> {
    for spec in &specs {
        spec.validate()?;
    }
    let mut jobs = Vec::with_capacity(specs.len());
    let mut rows = Vec::with_capacity(specs.len());
    for spec in specs {
        let id = spec.id.clone().unwrap_or_else(JobId::generate);
        rows.push(NewRow {
            id: id.as_str().to_owned(),
            queue: spec.queue.clone(),
            name: spec.name.clone(),
            payload: to_json(&spec.payload),
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            backoff: to_json(&spec.backoff),
            timeout_ms: spec.timeout_ms,
            max_stalls: spec.max_stalls,
            unique_key: spec.unique_key.clone(),
            unique_for_ms: spec.unique_for_ms,
            rate_limit_key: spec.rate_limit_key.clone(),
            parent_id: spec.parent_id.as_ref().map(|p| p.as_str().to_owned()),
            batch_id: spec.batch_id.clone(),
            tags: (!spec.tags.is_empty()).then(|| to_json(&spec.tags)),
            delay_ms: spec.delay_ms,
            run_at: spec.run_at,
            expires_at: spec.expires_at,
            on_failure: (spec.on_failure != ChildFailure::FailParent).then(|| spec.on_failure.as_str()),
            children: 0,
        });
        // Times are filled in by the writer, which knows them at commit.
        jobs.push(Job::from_spec(spec, id, JobState::Waiting, Timestamp(0), Timestamp(0)));
    }
    Ok((jobs, rows))
}

/// Joins the caller's jobs with the writer's outcomes, in input order.
pub(crate) fn assemble_inserted(jobs: Vec<Job>, outcomes: Vec<InsertOutcome>) -> Vec<Inserted> {
    jobs.into_iter()
        .zip(outcomes)
        .map(|(mut job, outcome)| match outcome {
            InsertOutcome::New { now, run_at, state } => {
                job.created_at = now;
                job.run_at = run_at;
                job.state = state;
                Inserted { job, duplicate: false }
            }
            InsertOutcome::Duplicate(existing) => Inserted { job: *existing, duplicate: true },
        })
        .collect()
}

/// [`drover_store::Store::job_insert_many`].
pub(crate) fn insert(ctx: &mut Ctx<'_>, rows: &[NewRow]) -> StoreResult<Vec<InsertOutcome>> {
    let now = ctx.now();
    let mut out = Vec::with_capacity(rows.len());
    let mut insert = ctx
        .conn
        .prepare_cached(
            "INSERT INTO jobs (id, queue, name, payload, state, priority, max_attempts, attempts_budget, backoff, \
             timeout_ms, max_stalls, unique_key, rate_limit_key, parent_id, batch_id, tags, created_at, run_at, \
             expires_at, on_failure) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) \
             ON CONFLICT (id) DO NOTHING",
        )
        .db()?;
    // Errors about a row's parent or batch name the row as the bulk and
    // batch bodies do (`jobs[3].parent_id`); a flow's only outside parent
    // is its root's, named plainly.
    let name_rows = rows.len() > 1 && rows.iter().all(|r| r.children == 0);
    for (i, row) in rows.iter().enumerate() {
        let run_at = match (row.run_at, row.delay_ms) {
            (Some(at), _) => at,
            (None, Some(delay)) => now.plus_ms(delay as i64),
            (None, None) => now,
        };
        // Checked row by row, so a key repeated within one call finds the
        // row this call inserted moments before.
        if let Some(existing) = unique_match(ctx, row, now)? {
            out.push(InsertOutcome::Duplicate(Box::new(existing)));
            continue;
        }
        let state = if row.children > 0 {
            JobState::WaitingChildren
        } else if run_at > now {
            JobState::Delayed
        } else {
            JobState::Waiting
        };
        let changed = insert
            .execute(params![
                row.id,
                row.queue,
                row.name,
                row.payload,
                state.as_str(),
                row.priority,
                row.max_attempts,
                row.backoff,
                row.timeout_ms,
                row.max_stalls,
                row.unique_key,
                row.rate_limit_key,
                row.parent_id,
                row.batch_id,
                row.tags,
                now.0,
                run_at.0,
                row.expires_at.map(|t| t.0),
                row.on_failure,
            ])
            .db()?;
        if changed == 0 {
            let id = JobId::from_trusted(row.id.clone());
            let existing = job_query::get(ctx.conn, &id)?
                .ok_or_else(|| StoreError::Backend(format!("job {id} conflicted but cannot be read")))?;
            out.push(InsertOutcome::Duplicate(Box::new(existing)));
            continue;
        }
        // Flows and batches: the parent learns of its child, the batch of
        // its job (one branch each for the jobs that have neither).
        let name_row = |e: StoreError| match e {
            StoreError::Invalid { field, message } if name_rows => {
                StoreError::Invalid { field: format!("jobs[{i}].{field}"), message }
            }
            other => other,
        };
        if let Some(parent) = &row.parent_id {
            crate::flow::attach_child(ctx, parent).map_err(name_row)?;
        }
        if let Some(batch) = &row.batch_id {
            crate::flow::batch_add(ctx, batch).map_err(name_row)?;
        }
        // A job created `waiting-children` announces itself when released.
        if ctx.wants_events() && state != JobState::WaitingChildren {
            let kind = if state == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
            let id = JobId::from_trusted(row.id.clone());
            ctx.event(|| PendingEvent::job(kind, &id, &row.queue, row.batch_id.as_deref(), now, Value::Null));
        }
        ctx.counts.add(&row.queue, state, 1);
        // Delayed jobs count too: a fetcher sleeping until the next due time
        // must learn of an earlier one.
        ctx.ready = true;
        out.push(InsertOutcome::New { now, run_at, state });
    }
    drop(insert);
    release_childless(ctx, rows, &mut out, now)?;
    Ok(out)
}

/// A parent of a flow is inserted `waiting-children` and counted in by
/// each child inserted after it; a child that is a duplicate (an existing
/// id or unique key) stays where it was and is not counted. A new parent
/// whose children were all duplicates would wait for nothing, forever: it
/// starts `waiting` (or `delayed`) instead, as if it had none.
fn release_childless(ctx: &mut Ctx<'_>, rows: &[NewRow], out: &mut [InsertOutcome], now: Timestamp) -> StoreResult<()> {
    for (row, outcome) in rows.iter().zip(out.iter_mut()) {
        let InsertOutcome::New { run_at, state, .. } = outcome else { continue };
        if row.children == 0 {
            continue;
        }
        let released = if *run_at > now { JobState::Delayed } else { JobState::Waiting };
        let changed = ctx
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = ?1 WHERE id = ?2 AND state = 'waiting-children' AND pending_children = 0",
            )
            .db()?
            .execute(params![released.as_str(), row.id])
            .db()?;
        if changed == 0 {
            continue;
        }
        *state = released;
        ctx.counts.moved(&row.queue, JobState::WaitingChildren, released);
        let kind = if released == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
        let id = JobId::from_trusted(row.id.clone());
        ctx.event(|| PendingEvent::job(kind, &id, &row.queue, row.batch_id.as_deref(), now, Value::Null));
    }
    Ok(())
}

/// The job that makes `row` a duplicate by its `unique_key` (the newest
/// one, with its attempts), if any: on the same queue, with the same key,
/// unfinished, or created within `unique_for_ms` when the row gives one.
/// Both queries read the partial index `jobs_unique` (migration 0005),
/// whose `unique_key IS NOT NULL` term they repeat.
fn unique_match(ctx: &Ctx<'_>, row: &NewRow, now: Timestamp) -> StoreResult<Option<Job>> {
    let Some(key) = &row.unique_key else { return Ok(None) };
    let found: Option<String> = match row.unique_for_ms {
        None => ctx
            .conn
            .prepare_cached(
                "SELECT id FROM jobs WHERE unique_key IS NOT NULL AND queue = ?1 AND unique_key = ?2 \
                 AND state NOT IN ('completed', 'failed', 'cancelled') ORDER BY created_at DESC, seq DESC LIMIT 1",
            )
            .db()?
            .query_row(params![row.queue, key], |r| r.get(0))
            .optional()
            .db()?,
        Some(window) => ctx
            .conn
            .prepare_cached(
                "SELECT id FROM jobs WHERE unique_key IS NOT NULL AND queue = ?1 AND unique_key = ?2 \
                 AND created_at > ?3 ORDER BY created_at DESC, seq DESC LIMIT 1",
            )
            .db()?
            .query_row(params![row.queue, key, now.0 - window as i64], |r| r.get(0))
            .optional()
            .db()?,
    };
    match found {
        None => Ok(None),
        Some(id) => job_query::get(ctx.conn, &JobId::from_trusted(id)),
    }
}

/// [`drover_store::Store::job_heartbeat_many`].
pub(crate) fn heartbeat(ctx: &mut Ctx<'_>, beats: &[JobHeartbeat]) -> StoreResult<Vec<StoreResult<HeartbeatReply>>> {
    let now = ctx.now();
    let mut out = Vec::with_capacity(beats.len());
    for beat in beats {
        if let Some(Err(message)) = beat.progress.as_ref().map(Progress::validate) {
            out.push(Err(StoreError::invalid("progress", message)));
            continue;
        }
        let expires = now.plus(std::time::Duration::from_millis(beat.lease_ms));
        let progress = beat.progress.as_ref().map(to_json);
        // A lookup then an update by rowid: cheaper than `UPDATE ... RETURNING`
        // (see `claim`), and heartbeats are the most frequent write.
        let Some((seq, cancel_requested, queue, batch_id)) = leased_row(ctx, &beat.id, beat.lease_token)? else {
            out.push(Err(StoreError::LeaseLost(beat.id.to_string())));
            continue;
        };
        ctx.conn
            .prepare_cached("UPDATE jobs SET lease_expires_at = ?1, progress = coalesce(?2, progress) WHERE seq = ?3")
            .db()?
            .execute(params![expires.0, progress, seq])
            .db()?;
        if let Some(p) = &beat.progress {
            ctx.event(|| progress_event(&beat.id, &queue, batch_id.as_deref(), now, p));
        }
        out.push(Ok(HeartbeatReply { lease_expires_at: expires, cancel_requested }));
    }
    Ok(out)
}

/// [`drover_store::Store::job_progress`].
pub(crate) fn progress(ctx: &mut Ctx<'_>, id: &JobId, lease: LeaseToken, progress: &Progress) -> StoreResult<()> {
    let now = ctx.now();
    let row: Option<(String, Option<String>)> = ctx
        .conn
        .prepare_cached(
            "UPDATE jobs SET progress = ?1 WHERE id = ?2 AND lease_token = ?3 AND state = 'active' \
             RETURNING queue, batch_id",
        )
        .db()?
        .query_row(params![to_json(progress), id.as_str(), lease.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .db()?;
    let (queue, batch_id) = row.ok_or_else(|| lease_error(ctx, id))?;
    ctx.event(|| progress_event(id, &queue, batch_id.as_deref(), now, progress));
    Ok(())
}

fn progress_event(id: &JobId, queue: &str, batch_id: Option<&str>, at: Timestamp, progress: &Progress) -> PendingEvent {
    PendingEvent::job(EventKind::Progress, id, queue, batch_id, at, serde_json::to_value(progress).unwrap_or_default())
}

/// [`drover_store::Store::job_log_append`].
pub(crate) fn log_append(ctx: &mut Ctx<'_>, p: &JobLogAppend) -> StoreResult<()> {
    let (seq, _, _) = leased(ctx, &p.id, p.lease_token)?;
    let metadata = (!p.metadata.is_null()).then(|| to_json(&p.metadata));
    ctx.conn
        .prepare_cached(
            "INSERT INTO job_logs (job_seq, n, at, level, message, metadata) \
             SELECT ?1, coalesce(max(n), 0) + 1, ?2, ?3, ?4, ?5 FROM job_logs WHERE job_seq = ?1",
        )
        .db()?
        .execute(params![seq, ctx.now().0, p.level.as_str(), p.message, metadata])
        .db()?;
    Ok(())
}

/// [`drover_store::Store::job_event_emit`]: checks the lease, then queues
/// the event for after commit.
pub(crate) fn event_emit(ctx: &mut Ctx<'_>, p: &JobEventEmit) -> StoreResult<()> {
    let (_, queue, batch_id) = leased(ctx, &p.id, p.lease_token)?;
    let now = ctx.now();
    ctx.event(|| {
        PendingEvent::job(EventKind::Custom(p.kind.clone()), &p.id, &queue, batch_id.as_deref(), now, p.data.clone())
    });
    Ok(())
}

/// The seq, queue and batch of a job active under `lease`, or the reason not.
fn leased(ctx: &Ctx<'_>, id: &JobId, lease: LeaseToken) -> StoreResult<(i64, String, Option<String>)> {
    let (seq, _, queue, batch_id) = leased_row(ctx, id, lease)?.ok_or_else(|| lease_error(ctx, id))?;
    Ok((seq, queue, batch_id))
}

/// Seq, cancel flag, queue and batch of a job.
type LeasedRow = (i64, bool, String, Option<String>);

/// The [`LeasedRow`] of a job active under `lease`.
fn leased_row(ctx: &Ctx<'_>, id: &JobId, lease: LeaseToken) -> StoreResult<Option<LeasedRow>> {
    ctx.conn
        .prepare_cached(
            "SELECT seq, cancel_requested, queue, batch_id FROM jobs \
             WHERE id = ?1 AND lease_token = ?2 AND state = 'active'",
        )
        .db()?
        .query_row(params![id.as_str(), lease.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()
        .db()
}

/// Why a lease check failed: the job is gone, or the lease is not current.
fn lease_error(ctx: &Ctx<'_>, id: &JobId) -> StoreError {
    match job_state(ctx, id) {
        Ok(None) => StoreError::NotFound(format!("job {id}")),
        Ok(Some(_)) => StoreError::LeaseLost(id.to_string()),
        Err(e) => e,
    }
}

fn job_seq(ctx: &Ctx<'_>, id: &JobId) -> StoreResult<i64> {
    ctx.conn.prepare_cached("SELECT seq FROM jobs WHERE id = ?1").db()?.query_row([id.as_str()], |r| r.get(0)).db()
}

fn job_state(ctx: &Ctx<'_>, id: &JobId) -> StoreResult<Option<JobState>> {
    ctx.conn
        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
        .db()?
        .query_row([id.as_str()], |r| rows::state(r, 0))
        .optional()
        .db()
}

/// [`drover_store::Store::job_cancel`].
pub(crate) fn cancel(ctx: &mut Ctx<'_>, id: &JobId) -> StoreResult<CancelOutcome> {
    let state = job_state(ctx, id)?.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    let now = ctx.now();
    if state.is_cancellable_at_once() {
        let job = update_returning(
            ctx,
            concat!(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2, lease_token = NULL, lease_expires_at = NULL ",
                "WHERE id = ?1 RETURNING ",
                job_cols!()
            ),
            id,
            now,
        )?;
        ctx.counts.moved(&job.queue, state, JobState::Cancelled);
        ctx.event(|| {
            PendingEvent::job(EventKind::Cancelled, id, &job.queue, job.batch_id.as_deref(), now, Value::Null)
        });
        if job.parent_id.is_some() || job.batch_id.is_some() {
            let seq = job_seq(ctx, id)?;
            let ended = crate::flow::EndedJob {
                seq,
                id: id.as_str(),
                parent_id: job.parent_id.as_ref().map(JobId::as_str),
                batch_id: job.batch_id.as_deref(),
                state: JobState::Cancelled,
            };
            crate::flow::ended(ctx, ended)?;
        }
        Ok(CancelOutcome::Cancelled(job))
    } else if state == JobState::Active {
        let job = update_returning(
            ctx,
            concat!("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND ?2 IS NOT NULL RETURNING ", job_cols!()),
            id,
            now,
        )?;
        ctx.event(|| {
            PendingEvent::job(EventKind::CancelRequested, id, &job.queue, job.batch_id.as_deref(), now, Value::Null)
        });
        Ok(CancelOutcome::Requested(job))
    } else {
        Err(StoreError::InvalidState { state, message: "a finished job cannot be cancelled".into() })
    }
}

/// [`drover_store::Store::job_retry`].
pub(crate) fn retry(ctx: &mut Ctx<'_>, id: &JobId) -> StoreResult<Job> {
    let state = job_state(ctx, id)?.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    if !state.is_retryable_by_hand() {
        return Err(StoreError::InvalidState { state, message: "only failed or cancelled jobs can be retried".into() });
    }
    let now = ctx.now();
    let job = update_returning(
        ctx,
        concat!(
            // A parent whose children still run waits for them first.
            "UPDATE jobs SET state = CASE WHEN pending_children > 0 THEN 'waiting-children' ELSE 'waiting' END, ",
            "max_attempts = attempts_made + attempts_budget, error = NULL, ",
            "stalls = 0, run_at = ?2, finished_at = NULL, cancel_requested = 0, lease_token = NULL, ",
            // A manual retry is a decision to run the job now: its TTL is lifted.
            // A child failure that failed it, and a fan-out, belong to the run before.
            "lease_expires_at = NULL, expires_at = NULL, failed_child = NULL, fanned_out = 0 WHERE id = ?1 RETURNING ",
            job_cols!()
        ),
        id,
        now,
    )?;
    ctx.counts.moved(&job.queue, state, job.state);
    if job.state == JobState::Waiting {
        ctx.event(|| PendingEvent::job(EventKind::Waiting, id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        ctx.ready = true;
    }
    crate::flow::retried(ctx, state, job.parent_id.as_ref(), job.batch_id.as_deref())?;
    Ok(job)
}

/// Runs an update of one job by id (`?1`, with `?2` the time) returning
/// [`job_cols`], and reads its attempt history.
fn update_returning(ctx: &Ctx<'_>, sql: &str, id: &JobId, now: Timestamp) -> StoreResult<Job> {
    let (seq, mut job) = ctx
        .conn
        .prepare_cached(sql)
        .db()?
        .query_row(params![id.as_str(), now.0], |r| Ok((r.get::<_, i64>(0)?, rows::job(r)?)))
        .db()?;
    job.attempts = job_query::attempts_of(ctx.conn, seq, &job)?;
    Ok(job)
}

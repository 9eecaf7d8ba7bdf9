//! Maintenance passes every server may run: stall rescue, promotion of due
//! delayed jobs, TTL expiry. Each is idempotent and takes only rows no
//! other transaction holds (`SKIP LOCKED`).

use crate::PgStore;
use crate::attempts::{self, Closed};
use crate::error::SqlResultExt;
use crate::flow::EndedJob;
use crate::fx::Effects;
use crate::rows;
use drover_core::flow::child_failed_error;
use drover_core::{AttemptOutcome, EventKind, JobError, JobId, JobState, StallDecision, decide_stall};
use drover_store::{PendingEvent, RescueReport, StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

/// The error code of a job whose TTL ran out before it started.
pub(crate) const EXPIRED: &str = "expired";

/// `Store::job_rescue_expired`: every `active` job whose lease ran out
/// (and that no other transaction holds: `FOR UPDATE SKIP LOCKED`, so
/// servers rescuing at once each take different jobs) follows
/// [`drover_core::decide_stall`], as in SQLite: back to `waiting` (or
/// `waiting-children` while children of it run) with the attempt handed
/// back, `failed` with error code `stalled` past `max_stalls` (a parent a
/// child failed while it ran fails with that child's error instead of
/// running again), or `cancelled` when a cancel was requested. Each
/// appends a `stalled` attempt. Events per job: `job:stalled` (data
/// `{"stalls"}`), then `job:waiting`, `job:failed` (data `{"error"}`) or
/// `job:cancelled`; then the flow hook of a finished one. One update and
/// one insert serve all the jobs.
pub(crate) async fn job_rescue_expired(store: &PgStore) -> StoreResult<RescueReport> {
    let mut w = store.begin().await?;
    let result = rescue_in(&mut w.tx, &mut w.fx).await;
    store.commit(w, result).await
}

/// The columns [`Stalled::from_row`] reads.
const STALLED_COLS: &str = "seq, attempt_seq, started_at, worker_id, queue, batch_id, parent_id, id, stalls, \
     max_stalls, cancel_requested, pending_children > 0, failed_child, rate_limit_key";

/// An active job whose lease ran out, as the rescue needs it.
struct Stalled {
    seq: i64,
    attempt: i32,
    started_at: Option<i64>,
    worker_id: Option<String>,
    queue: String,
    batch_id: Option<String>,
    parent_id: Option<String>,
    id: JobId,
    stalls: u32,
    max_stalls: u32,
    cancel_requested: bool,
    has_pending: bool,
    failed_child: Option<String>,
    rate_limit_key: Option<String>,
}

impl Stalled {
    /// Decodes a row selected with [`STALLED_COLS`].
    fn from_row(r: &PgRow) -> StoreResult<Stalled> {
        Ok(Stalled {
            seq: r.try_get(0).db()?,
            attempt: r.try_get(1).db()?,
            started_at: r.try_get(2).db()?,
            worker_id: r.try_get(3).db()?,
            queue: r.try_get(4).db()?,
            batch_id: r.try_get(5).db()?,
            parent_id: r.try_get(6).db()?,
            id: JobId::from_trusted(r.try_get(7).db()?),
            stalls: rows::unsigned(r, 8)?,
            max_stalls: rows::unsigned(r, 9)?,
            cancel_requested: r.try_get(10).db()?,
            has_pending: r.try_get(11).db()?,
            failed_child: r.try_get(12).db()?,
            rate_limit_key: r.try_get(13).db()?,
        })
    }
}

/// The rescue's transaction body.
async fn rescue_in(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<RescueReport> {
    let sql = format!(
        "SELECT {STALLED_COLS} FROM jobs WHERE state = 'active' AND lease_expires_at <= $1 \
         ORDER BY lease_expires_at, seq FOR UPDATE SKIP LOCKED"
    );
    let found = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(fx.now.0).fetch_all(&mut *conn).await.db()?;
    let expired = found.iter().map(Stalled::from_row).collect::<StoreResult<Vec<_>>>()?;
    let mut report = RescueReport::default();
    // A finished job's flow hook updates its ancestors (a running parent
    // learns of a failed child, a waiting one may fail at once). SQLite
    // runs each job's hook before it writes the next job, all decided
    // from the rows as first read; when an ancestor of one rescued job
    // may be among them (some job has a parent, some has unfinished
    // children), the jobs are written one by one to keep that order.
    let ancestors_too = expired.iter().any(|s| s.parent_id.is_some()) && expired.iter().any(|s| s.has_pending);
    if ancestors_too {
        for job in expired {
            rescue_batch(conn, fx, vec![job], &mut report).await?;
        }
    } else {
        rescue_batch(conn, fx, expired, &mut report).await?;
    }
    Ok(report)
}

/// What the rescue decided for one job.
struct Outcome {
    decision: StallDecision,
    /// The job's new state.
    state: JobState,
    /// 1 when the stalled attempt is handed back.
    hand_back: i32,
    /// Its stall count after this one.
    stalls: u32,
    /// The event after `job:stalled` (none for `waiting-children`).
    kind: EventKind,
    data: Value,
    /// The job's error if it fails (JSON text).
    job_error: String,
    /// The `stalled` attempt's error.
    stall_error: JobError,
}

/// Decides one job's rescue as SQLite does.
fn decide(job: &Stalled) -> StoreResult<Outcome> {
    let stalls = job.stalls + 1;
    let stall_error = JobError::with_code("stalled", format!("lease expired without a heartbeat (stall {stalls})"));
    let decision = decide_stall(stalls, job.max_stalls, job.cancel_requested);
    // A parent a child failed while it ran fails instead of running again
    // (ADR 0007); the stall stays in its attempt history.
    let child_error = match (&job.failed_child, decision) {
        (Some(child), StallDecision::Requeue) => Some(child_failed_error(child, None)),
        _ => None,
    };
    let (state, hand_back, kind) = match decision {
        StallDecision::Requeue if child_error.is_some() => (JobState::Failed, 1, EventKind::Failed),
        // A parent whose children still run waits for them first.
        StallDecision::Requeue if job.has_pending => (JobState::WaitingChildren, 1, EventKind::Waiting),
        StallDecision::Requeue => (JobState::Waiting, 1, EventKind::Waiting),
        StallDecision::Dead => (JobState::Failed, 0, EventKind::Failed),
        StallDecision::Cancel => (JobState::Cancelled, 0, EventKind::Cancelled),
    };
    let text = |e: &JobError| serde_json::to_string(e).map_err(|e| StoreError::Backend(e.to_string()));
    let data = match (&child_error, decision) {
        (Some(error), _) => json!({ "error": error }),
        (None, StallDecision::Dead) => json!({ "error": stall_error }),
        (None, _) => Value::Null,
    };
    Ok(Outcome {
        decision,
        state,
        hand_back,
        stalls,
        kind,
        data,
        job_error: text(child_error.as_ref().unwrap_or(&stall_error))?,
        stall_error,
    })
}

/// Decides and writes the rescue of `jobs` (one update and one insert
/// for all), then records their counts, events and flow hooks in order.
async fn rescue_batch(
    conn: &mut PgConnection,
    fx: &mut Effects,
    jobs: Vec<Stalled>,
    report: &mut RescueReport,
) -> StoreResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let now = fx.now;
    let outcomes = jobs.iter().map(decide).collect::<StoreResult<Vec<_>>>()?;
    let seqs: Vec<i64> = jobs.iter().map(|j| j.seq).collect();
    sqlx::query(
        "UPDATE jobs SET state = u.state, stalls = u.stalls, attempts_made = jobs.attempts_made - u.hand_back, \
         error = CASE WHEN u.state = 'failed' THEN u.error::jsonb ELSE jobs.error END, finished_at = u.finished_at, \
         lease_token = NULL, lease_expires_at = NULL, fanned_out = false \
         FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::integer[], $5::text[], $6::bigint[]) \
             AS u(seq, state, stalls, hand_back, error, finished_at) \
         WHERE jobs.seq = u.seq",
    )
    .bind(&seqs)
    .bind(outcomes.iter().map(|o| o.state.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| i32::try_from(o.stalls).unwrap_or(i32::MAX)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.hand_back).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.job_error.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.state.is_finished().then_some(now.0)).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .db()?;
    let closed: Vec<Closed<'_>> = jobs
        .iter()
        .zip(&outcomes)
        .map(|(j, o)| Closed {
            seq: j.seq,
            attempt: j.attempt,
            started_at: j.started_at,
            worker_id: j.worker_id.as_deref(),
            outcome: AttemptOutcome::Stalled,
            error: Some(&o.stall_error),
        })
        .collect();
    attempts::append(conn, now, &closed).await?;
    for (job, o) in jobs.iter().zip(outcomes) {
        fx.counts.moved(&job.queue, JobState::Active, o.state);
        fx.left_active(&job.queue, job.rate_limit_key.as_deref());
        let batch = job.batch_id.as_deref();
        let stalled = json!({ "stalls": o.stalls });
        fx.event(PendingEvent::job(EventKind::Stalled, &job.id, &job.queue, batch, now, stalled));
        if o.state != JobState::WaitingChildren {
            fx.event(PendingEvent::job(o.kind, &job.id, &job.queue, batch, now, o.data));
        }
        if o.state.is_finished() {
            let ended = EndedJob {
                seq: job.seq,
                id: job.id.as_str(),
                parent_id: job.parent_id.as_deref(),
                batch_id: batch,
                state: o.state,
            };
            crate::flow::ended(conn, fx, ended).await?;
        }
        match o.decision {
            StallDecision::Requeue if o.state == JobState::Failed => report.failed.push(job.id.clone()),
            StallDecision::Requeue => {
                fx.ready |= o.state == JobState::Waiting;
                report.requeued.push(job.id.clone());
            }
            StallDecision::Dead => report.failed.push(job.id.clone()),
            StallDecision::Cancel => report.cancelled.push(job.id.clone()),
        }
    }
    Ok(())
}

/// `Store::job_promote_due`.
///
/// Every maintenance tick calls it, so it also folds `queue_count_deltas`
/// into `queue_counts` first (in a statement of its own, holding the count
/// rows only for that statement): the deltas table stays a few hundred
/// rows long, so reading counts stays cheap.
pub(crate) async fn job_promote_due(store: &PgStore) -> StoreResult<u64> {
    let mut conn = store.pool().acquire().await.db()?;
    crate::counts::fold_deltas(&mut conn).await?;
    drop(conn);
    let mut w = store.begin().await?;
    let result = crate::claim::promote_due(&mut w.tx, &mut w.fx).await;
    store.commit(w, result).await
}

/// `Store::job_expire_due`.
pub(crate) async fn job_expire_due(store: &PgStore) -> StoreResult<u64> {
    let mut w = store.begin().await?;
    let result = expire_due(&mut w.tx, &mut w.fx).await;
    store.commit(w, result).await
}

/// Fails every unstarted `waiting` or `delayed` job whose `expires_at` is
/// at or before `now`, with error code `expired` and no attempt, each
/// announced (`job:failed`) and told to its parent and batch
/// ([`crate::flow::ended`]); returns how many. Rows another transaction
/// holds are skipped (it is claiming or finishing them, and expires them
/// itself if due). The terms name `jobs_expiring`.
pub(crate) async fn expire_due(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<u64> {
    let now = fx.now;
    let due = sqlx::query(
        "SELECT seq, id, queue, state, batch_id, parent_id FROM jobs WHERE expires_at IS NOT NULL \
         AND started_at IS NULL AND state IN ('waiting', 'delayed') AND expires_at <= $1 \
         ORDER BY expires_at, seq FOR UPDATE SKIP LOCKED",
    )
    .bind(now.0)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut jobs = Vec::with_capacity(due.len());
    for row in &due {
        jobs.push(Due {
            seq: row.try_get(0).db()?,
            id: JobId::from_trusted(row.try_get(1).db()?),
            queue: row.try_get(2).db()?,
            state: rows::state(row, 3)?,
            batch_id: row.try_get(4).db()?,
            parent_id: row.try_get(5).db()?,
        });
    }
    let parents: Vec<&str> = jobs.iter().filter_map(|j| j.parent_id.as_deref()).collect();
    let batches: Vec<String> = jobs.iter().filter_map(|j| j.batch_id.clone()).collect();
    crate::flow::lock_upward(conn, &parents, batches).await?;
    let error = JobError::with_code(EXPIRED, "not started before its expires_at");
    // Without parents among them, no flow hook can change another due
    // job: one update for all. Otherwise one at a time, as SQLite does,
    // since failing a child may fail a parent that was due too.
    let one_by_one = jobs.iter().any(|j| j.parent_id.is_some());
    if !one_by_one {
        let seqs: Vec<i64> = jobs.iter().map(|j| j.seq).collect();
        sqlx::query("UPDATE jobs SET state = 'failed', error = $1, finished_at = $2 WHERE seq = ANY($3)")
            .bind(Json(&error))
            .bind(now.0)
            .bind(&seqs)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    let mut expired = 0;
    for job in &jobs {
        if one_by_one {
            // Only a job still unstarted expires (not one its child failed).
            let changed = sqlx::query(
                "UPDATE jobs SET state = 'failed', error = $1, finished_at = $2 \
                 WHERE seq = $3 AND state IN ('waiting', 'delayed')",
            )
            .bind(Json(&error))
            .bind(now.0)
            .bind(job.seq)
            .execute(&mut *conn)
            .await
            .db()?
            .rows_affected();
            if changed == 0 {
                continue;
            }
        }
        expired += 1;
        fx.counts.moved(&job.queue, job.state, JobState::Failed);
        fx.event(PendingEvent::job(
            EventKind::Failed,
            &job.id,
            &job.queue,
            job.batch_id.as_deref(),
            now,
            json!({ "error": error }),
        ));
        let ended = crate::flow::EndedJob {
            seq: job.seq,
            id: job.id.as_str(),
            parent_id: job.parent_id.as_deref(),
            batch_id: job.batch_id.as_deref(),
            state: JobState::Failed,
        };
        crate::flow::ended(conn, fx, ended).await?;
    }
    Ok(expired)
}

/// A job [`expire_due`] found due.
struct Due {
    seq: i64,
    id: JobId,
    queue: String,
    state: JobState,
    batch_id: Option<String>,
    parent_id: Option<String>,
}

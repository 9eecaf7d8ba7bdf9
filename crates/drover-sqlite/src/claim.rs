//! Claims, and the promotion of due delayed jobs that precedes them.

use crate::error::SqlResultExt;
use crate::limits::Gate;
use crate::rows::{self, job_cols};
use crate::writer::Ctx;
use drover_core::{EventKind, JobState, LeaseToken, QueueConfig};
use drover_store::{ClaimedJob, JobClaimParams, PendingEvent, StoreResult};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// [`drover_store::Store::job_promote_due`]: `delayed` jobs whose `run_at`
/// has passed become `waiting`.
pub(crate) fn promote(ctx: &mut Ctx<'_>) -> StoreResult<u64> {
    let now = ctx.now();
    let promoted = if ctx.wants_events() {
        let moved: Vec<(String, String, Option<String>)> = ctx
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 'waiting' WHERE state = 'delayed' AND run_at <= ?1 \
                 RETURNING id, queue, batch_id",
            )
            .db()?
            .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .db()?
            .collect::<rusqlite::Result<_>>()
            .db()?;
        let n = moved.len() as u64;
        for (id, queue, batch_id) in moved {
            ctx.counts.moved(&queue, JobState::Delayed, JobState::Waiting);
            let id = drover_core::JobId::from_trusted(id);
            ctx.event(|| PendingEvent::job(EventKind::Waiting, &id, &queue, batch_id.as_deref(), now, Value::Null));
        }
        n
    } else {
        // The counts need each moved job's queue; counting first also spares
        // the update in the usual case, when nothing is due (this runs before
        // every claim). Both read the same transaction, so they agree.
        let due: Vec<(String, i64)> = ctx
            .conn
            .prepare_cached("SELECT queue, count(*) FROM jobs WHERE state = 'delayed' AND run_at <= ?1 GROUP BY queue")
            .db()?
            .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?
            .collect::<rusqlite::Result<_>>()
            .db()?;
        if due.is_empty() {
            return Ok(0);
        }
        let n = ctx
            .conn
            .prepare_cached("UPDATE jobs SET state = 'waiting' WHERE state = 'delayed' AND run_at <= ?1")
            .db()?
            .execute([now.0])
            .db()? as u64;
        for (queue, k) in &due {
            ctx.counts.add(queue, JobState::Delayed, -k);
            ctx.counts.add(queue, JobState::Waiting, *k);
        }
        n
    };
    if promoted > 0 {
        ctx.ready = true;
    }
    Ok(promoted)
}

/// [`drover_store::Store::job_claim`].
///
/// Each queue's ready index is read separately, up to what the queue may
/// start, in claim order, and the short lists are merged here: an
/// `IN (...) ORDER BY` over several queues would sort the whole ready set.
/// Flow control (caps, rate limits, holds) goes through a [`Gate`].
pub(crate) fn claim(ctx: &mut Ctx<'_>, p: &JobClaimParams) -> StoreResult<Vec<ClaimedJob>> {
    promote(ctx)?;
    // Before picking: a job past its TTL must never be handed out.
    crate::expire::expire_due(ctx)?;
    if p.max == 0 || p.queues.is_empty() {
        return Ok(Vec::new());
    }
    let max = p.max as usize;
    let mut queues: Vec<&str> = p.queues.iter().map(String::as_str).collect();
    queues.sort_unstable();
    queues.dedup();

    let mut gate = Gate::open(ctx.conn, ctx.now())?;
    // Candidates are read whole, so that claiming costs one update per job
    // and no second lookup; a multi-queue claim decodes a few rows it drops.
    let mut picked: Vec<(i64, drover_core::Job)> = Vec::with_capacity(max.min(1024));
    for queue in &queues {
        let stored: Option<(bool, Option<QueueConfig>)> = ctx
            .conn
            .prepare_cached("SELECT paused, config FROM queues WHERE name = ?1")
            .db()?
            .query_row([queue], |r| Ok((r.get(0)?, rows::opt_json(r, 1)?)))
            .optional()
            .db()?;
        let (paused, config) = stored.unwrap_or_default();
        if paused {
            continue;
        }
        let active = if config.as_ref().is_some_and(|c| c.concurrency.is_some()) { active_in(ctx, queue)? } else { 0 };
        let room = gate.queue_room(ctx.conn, queue, config.as_ref(), active)?;
        let want = max.min(room as usize);
        if want == 0 {
            continue;
        }
        if gate.keyed() {
            pick_keyed(ctx, &mut gate, queue, want, &mut picked)?;
        } else {
            pick_in_order(ctx, queue, want, &mut picked)?;
        }
    }
    if queues.len() > 1 {
        picked.sort_unstable_by_key(|(seq, job)| (job.priority, job.run_at, *seq));
        for (_, job) in picked.iter().skip(max) {
            if let Some(key) = &job.rate_limit_key {
                gate.untake_key(key);
            }
        }
        picked.truncate(max);
    }
    let mut taken: HashMap<&str, u32> = HashMap::new();
    for (_, job) in &picked {
        if let Some(queue) = queues.iter().find(|q| **q == job.queue) {
            *taken.entry(queue).or_default() += 1;
        }
    }
    if gate.close(ctx, &taken)? {
        ctx.cap_reached();
    }

    let now = ctx.now();
    let expires = now.plus(Duration::from_millis(p.lease_ms));
    let mut claimed = Vec::with_capacity(picked.len());
    // A plain update, not `UPDATE ... RETURNING`: SQLite runs RETURNING
    // through a trigger program and a statement journal, which costs more
    // than patching the job read above the same way.
    let mut activate = ctx
        .conn
        .prepare_cached(
            "UPDATE jobs SET state = 'active', lease_token = ?1, lease_expires_at = ?2, started_at = ?3, \
             worker_id = ?4, attempts_made = attempts_made + 1, attempt_seq = attempt_seq + 1, \
             cancel_requested = 0 WHERE seq = ?5",
        )
        .db()?;
    for (seq, mut job) in picked {
        let lease_token = LeaseToken::generate();
        activate.execute(params![lease_token.0, expires.0, now.0, p.worker_id, seq]).db()?;
        ctx.leases.insert(lease_token, seq);
        ctx.counts.moved(&job.queue, JobState::Waiting, JobState::Active);
        job.state = JobState::Active;
        job.attempts_made += 1;
        job.started_at = Some(now);
        job.worker_id = Some(p.worker_id.clone());
        job.lease_expires_at = Some(expires);
        job.cancel_requested = false;
        ctx.event(|| {
            PendingEvent::job(EventKind::Active, &job.id, &job.queue, job.batch_id.as_deref(), now, Value::Null)
        });
        claimed.push(ClaimedJob { attempt: job.attempts_made, job, lease_token, lease_expires_at: expires });
    }
    Ok(claimed)
}

/// Active jobs of `queue`, as `queue_counts` will hold them at commit.
fn active_in(ctx: &Ctx<'_>, queue: &str) -> StoreResult<u64> {
    let stored: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT n FROM queue_counts WHERE queue = ?1 AND state = 'active'")
        .db()?
        .query_row([queue], |r| r.get(0))
        .optional()
        .db()?;
    Ok((stored.unwrap_or(0) + ctx.counts.get(queue, JobState::Active)).max(0) as u64)
}

/// The first `want` ready jobs of `queue`, in claim order: no key is limited.
fn pick_in_order(
    ctx: &Ctx<'_>,
    queue: &str,
    want: usize,
    picked: &mut Vec<(i64, drover_core::Job)>,
) -> StoreResult<()> {
    let mut ready = ctx
        .conn
        .prepare_cached(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE queue = ?1 AND state = 'waiting' ORDER BY priority, run_at, seq LIMIT ?2"
        ))
        .db()?;
    for row in ready.query_map(params![queue, want as i64], |r| Ok((r.get(0)?, rows::job(r)?))).db()? {
        picked.push(row.db()?);
    }
    Ok(())
}

/// How many ready jobs held back by their key a claim steps over before it
/// gives up on a queue. Bounds the cost of a claim when a large backlog of
/// one held-back key sits at the head of the queue; jobs of other keys
/// behind more than this many wait until the backlog moves (ADR 0008).
const MAX_SKIPPED: usize = 10_000;

/// Up to `want` ready jobs of `queue` in claim order whose rate-limit key
/// lets them start: jobs of a key at its cap, out of its rate, or held back
/// are stepped over, so later jobs of other keys still run.
fn pick_keyed(
    ctx: &Ctx<'_>,
    gate: &mut Gate,
    queue: &str,
    want: usize,
    picked: &mut Vec<(i64, drover_core::Job)>,
) -> StoreResult<()> {
    let mut seqs = Vec::with_capacity(want);
    {
        let mut ready = ctx
            .conn
            .prepare_cached(
                "SELECT seq, rate_limit_key FROM jobs WHERE queue = ?1 AND state = 'waiting' \
                 ORDER BY priority, run_at, seq",
            )
            .db()?;
        let mut rows = ready.query([queue]).db()?;
        let mut skipped = 0;
        while seqs.len() < want && skipped < MAX_SKIPPED {
            let Some(row) = rows.next().db()? else { break };
            let seq: i64 = row.get(0).db()?;
            let key: Option<String> = row.get(1).db()?;
            let allowed = match &key {
                None => true,
                Some(key) => gate.take_key(ctx.conn, key)?,
            };
            if allowed {
                seqs.push(seq);
            } else {
                skipped += 1;
            }
        }
    }
    let mut by_seq = ctx.conn.prepare_cached(concat!("SELECT ", job_cols!(), " FROM jobs WHERE seq = ?1")).db()?;
    for seq in seqs {
        picked.push(by_seq.query_row([seq], |r| Ok((r.get(0)?, rows::job(r)?))).db()?);
    }
    Ok(())
}

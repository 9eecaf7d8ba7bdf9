//! Claims, with the TTL expiry and the promotion of due delayed jobs that
//! precede them: `job_claim`, an inherent method of [`PgStore`] until the
//! `Store` trait is implemented whole (ADR 0009).

use crate::PgStore;
use crate::counts::Counts;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::maintenance;
use crate::rows::{self, JOB_COLS};
use drover_core::{EventKind, JobId, JobState, LeaseToken, QueueConfig, Timestamp};
use drover_store::{ClaimedJob, JobClaimParams, PendingEvent, StoreError, StoreResult};
use serde_json::Value;

use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::time::Duration;

/// `Store::job_next_due`.
pub(crate) async fn job_next_due(store: &PgStore, queues: &[String]) -> StoreResult<Option<Timestamp>> {
    let _ = queues;
    todo!("issue 5: job_next_due")
}

/// Claims up to `max` ready jobs from `queues` for one worker. Becomes
/// `Store::job_claim` and follows its contract, in one transaction:
/// unstarted jobs past their `expires_at` fail as `expired` (never
/// handed out), due `delayed` jobs become `waiting`, then each queue
/// that is not paused (nor held back by a handler's rate-limit
/// deferral) gives its first ready jobs in claim order (priority,
/// `run_at`, enqueue order) with `FOR UPDATE SKIP LOCKED`, one
/// statement per queue; the lists are merged in claim order and cut at
/// `max`, and the jobs become `active` in one update, each with a fresh
/// lease token. Jobs whose `rate_limit_key` is held back are stepped
/// over. Parallel claimers, on one server or several, skip each other's
/// locked rows: no job goes to two, none waits.
///
/// Not yet: caps and rate limits (a queue `concurrency` or
/// `rate_limit`, key rules), which need the scope locks of ADR 0009. A
/// claim that would have to enforce one is refused with
/// [`StoreError::Invalid`] ("not supported by the PostgreSQL store
/// yet") rather than over-starting; the PostgreSQL store has no method
/// that sets them yet. Events (`job:waiting`, `job:active`, `job:failed`)
/// come with the events table; none are published yet.
pub(crate) async fn job_claim(store: &PgStore, p: JobClaimParams) -> StoreResult<Vec<ClaimedJob>> {
    let mut w = store.begin().await?;
    let result = claim_in(&mut w.tx, &mut w.fx, &p).await;
    store.commit(w, result).await
}

/// The claim's transaction body.
async fn claim_in(conn: &mut PgConnection, fx: &mut Effects, p: &JobClaimParams) -> StoreResult<Vec<ClaimedJob>> {
    let now = fx.now;
    maintenance::expire_due(conn, fx).await?;
    promote_due(conn, fx).await?;
    let claimed = if p.max == 0 || p.queues.is_empty() {
        Vec::new()
    } else {
        pick_and_activate(conn, p, now, &mut fx.counts).await?
    };
    Ok(claimed)
}

/// `delayed` jobs whose `run_at` has passed become `waiting` (the delayed
/// index's head, rows locked elsewhere skipped); returns how many.
pub(crate) async fn promote_due(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<u64> {
    let moved = sqlx::query(
        "UPDATE jobs SET state = 'waiting' FROM (SELECT seq FROM jobs WHERE state = 'delayed' AND run_at <= $1 \
         FOR UPDATE SKIP LOCKED) AS due WHERE jobs.seq = due.seq RETURNING jobs.id, jobs.queue, jobs.batch_id",
    )
    .bind(fx.now.0)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    for row in &moved {
        let id = JobId::from_trusted(row.try_get(0).db()?);
        let queue: &str = row.try_get(1).db()?;
        let batch_id: Option<&str> = row.try_get(2).db()?;
        fx.counts.moved(queue, JobState::Delayed, JobState::Waiting);
        fx.event(PendingEvent::job(EventKind::Waiting, &id, queue, batch_id, fx.now, Value::Null));
    }
    if !moved.is_empty() {
        fx.ready = true;
    }
    Ok(moved.len() as u64)
}

/// Picks per queue, merges, activates.
async fn pick_and_activate(
    conn: &mut PgConnection,
    p: &JobClaimParams,
    now: Timestamp,
    counts: &mut Counts,
) -> StoreResult<Vec<ClaimedJob>> {
    let mut queues: Vec<&str> = p.queues.iter().map(String::as_str).collect();
    queues.sort_unstable();
    queues.dedup();

    // Queue settings and holds, for all the queues in one round trip.
    let settings = sqlx::query(
        "SELECT q.name, coalesce(s.paused, false), s.config, t.held_until \
         FROM unnest($1::text[]) AS q(name) \
         LEFT JOIN queues s ON s.name = q.name \
         LEFT JOIN throttles t ON t.scope = 'q:' || q.name AND t.held_until > $2",
    )
    .bind(&queues)
    .bind(now.0)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut open: Vec<String> = Vec::with_capacity(queues.len());
    for row in &settings {
        let name: String = row.try_get(0).db()?;
        let paused: bool = row.try_get(1).db()?;
        let config: Option<QueueConfig> = rows::opt_json(row, 2)?;
        let held: Option<i64> = row.try_get(3).db()?;
        if config.as_ref().is_some_and(|c| c.concurrency.is_some() || c.rate_limit.is_some()) {
            return Err(StoreError::invalid(
                "queues",
                format!("queue {name} has a concurrency cap or rate limit: not supported by the PostgreSQL store yet"),
            ));
        }
        if !paused && held.is_none() {
            open.push(name);
        }
    }
    let rules: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rate_limit_rules)").fetch_one(&mut *conn).await.db()?;
    if rules {
        return Err(StoreError::invalid(
            "queues",
            "rate-limit key rules are not supported by the PostgreSQL store yet",
        ));
    }
    open.sort_unstable();

    // One statement per queue, reading the head of `jobs_ready` (its
    // terms are repeated as literals). A job whose key a handler's
    // deferral holds back is stepped over.
    let pick = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE state = 'waiting' AND queue = $1 \
         AND (rate_limit_key IS NULL OR NOT EXISTS (SELECT 1 FROM throttles t \
              WHERE t.scope = 'k:' || jobs.rate_limit_key AND t.held_until > $3)) \
         ORDER BY priority, run_at, seq LIMIT $2 FOR UPDATE OF jobs SKIP LOCKED"
    );
    let max = p.max as usize;
    let mut picked: Vec<(i64, drover_core::Job)> = Vec::new();
    for queue in &open {
        let found = sqlx::query(sqlx::AssertSqlSafe(pick.clone()))
            .bind(queue)
            .bind(i64::from(p.max))
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await
            .db()?;
        for row in &found {
            picked.push(rows::job(row)?);
        }
    }
    if open.len() > 1 {
        picked.sort_unstable_by_key(|(seq, job)| (job.priority, job.run_at, *seq));
        // The rows beyond stay locked until commit and are then free again.
        picked.truncate(max);
    }
    if picked.is_empty() {
        return Ok(Vec::new());
    }

    let expires = now.plus(Duration::from_millis(p.lease_ms));
    let tokens: Vec<LeaseToken> = picked.iter().map(|_| LeaseToken::generate()).collect();
    let seqs: Vec<i64> = picked.iter().map(|(seq, _)| *seq).collect();
    let raw_tokens: Vec<i64> = tokens.iter().map(|t| t.0).collect();
    let activated = sqlx::query(
        "UPDATE jobs SET state = 'active', lease_token = l.token, lease_expires_at = $3, started_at = $4, \
         worker_id = $5, attempts_made = attempts_made + 1, attempt_seq = attempt_seq + 1, \
         cancel_requested = false FROM unnest($1::bigint[], $2::bigint[]) AS l(job, token) \
         WHERE jobs.seq = l.job",
    )
    .bind(&seqs)
    .bind(&raw_tokens)
    .bind(expires.0)
    .bind(now.0)
    .bind(&p.worker_id)
    .execute(&mut *conn)
    .await
    .db()?;
    if activated.rows_affected() != seqs.len() as u64 {
        return Err(StoreError::Backend(format!(
            "claim locked {} jobs but activated {}",
            seqs.len(),
            activated.rows_affected()
        )));
    }

    let mut claimed = Vec::with_capacity(picked.len());
    let mut by_queue: HashMap<String, i64> = HashMap::new();
    for ((_, mut job), lease_token) in picked.into_iter().zip(tokens) {
        *by_queue.entry(job.queue.clone()).or_default() += 1;
        job.state = JobState::Active;
        job.attempts_made += 1;
        job.started_at = Some(now);
        job.worker_id = Some(p.worker_id.clone());
        job.lease_expires_at = Some(expires);
        job.cancel_requested = false;
        claimed.push(ClaimedJob { attempt: job.attempts_made, job, lease_token, lease_expires_at: expires });
    }
    for (queue, n) in by_queue {
        counts.add(&queue, JobState::Waiting, -n);
        counts.add(&queue, JobState::Active, n);
    }
    Ok(claimed)
}

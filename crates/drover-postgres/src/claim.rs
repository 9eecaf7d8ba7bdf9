//! Claims, with the promotion of due delayed jobs and the TTL expiry that
//! precede them (as SQLite's `claim.rs`), and `job_next_due`.
//!
//! Parallel claimers, on one server or several, take rows with `FOR
//! UPDATE SKIP LOCKED`: no job goes to two, none waits for another's rows.
//! Caps and rate limits go through a [`Gate`] (`limits.rs`), which
//! serialises the claims of each limited queue or key (ADR 0009).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::limits::{self, Gate, Throttle};
use crate::maintenance;
use crate::rows::{self, JOB_COLS};
use drover_core::{EventKind, Job, JobId, JobState, KeyLimit, LeaseToken, QueueConfig, Timestamp};
use drover_store::{ClaimedJob, JobClaimParams, PendingEvent, StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// `Store::job_next_due`: the earliest of the next `run_at` of a delayed
/// job in `queues` (all queues when empty) and the next instant a rate
/// window or a hold lets a held-back job go (any scope, as SQLite); `None`
/// when neither exists. One statement.
pub(crate) async fn job_next_due(store: &PgStore, queues: &[String]) -> StoreResult<Option<Timestamp>> {
    let now = store.now();
    let delayed = if queues.is_empty() {
        "SELECT min(run_at) FROM jobs WHERE state = 'delayed'"
    } else {
        "SELECT min(run_at) FROM jobs WHERE state = 'delayed' AND queue = ANY($2)"
    };
    // `least` skips NULLs.
    let sql = format!("SELECT least(({delayed}), ({}))", limits::NEXT_CHANGE);
    let mut conn = store.pool().acquire().await.db()?;
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now.0);
    if !queues.is_empty() {
        query = query.bind(queues);
    }
    let at: Option<i64> = query.fetch_one(&mut *conn).await.db()?;
    Ok(at.map(Timestamp))
}

/// `Store::job_claim`: up to `max` ready jobs from `queues` for one worker,
/// in one transaction. Due `delayed` jobs become `waiting` (`job:waiting`)
/// and unstarted jobs past their `expires_at` fail as `expired` (never
/// handed out); then each queue that is not paused gives its first ready
/// jobs in claim order (priority, `run_at`, enqueue order), as many as its
/// cap, rate window and hold allow, stepping over jobs whose
/// `rate_limit_key` is out of room; the lists are merged in claim order
/// and cut at `max`, and the jobs become `active` in one update, each with
/// a fresh lease token. Events, in SQLite's order: `job:waiting`,
/// `job:failed`, `queue:throttled` for each queue whose rate limit this
/// claim used up, then `job:active` per claimed job.
///
/// Across servers: rows are taken `FOR UPDATE SKIP LOCKED`; a limited
/// queue's claims run one at a time (an advisory lock, waited for); a
/// limited key is served by one claim at a time (a try-lock; a claim that
/// finds it busy steps over its jobs). Unlimited queues take no lock.
pub(crate) async fn job_claim(store: &PgStore, p: JobClaimParams) -> StoreResult<Vec<ClaimedJob>> {
    let mut w = store.begin().await?;
    let result = claim_in(&mut w.tx, &mut w.fx, &p, &*store.clock).await;
    store.commit(w, result).await
}

/// The claim's transaction body.
async fn claim_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    p: &JobClaimParams,
    clock: &dyn drover_core::Clock,
) -> StoreResult<Vec<ClaimedJob>> {
    let mut queues: Vec<&str> = p.queues.iter().map(String::as_str).collect();
    queues.sort_unstable();
    queues.dedup();
    let claims = p.max > 0 && !queues.is_empty();
    // Usually nothing is due: the settings query (or, with nothing to
    // claim, one of its own) says so, instead of the two statements that
    // would find nothing (their index heads, as literals).
    let (settings, delayed_due, expiring_due) = if claims {
        let settings = read_settings(conn, &queues, fx.now).await?;
        let first = settings.first().ok_or_else(|| crate::fx::vanished("the settings row of a claimed queue"))?;
        let due: (bool, bool) = (first.try_get(7).db()?, first.try_get(8).db()?);
        (settings, due.0, due.1)
    } else {
        let due: (bool, bool) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {DUE}")))
            .bind(fx.now.0)
            .fetch_one(&mut *conn)
            .await
            .db()?;
        (Vec::new(), due.0, due.1)
    };
    // SQLite's order (so are the events'): promote, then expire.
    if delayed_due {
        promote_due(conn, fx).await?;
    }
    // Before picking: a job past its TTL must never be handed out.
    if expiring_due {
        maintenance::expire_due(conn, fx).await?;
    }
    if !claims {
        return Ok(Vec::new());
    }
    pick_and_activate(conn, fx, p, settings, clock).await
}

/// Whether delayed jobs are due and unstarted jobs have expired at `$1`
/// (now): two columns, reading the heads of `jobs_delayed` and
/// `jobs_expiring`.
const DUE: &str = "EXISTS (SELECT 1 FROM jobs WHERE state = 'delayed' AND run_at <= $1), \
     EXISTS (SELECT 1 FROM jobs WHERE expires_at IS NOT NULL AND started_at IS NULL \
             AND state IN ('waiting', 'delayed') AND expires_at <= $1)";

/// One round trip for the common case, no flow control in use: one row per
/// queue in `queues` (`$2`) with its pause flag, config and throttle row
/// (columns 0-4), the key rules and whether keys must be looked at (a rule
/// exists, or else a key is held; 5-6), and [`DUE`] (7-8). The
/// uncorrelated subqueries run once, the scan of `throttles` only when no
/// rule exists.
async fn read_settings(conn: &mut PgConnection, queues: &[&str], now: Timestamp) -> StoreResult<Vec<PgRow>> {
    let sql = format!(
        "SELECT q.name, coalesce(s.paused, false), s.config, t.starts, t.held_until, \
         (SELECT jsonb_agg(jsonb_build_array(r.key, r.config)) FROM rate_limit_rules r), \
         EXISTS (SELECT 1 FROM rate_limit_rules) \
         OR EXISTS (SELECT 1 FROM throttles h WHERE starts_with(h.scope, 'k:') AND h.held_until > $1), {DUE} \
         FROM unnest($2::text[]) AS q(name) \
         LEFT JOIN queues s ON s.name = q.name \
         LEFT JOIN throttles t ON t.scope = 'q:' || q.name"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now.0).bind(queues).fetch_all(&mut *conn).await.db()
}

/// `delayed` jobs whose `run_at` has passed become `waiting` (the delayed
/// index's head, rows locked elsewhere skipped); returns how many.
pub(crate) async fn promote_due(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<u64> {
    let moved = sqlx::query(
        "UPDATE jobs SET state = 'waiting' FROM (SELECT seq FROM jobs WHERE state = 'delayed' AND run_at <= $1 \
         FOR UPDATE SKIP LOCKED) AS due WHERE jobs.seq = due.seq \
         RETURNING jobs.seq, jobs.id, jobs.queue, jobs.batch_id",
    )
    .bind(fx.now.0)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut promoted = Vec::with_capacity(moved.len());
    for row in &moved {
        let seq: i64 = row.try_get(0).db()?;
        let id = JobId::from_trusted(row.try_get(1).db()?);
        let queue: String = row.try_get(2).db()?;
        let batch_id: Option<String> = row.try_get(3).db()?;
        promoted.push((seq, id, queue, batch_id));
    }
    // Events in a stable order (SQLite's follows its table order).
    promoted.sort_unstable_by_key(|(seq, ..)| *seq);
    for (_, id, queue, batch_id) in &promoted {
        fx.counts.moved(queue, JobState::Delayed, JobState::Waiting);
        fx.event(PendingEvent::job(EventKind::Waiting, id, queue, batch_id.as_deref(), fx.now, Value::Null));
    }
    if !promoted.is_empty() {
        fx.ready = true;
    }
    Ok(promoted.len() as u64)
}

/// A queue the claim may take jobs from: not paused.
struct OpenQueue {
    name: String,
    config: Option<QueueConfig>,
    /// Its throttle row as read before any lock (for its hold).
    throttle: Throttle,
}

/// From the queues' settings ([`read_settings`]): opens the gate, picks per queue, merges,
/// writes the windows back, activates.
async fn pick_and_activate(
    conn: &mut PgConnection,
    fx: &mut Effects,
    p: &JobClaimParams,
    settings: Vec<PgRow>,
    clock: &dyn drover_core::Clock,
) -> StoreResult<Vec<ClaimedJob>> {
    let now = fx.now;
    let max = p.max as usize;
    let mut open: Vec<OpenQueue> = Vec::with_capacity(settings.len());
    let mut rules: Vec<(String, KeyLimit)> = Vec::new();
    let mut keyed = false;
    for (i, row) in settings.iter().enumerate() {
        if i == 0 {
            rules = rows::opt_json(row, 5)?.unwrap_or_default();
            keyed = row.try_get(6).db()?;
        }
        let paused: bool = row.try_get(1).db()?;
        if paused {
            continue;
        }
        open.push(OpenQueue {
            name: row.try_get(0).db()?,
            config: rows::opt_json(row, 2)?,
            throttle: Throttle::from_row(row, 3)?,
        });
    }
    open.sort_unstable_by(|a, b| a.name.cmp(&b.name));

    let mut gate = Gate::new(now, rules, keyed);
    let limited: Vec<(&str, &QueueConfig)> = open
        .iter()
        .filter_map(|q| q.config.as_ref().filter(|c| limits::queue_is_limited(Some(c))).map(|c| (q.name.as_str(), c)))
        .collect();
    gate.lock_queues(conn, &limited, clock).await?;
    fx.now = gate.now();

    // The common case, one queue and no flow control to apply: pick and
    // activate in one statement.
    if let [queue] = open.as_slice()
        && limited.is_empty()
        && !gate.keyed()
    {
        let want = max.min(gate.queue_room(&queue.name, &queue.throttle) as usize);
        let claimed =
            if want == 0 { Vec::new() } else { pick_and_activate_in_order(conn, fx, p, &queue.name, want).await? };
        let taken = HashMap::from([(queue.name.as_str(), claimed.len() as u32)]);
        gate.close(conn, fx, &taken).await?;
        return Ok(claimed);
    }

    let mut picked: Vec<(i64, Job)> = Vec::new();
    for queue in &open {
        let room = gate.queue_room(&queue.name, &queue.throttle);
        let want = max.min(room as usize);
        if want == 0 {
            continue;
        }
        if gate.keyed() {
            pick_keyed(conn, &mut gate, &queue.name, want, &mut picked).await?;
        } else {
            pick_in_order(conn, &queue.name, want, &mut picked).await?;
        }
    }
    if open.len() > 1 || gate.keyed() {
        picked.sort_unstable_by_key(|(seq, job)| (job.priority, job.run_at, *seq));
    }
    if picked.len() > max {
        // The rows beyond stay locked until commit and are then free again.
        for (_, job) in picked.drain(max..) {
            if let Some(key) = &job.rate_limit_key {
                gate.untake_key(key);
            }
        }
    }
    let mut taken: HashMap<&str, u32> = HashMap::new();
    for (_, job) in &picked {
        *taken.entry(job.queue.as_str()).or_default() += 1;
    }
    gate.close(conn, fx, &taken).await?;
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    activate(conn, fx, p, picked).await
}

/// The first `want` ready jobs of `queue`, in claim order, locked: no key
/// is limited. One statement, reading the head of `jobs_ready` (its terms
/// are repeated as literals).
async fn pick_in_order(
    conn: &mut PgConnection,
    queue: &str,
    want: usize,
    picked: &mut Vec<(i64, Job)>,
) -> StoreResult<()> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE state = 'waiting' AND queue = $1 \
         ORDER BY priority, run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let found = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(queue).bind(want as i64).fetch_all(&mut *conn).await.db()?;
    for row in &found {
        picked.push(rows::job(row)?);
    }
    Ok(())
}

/// [`pick_in_order`] and [`activate`] in one statement: the first `want`
/// ready jobs of `queue`, locked `SKIP LOCKED`, become active, each with
/// one of the fresh lease tokens (handed out by pick order). Returned in
/// claim order, with `job:active` per job.
async fn pick_and_activate_in_order(
    conn: &mut PgConnection,
    fx: &mut Effects,
    p: &JobClaimParams,
    queue: &str,
    want: usize,
) -> StoreResult<Vec<ClaimedJob>> {
    let now = fx.now;
    let expires = now.plus(Duration::from_millis(p.lease_ms));
    let tokens: Vec<i64> = (0..want).map(|_| LeaseToken::generate().0).collect();
    let sql = format!(
        "WITH picked AS (SELECT pick.seq AS picked_seq, row_number() OVER () AS i FROM \
             (SELECT seq FROM jobs WHERE state = 'waiting' AND queue = $1 \
              ORDER BY priority, run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED) AS pick) \
         UPDATE jobs SET state = 'active', lease_token = ($3::bigint[])[picked.i], lease_expires_at = $4, \
             started_at = $5, worker_id = $6, attempts_made = attempts_made + 1, attempt_seq = attempt_seq + 1, \
             cancel_requested = false \
         FROM picked WHERE jobs.seq = picked.picked_seq RETURNING {JOB_COLS}, jobs.lease_token"
    );
    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(want as i64)
        .bind(&tokens)
        .bind(expires.0)
        .bind(now.0)
        .bind(&p.worker_id)
        .fetch_all(&mut *conn)
        .await
        .db()?;
    let mut activated = Vec::with_capacity(found.len());
    for row in &found {
        let (seq, job) = rows::job(row)?;
        let token: i64 = row.try_get(rows::JOB_COLS_LEN).db()?;
        activated.push((seq, job, LeaseToken(token)));
    }
    // `RETURNING` keeps no order.
    activated.sort_unstable_by_key(|(seq, job, _)| (job.priority, job.run_at, *seq));
    let mut claimed = Vec::with_capacity(activated.len());
    for (_, job, lease_token) in activated {
        fx.counts.moved(&job.queue, JobState::Waiting, JobState::Active);
        fx.event(PendingEvent::job(EventKind::Active, &job.id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        claimed.push(ClaimedJob { attempt: job.attempts_made, job, lease_token, lease_expires_at: expires });
    }
    Ok(claimed)
}

/// How many ready jobs held back by their key a claim steps over before it
/// gives up on a queue (as SQLite, ADR 0008).
const MAX_SKIPPED: usize = 10_000;

/// Rows of the ready index read per page by [`pick_keyed`], at least.
const PAGE: usize = 64;

/// How far ahead of the rows it must still examine a keyed claim meets
/// keys (try-locks their scopes): a few rows more per round trip, without
/// holding keys it will not serve.
const MEET_AHEAD: usize = 16;

/// One row of the ready index, as a keyed claim walks it.
struct Candidate {
    seq: i64,
    priority: i32,
    run_at: i64,
    key: Option<String>,
}

/// Up to `want` ready jobs of `queue` in claim order whose rate-limit key
/// lets them start: jobs of a key at its cap, out of its rate, held back,
/// or being served by another claimer are stepped over, so later jobs of
/// other keys still run.
///
/// The ready index is read in pages without locks (`seq` and key only);
/// the keys met are resolved through the gate a few rows ahead; the chosen
/// rows are then locked `SKIP LOCKED` and read whole. A row another
/// claimer took meanwhile gives its key's start back, and the walk goes on.
async fn pick_keyed(
    conn: &mut PgConnection,
    gate: &mut Gate,
    queue: &str,
    want: usize,
    picked: &mut Vec<(i64, Job)>,
) -> StoreResult<()> {
    let page = want.saturating_mul(2).clamp(PAGE, 1_000);
    let mut after: Option<(i32, i64, i64)> = None;
    let mut got = 0;
    let mut skipped = 0;
    loop {
        let rows = ready_page(conn, queue, after, page).await?;
        let full = rows.len() == page;
        let mut chosen: Vec<usize> = Vec::new();
        let mut examined = 0;
        while examined < rows.len() && got + chosen.len() < want && skipped < MAX_SKIPPED {
            let row = &rows[examined];
            if let Some(key) = &row.key {
                let ahead = (want - got - chosen.len()).max(MEET_AHEAD);
                let upcoming = rows[examined..].iter().take(ahead).filter_map(|r| r.key.as_deref());
                gate.meet_keys(conn, upcoming).await?;
                if !gate.take_key(key) {
                    skipped += 1;
                    examined += 1;
                    continue;
                }
            }
            chosen.push(examined);
            examined += 1;
        }
        if !chosen.is_empty() {
            let seqs: Vec<i64> = chosen.iter().map(|&i| rows[i].seq).collect();
            let sql =
                format!("SELECT {JOB_COLS} FROM jobs WHERE seq = ANY($1) AND state = 'waiting' FOR UPDATE SKIP LOCKED");
            let locked = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&seqs).fetch_all(&mut *conn).await.db()?;
            let mut mine: HashSet<i64> = HashSet::with_capacity(locked.len());
            for row in &locked {
                let (seq, job) = rows::job(row)?;
                mine.insert(seq);
                picked.push((seq, job));
            }
            got += mine.len();
            for &i in &chosen {
                if !mine.contains(&rows[i].seq)
                    && let Some(key) = &rows[i].key
                {
                    gate.untake_key(key);
                }
            }
        }
        let exhausted = examined == rows.len() && !full;
        if got >= want || skipped >= MAX_SKIPPED || exhausted || examined == 0 {
            return Ok(());
        }
        // Rows another claimer took are given up for later ones: the walk
        // goes on after the last row examined.
        let last = &rows[examined - 1];
        after = Some((last.priority, last.run_at, last.seq));
    }
}

/// Up to `limit` rows of `queue`'s ready index in claim order, after
/// `after` (`priority, run_at, seq`) when given; no locks.
async fn ready_page(
    conn: &mut PgConnection,
    queue: &str,
    after: Option<(i32, i64, i64)>,
    limit: usize,
) -> StoreResult<Vec<Candidate>> {
    let found = match after {
        None => sqlx::query(
            "SELECT seq, priority, run_at, rate_limit_key FROM jobs WHERE state = 'waiting' AND queue = $1 \
             ORDER BY priority, run_at, seq LIMIT $2",
        )
        .bind(queue)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await
        .db()?,
        Some((priority, run_at, seq)) => sqlx::query(
            "SELECT seq, priority, run_at, rate_limit_key FROM jobs WHERE state = 'waiting' AND queue = $1 \
             AND (priority, run_at, seq) > ($3, $4, $5) ORDER BY priority, run_at, seq LIMIT $2",
        )
        .bind(queue)
        .bind(limit as i64)
        .bind(priority)
        .bind(run_at)
        .bind(seq)
        .fetch_all(&mut *conn)
        .await
        .db()?,
    };
    found
        .iter()
        .map(|row| {
            Ok(Candidate {
                seq: row.try_get(0).db()?,
                priority: row.try_get(1).db()?,
                run_at: row.try_get(2).db()?,
                key: row.try_get(3).db()?,
            })
        })
        .collect()
}

/// Makes the picked (locked) jobs `active` in one update, each with a
/// fresh lease token, and records their counts and `job:active` events.
async fn activate(
    conn: &mut PgConnection,
    fx: &mut Effects,
    p: &JobClaimParams,
    picked: Vec<(i64, Job)>,
) -> StoreResult<Vec<ClaimedJob>> {
    let now = fx.now;
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
    for ((_, mut job), lease_token) in picked.into_iter().zip(tokens) {
        fx.counts.moved(&job.queue, JobState::Waiting, JobState::Active);
        job.state = JobState::Active;
        job.attempts_made += 1;
        job.started_at = Some(now);
        job.worker_id = Some(p.worker_id.clone());
        job.lease_expires_at = Some(expires);
        job.cancel_requested = false;
        fx.event(PendingEvent::job(EventKind::Active, &job.id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        claimed.push(ClaimedJob { attempt: job.attempts_made, job, lease_token, lease_expires_at: expires });
    }
    Ok(claimed)
}

//! Retention: removing finished jobs beyond their queue's rules (ADR 0005),
//! as the SQLite store's `retention.rs`. Attempts and log lines go with
//! their job through their foreign keys (`ON DELETE CASCADE`).
//!
//! Several servers may sweep at once (ADR 0009). The rows to remove are
//! locked `FOR UPDATE SKIP LOCKED`, so two sweeps take different rows and
//! never wait for each other (nor for a manual retry holding a failed
//! job). Which rows the count rule keeps is decided before any lock is
//! taken: a locked row still counts among the newest, so a sweep may
//! remove too few (the next one catches up), never a job the rule keeps.
//! Every query writes its state as a literal, so the partial index
//! `jobs_finished` serves it.

use crate::PgStore;
use crate::counts::COUNTS_OF_ALL;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows;
use drover_core::{JobState, QueueConfig, RetentionRule, Timestamp};
use drover_store::StoreResult;
use sqlx::{PgConnection, Row};

/// `Store::job_retention_sweep`: removes at most `limit` finished jobs and
/// returns how many it removed.
///
/// It folds the count deltas into `queue_counts` first (as every
/// maintenance tick does), so the count rule starts from fresh counts.
pub(crate) async fn job_retention_sweep(store: &PgStore, limit: u32) -> StoreResult<u64> {
    let mut conn = store.pool().acquire().await.db()?;
    crate::counts::fold_deltas(&mut conn).await?;
    drop(conn);
    if limit == 0 {
        return Ok(0);
    }
    let mut w = store.begin().await?;
    let result = sweep_in(&mut w.tx, &mut w.fx, limit).await;
    store.commit(w, result).await
}

/// The finished jobs of one queue in one state, with the rule that governs
/// them.
struct Held {
    queue: String,
    state: JobState,
    /// How many there are.
    n: i64,
    rule: RetentionRule,
}

/// The sweep's transaction body.
async fn sweep_in(conn: &mut PgConnection, fx: &mut Effects, limit: u32) -> StoreResult<u64> {
    let mut doomed: Vec<i64> = Vec::new();
    for held in held(conn).await? {
        let budget = u64::from(limit) - doomed.len() as u64;
        if budget == 0 {
            break;
        }
        doomed.extend(pick(conn, &held, fx.now, budget).await?);
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    // The rows are ours (locked), so each goes and is counted once.
    let removed = sqlx::query("DELETE FROM jobs WHERE seq = ANY($1) RETURNING queue, state")
        .bind(&doomed)
        .fetch_all(&mut *conn)
        .await
        .db()?;
    for row in &removed {
        fx.counts.add(row.try_get(0).db()?, rows::state(row, 1)?, -1);
    }
    Ok(removed.len() as u64)
}

/// Every `(queue, state)` holding finished jobs, with its rule, in `(queue,
/// state)` order. The counts table knows them without touching the jobs.
async fn held(conn: &mut PgConnection) -> StoreResult<Vec<Held>> {
    let found = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT c.queue, c.state, c.n, q.config FROM ({COUNTS_OF_ALL}) AS c(queue, state, n) \
             LEFT JOIN queues q ON q.name = c.queue \
             WHERE c.state IN ('completed', 'failed', 'cancelled') AND c.n > 0 ORDER BY c.queue, c.state"
    )))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    found
        .iter()
        .map(|row| {
            let state = rows::state(row, 1)?;
            let config: QueueConfig = rows::opt_json(row, 3)?.unwrap_or_default();
            Ok(Held { queue: row.try_get(0).db()?, state, n: row.try_get(2).db()?, rule: rule_for(&config, state) })
        })
        .collect()
}

/// The rule of [`drover_core::Retention`] that governs a finished state:
/// `cancelled` jobs follow the `failed` rule (ADR 0005), counted apart
/// from the failed ones.
fn rule_for(config: &QueueConfig, state: JobState) -> RetentionRule {
    match state {
        JobState::Completed => config.retention.completed,
        _ => config.retention.failed,
    }
}

/// Locks and returns up to `budget` jobs of `held` its rule removes, oldest
/// first: those finished before the age cutoff, and those older than the
/// newest `count`.
async fn pick(conn: &mut PgConnection, held: &Held, now: Timestamp, budget: u64) -> StoreResult<Vec<i64>> {
    // Both rules remove every job ordered (by `finished_at`, then `seq`)
    // before some bound, so the later bound covers both; one bound lets the
    // index serve the query in order. `seq`s start at 1, so `(cutoff, 0)`
    // is "finished before the cutoff".
    let cutoff = held.rule.age_ms.map(|age| (now.0.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)), 0));
    let beyond_count = match held.rule.count {
        Some(count) if held.n > i64::try_from(count).unwrap_or(i64::MAX) => oldest_kept(conn, held, count).await?,
        _ => None,
    };
    let Some((at, seq)) = cutoff.max(beyond_count) else { return Ok(Vec::new()) };
    let sql = format!(
        "SELECT seq FROM jobs WHERE state = '{}' AND queue = $1 AND (finished_at, seq) < ($2, $3) \
         ORDER BY finished_at LIMIT $4 FOR UPDATE SKIP LOCKED",
        held.state.as_str()
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&held.queue)
        .bind(at)
        .bind(seq)
        .bind(i64::try_from(budget).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .db()
}

/// The `(finished_at, seq)` of the oldest job the count rule keeps: every
/// job ordered before it goes. For `count` 0, a bound past every job.
async fn oldest_kept(conn: &mut PgConnection, held: &Held, count: u64) -> StoreResult<Option<(i64, i64)>> {
    if count == 0 {
        return Ok(Some((i64::MAX, i64::MAX)));
    }
    let sql = format!(
        "SELECT finished_at, seq FROM jobs WHERE state = '{}' AND queue = $1 \
         ORDER BY finished_at DESC, seq DESC OFFSET $2 LIMIT 1",
        held.state.as_str()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&held.queue)
        .bind(i64::try_from(count - 1).unwrap_or(i64::MAX))
        .fetch_optional(&mut *conn)
        .await
        .db()?;
    row.map(|row| Ok((row.try_get(0).db()?, row.try_get(1).db()?))).transpose()
}

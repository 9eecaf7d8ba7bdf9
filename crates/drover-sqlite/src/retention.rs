//! Retention: removal of finished jobs beyond their queue's rules, with
//! their attempts and log lines (see [`drover_store::Store::job_retention_sweep`]).
//!
//! Every query here names the partial index `jobs_finished` (migrations
//! 0003 and 0006) through its exact `WHERE` term, `state = 'completed' OR
//! state = 'failed' OR state = 'cancelled'`: SQLite only uses a partial
//! index when the query repeats that term, and without the index each
//! sweep would scan every job.

use crate::error::SqlResultExt;
use crate::rows;
use crate::writer::Ctx;
use drover_core::{JobState, QueueConfig, RetentionRule};
use drover_store::StoreResult;
use rusqlite::params;
use std::collections::HashMap;

/// The finished states, each with the rule of [`drover_core::Retention`]
/// that governs it: `cancelled` jobs follow the `failed` rule (ADR 0005),
/// counted apart from the failed ones.
fn rule_for(config: &QueueConfig, state: JobState) -> RetentionRule {
    match state {
        JobState::Completed => config.retention.completed,
        _ => config.retention.failed,
    }
}

/// [`drover_store::Store::job_retention_sweep`]: removes at most `limit`
/// jobs and returns how many it removed.
pub(crate) fn sweep(ctx: &mut Ctx<'_>, limit: u32) -> StoreResult<u64> {
    let now = ctx.now();
    // Only (queue, state) pairs holding finished jobs matter; the counts
    // table knows them without touching the jobs.
    let held: Vec<(String, JobState, i64)> = ctx
        .conn
        .prepare_cached(
            "SELECT queue, state, n FROM queue_counts \
             WHERE state IN ('completed', 'failed', 'cancelled') AND n > 0 ORDER BY queue, state",
        )
        .db()?
        .query_map([], |r| Ok((r.get(0)?, rows::state(r, 1)?, r.get(2)?)))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    if held.is_empty() {
        return Ok(0);
    }
    let configs: HashMap<String, QueueConfig> = ctx
        .conn
        .prepare_cached("SELECT name, config FROM queues WHERE config IS NOT NULL")
        .db()?
        .query_map([], |r| Ok((r.get(0)?, rows::opt_json::<QueueConfig>(r, 1)?)))
        .db()?
        .filter_map(|r| r.map(|(name, config)| config.map(|c| (name, c))).transpose())
        .collect::<rusqlite::Result<_>>()
        .db()?;
    let default = QueueConfig::default();
    let mut removed = 0u64;
    for (queue, state, held) in held {
        let budget = u64::from(limit).saturating_sub(removed);
        if budget == 0 {
            break;
        }
        let rule = rule_for(configs.get(&queue).unwrap_or(&default), state);
        let mut doomed: Vec<i64> = Vec::new();
        if let Some(age_ms) = rule.age_ms {
            let cutoff = now.0.saturating_sub(i64::try_from(age_ms).unwrap_or(i64::MAX));
            doomed = ctx
                .conn
                .prepare_cached(
                    "SELECT seq FROM jobs WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled') \
                     AND queue = ?1 AND state = ?2 AND finished_at < ?3 ORDER BY finished_at LIMIT ?4",
                )
                .db()?
                .query_map(params![queue, state.as_str(), cutoff, budget as i64], |r| r.get(0))
                .db()?
                .collect::<rusqlite::Result<_>>()
                .db()?;
        }
        // The count rule keeps the newest `count` of what the age rule left.
        let left = held - doomed.len() as i64;
        let room = budget - doomed.len() as u64;
        if let Some(count) = rule.count
            && left > i64::try_from(count).unwrap_or(i64::MAX)
            && room > 0
        {
            // The rows beyond the newest `count` include the age-doomed ones
            // (they are the oldest), so ask for that many more and skip them.
            let older: Vec<i64> = ctx
                .conn
                .prepare_cached(
                    "SELECT seq FROM jobs WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled') \
                     AND queue = ?1 AND state = ?2 ORDER BY finished_at DESC, seq DESC LIMIT ?3 OFFSET ?4",
                )
                .db()?
                .query_map(params![queue, state.as_str(), room as i64 + doomed.len() as i64, count as i64], |r| {
                    r.get(0)
                })
                .db()?
                .collect::<rusqlite::Result<_>>()
                .db()?;
            let known: std::collections::HashSet<i64> = doomed.iter().copied().collect();
            doomed.extend(older.into_iter().filter(|seq| !known.contains(seq)).take(room as usize));
        }
        for &seq in &doomed {
            delete_job(ctx, seq)?;
        }
        ctx.counts.add(&queue, state, -(doomed.len() as i64));
        removed += doomed.len() as u64;
    }
    Ok(removed)
}

/// Deletes one job row with its attempt history and log lines, which hang
/// off its `seq` (migration 0001 has no foreign keys to cascade them).
fn delete_job(ctx: &Ctx<'_>, seq: i64) -> StoreResult<()> {
    for sql in [
        "DELETE FROM job_attempts WHERE job_seq = ?1",
        "DELETE FROM job_logs WHERE job_seq = ?1",
        "DELETE FROM jobs WHERE seq = ?1",
    ] {
        ctx.conn.prepare_cached(sql).db()?.execute([seq]).db()?;
    }
    Ok(())
}

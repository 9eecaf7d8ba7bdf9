//! Maintenance passes every server may run: stall rescue, promotion of due
//! delayed jobs, TTL expiry. Each is idempotent and takes only rows no
//! other transaction holds (`SKIP LOCKED`).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows;
use drover_core::{EventKind, JobError, JobId, JobState};
use drover_store::{PendingEvent, RescueReport, StoreResult};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

/// The error code of a job whose TTL ran out before it started.
pub(crate) const EXPIRED: &str = "expired";

/// `Store::job_rescue_expired`.
pub(crate) async fn job_rescue_expired(store: &PgStore) -> StoreResult<RescueReport> {
    todo!("issue 5: job_rescue_expired")
}

/// `Store::job_promote_due`.
pub(crate) async fn job_promote_due(store: &PgStore) -> StoreResult<u64> {
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

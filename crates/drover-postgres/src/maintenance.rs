//! Maintenance passes every server may run: stall rescue, promotion of due
//! delayed jobs, TTL expiry. Each is idempotent and takes only rows no
//! other transaction holds (`SKIP LOCKED`).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows;
use drover_core::{JobError, JobState};
use drover_store::{RescueReport, StoreResult};
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
/// at or before `now`, with error code `expired` and no attempt. Rows
/// another transaction holds are skipped (it is claiming or finishing
/// them, and expires them itself if due). The terms name `jobs_expiring`.
pub(crate) async fn expire_due(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<u64> {
    let now = fx.now;
    let counts = &mut fx.counts;
    let due = sqlx::query(
        "SELECT seq, queue, state FROM jobs WHERE expires_at IS NOT NULL AND started_at IS NULL \
         AND state IN ('waiting', 'delayed') AND expires_at <= $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now.0)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut seqs = Vec::with_capacity(due.len());
    for row in &due {
        seqs.push(row.try_get::<i64, _>(0).db()?);
        counts.moved(row.try_get::<&str, _>(1).db()?, rows::state(row, 2)?, JobState::Failed);
    }
    let error = JobError::with_code(EXPIRED, "not started before its expires_at");
    sqlx::query("UPDATE jobs SET state = 'failed', error = $1, finished_at = $2 WHERE seq = ANY($3)")
        .bind(Json(&error))
        .bind(now.0)
        .bind(&seqs)
        .execute(&mut *conn)
        .await
        .db()?;
    // TODO(flows helper): events (`job:failed` with `{"error"}`) and the flow hook per job.
    Ok(seqs.len() as u64)
}

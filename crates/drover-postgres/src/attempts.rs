//! Closing attempts: the `job_attempts` rows every path that ends an
//! attempt appends (finish, release, stall rescue), one statement however
//! many.

use crate::error::SqlResultExt;
use drover_core::{AttemptOutcome, JobError, Timestamp};
use drover_store::StoreResult;
use sqlx::PgConnection;

/// One attempt that ended.
pub(crate) struct Closed<'a> {
    /// Its job's `seq`.
    pub seq: i64,
    /// Its number (`attempt_seq` when it was claimed).
    pub attempt: i32,
    /// When it started (`finished_at` when unknown).
    pub started_at: Option<i64>,
    /// The worker that ran it.
    pub worker_id: Option<&'a str>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Its error, for failures and stalls.
    pub error: Option<&'a JobError>,
}

/// Appends `closed`, all ending at `finished_at`, in one statement.
pub(crate) async fn append(conn: &mut PgConnection, finished_at: Timestamp, closed: &[Closed<'_>]) -> StoreResult<()> {
    if closed.is_empty() {
        return Ok(());
    }
    let errors: Vec<Option<String>> =
        closed.iter().map(|c| c.error.map(|e| serde_json::to_string(e).unwrap_or_default())).collect();
    sqlx::query(
        "INSERT INTO job_attempts (job_seq, attempt, started_at, finished_at, outcome, error, worker_id) \
         SELECT s, a, coalesce(st, $1), $1, o, e::jsonb, w \
         FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[]) AS u(s, a, st, o, e, w)",
    )
    .bind(finished_at.0)
    .bind(closed.iter().map(|c| c.seq).collect::<Vec<_>>())
    .bind(closed.iter().map(|c| c.attempt).collect::<Vec<_>>())
    .bind(closed.iter().map(|c| c.started_at).collect::<Vec<_>>())
    .bind(closed.iter().map(|c| c.outcome.as_str()).collect::<Vec<_>>())
    .bind(errors)
    .bind(closed.iter().map(|c| c.worker_id).collect::<Vec<_>>())
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

//! Job TTL: jobs whose `expires_at` passed before they ever started become
//! `failed` with error code `expired` (see
//! [`drover_store::Store::job_expire_due`]).
//!
//! The query names the partial index `jobs_expiring` (migrations 0004, 0006)
//! through its exact `WHERE` terms: jobs without a TTL, and jobs that have
//! started, are not in it, so this costs next to nothing before every claim.

use crate::error::SqlResultExt;
use crate::rows::{self, to_json};
use crate::writer::Ctx;
use drover_core::{EventKind, JobError, JobId, JobState};
use drover_store::{PendingEvent, StoreResult};
use rusqlite::params;
use serde_json::json;

/// The error code of an expired job.
pub(crate) const EXPIRED: &str = "expired";

/// Fails every unstarted `waiting` or `delayed` job whose `expires_at` is
/// at or before now; returns how many.
pub(crate) fn expire_due(ctx: &mut Ctx<'_>) -> StoreResult<u64> {
    let now = ctx.now();
    type Due = (i64, String, String, JobState, Option<String>, Option<String>);
    let due: Vec<Due> = ctx
        .conn
        .prepare_cached(
            "SELECT seq, id, queue, state, batch_id, parent_id FROM jobs \
             WHERE expires_at IS NOT NULL AND started_at IS NULL AND (state = 'waiting' OR state = 'delayed') \
             AND expires_at <= ?1",
        )
        .db()?
        .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, rows::state(r, 3)?, r.get(4)?, r.get(5)?)))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    if due.is_empty() {
        return Ok(0);
    }
    let error = JobError::with_code(EXPIRED, "not started before its expires_at");
    let error_json = to_json(&error);
    let mut expired = 0;
    for (seq, id, queue, state, batch_id, parent_id) in &due {
        // A job of this list may have ended meanwhile (failed by one of its
        // children through the flow hook): only a job still unstarted expires.
        let changed = ctx
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 'failed', error = ?1, finished_at = ?2 \
                 WHERE seq = ?3 AND (state = 'waiting' OR state = 'delayed')",
            )
            .db()?
            .execute(params![error_json, now.0, seq])
            .db()?;
        if changed == 0 {
            continue;
        }
        expired += 1;
        ctx.counts.moved(queue, *state, JobState::Failed);
        let id = JobId::from_trusted(id.clone());
        ctx.event(|| {
            PendingEvent::job(EventKind::Failed, &id, queue, batch_id.as_deref(), now, json!({ "error": error }))
        });
        let ended = crate::flow::EndedJob {
            seq: *seq,
            id: id.as_str(),
            parent_id: parent_id.as_deref(),
            batch_id: batch_id.as_deref(),
            state: JobState::Failed,
        };
        crate::flow::ended(ctx, ended)?;
    }
    Ok(expired)
}

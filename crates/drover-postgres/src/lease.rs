//! Calls a worker makes while it holds a lease: heartbeats, progress, log
//! lines, custom events; and reading a job's log.

use crate::PgStore;
use drover_core::{JobId, LeaseToken, LogEntry, Progress};
use drover_store::{HeartbeatReply, JobEventEmit, JobHeartbeat, JobLogAppend, StoreResult};

/// `Store::job_heartbeat_many`.
pub(crate) async fn job_heartbeat_many(
    store: &PgStore,
    beats: Vec<JobHeartbeat>,
) -> StoreResult<Vec<StoreResult<HeartbeatReply>>> {
    let _ = (beats,);
    todo!("issue 5: job_heartbeat_many")
}

/// `Store::job_progress`.
pub(crate) async fn job_progress(
    store: &PgStore,
    id: &JobId,
    lease_token: LeaseToken,
    progress: Progress,
) -> StoreResult<()> {
    let _ = (id, lease_token, progress);
    todo!("issue 5: job_progress")
}

/// `Store::job_log_append`.
pub(crate) async fn job_log_append(store: &PgStore, params: JobLogAppend) -> StoreResult<()> {
    let _ = (params,);
    todo!("issue 5: job_log_append")
}

/// `Store::job_log_list`.
pub(crate) async fn job_log_list(store: &PgStore, id: &JobId, after: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
    let _ = (id, after, limit);
    todo!("issue 5: job_log_list")
}

/// `Store::job_event_emit`.
pub(crate) async fn job_event_emit(store: &PgStore, params: JobEventEmit) -> StoreResult<()> {
    let _ = (params,);
    todo!("issue 5: job_event_emit")
}

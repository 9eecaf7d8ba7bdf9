//! Flows and batches (ADR 0007): the hook every path that ends a job calls
//! ([`ended`]), and the flow and batch store methods.

use crate::PgStore;
use crate::fx::Effects;
use drover_core::{Job, JobId, JobState};
use drover_store::{BatchInfo, BatchInserted, Inserted, StoreResult};
use sqlx::PgConnection;

/// A job that just reached a final state, as [`ended`] needs it.
pub(crate) struct EndedJob<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub parent_id: Option<&'a str>,
    pub batch_id: Option<&'a str>,
    pub state: JobState,
}

/// The hook: `job` reached `completed`, `failed` or `cancelled` in the
/// transaction on `conn`. Updates its parent and its batch.
pub(crate) async fn ended(conn: &mut PgConnection, fx: &mut Effects, job: EndedJob<'_>) -> StoreResult<()> {
    if job.parent_id.is_none() && job.batch_id.is_none() {
        return Ok(());
    }
    let _ = (conn, fx, job.seq, job.id, job.state);
    todo!("issue 5: flow::ended")
}

/// A manual retry took a finished job (that was in `from`) back: its batch
/// counts it as unfinished again, and an unfinished parent counts it in
/// again (as SQLite's `flow::retried`).
pub(crate) async fn retried(
    conn: &mut PgConnection,
    fx: &mut Effects,
    from: JobState,
    parent_id: Option<&str>,
    batch_id: Option<&str>,
) -> StoreResult<()> {
    if parent_id.is_none() && batch_id.is_none() {
        return Ok(());
    }
    let _ = (conn, fx, from);
    todo!("issue 5: flow::retried")
}

/// `Store::job_children`.
pub(crate) async fn job_children(store: &PgStore, id: &JobId) -> StoreResult<Vec<Job>> {
    let _ = (id,);
    todo!("issue 5: job_children")
}

/// `Store::flow_insert`.
pub(crate) async fn flow_insert(store: &PgStore, flow: drover_core::FlowSpec) -> StoreResult<Vec<Inserted>> {
    let _ = (flow,);
    todo!("issue 5: flow_insert")
}

/// `Store::batch_insert`.
pub(crate) async fn batch_insert(store: &PgStore, batch: drover_core::BatchSpec) -> StoreResult<BatchInserted> {
    let _ = (batch,);
    todo!("issue 5: batch_insert")
}

/// `Store::batch_get`.
pub(crate) async fn batch_get(store: &PgStore, id: &str) -> StoreResult<Option<BatchInfo>> {
    let _ = (id,);
    todo!("issue 5: batch_get")
}

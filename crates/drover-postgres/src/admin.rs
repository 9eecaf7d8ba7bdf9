//! Operator actions on one job: cancel and manual retry.

use crate::PgStore;
use drover_core::{Job, JobId};
use drover_store::{CancelOutcome, StoreResult};

/// `Store::job_cancel`.
pub(crate) async fn job_cancel(store: &PgStore, id: &JobId) -> StoreResult<CancelOutcome> {
    let _ = (id,);
    todo!("issue 5: job_cancel")
}

/// `Store::job_retry`.
pub(crate) async fn job_retry(store: &PgStore, id: &JobId) -> StoreResult<Job> {
    let _ = (id,);
    todo!("issue 5: job_retry")
}

//! Flow and batch rules every store applies the same way before or around
//! its own SQL (ADR 0007).

use crate::{StoreError, StoreResult};
use drover_core::{BatchSpec, JobId, JobSpec, JobState};

/// What a store found when it counted a new (or retried) child into the
/// parent the child names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentFound {
    /// The parent counts one unfinished child more.
    Counted,
    /// No job with that id (never stored, or removed by retention).
    Missing,
    /// The parent has finished: nothing changed.
    Finished(JobState),
}

impl ParentFound {
    /// The answer to an insert naming `parent_id`: `Invalid` for a parent
    /// that does not exist, `InvalidState` for one that has finished.
    pub fn into_result(self, parent_id: &str) -> StoreResult<()> {
        match self {
            ParentFound::Counted => Ok(()),
            ParentFound::Missing => Err(StoreError::invalid("parent_id", format!("no job with id `{parent_id}`"))),
            ParentFound::Finished(state) => Err(StoreError::InvalidState {
                state,
                message: format!("parent job {parent_id} has finished and cannot take children"),
            }),
        }
    }
}

/// An unfinished parent in `state` gains a child: the state it moves to
/// (a `waiting` or `delayed` parent waits for its children in
/// `waiting-children`) and whether it fanned out (a running parent runs
/// again after its children, even if they all finish before its handler
/// returns).
pub fn parent_gains_child(state: JobState) -> (JobState, bool) {
    let waits = matches!(state, JobState::Waiting | JobState::Delayed);
    (if waits { JobState::WaitingChildren } else { state }, state == JobState::Active)
}

/// The refusal of a job naming batch `batch_id` after it completed.
pub fn batch_closed(batch_id: &str) -> StoreError {
    StoreError::invalid("batch_id", format!("batch `{batch_id}` has completed; it takes no more jobs"))
}

/// The batch counters a job in final `state` adds to: (completed, failed,
/// cancelled).
pub fn tally(state: JobState) -> (i32, i32, i32) {
    match state {
        JobState::Completed => (1, 0, 0),
        JobState::Failed => (0, 1, 0),
        _ => (0, 0, 1),
    }
}

/// A batch checked and given its id, ready for a store to insert.
#[derive(Debug)]
pub struct PreparedBatch {
    /// The new batch's id.
    pub id: String,
    /// Its jobs, each with `batch_id` set to [`PreparedBatch::id`].
    pub jobs: Vec<JobSpec>,
    /// The job to insert when the batch completes (checked now).
    pub on_complete: Option<JobSpec>,
}

/// Checks a batch as `Store::batch_insert` documents: at most
/// [`drover_core::flow::MAX_FLOW_JOBS`] jobs, none naming a batch of its
/// own, and a valid `on_complete` without a parent or a batch. The jobs
/// themselves are validated by the store's insert.
pub fn prepare_batch(batch: BatchSpec) -> StoreResult<PreparedBatch> {
    let BatchSpec { mut jobs, on_complete } = batch;
    if jobs.len() > drover_core::flow::MAX_FLOW_JOBS {
        return Err(StoreError::invalid(
            "jobs",
            format!("a batch holds at most {} jobs", drover_core::flow::MAX_FLOW_JOBS),
        ));
    }
    let id = JobId::generate().to_string();
    for (i, job) in jobs.iter_mut().enumerate() {
        if job.batch_id.is_some() {
            return Err(StoreError::invalid(format!("jobs[{i}].batch_id"), "is set by the batch"));
        }
        job.batch_id = Some(id.clone());
    }
    if let Some(spec) = &on_complete {
        spec.validate().map_err(|e| StoreError::invalid(format!("on_complete.{}", e.field), e.message))?;
        // Inserted when the batch completes, maybe long after: a parent or
        // batch named now may have finished by then, and nobody would be
        // there to hear the refusal.
        if spec.parent_id.is_some() {
            return Err(StoreError::invalid("on_complete.parent_id", "a completion job cannot have a parent"));
        }
        if spec.batch_id.is_some() {
            return Err(StoreError::invalid("on_complete.batch_id", "a completion job cannot join a batch"));
        }
    }
    Ok(PreparedBatch { id, jobs, on_complete })
}

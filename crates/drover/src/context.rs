//! [`JobContext`]: what a running handler sees and can do.

use crate::{Client, Result};
use drover_core::{Job, JobId, JobSpec, LeaseToken, LogLevel, Progress};
use drover_store::{Inserted, JobEventEmit, JobLogAppend};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Handed to each handler run: the job, its attempt, and the means to report
/// progress, write logs, emit events, enqueue follow-up jobs and notice a
/// cancellation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JobContext {
    job: Arc<Job>,
    attempt: u32,
    lease_token: LeaseToken,
    client: Client,
    cancel: CancellationToken,
}

impl JobContext {
    pub(crate) fn new(
        job: Arc<Job>,
        attempt: u32,
        lease_token: LeaseToken,
        client: Client,
        cancel: CancellationToken,
    ) -> Self {
        Self { job, attempt, lease_token, client, cancel }
    }

    /// The job record as it was claimed.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.job.id
    }

    /// The job's payload.
    pub fn payload(&self) -> &Value {
        &self.job.payload
    }

    /// The payload decoded as `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_value(self.job.payload.clone())?)
    }

    /// This attempt's number, 1-based.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// True once the job was cancelled, its lease was lost, or the worker is
    /// shutting down hard: the handler should stop and clean up.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the handler should stop (see [`Self::is_cancelled`]);
    /// use it in `tokio::select!` next to the handler's own work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Records progress: a percentage (`50.0`) or a [`Progress::Detailed`].
    pub async fn progress(&self, progress: impl Into<ProgressValue>) -> Result<()> {
        let progress = progress.into().0;
        progress.validate().map_err(|message| crate::Error::Invalid { field: "progress".into(), message })?;
        Ok(self.client.store().job_progress(&self.job.id, self.lease_token, progress).await?)
    }

    /// Appends a line to the job's log.
    pub async fn log(&self, level: LogLevel, message: impl Into<String>, metadata: Value) -> Result<()> {
        let append = JobLogAppend {
            id: self.job.id.clone(),
            lease_token: self.lease_token,
            level,
            message: message.into(),
            metadata,
        };
        Ok(self.client.store().job_log_append(append).await?)
    }

    /// Emits a typed event (e.g. `lead:add`) to every subscriber of this job,
    /// its queue or its batch.
    pub async fn emit(&self, kind: impl Into<String>, data: Value) -> Result<()> {
        let emit = JobEventEmit { id: self.job.id.clone(), lease_token: self.lease_token, kind: kind.into(), data };
        Ok(self.client.store().job_event_emit(emit).await?)
    }

    /// Enqueues a follow-up job.
    pub async fn enqueue(&self, spec: JobSpec) -> Result<Inserted> {
        self.client.enqueue(spec).await
    }

    /// Enqueues a child of this job: its `parent_id` is set to this job.
    /// When this handler then returns successfully while a child is
    /// unfinished, the job goes to `waiting-children` instead of
    /// `completed`, and runs again (a new attempt) once every child has
    /// finished, with [`Self::children_results`] filled. A child's failure
    /// fails this job unless the child says `on_failure: ignore`.
    ///
    /// A handler that fans out tells its first run from the continuation by
    /// its children: [`Self::children`] is empty on the first run.
    pub async fn enqueue_child(&self, spec: JobSpec) -> Result<Inserted> {
        self.client.enqueue(spec.parent_id(self.job.id.clone())).await
    }

    /// This job's children, in enqueue order, with their states, results
    /// and errors.
    pub async fn children(&self) -> Result<Vec<Job>> {
        self.client.children(&self.job.id).await
    }

    /// The results of this job's completed children, by child id (children
    /// that failed or were cancelled are left out; see [`Self::children`]).
    pub async fn children_results(&self) -> Result<serde_json::Map<String, Value>> {
        Ok(self
            .children()
            .await?
            .into_iter()
            .filter(|c| c.state == drover_core::JobState::Completed)
            .map(|c| (c.id.to_string(), c.result.unwrap_or(Value::Null)))
            .collect())
    }

    /// A client for anything else (reading other jobs, ...).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Anything [`JobContext::progress`] accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressValue(pub Progress);

impl From<f64> for ProgressValue {
    fn from(p: f64) -> Self {
        Self(Progress::Percent(p))
    }
}

impl From<Progress> for ProgressValue {
    fn from(p: Progress) -> Self {
        Self(p)
    }
}

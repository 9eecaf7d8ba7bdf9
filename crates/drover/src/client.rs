//! [`Client`]: the Rust door to Drover.

use crate::events::{EventFilter, EventStream};
use crate::handler::Job;
use crate::{Error, Result};
use drover_core::{BatchSpec, FlowSpec, JobId, JobSpec, KeyLimit, LogEntry, QueueConfig, Schedule, ScheduleSpec};
use drover_sqlite::{SqliteOptions, SqliteStore};
use drover_store::{
    BatchInfo, BatchInserted, CancelOutcome, Inserted, JobListParams, JobPage, QueueInfo, RateLimitRule,
    RateLimitState, ScheduleListParams, SchedulePage, ScheduleUpserted, Store,
};
use std::path::Path;
use std::sync::Arc;

/// Enqueues and inspects jobs. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client over any store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A client over a SQLite file (created with its schema if missing),
    /// durable on power loss (`synchronous=FULL`).
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(Arc::new(open_sqlite_store(path.as_ref(), SqliteOptions::default()).await?)))
    }

    /// The store underneath, for operations the client does not wrap.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Enqueues one job. Returns the existing job, `duplicate: true`, when a
    /// job with the same id exists.
    pub async fn enqueue(&self, spec: JobSpec) -> Result<Inserted> {
        let mut inserted = self.enqueue_many(vec![spec]).await?;
        Ok(inserted.remove(0))
    }

    /// Enqueues a typed job with its defaults ([`Job::spec`]).
    pub async fn enqueue_job<J: Job>(&self, job: &J) -> Result<Inserted> {
        self.enqueue(job.spec()?).await
    }

    /// Enqueues many jobs in one transaction: all or none.
    pub async fn enqueue_many(&self, specs: Vec<JobSpec>) -> Result<Vec<Inserted>> {
        for (i, spec) in specs.iter().enumerate() {
            spec.validate().map_err(|e| Error::Invalid {
                field: if specs.len() == 1 { e.field.to_owned() } else { format!("jobs[{i}].{}", e.field) },
                message: e.message,
            })?;
        }
        Ok(self.store.job_insert_many(specs).await?)
    }

    /// Enqueues a flow in one transaction: a job and its children, to any
    /// depth. Jobs with children start `waiting-children` and run once their
    /// children have finished. Results are in pre-order (each parent before
    /// its children).
    pub async fn flow_insert(&self, flow: FlowSpec) -> Result<Vec<Inserted>> {
        Ok(self.store.flow_insert(flow).await?)
    }

    /// A job's children, in enqueue order.
    pub async fn children(&self, id: &JobId) -> Result<Vec<drover_core::Job>> {
        Ok(self.store.job_children(id).await?)
    }

    /// Creates a batch of jobs, with an optional job enqueued once when
    /// they have all finished; returns its id and size.
    pub async fn batch_insert(&self, batch: BatchSpec) -> Result<BatchInserted> {
        Ok(self.store.batch_insert(batch).await?)
    }

    /// A batch's counts and state, or `None`.
    pub async fn batch_get(&self, id: &str) -> Result<Option<BatchInfo>> {
        Ok(self.store.batch_get(id).await?)
    }

    /// One job with its attempt history.
    pub async fn get(&self, id: &JobId) -> Result<Option<drover_core::Job>> {
        Ok(self.store.job_get(id).await?)
    }

    /// Jobs matching filters, newest first, a page at a time.
    pub async fn list(&self, params: JobListParams) -> Result<JobPage> {
        Ok(self.store.job_list(params).await?)
    }

    /// Cancels a job: at once if it is not running, else its handler is told.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelOutcome> {
        Ok(self.store.job_cancel(id).await?)
    }

    /// Retries a `failed` or `cancelled` job with a fresh attempt budget.
    pub async fn retry(&self, id: &JobId) -> Result<drover_core::Job> {
        Ok(self.store.job_retry(id).await?)
    }

    /// A job's log lines, oldest first (up to 1,000 after the first `after`).
    pub async fn logs(&self, id: &JobId, after: u64) -> Result<Vec<LogEntry>> {
        Ok(self.store.job_log_list(id, after, 1_000).await?)
    }

    /// Every queue with its counts.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        Ok(self.store.queue_list().await?)
    }

    /// Pauses a queue: its jobs stay `waiting` until it is resumed.
    pub async fn pause(&self, queue: &str) -> Result<QueueInfo> {
        Ok(self.store.queue_pause_set(queue, true).await?)
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, queue: &str) -> Result<QueueInfo> {
        Ok(self.store.queue_pause_set(queue, false).await?)
    }

    /// Sets a queue's settings: concurrency cap across all workers, rate
    /// limit, job defaults, retention.
    pub async fn queue_configure(&self, queue: &str, config: QueueConfig) -> Result<QueueInfo> {
        Ok(self.store.queue_config_set(queue, config).await?)
    }

    /// Sets the concurrency cap and rate limit shared by the jobs whose
    /// `rate_limit_key` is `key`, or, for `"prefix*"`, by each key with that
    /// prefix (each key counted apart).
    pub async fn rate_limit_set(&self, key: &str, limit: KeyLimit) -> Result<RateLimitRule> {
        Ok(self.store.rate_limit_set(key, limit).await?)
    }

    /// Removes the limits of a key or prefix; false when there were none.
    pub async fn rate_limit_delete(&self, key: &str) -> Result<bool> {
        Ok(self.store.rate_limit_delete(key).await?)
    }

    /// Every key and prefix rule.
    pub async fn rate_limits(&self) -> Result<Vec<RateLimitRule>> {
        Ok(self.store.rate_limit_list().await?)
    }

    /// Where one key stands: its rule, active jobs, starts in the window,
    /// and until when it is held back.
    pub async fn rate_limit_get(&self, key: &str) -> Result<RateLimitState> {
        Ok(self.store.rate_limit_get(key).await?)
    }

    /// Creates a schedule, or replaces the one with the same id; its next
    /// tick is the first after now. A [`crate::Scheduler`] on the same store
    /// fires it.
    pub async fn schedule_upsert(&self, spec: ScheduleSpec) -> Result<ScheduleUpserted> {
        spec.validate().map_err(|e| Error::Invalid { field: e.field, message: e.message })?;
        Ok(self.store.schedule_upsert(spec).await?)
    }

    /// One schedule.
    pub async fn schedule_get(&self, id: &str) -> Result<Option<Schedule>> {
        Ok(self.store.schedule_get(id).await?)
    }

    /// Schedules by id, a page at a time.
    pub async fn schedule_list(&self, params: ScheduleListParams) -> Result<SchedulePage> {
        Ok(self.store.schedule_list(params).await?)
    }

    /// Pauses a schedule: it fires nothing until resumed.
    pub async fn schedule_pause(&self, id: &str) -> Result<Schedule> {
        Ok(self.store.schedule_pause_set(id, true).await?)
    }

    /// Resumes a paused schedule from its first tick after now (ticks that
    /// passed while it was paused do not run).
    pub async fn schedule_resume(&self, id: &str) -> Result<Schedule> {
        Ok(self.store.schedule_pause_set(id, false).await?)
    }

    /// Deletes a schedule; true when it existed. Jobs it enqueued stay.
    pub async fn schedule_delete(&self, id: &str) -> Result<bool> {
        Ok(self.store.schedule_delete(id).await?)
    }

    /// Lifecycle and handler-defined events that pass `filter`, from now on.
    pub fn subscribe(&self, filter: EventFilter) -> EventStream {
        EventStream::new(self.store.events(), filter)
    }
}

/// Opens a SQLite store off the async threads (opening runs migrations and
/// reads pragmas back, which is blocking file I/O).
pub async fn open_sqlite_store(path: &Path, options: SqliteOptions) -> Result<SqliteStore> {
    let path = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || SqliteStore::open(path, options))
        .await
        .map_err(|e| drover_store::StoreError::Backend(format!("opening the store panicked: {e}")))?;
    Ok(opened?)
}

//! In-process event streams: [`crate::Client::subscribe`] with a filter.

use drover_core::{Event, JobId};
use tokio::sync::broadcast;

/// Which events a subscriber wants; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events of this queue.
    pub queue: Option<String>,
    /// Only events of this job.
    pub job_id: Option<JobId>,
    /// Only events of jobs in this batch.
    pub batch_id: Option<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events of one job.
    pub fn job(id: JobId) -> Self {
        Self { job_id: Some(id), ..Self::default() }
    }

    /// Events of one queue.
    pub fn queue(queue: impl Into<String>) -> Self {
        Self { queue: Some(queue.into()), ..Self::default() }
    }

    /// Events of one batch.
    pub fn batch(batch_id: impl Into<String>) -> Self {
        Self { batch_id: Some(batch_id.into()), ..Self::default() }
    }

    /// True when `event` passes every filter that is set.
    pub fn matches(&self, event: &Event) -> bool {
        fn ok<T: PartialEq>(want: &Option<T>, have: &Option<T>) -> bool {
            want.is_none() || want == have
        }
        ok(&self.queue, &event.queue) && ok(&self.job_id, &event.job_id) && ok(&self.batch_id, &event.batch_id)
    }
}

/// Why [`EventStream::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    /// The subscriber fell behind and this many events were dropped; the
    /// stream goes on with the next one.
    #[error("event stream lagged: {0} events dropped")]
    Lagged(u64),
    /// The store was closed; no event will come.
    #[error("event stream closed")]
    Closed,
}

/// Events that pass a filter, in the order the store published them.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
    filter: EventFilter,
}

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<Event>, filter: EventFilter) -> Self {
        Self { rx, filter }
    }

    /// The next matching event.
    pub async fn recv(&mut self) -> Result<Event, EventStreamError> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.filter.matches(&event) => return Ok(event),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(EventStreamError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(EventStreamError::Closed),
            }
        }
    }
}

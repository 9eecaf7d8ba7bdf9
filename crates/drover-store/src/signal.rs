//! The two signals a store sends to the rest of Drover: the ready signal
//! (jobs may be claimable: wake the fetchers) and the event bus.

use drover_core::{Event, EventKind, JobId, Timestamp};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, watch};

/// Events a slow subscriber may fall behind by before it sees `Lagged`.
pub const EVENT_BUFFER: usize = 16_384;

/// Bumps a counter whenever jobs may have become claimable. Backends call
/// [`ReadySignal::notify`] after a commit that inserted, re-queued, promoted
/// or resumed anything.
#[derive(Debug)]
pub struct ReadySignal {
    tx: watch::Sender<u64>,
}

impl Default for ReadySignal {
    fn default() -> Self {
        Self { tx: watch::channel(0).0 }
    }
}

impl ReadySignal {
    /// Wakes every fetcher waiting for work.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver for [`crate::Store::ready_signal`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Numbers and broadcasts events. Publishing costs nothing when nobody
/// listens, so backends can call it on the hot path.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    next_id: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        Self { tx: broadcast::channel(EVENT_BUFFER).0, next_id: AtomicU64::new(1) }
    }
}

/// The fields of an event before the bus numbers it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    /// What happened.
    pub kind: EventKind,
    /// The job concerned.
    pub job_id: Option<JobId>,
    /// Its queue.
    pub queue: Option<String>,
    /// Its batch.
    pub batch_id: Option<String>,
    /// When.
    pub at: Timestamp,
    /// Detail.
    pub data: Value,
}

impl PendingEvent {
    /// An event about one job.
    pub fn job(
        kind: EventKind,
        job_id: &JobId,
        queue: &str,
        batch_id: Option<&str>,
        at: Timestamp,
        data: Value,
    ) -> Self {
        Self {
            kind,
            job_id: Some(job_id.clone()),
            queue: Some(queue.to_owned()),
            batch_id: batch_id.map(str::to_owned),
            at,
            data,
        }
    }

    /// An event about a queue.
    pub fn queue(kind: EventKind, queue: &str, at: Timestamp) -> Self {
        Self { kind, job_id: None, queue: Some(queue.to_owned()), batch_id: None, at, data: Value::Null }
    }

    /// `queue:throttled`: `queue` (or its jobs of `rate_limit_key`, when
    /// set) starts nothing until `until` (ADR 0008).
    pub fn throttled(queue: &str, until: Timestamp, rate_limit_key: Option<&str>, at: Timestamp) -> Self {
        let mut event = Self::queue(EventKind::QueueThrottled, queue, at);
        event.data = serde_json::json!({ "throttled_until": until, "rate_limit_key": rate_limit_key });
        event
    }
}

impl EventBus {
    /// True when someone listens; backends skip building events otherwise.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Numbers and sends events in order.
    pub fn publish(&self, events: impl IntoIterator<Item = PendingEvent>) {
        for e in events {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            // No receiver is not an error: nobody is listening right now.
            let _ = self.tx.send(Event {
                id,
                kind: e.kind,
                job_id: e.job_id,
                queue: e.queue,
                batch_id: e.batch_id,
                at: e.at,
                data: e.data,
            });
        }
    }

    /// A receiver for [`crate::Store::events`].
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

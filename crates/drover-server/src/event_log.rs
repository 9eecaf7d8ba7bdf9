//! [`EventLog`]: the server's memory of recent events, so that an SSE client
//! that reconnects with `Last-Event-ID` gets exactly the events it missed.
//!
//! One background task (started by [`EventLog::start`]) subscribes to the
//! store's event bus and appends every event to a bounded window (the last
//! [`RETAIN_EVENTS`] events, none older than [`RETAIN_FOR`]). Subscribers do
//! not get their own broadcast channel: each holds an [`EventCursor`] (the
//! id of the last event it was given) and reads the window after that id
//! whenever the log says something new arrived. Reading by id from one
//! ordered window is what makes resume free of gaps and duplicates, and a
//! subscriber that falls behind the window learns it (a [`Delivery::Reset`])
//! instead of silently missing events.
//!
//! Event ids are numbered by the store's bus and restart at 1 when the
//! server restarts; a resume id larger than anything this process has seen
//! is therefore answered with a reset too (see ADR 0003).

use drover_core::Event;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Most events kept for resume.
pub const RETAIN_EVENTS: usize = 10_000;

/// Oldest event kept for resume.
pub const RETAIN_FOR: Duration = Duration::from_secs(5 * 60);

/// Recent events, in id order, shared by every subscriber.
pub struct EventLog {
    /// The window; a plain mutex because every critical section is short
    /// and never awaits.
    window: Mutex<Window>,
    /// Carries the newest id; subscribers wait on it for news.
    newest: watch::Sender<u64>,
    /// Most events kept.
    capacity: usize,
    /// Oldest event kept.
    max_age: Duration,
}

impl std::fmt::Debug for EventLog {
    /// Sizes only: the window may hold thousands of events.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.window.lock();
        f.debug_struct("EventLog")
            .field("held", &w.events.len())
            .field("complete_after", &w.complete_after)
            .field("newest", &w.newest)
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Window {
    /// Events with the time they arrived, ids increasing.
    events: VecDeque<(Instant, Arc<Event>)>,
    /// Every event with an id above this one (up to `newest`) is in
    /// `events`: resume after an id below it has a gap.
    complete_after: u64,
    /// The highest id seen.
    newest: u64,
}

/// What a subscriber is handed.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The next event.
    Event(Arc<Event>),
    /// Events between the subscriber's position and the window were lost
    /// (too old, or from before a server restart); what follows is complete
    /// from `oldest_available` on. Clients should reload the state they
    /// show.
    Reset(Reset),
}

/// The detail of a [`Delivery::Reset`], sent as the data of `event: reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// Always `"reset"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The id the subscriber asked to resume after.
    pub requested_after: u64,
    /// The oldest id still held; events from here on follow.
    pub oldest_available: u64,
}

impl EventLog {
    /// An empty log keeping at most `capacity` events for at most `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self { window: Mutex::new(Window::default()), newest: watch::channel(0).0, capacity, max_age }
    }

    /// A log with the default retention, filled from `events` by a task that
    /// runs until `shutdown` fires or the bus closes. Must be called inside a
    /// tokio runtime.
    pub fn start(events: broadcast::Receiver<Event>, shutdown: CancellationToken) -> Arc<Self> {
        let log = Arc::new(Self::new(RETAIN_EVENTS, RETAIN_FOR));
        tokio::spawn(fill(log.clone(), events, shutdown));
        log
    }

    /// Appends one event (ids must increase; a jump in ids is recorded as a
    /// gap) and wakes the subscribers.
    pub fn push(&self, event: Event) {
        let id = event.id;
        {
            let mut w = self.window.lock();
            if id <= w.newest {
                // Never happens with one bus; refusing keeps the window sorted.
                return;
            }
            if id != w.newest + 1 {
                // Events between were never seen (the filler lagged, or the
                // log started after the bus had numbered some).
                w.complete_after = id - 1;
            }
            w.newest = id;
            let now = Instant::now();
            w.events.push_back((now, Arc::new(event)));
            while let Some((at, front)) = w.events.front() {
                let too_many = w.events.len() > self.capacity;
                if !too_many && now.duration_since(*at) <= self.max_age {
                    break;
                }
                let gone = front.id;
                w.events.pop_front();
                w.complete_after = gone;
            }
        }
        self.newest.send_replace(id);
    }

    /// The highest event id seen so far (0 before any).
    pub fn newest_id(&self) -> u64 {
        self.window.lock().newest
    }

    /// A cursor that gets events published from now on.
    pub fn live(self: &Arc<Self>) -> EventCursor {
        let after = self.newest_id();
        self.cursor_after(after)
    }

    /// A cursor that first gets the held events after `after` (or a reset
    /// when some were lost), then live ones.
    pub fn cursor_after(self: &Arc<Self>, after: u64) -> EventCursor {
        EventCursor { log: self.clone(), after, wake: self.newest.subscribe() }
    }
}

/// The filler task: store bus → log.
async fn fill(log: Arc<EventLog>, mut events: broadcast::Receiver<Event>, shutdown: CancellationToken) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = events.recv() => received,
        };
        match received {
            Ok(event) => log.push(event),
            // The id jump of the next event marks the gap for resumers.
            Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(dropped = n, "event log fell behind the bus"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One subscriber's position in the [`EventLog`].
#[derive(Debug)]
pub struct EventCursor {
    log: Arc<EventLog>,
    /// The id of the last event handed out (or skipped).
    after: u64,
    wake: watch::Receiver<u64>,
}

impl EventCursor {
    /// The id of the last event handed out.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Moves to the newest event: what follows is live.
    pub fn skip_to_now(&mut self) {
        self.wake.borrow_and_update();
        self.after = self.log.newest_id();
    }

    /// Everything after the cursor, waiting until there is something.
    /// Cancel-safe: the cursor moves only when deliveries are returned.
    pub async fn next(&mut self) -> Vec<Delivery> {
        loop {
            // Marked seen before reading: a push after the read changes the
            // watch again, so the wait below cannot miss it.
            self.wake.borrow_and_update();
            let batch = self.take();
            if !batch.is_empty() {
                return batch;
            }
            if self.wake.changed().await.is_err() {
                // The log holds the sender for as long as this cursor holds
                // the log, so this cannot happen; wait forever rather than spin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// What is held after the cursor, now.
    fn take(&mut self) -> Vec<Delivery> {
        let w = self.log.window.lock();
        let mut out = Vec::new();
        if self.after > w.newest || self.after < w.complete_after {
            let oldest_available = w.events.front().map_or(w.newest + 1, |(_, e)| e.id);
            out.push(Delivery::Reset(Reset { kind: "reset", requested_after: self.after, oldest_available }));
            if self.after > w.newest {
                // An id from an earlier server process: nothing held is
                // "after" it in any meaningful sense; go on live.
                self.after = w.newest;
                return out;
            }
        }
        let start = w.events.partition_point(|(_, e)| e.id <= self.after);
        out.extend(w.events.range(start..).map(|(_, e)| Delivery::Event(e.clone())));
        self.after = w.newest;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::{EventKind, Timestamp};
    use serde_json::Value;

    fn event(id: u64) -> Event {
        Event {
            id,
            kind: EventKind::Waiting,
            job_id: None,
            queue: Some("q".into()),
            batch_id: None,
            at: Timestamp(0),
            data: Value::Null,
        }
    }

    fn ids(batch: &[Delivery]) -> Vec<i64> {
        batch
            .iter()
            .map(|d| match d {
                Delivery::Event(e) => e.id as i64,
                Delivery::Reset(_) => -1,
            })
            .collect()
    }

    #[tokio::test]
    async fn resume_gives_exactly_the_missed_events() {
        let log = Arc::new(EventLog::new(100, RETAIN_FOR));
        for id in 1..=5 {
            log.push(event(id));
        }
        let mut cursor = log.cursor_after(3);
        assert_eq!(ids(&cursor.next().await), [4, 5]);
        log.push(event(6));
        assert_eq!(ids(&cursor.next().await), [6]);
    }

    #[tokio::test]
    async fn resume_older_than_the_window_resets_first() {
        let log = Arc::new(EventLog::new(3, RETAIN_FOR));
        for id in 1..=6 {
            log.push(event(id));
        }
        let mut cursor = log.cursor_after(1);
        assert_eq!(ids(&cursor.next().await), [-1, 4, 5, 6]);
        // An id from a previous server process.
        let mut cursor = log.cursor_after(99);
        assert_eq!(ids(&cursor.next().await), [-1]);
        log.push(event(7));
        assert_eq!(ids(&cursor.next().await), [7]);
    }

    #[tokio::test]
    async fn a_gap_in_ids_resets_resumes_from_before_it() {
        let log = Arc::new(EventLog::new(100, RETAIN_FOR));
        log.push(event(1));
        // 2..=4 never reached the log (the filler lagged behind the bus).
        log.push(event(5));
        let mut before_gap = log.cursor_after(1);
        assert_eq!(ids(&before_gap.next().await), [-1, 5]);
        let mut after_gap = log.cursor_after(4);
        assert_eq!(ids(&after_gap.next().await), [5]);
    }

    #[tokio::test]
    async fn live_cursors_wake_on_push() {
        let log = Arc::new(EventLog::new(10, RETAIN_FOR));
        log.push(event(1));
        let mut cursor = log.live();
        let waiter = tokio::spawn(async move { ids(&cursor.next().await) });
        tokio::task::yield_now().await;
        log.push(event(2));
        assert_eq!(waiter.await.unwrap(), [2]);
    }
}

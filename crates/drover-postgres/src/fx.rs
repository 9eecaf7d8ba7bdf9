//! A store method's transaction and what it leaves to do once it commits:
//! count deltas, events, wake-ups (ADR 0009).
//!
//! Every mutating method runs the same way:
//!
//! ```ignore
//! let mut w = self.begin().await?;
//! let result = body(&mut w.tx, &mut w.fx, ...).await;
//! self.commit(w, result).await
//! ```
//!
//! `commit` appends the count deltas and queues the cross-server
//! notifications (`pg_notify`, which PostgreSQL delivers at commit and
//! drops on rollback) in one statement, commits, and only then publishes the events on this
//! process's bus and bumps its signals. A failed body rolls back at once
//! and publishes nothing.

use crate::PgStore;
use crate::counts::Counts;
use crate::error::SqlResultExt;
use crate::notify;
use drover_core::Timestamp;
use drover_store::{PendingEvent, StoreError, StoreResult};
use sqlx::{Postgres, Transaction};

/// The side effects a transaction collects, released after its commit.
#[derive(Debug)]
pub(crate) struct Effects {
    /// The instant the method runs at (the store's clock, read once).
    pub now: Timestamp,
    /// State changes per queue, appended to `queue_count_deltas` before
    /// commit.
    pub counts: Counts,
    /// Events, published in order after commit, here and on every server.
    pub events: Vec<PendingEvent>,
    /// Jobs may have become claimable (or due earlier): wake fetchers on
    /// every server.
    pub ready: bool,
    /// A schedule was created, replaced, paused, resumed or deleted: wake
    /// schedulers on every server.
    pub schedules_changed: bool,
    /// Jobs that left `active`, by queue and `rate_limit_key`: a claim held
    /// back by a cap on one of them may now get a slot
    /// ([`crate::limits::wake_if_capped`] decides whether to wake fetchers).
    pub left_active: Vec<(String, Option<String>)>,
}

impl Effects {
    pub(crate) fn new(now: Timestamp) -> Self {
        Effects {
            now,
            counts: Counts::default(),
            events: Vec::new(),
            ready: false,
            schedules_changed: false,
            left_active: Vec::new(),
        }
    }

    /// Records an event for after commit.
    pub fn event(&mut self, event: PendingEvent) {
        self.events.push(event);
    }

    /// A job of `queue` with `key` left `active` (finished, released,
    /// rescued, cancelled).
    pub fn left_active(&mut self, queue: &str, key: Option<&str>) {
        self.left_active.push((queue.to_owned(), key.map(str::to_owned)));
    }

    /// What the effects hold now, for [`Effects::restore`] when the part of
    /// a method that follows is rolled back to a savepoint.
    pub fn mark(&self) -> Mark {
        Mark {
            counts: self.counts.clone(),
            events: self.events.len(),
            ready: self.ready,
            schedules_changed: self.schedules_changed,
            left_active: self.left_active.len(),
        }
    }

    /// Forgets what was recorded since `mark`: its rows were rolled back.
    pub fn restore(&mut self, mark: Mark) {
        self.counts = mark.counts;
        self.events.truncate(mark.events);
        self.ready = mark.ready;
        self.schedules_changed = mark.schedules_changed;
        self.left_active.truncate(mark.left_active);
    }
}

/// The effects as they were at a savepoint (see [`Effects::mark`]).
#[derive(Debug)]
pub(crate) struct Mark {
    counts: Counts,
    events: usize,
    ready: bool,
    schedules_changed: bool,
    left_active: usize,
}

/// An open transaction with its effects.
pub(crate) struct Write {
    /// The transaction; every statement of the method runs on it.
    pub tx: Transaction<'static, Postgres>,
    /// What to release after it commits.
    pub fx: Effects,
}

impl PgStore {
    /// Opens a transaction (`READ COMMITTED`, the server's default) and
    /// reads the clock once for it.
    pub(crate) async fn begin(&self) -> StoreResult<Write> {
        let tx = self.pool().begin().await.db()?;
        Ok(Write { tx, fx: Effects::new(self.now()) })
    }

    /// Ends a method's transaction: on success appends the count deltas and
    /// queues the notifications (one statement), commits, then publishes events and bumps the
    /// local signals; on error rolls back at once (a dropped transaction
    /// would only queue its rollback until the connection's next use,
    /// holding its locks meanwhile) and returns the error.
    pub(crate) async fn commit<T>(&self, w: Write, result: StoreResult<T>) -> StoreResult<T> {
        let Write { mut tx, mut fx } = w;
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        let before_commit = async {
            crate::limits::wake_if_capped(&mut tx, &mut fx, &self.shared.caps).await?;
            notify::send(&mut tx, &self.shared.channels, self.shared.origin, &mut fx).await
        };
        if let Err(e) = before_commit.await {
            let _ = tx.rollback().await;
            return Err(e);
        }
        tx.commit().await.db()?;
        self.release(fx);
        Ok(value)
    }

    /// Publishes a committed transaction's effects in this process.
    fn release(&self, fx: Effects) {
        if !fx.events.is_empty() {
            self.shared.bus.publish(fx.events);
        }
        if fx.ready {
            self.shared.ready.notify();
        }
        if fx.schedules_changed {
            self.shared.schedules.notify();
        }
    }
}

/// A body's error for a row that must exist in the transaction that just
/// locked it: the database contradicted itself.
pub(crate) fn vanished(what: &str) -> StoreError {
    StoreError::Backend(format!("{what} vanished inside its transaction"))
}

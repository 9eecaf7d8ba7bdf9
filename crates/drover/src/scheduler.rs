//! [`Scheduler`]: the background service that fires schedules. It sleeps
//! until the earliest `next_run_at` of any schedule, or until a schedule is
//! created, replaced, paused, resumed or deleted through the same store,
//! then asks the store to fire what is due.
//!
//! Several schedulers may run on one store (every server starts one): the
//! store enqueues each tick's job under an id derived from the tick, so a
//! tick fired twice inserts one job (ADR 0006).
//!
//! ```no_run
//! use drover::{Client, JobSpec, ScheduleSpec, Scheduler, SchedulerConfig};
//!
//! # async fn demo() -> drover::Result<()> {
//! let client = Client::open_sqlite("jobs.db").await?;
//! let scheduler = Scheduler::start(client.store().clone(), SchedulerConfig::default());
//! client.schedule_upsert(ScheduleSpec::every_ms("heartbeat", 60_000, JobSpec::new("ops", "ping"))).await?;
//! // ... later, on shutdown:
//! scheduler.stop().await;
//! # Ok(()) }
//! ```

use drover_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the scheduler sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// The longest it sleeps without looking at the store again. It is woken
    /// at once by changes made through its own store; this bound is for
    /// schedules changed by another process on the same database. Default 5 s.
    pub max_sleep: Duration,
    /// How long it waits after a store call failed. Default 1 s.
    pub retry_delay: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { max_sleep: Duration::from_secs(5), retry_delay: Duration::from_secs(1) }
    }
}

/// A running scheduler loop.
#[derive(Debug)]
pub struct Scheduler {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Scheduler {
    /// Starts the loop on the current tokio runtime. Ticks missed while no
    /// scheduler ran fire once, at start-up.
    pub fn start(store: Arc<dyn Store>, config: SchedulerConfig) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store, config, stop.clone()));
        Self { stop, task }
    }

    /// Stops the loop and waits for the store call in progress, if any.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(store: Arc<dyn Store>, config: SchedulerConfig, stop: CancellationToken) {
    let mut changed = store.schedule_signal();
    loop {
        // Seen before reading, so a change made while this pass runs still
        // wakes the sleep below: no wake-up is lost.
        changed.mark_unchanged();
        let wait = match pass(&*store).await {
            Ok(Some(next)) => store.now().until(next).min(config.max_sleep),
            Ok(None) => config.max_sleep,
            Err(e) => {
                tracing::warn!(error = %e, "firing schedules failed; will try again");
                config.retry_delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wait_changed(&mut changed) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Fires what is due and returns when the next tick is. Reads first, so an
/// idle server costs one indexed read per wake-up, not a write transaction.
async fn pass(store: &dyn Store) -> drover_store::StoreResult<Option<drover_core::Timestamp>> {
    let next = store.schedule_next_due().await?;
    if next.is_none_or(|at| at > store.now()) {
        return Ok(next);
    }
    for fired in store.schedule_fire_due().await? {
        tracing::debug!(
            schedule = %fired.schedule_id,
            job_id = %fired.job_id,
            duplicate = fired.duplicate,
            "schedule fired"
        );
    }
    store.schedule_next_due().await
}

/// Resolves when a schedule changed; never, once the store is gone (the
/// sleep and the stop token still end the wait).
async fn wait_changed(changed: &mut tokio::sync::watch::Receiver<u64>) {
    if changed.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

//! [`Maintenance`]: the background service that keeps states true when no
//! worker call would: it rescues jobs whose lease expired (their worker died)
//! promotes delayed jobs that came due, and fails jobs that did not start
//! before their `expires_at`. Less often, it sweeps finished
//! jobs beyond their queue's retention rules.

use drover_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often maintenance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Time between two passes; a lease that expired is rescued within about
    /// this long. Default 1 s.
    pub interval: Duration,
    /// Time between two retention sweeps (checked at each pass), and before
    /// the first. Default 30 s: retention is by the day, so no hurry.
    pub retention_interval: Duration,
    /// Most jobs one sweep call removes; a sweep calls again until a call
    /// removes fewer. Default 500: each call is one writer transaction,
    /// and a small one never holds up the jobs being claimed and finished.
    pub retention_batch: u32,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), retention_interval: Duration::from_secs(30), retention_batch: 500 }
    }
}

/// A running maintenance loop. Several may run on one store (every worker
/// and server starts one): each pass is one idempotent store transaction.
#[derive(Debug)]
pub struct Maintenance {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Maintenance {
    /// Starts the loop on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>, config: MaintenanceConfig) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store, config, stop.clone()));
        Self { stop, task }
    }

    /// Stops the loop and waits for the pass in progress, if any.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(store: Arc<dyn Store>, config: MaintenanceConfig, stop: CancellationToken) {
    // The first sweep waits one interval: at start-up (a deploy, a restart
    // after downtime) the writer has a backlog of real work to hand out
    // first, and retention is by the day, so nothing is lost by waiting.
    let mut next_sweep = tokio::time::Instant::now() + config.retention_interval;
    loop {
        match store.job_rescue_expired().await {
            Ok(report) if report.total() > 0 => tracing::info!(
                requeued = report.requeued.len(),
                failed = report.failed.len(),
                cancelled = report.cancelled.len(),
                "rescued jobs whose lease expired"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lease rescue failed; will try again"),
        }
        if let Err(e) = store.job_promote_due().await {
            tracing::warn!(error = %e, "promoting due jobs failed; will try again");
        }
        match store.job_expire_due().await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "failed jobs not started before their expires_at"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring jobs failed; will try again"),
        }
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + config.retention_interval;
            sweep(&*store, config.retention_batch, &stop).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Removes finished jobs beyond retention, one small batch per store call,
/// until a batch comes back short (or the loop is stopping).
async fn sweep(store: &dyn Store, batch: u32, stop: &CancellationToken) {
    let mut total = 0u64;
    while !stop.is_cancelled() {
        match store.job_retention_sweep(batch).await {
            Ok(n) => {
                total += n;
                if n < u64::from(batch) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention sweep failed; will try again");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(removed = total, "removed finished jobs beyond retention");
    }
}

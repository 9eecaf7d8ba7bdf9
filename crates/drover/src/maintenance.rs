//! [`Maintenance`]: the background service that keeps states true when no
//! worker call would: it rescues jobs whose lease expired (their worker died)
//! and promotes delayed jobs that came due.

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
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1) }
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
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

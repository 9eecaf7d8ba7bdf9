//! Reports outcomes to the store in batches: whatever finished while the
//! previous batch was being committed goes in the next one.

use super::Shared;
use drover_store::{JobFinish, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Attempts at reporting one batch before giving up on it. Giving up loses
/// nothing: the jobs stay active until their leases expire and are rescued.
const MAX_TRIES: u32 = 8;

pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<JobFinish>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(shared.config.finish_batch);
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, shared.config.finish_batch) => {
                if n == 0 {
                    return;
                }
            }
            _ = stop.cancelled() => {
                // Every job task has ended: report what is left and stop.
                while let Ok(item) = rx.try_recv() {
                    batch.push(item);
                }
                if !batch.is_empty() {
                    report(&shared, std::mem::take(&mut batch)).await;
                }
                return;
            }
        }
        report(&shared, std::mem::take(&mut batch)).await;
    }
}

async fn report(shared: &Shared, batch: Vec<JobFinish>) {
    let mut pause = Duration::from_millis(50);
    for tries in 1..=MAX_TRIES {
        match shared.store.job_finish_many(batch.clone()).await {
            Ok(results) => {
                for (item, result) in batch.iter().zip(results) {
                    match result {
                        Ok(_) => {}
                        Err(StoreError::LeaseLost(_)) => {
                            tracing::warn!(job_id = %item.id, "outcome refused: the lease was lost (the job ran past its lease and was handed to another worker)")
                        }
                        Err(e) => tracing::warn!(job_id = %item.id, error = %e, "outcome refused"),
                    }
                }
                return;
            }
            Err(e) if tries < MAX_TRIES && !matches!(e, StoreError::Closed) => {
                tracing::warn!(error = %e, jobs = batch.len(), retry_in_ms = pause.as_millis() as u64, "reporting outcomes failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "gave up reporting outcomes; the jobs will be rescued when their leases expire");
                return;
            }
        }
    }
}

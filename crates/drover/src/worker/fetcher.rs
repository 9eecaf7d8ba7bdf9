//! One fetcher per queue: claims up to the free slots, then sleeps until
//! there may be work again.

use super::{Shared, executor};
use crate::wait::wait_for_work;
use drover_store::JobClaimParams;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub(super) async fn run(shared: Arc<Shared>, queue: String, slots: Arc<Semaphore>) {
    let mut ready = shared.store.ready_signal();
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("worker semaphores are never closed"),
            _ = shared.stopping.cancelled() => return,
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        // Marked seen before the claim: a job enqueued while the claim runs
        // changes the signal again, so the wait below cannot miss it.
        ready.borrow_and_update();
        let params = JobClaimParams {
            queues: vec![queue.clone()],
            worker_id: shared.config.worker_id.clone(),
            max: u32::try_from(permits.len()).unwrap_or(u32::MAX),
            lease_ms: u64::try_from(shared.config.lease.as_millis()).unwrap_or(u64::MAX),
        };
        let claimed = match shared.store.job_claim(params).await {
            Ok(claimed) => {
                failures = 0;
                claimed
            }
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(50 * 2u64.pow(failures.min(7)));
                tracing::warn!(queue = %queue, error = %e, retry_in_ms = pause.as_millis() as u64, "claim failed");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = shared.stopping.cancelled() => return,
                }
            }
        };
        let drained = claimed.len() < permits.len();
        for job in claimed {
            let permit = permits.pop().expect("a store never hands out more than max");
            shared.tracker.spawn(executor::run(shared.clone(), job, permit));
        }
        drop(permits);
        if !drained {
            // Let the jobs just spawned (and others finishing) run before
            // counting free slots again: quick jobs hand theirs back at once,
            // so the next claim takes a full batch instead of the few slots
            // free this very instant (one claim round trip per batch).
            tokio::task::yield_now().await;
        }
        if drained
            && !wait_for_work(
                &*shared.store,
                std::slice::from_ref(&queue),
                &mut ready,
                shared.config.poll_interval,
                &shared.stopping,
            )
            .await
        {
            return;
        }
    }
}

//! [`wait_for_work`]: how a fetcher with nothing to claim sleeps — the one
//! implementation shared by the in-process worker and the HTTP long poll.

use drover_store::Store;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The shortest nap when the next due time has already passed (a job that
/// the last claim could not take, e.g. on a paused queue): no busy loop.
const MIN_NAP: Duration = Duration::from_millis(10);

/// Sleeps until jobs of `queues` may be claimable: the store's ready signal
/// changes (an enqueue, a retry, a resume), the next delayed job comes due,
/// or `max_nap` passes (the safety-net poll, or the caller's deadline).
/// Returns false when `stop` fired.
///
/// Mark `ready` seen (`borrow_and_update`) *before* the claim that came back
/// empty: a change made while that claim ran then wakes this wait at once,
/// so no wake-up is lost.
pub async fn wait_for_work(
    store: &dyn Store,
    queues: &[String],
    ready: &mut watch::Receiver<u64>,
    max_nap: Duration,
    stop: &CancellationToken,
) -> bool {
    let mut nap = max_nap;
    if let Ok(Some(due)) = store.job_next_due(queues).await {
        nap = nap.min(store.now().until(due).max(MIN_NAP));
    }
    tokio::select! {
        _ = ready.changed() => true,
        _ = tokio::time::sleep(nap) => true,
        _ = stop.cancelled() => false,
    }
}

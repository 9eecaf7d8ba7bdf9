//! Runs one claimed job: its handler under timeout, cancellation and panic
//! protection, then hands the outcome to the completer.

use super::{ActiveJob, Shared};
use crate::{HandlerError, JobContext};
use drover_core::{EventKind, FailureReport, JobError};
use drover_store::{ClaimedJob, FinishOutcome, JobFinish};
use futures::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

pub(super) async fn run(shared: Arc<Shared>, claimed: ClaimedJob, _slot: OwnedSemaphorePermit) {
    let ClaimedJob { job, lease_token, attempt, .. } = claimed;
    let id = job.id.clone();
    let cancel = CancellationToken::new();
    shared.active.lock().insert(id.clone(), ActiveJob { lease_token, cancel: cancel.clone() });

    let outcome = match shared.handlers.get(&job.name).cloned() {
        None => FinishOutcome::Fail(FailureReport::fatal(JobError::with_code(
            "no_handler",
            format!("worker {} has no handler for job name `{}`", shared.config.worker_id, job.name),
        ))),
        Some(handler) => {
            let timeout = job.timeout_ms.map(Duration::from_millis);
            let ctx = JobContext::new(Arc::new(job), attempt, lease_token, shared.client.clone(), cancel.clone());
            let attempt_fut = async move {
                // A handler may panic while building its future, or while it runs.
                let fut = std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx))).map_err(panic_error)?;
                AssertUnwindSafe(fut).catch_unwind().await.map_err(panic_error)
            };
            supervise_attempt(&shared, attempt_fut, timeout, &cancel).await
        }
    };

    shared.active.lock().remove(&id);
    // The completer lives until every job task has ended, so this cannot fail.
    let _ = shared.finish_tx.send(JobFinish { id, lease_token, outcome });
}

/// Runs an attempt to its end, its timeout, a cancel (plus the cancel
/// grace), or a hard stop (the job is handed back).
async fn supervise_attempt(
    shared: &Shared,
    attempt: impl std::future::Future<Output = Result<Result<Value, HandlerError>, HandlerError>>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> FinishOutcome {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(attempt, deadline);
    let result = tokio::select! {
        result = &mut attempt => result,
        _ = &mut deadline => {
            cancel.cancel();
            let ms = timeout.map_or(0, |t| t.as_millis());
            return FinishOutcome::Fail(FailureReport::retryable(JobError::with_code("timeout", format!("attempt timed out after {ms} ms"))));
        }
        _ = cancel.cancelled() => {
            // Cancel requested or lease lost: the handler was told through
            // its context and gets the cancel grace to clean up.
            match tokio::time::timeout(shared.config.cancel_grace, &mut attempt).await {
                Ok(result) => result,
                Err(_) => Err(HandlerError { kind: crate::HandlerErrorKind::Fatal, error: JobError::with_code("cancelled", "handler did not stop within the cancel grace") }),
            }
        }
        _ = shared.hard_stop.cancelled() => {
            cancel.cancel();
            return FinishOutcome::Release;
        }
    };
    match result.and_then(|r| r) {
        Ok(value) => FinishOutcome::Complete(value),
        Err(e) => FinishOutcome::Fail(e.into_report()),
    }
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> HandlerError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_owned());
    HandlerError {
        kind: crate::HandlerErrorKind::Retryable,
        error: JobError::with_code("panic", format!("handler panicked: {message}")),
    }
}

/// Delivers cancels to running handlers as soon as the store publishes them
/// (heartbeat replies are the fallback when an event is missed).
pub(super) async fn watch_cancels(shared: Arc<Shared>) {
    let mut events = shared.store.events();
    loop {
        match events.recv().await {
            Ok(event) if event.kind == EventKind::CancelRequested => {
                if let Some(id) = &event.job_id
                    && let Some(active) = shared.active.lock().get(id)
                {
                    active.cancel.cancel();
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

//! Cases about `job_cancel`: at once for jobs not running, by request for
//! active ones, refused for finished ones.

use super::support::*;
use crate::testsuite::{Factory, fresh, spec};
use crate::{CancelOutcome, JobHeartbeat};
use drover_core::{AttemptOutcome, EventKind, FailureReport, JobError, JobState};
use serde_json::json;

/// Cancelling a `waiting` or `delayed` job makes it `cancelled` at once
/// (with `job:cancelled`); it is never claimed or promoted afterwards.
pub async fn cancel_waiting_and_delayed(make: Factory) {
    let t = fresh(make).await;
    let waiting = insert_one(&t, spec("w")).await;
    let delayed = insert_one(&t, spec("d").delay_ms(1_000)).await;
    let mut events = t.store.events();
    for job in [&waiting, &delayed] {
        match t.store.job_cancel(&job.id).await.unwrap() {
            CancelOutcome::Cancelled(j) => assert_eq!(j.state, JobState::Cancelled),
            other => panic!("a job that is not running is cancelled at once, got {other:?}"),
        }
        let read = get(&t, &job.id).await;
        assert_eq!(read.state, JobState::Cancelled);
        assert_eq!(read.finished_at, Some(t.clock_now()));
        wait_event(&mut events, EventKind::Cancelled, Some(&job.id)).await;
    }
    advance_ms(&t, 2_000);
    assert_eq!(t.store.job_promote_due().await.unwrap(), 0);
    claim_none(&t, "q").await;
    assert_eq!(counts(&t, "q").await.cancelled, 2);
    assert_eq!(t.store.job_next_due(&[]).await.unwrap(), None);
}

/// Cancelling an active job only requests it (`Requested`, `job:cancel_requested`);
/// the heartbeat reply says `cancel_requested`, and when the worker reports
/// back the job ends `cancelled`, keeping its result.
pub async fn cancel_active(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("browser")).await;
    let c = claim_one(&t, "q").await;
    let mut events = t.store.events();

    let outcome = t.store.job_cancel(&job.id).await.unwrap();
    let CancelOutcome::Requested(j) = outcome else { panic!("an active job is only asked to stop, got {outcome:?}") };
    assert_eq!(j.state, JobState::Active);
    assert!(j.cancel_requested);
    assert!(get(&t, &job.id).await.cancel_requested);
    wait_event(&mut events, EventKind::CancelRequested, Some(&job.id)).await;

    let beat = JobHeartbeat { id: job.id.clone(), lease_token: c.lease_token, lease_ms: LEASE_MS, progress: None };
    let reply = t.store.job_heartbeat_many(vec![beat]).await.unwrap().pop().unwrap().unwrap();
    assert!(reply.cancel_requested, "the heartbeat reply tells the worker to stop");

    let done = finish_ok(&t, &c, json!({"partial": true})).await;
    assert_eq!(done.state, JobState::Cancelled);
    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Cancelled);
    assert_eq!(read.result, Some(json!({"partial": true})), "the result is kept");
    assert_eq!(read.attempts.len(), 1);
    assert_eq!(read.attempts[0].outcome, AttemptOutcome::Cancelled);
    wait_event(&mut events, EventKind::Cancelled, Some(&job.id)).await;
    claim_none(&t, "q").await;
}

/// A job whose cancel was requested ends `cancelled` when its worker reports
/// a failure, even a retryable one with attempts left: it is not retried.
pub async fn cancel_active_then_fail_ends_cancelled(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("aborted").attempts(5)).await;
    let c = claim_one(&t, "q").await;
    t.store.job_cancel(&job.id).await.unwrap();
    let done = finish_fail(&t, &c, FailureReport::retryable(JobError::new("interrupted"))).await;
    assert_eq!((done.state, done.run_at), (JobState::Cancelled, None));
    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Cancelled);
    advance_ms(&t, 3_600_000);
    claim_none(&t, "q").await;
}

/// A job whose cancel was requested and whose lease then runs out is
/// rescued as `cancelled` (not re-queued), after `job:stalled`.
pub async fn cancel_active_then_lease_expires(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("hung")).await;
    claim_as(&t, &["q"], 1, WORKER, 1_000).await;
    t.store.job_cancel(&job.id).await.unwrap();
    let mut events = t.store.events();
    advance_ms(&t, 1_001);
    let report = t.store.job_rescue_expired().await.unwrap();
    assert_eq!(report.cancelled, std::slice::from_ref(&job.id));
    assert!(report.requeued.is_empty() && report.failed.is_empty());
    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Cancelled);
    assert_eq!(read.attempts.last().map(|a| a.outcome), Some(AttemptOutcome::Stalled));
    let seen = events_for(&mut events, &job.id, 2).await;
    assert_eq!(kinds(&seen), [EventKind::Stalled, EventKind::Cancelled]);
    claim_none(&t, "q").await;
}

/// Cancelling a finished job (`completed`, `failed`, `cancelled`) is refused
/// with `InvalidState` naming its state, and leaves it as it was; an unknown
/// id is `NotFound`.
pub async fn cancel_finished_refused(make: Factory) {
    let t = fresh(make).await;
    let completed = completed_job(&t, spec("c")).await;
    let failed = failed_job(&t, spec("f")).await;
    let cancelled = insert_one(&t, spec("x")).await;
    t.store.job_cancel(&cancelled.id).await.unwrap();
    let cancelled = get(&t, &cancelled.id).await;
    for job in [&completed, &failed, &cancelled] {
        assert_invalid_state(t.store.job_cancel(&job.id).await, job.state);
        assert_eq!(&get(&t, &job.id).await, job, "a refused cancel changes nothing");
    }
    assert_not_found(t.store.job_cancel(&jid("ghost")).await);
}

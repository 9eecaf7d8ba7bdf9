//! Cases about job TTL (`expires_at`): a job that has not started by then
//! is never handed out and ends `failed` with error code `expired`.

use super::support::*;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use drover_core::{Backoff, EventKind, Job, JobState};

/// Asserts the job ended expired at `at`, with no attempt on record.
async fn assert_expired(t: &TestStore, job: &Job) {
    let stored = get(t, &job.id).await;
    assert_eq!(stored.state, JobState::Failed);
    let error = stored.error.expect("an expired job carries an error");
    assert_eq!(error.code.as_deref(), Some("expired"));
    assert_eq!(stored.finished_at, Some(t.clock_now()));
    assert_eq!(stored.attempts_made, 0);
    assert!(stored.attempts.is_empty(), "an expired job never ran: {:?}", stored.attempts);
}

/// A waiting job past its `expires_at` is not claimed: the claim fails it
/// (`expired`, event `job:failed`) and hands out nothing; counts follow.
pub async fn expired_job_not_claimed(make: Factory) {
    let t = fresh(make).await;
    let mut events = t.store.events();
    let job = insert_one(&t, spec("late").expires_at(t.clock_now().plus_ms(1_000))).await;
    assert_eq!(job.expires_at, Some(t.clock_now().plus_ms(1_000)));
    assert_eq!(get(&t, &job.id).await.expires_at, job.expires_at, "stored as given");
    advance_ms(&t, 1_000);
    claim_none(&t, "q").await;
    assert_expired(&t, &job).await;
    let failed = wait_event(&mut events, EventKind::Failed, Some(&job.id)).await;
    assert_eq!(failed.data["error"]["code"], "expired");
    let c = counts(&t, "q").await;
    assert_eq!((c.waiting, c.failed), (0, 1));
}

/// Before its `expires_at` a job is claimed as usual, and once started the
/// TTL no longer applies, not even to its retries.
pub async fn expires_at_spares_started_jobs(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(
        &t,
        spec("in-time").attempts(2).backoff(Backoff::fixed(5_000)).expires_at(t.clock_now().plus_ms(1_000)),
    )
    .await;
    advance_ms(&t, 999);
    let first = claim_one(&t, "q").await;
    assert_eq!(finish_fail(&t, &first, boom("flaky")).await.state, JobState::Delayed);
    advance_ms(&t, 5_000);
    assert_eq!(t.store.job_expire_due().await.unwrap(), 0, "a job that started is past the TTL's reach");
    let second = claim_one(&t, "q").await;
    assert_eq!(second.job.id, job.id);
    assert_eq!(second.attempt, 2);
}

/// `job_expire_due` (the maintenance loop's call) fails unstarted jobs past
/// their `expires_at` without any claimer, delayed ones included, and
/// leaves the others alone.
pub async fn expire_due_fails_waiting_and_delayed(make: Factory) {
    let t = fresh(make).await;
    let soon = t.clock_now().plus_ms(600_000);
    let waiting = insert_one(&t, spec("waiting").expires_at(soon)).await;
    let delayed = insert_one(&t, spec("delayed").delay_ms(3_600_000).expires_at(soon)).await;
    let later = insert_one(&t, spec("later").expires_at(soon.plus_ms(1))).await;
    let forever = insert_one(&t, spec("forever")).await;
    assert_eq!(t.store.job_expire_due().await.unwrap(), 0, "nothing is due yet");
    advance_ms(&t, 600_000);
    assert_eq!(t.store.job_expire_due().await.unwrap(), 2);
    assert_expired(&t, &waiting).await;
    assert_expired(&t, &delayed).await;
    for job in [&later, &forever] {
        assert_eq!(get(&t, &job.id).await.state, JobState::Waiting);
    }
    let c = counts(&t, "q").await;
    assert_eq!((c.waiting, c.delayed, c.failed), (2, 0, 2));
    assert_eq!(t.store.job_expire_due().await.unwrap(), 0, "each job expires once");
}

/// A manual retry of an expired job lifts its TTL: it runs.
pub async fn manual_retry_of_expired_job_runs_it(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("late").expires_at(t.clock_now())).await;
    assert_eq!(t.store.job_expire_due().await.unwrap(), 1);
    let retried = t.store.job_retry(&job.id).await.unwrap();
    assert_eq!((retried.state, retried.expires_at), (JobState::Waiting, None));
    assert_eq!(claim_one(&t, "q").await.job.id, job.id);
}

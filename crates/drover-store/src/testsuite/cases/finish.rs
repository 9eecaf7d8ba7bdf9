//! Cases about `job_finish_many`: completion, retries with backoff, the
//! dead-letter state, fatal and rate-limited failures.

use super::support::*;
use crate::testsuite::{Factory, fresh, spec};
use crate::{FinishOutcome, JobFinish};
use drover_core::{AttemptOutcome, Backoff, FailureReport, JobError, JobState, LeaseToken};
use serde_json::json;
use std::time::Duration;

/// Completing records the result, `completed`, `finished_at`, ends the
/// lease, and appends one `completed` attempt with its start, end and worker.
pub async fn complete_records_result_and_attempt(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("work")).await;
    let started = t.clock_now();
    let c = claim_as(&t, &["q"], 1, "worker-9", LEASE_MS).await.pop().unwrap();
    advance_ms(&t, 250);
    let done = finish_ok(&t, &c, json!({"rows": 1000})).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.run_at, None);

    let job = get(&t, &job.id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, Some(json!({"rows": 1000})));
    assert_eq!(job.error, None);
    assert_eq!(job.attempts_made, 1);
    assert_eq!(job.started_at, Some(started));
    assert_eq!(job.finished_at, Some(started.plus_ms(250)));
    assert_eq!(job.lease_expires_at, None, "no lease once finished");
    assert_eq!(job.attempts.len(), 1);
    let a = &job.attempts[0];
    assert_eq!(a.attempt, 1);
    assert_eq!(a.started_at, started);
    assert_eq!(a.finished_at, started.plus_ms(250));
    assert_eq!(a.outcome, AttemptOutcome::Completed);
    assert_eq!(a.error, None);
    assert_eq!(a.worker_id.as_deref(), Some("worker-9"));
    claim_none(&t, "q").await;
}

/// A second finish with the same token is refused with `LeaseLost` and
/// changes nothing: no second result, no second attempt.
pub async fn finish_twice_refused(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("once")).await;
    let c = claim_one(&t, "q").await;
    finish_ok(&t, &c, json!(1)).await;
    let before = get(&t, &job.id).await;
    assert_lease_lost(finish(&t, &job.id, c.lease_token, FinishOutcome::Complete(json!(2))).await, "second completion");
    assert_lease_lost(
        finish(&t, &job.id, c.lease_token, FinishOutcome::Fail(boom("late"))).await,
        "failure after completion",
    );
    assert_eq!(get(&t, &job.id).await, before);
}

/// One finish call answers each item on its own: an item with a wrong token
/// is refused and leaves its job active, while the other items apply.
pub async fn finish_many_per_item(make: Factory) {
    let t = fresh(make).await;
    insert_all(&t, vec![spec("a").attempts(1), spec("b"), spec("c")]).await;
    let claimed = claim(&t, &["q"], 3).await;
    assert_eq!(claimed.len(), 3);
    let item = |i: usize, token: LeaseToken, outcome: FinishOutcome| JobFinish {
        id: claimed[i].job.id.clone(),
        lease_token: token,
        outcome,
    };
    let results = t
        .store
        .job_finish_many(vec![
            item(0, claimed[0].lease_token, FinishOutcome::Fail(boom("no luck"))),
            item(1, LeaseToken(claimed[1].lease_token.0 ^ 0x1234), FinishOutcome::Complete(json!("x"))),
            item(2, claimed[2].lease_token, FinishOutcome::Complete(json!("c"))),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().state, JobState::Failed);
    assert_lease_lost(results[1].clone(), "wrong token");
    assert_eq!(results[2].as_ref().unwrap().state, JobState::Completed);
    let b = get(&t, &claimed[1].job.id).await;
    assert_eq!((b.state, b.result, b.attempts.len()), (JobState::Active, None, 0));
    assert_eq!(get(&t, &claimed[2].job.id).await.result, Some(json!("c")));
}

/// A retryable failure with attempts left sends the job to `delayed` with
/// `run_at = now + backoff(attempt)`; it is not claimable before, it is
/// after; the last failure leaves it `failed` with its error and every
/// attempt in the history.
pub async fn retry_with_backoff_then_dead_letter(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("flaky").attempts(3).backoff(Backoff::exponential(1_000))).await;

    for (attempt, delay) in [(1u32, 1_000u64), (2, 2_000)] {
        let c = claim_one(&t, "q").await;
        assert_eq!((c.attempt, c.job.attempts_made), (attempt, attempt));
        let now = t.clock_now();
        let done = finish_fail(&t, &c, boom(&format!("try {attempt}"))).await;
        assert_eq!(done.state, JobState::Delayed);
        assert_eq!(done.run_at, Some(now.plus_ms(delay as i64)));
        let read = get(&t, &job.id).await;
        assert_eq!(read.state, JobState::Delayed);
        assert_eq!(read.run_at, now.plus_ms(delay as i64));
        assert_eq!(read.attempts_made, attempt);
        assert_eq!(read.error.as_ref().map(|e| e.message.as_str()), Some(format!("try {attempt}").as_str()));
        assert_eq!(read.finished_at, None, "a retrying job has not finished");

        claim_none(&t, "q").await;
        advance_ms(&t, delay - 1);
        claim_none(&t, "q").await;
        advance_ms(&t, 1);
    }

    let c = claim_one(&t, "q").await;
    assert_eq!(c.attempt, 3);
    let mut last = JobError::new("try 3");
    last.code = Some("upstream".into());
    last.details = json!({"status": 502});
    let done = finish_fail(&t, &c, FailureReport::retryable(last.clone())).await;
    assert_eq!((done.state, done.run_at), (JobState::Failed, None));

    let dead = get(&t, &job.id).await;
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(dead.error, Some(last.clone()), "the last error is kept whole");
    assert_eq!(dead.attempts_made, 3);
    assert_eq!(dead.finished_at, Some(t.clock_now()));
    let history: Vec<(u32, AttemptOutcome)> = dead.attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(history, [(1, AttemptOutcome::Failed), (2, AttemptOutcome::Failed), (3, AttemptOutcome::Failed)]);
    assert_eq!(dead.attempts[0].error.as_ref().unwrap().message, "try 1");
    assert_eq!(dead.attempts[2].error.as_ref(), Some(&last));
    advance_ms(&t, 3_600_000);
    claim_none(&t, "q").await;
    assert_eq!(counts(&t, "q").await.failed, 1);
}

/// A failure carrying `retry_after` waits that long, not the backoff delay.
pub async fn retry_after_overrides_backoff(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("503").backoff(Backoff::fixed(1_000))).await;
    let c = claim_one(&t, "q").await;
    let now = t.clock_now();
    let mut report = boom("try later");
    report.retry_after = Some(Duration::from_secs(30));
    let done = finish_fail(&t, &c, report).await;
    assert_eq!((done.state, done.run_at), (JobState::Delayed, Some(now.plus_ms(30_000))));
    assert_eq!(get(&t, &job.id).await.attempts_made, 1, "a plain retry spends its attempt");
    advance_ms(&t, 29_999);
    claim_none(&t, "q").await;
    advance_ms(&t, 1);
    assert_eq!(claim_one(&t, "q").await.attempt, 2);
}

/// A failure marked non-retryable fails the job at once, attempts left or
/// not, and it is never claimed again.
pub async fn non_retryable_failure(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("bad_payload").attempts(5).backoff(Backoff::fixed(10))).await;
    let c = claim_one(&t, "q").await;
    let done = finish_fail(&t, &c, FailureReport::fatal(JobError::new("payload is not an email"))).await;
    assert_eq!((done.state, done.run_at), (JobState::Failed, None));
    let job = get(&t, &job.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts_made, 1);
    assert_eq!(job.error.as_ref().unwrap().message, "payload is not an email");
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].outcome, AttemptOutcome::Failed);
    advance_ms(&t, 1_000);
    claim_none(&t, "q").await;
}

/// A rate-limited failure sends the job to `delayed` by `retry_after` and
/// hands its attempt back — even on its last attempt — recording a
/// `rate_limited` attempt; it runs again once the time has passed.
pub async fn rate_limited_failure_keeps_attempt(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("api_call").attempts(1)).await;
    let c = claim_one(&t, "q").await;
    assert_eq!(c.job.attempts_made, 1);
    let now = t.clock_now();
    let report = FailureReport::rate_limited(JobError::new("429"), Duration::from_secs(5));
    let done = finish_fail(&t, &c, report).await;
    assert_eq!((done.state, done.run_at), (JobState::Delayed, Some(now.plus_ms(5_000))));

    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Delayed);
    assert_eq!(read.run_at, now.plus_ms(5_000));
    assert_eq!(read.attempts_made, 0, "the attempt is handed back");
    assert_eq!(read.attempts.len(), 1);
    assert_eq!(read.attempts[0].outcome, AttemptOutcome::RateLimited);

    advance_ms(&t, 4_999);
    claim_none(&t, "q").await;
    advance_ms(&t, 1);
    let again = claim_one(&t, "q").await;
    assert_eq!(again.job.attempts_made, 1, "the one attempt is still available");
    assert_eq!(finish_ok(&t, &again, json!("ok")).await.state, JobState::Completed);
    assert_eq!(get(&t, &job.id).await.attempts.len(), 2);
}

/// A release (graceful shutdown ran out of time) sends the job back to
/// `waiting` at once with its attempt handed back — even its last one — and
/// a `released` attempt recorded, publishing `job:waiting` and waking
/// fetchers; it is claimable again straight away.
pub async fn release_hands_job_back(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("interrupted").attempts(1)).await;
    let c = claim_as(&t, &["q"], 1, "leaving-worker", LEASE_MS).await.pop().unwrap();
    let mut events = t.store.events();
    let mut ready = t.store.ready_signal();
    ready.borrow_and_update();
    let done = finish(&t, &job.id, c.lease_token, FinishOutcome::Release).await.unwrap();
    assert_eq!((done.state, done.run_at), (JobState::Waiting, None));

    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Waiting);
    assert_eq!(read.attempts_made, 0, "the attempt is handed back");
    assert_eq!(read.stalls, 0, "a release is not a stall");
    assert_eq!(read.lease_expires_at, None);
    assert_eq!(read.attempts.len(), 1);
    assert_eq!(read.attempts[0].outcome, AttemptOutcome::Released);
    assert_eq!(read.attempts[0].worker_id.as_deref(), Some("leaving-worker"));
    wait_event(&mut events, drover_core::EventKind::Waiting, Some(&job.id)).await;
    tokio::time::timeout(DEADLINE, ready.changed()).await.expect("a release wakes fetchers").unwrap();

    assert_lease_lost(finish(&t, &job.id, c.lease_token, FinishOutcome::Release).await, "release twice");
    let again = claim_one(&t, "q").await;
    assert_eq!(again.job.attempts_made, 1);
    assert_eq!(finish_ok(&t, &again, json!("ok")).await.state, JobState::Completed);
}

/// Releasing a job whose cancel was requested ends it `cancelled`, with a
/// `cancelled` attempt, instead of handing it back.
pub async fn release_of_cancel_requested_job_cancels(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("interrupted")).await;
    let c = claim_one(&t, "q").await;
    t.store.job_cancel(&job.id).await.unwrap();
    let done = finish(&t, &job.id, c.lease_token, FinishOutcome::Release).await.unwrap();
    assert_eq!(done.state, JobState::Cancelled);
    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Cancelled);
    assert_eq!(read.attempts.last().map(|a| a.outcome), Some(AttemptOutcome::Cancelled));
    claim_none(&t, "q").await;
}

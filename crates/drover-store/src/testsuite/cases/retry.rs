//! Cases about `job_retry`: the manual retry of dead-lettered jobs.

use super::support::*;
use crate::testsuite::{Factory, fresh, spec};
use drover_core::{AttemptOutcome, Backoff, EventKind, JobState};
use serde_json::json;

/// A manual retry of a `failed` job puts it back to `waiting` with
/// `max_attempts` raised by its original budget, its error cleared and its
/// history kept; attempt numbers keep increasing and the fresh
/// budget allows retries again.
pub async fn manual_retry_keeps_attempt_history(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("sync").attempts(2).backoff(Backoff::fixed(100))).await;
    let c = claim_one(&t, "q").await;
    assert_eq!(finish_fail(&t, &c, boom("first")).await.state, JobState::Delayed);
    advance_ms(&t, 100);
    let c = claim_one(&t, "q").await;
    assert_eq!(finish_fail(&t, &c, boom("second")).await.state, JobState::Failed);
    let dead = get(&t, &job.id).await;
    assert_eq!((dead.attempts_made, dead.attempts.len()), (2, 2));

    let mut events = t.store.events();
    let retried = t.store.job_retry(&job.id).await.unwrap();
    for j in [&retried, &get(&t, &job.id).await] {
        assert_eq!(j.state, JobState::Waiting);
        assert_eq!(j.max_attempts, 4, "raised by the original budget of 2");
        assert_eq!(j.attempts_made, 2);
        assert_eq!(j.error, None);
        assert_eq!(j.stalls, 0);
        assert_eq!(j.finished_at, None);
    }
    assert_eq!(get(&t, &job.id).await.attempts, dead.attempts, "history kept as it was");
    wait_event(&mut events, EventKind::Waiting, Some(&job.id)).await;

    let c = claim_one(&t, "q").await;
    assert_eq!((c.attempt, c.job.attempts_made), (3, 3));
    assert_eq!(finish_fail(&t, &c, boom("third")).await.state, JobState::Delayed, "the fresh budget allows a retry");
    advance_ms(&t, 100);
    let c = claim_one(&t, "q").await;
    assert_eq!(c.attempt, 4);
    assert_eq!(finish_fail(&t, &c, boom("fourth")).await.state, JobState::Failed);

    let history = get(&t, &job.id).await.attempts;
    let numbered: Vec<(u32, AttemptOutcome)> = history.iter().map(|a| (a.attempt, a.outcome)).collect();
    use AttemptOutcome::Failed;
    assert_eq!(numbered, [(1, Failed), (2, Failed), (3, Failed), (4, Failed)], "numbers keep increasing");
    let messages: Vec<&str> = history.iter().map(|a| a.error.as_ref().unwrap().message.as_str()).collect();
    assert_eq!(messages, ["first", "second", "third", "fourth"]);
}

/// A manual retry gives exactly the original budget again, however many
/// attempts were spent: `max_attempts = attempts_made + attempts` (a job
/// failed for good on its first of 5 attempts may run 5 more times, not 9).
pub async fn manual_retry_gives_fresh_budget(make: Factory) {
    let t = fresh(make).await;
    let job = failed_job(&t, spec("fatal").attempts(5).backoff(Backoff::fixed(10))).await;
    assert_eq!((job.attempts_made, job.max_attempts), (1, 5));
    let retried = t.store.job_retry(&job.id).await.unwrap();
    assert_eq!((retried.attempts_made, retried.max_attempts), (1, 6));
    // Five more attempts: four retries, then the fifth failure is final.
    for attempt in 2..=6 {
        let c = claim_one(&t, "q").await;
        assert_eq!(c.attempt, attempt);
        let expected = if attempt < 6 { JobState::Delayed } else { JobState::Failed };
        assert_eq!(finish_fail(&t, &c, boom("again")).await.state, expected, "attempt {attempt}");
        advance_ms(&t, 10);
    }
    claim_none(&t, "q").await;
}

/// A manual retry of a job that failed by stalling clears its stall count
/// and error, so it gets its full stall budget back.
pub async fn manual_retry_clears_stalls(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("stuck").max_stalls(0)).await;
    claim_as(&t, &["q"], 1, WORKER, 1_000).await;
    advance_ms(&t, 1_001);
    assert_eq!(t.store.job_rescue_expired().await.unwrap().failed, std::slice::from_ref(&job.id));
    let dead = get(&t, &job.id).await;
    assert_eq!((dead.state, dead.stalls), (JobState::Failed, 1));
    let retried = t.store.job_retry(&job.id).await.unwrap();
    assert_eq!((retried.state, retried.stalls, retried.error.clone()), (JobState::Waiting, 0, None));
    assert_eq!(get(&t, &job.id).await.attempts.len(), 1, "the stalled attempt stays in the history");
    let c = claim_one(&t, "q").await;
    assert_eq!(finish_ok(&t, &c, json!("ok")).await.state, JobState::Completed);
}

/// A manual retry of a `cancelled` job puts it back to `waiting`, claimable.
pub async fn manual_retry_of_cancelled_job(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("oops")).await;
    t.store.job_cancel(&job.id).await.unwrap();
    let retried = t.store.job_retry(&job.id).await.unwrap();
    assert_eq!(retried.state, JobState::Waiting);
    assert_eq!(retried.finished_at, None);
    let c = claim_one(&t, "q").await;
    assert_eq!(c.job.id, job.id);
    assert_eq!(finish_ok(&t, &c, json!(1)).await.state, JobState::Completed);
}

/// A manual retry of a job that is `waiting`, `delayed`, `active` or
/// `completed` is refused with `InvalidState` and changes nothing; an
/// unknown id is `NotFound`.
pub async fn retry_refused_unless_failed_or_cancelled(make: Factory) {
    let t = fresh(make).await;
    let completed = completed_job(&t, spec("done")).await;
    insert_one(&t, spec("running")).await;
    let active = get(&t, &claim_one(&t, "q").await.job.id).await;
    let waiting = insert_one(&t, spec("waiting")).await;
    let delayed = insert_one(&t, spec("delayed").delay_ms(60_000)).await;
    for job in [&waiting, &delayed, &active, &completed] {
        assert_invalid_state(t.store.job_retry(&job.id).await, job.state);
        assert_eq!(&get(&t, &job.id).await, job, "a refused retry changes nothing");
    }
    assert_not_found(t.store.job_retry(&jid("ghost")).await);
}

//! Cases about `job_rescue_expired`: jobs whose worker vanished.

use super::support::*;
use crate::testsuite::{Factory, fresh, spec};
use drover_core::{AttemptOutcome, EventKind, JobState};
use serde_json::json;

/// An active job whose lease ran out goes back to `waiting` with
/// `stalls = 1`, its attempt handed back and a `stalled` attempt recorded;
/// `job:stalled` then `job:waiting` are published; a lease not yet expired
/// is left alone; the job can be claimed again.
pub async fn stalled_lease_rescue(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("crashy")).await;
    let started = t.clock_now();
    claim_as(&t, &["q"], 1, "doomed", 1_000).await;
    let mut events = t.store.events();

    advance_ms(&t, 999);
    assert_eq!(t.store.job_rescue_expired().await.unwrap().total(), 0, "lease not expired yet");
    advance_ms(&t, 2);
    let report = t.store.job_rescue_expired().await.unwrap();
    assert_eq!(report.requeued, std::slice::from_ref(&job.id));
    assert!(report.failed.is_empty() && report.cancelled.is_empty());

    let read = get(&t, &job.id).await;
    assert_eq!(read.state, JobState::Waiting);
    assert_eq!(read.stalls, 1);
    assert_eq!(read.attempts_made, 0, "the stalled attempt is handed back");
    assert_eq!(read.lease_expires_at, None);
    assert_eq!(read.attempts.len(), 1);
    let a = &read.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::Stalled);
    assert_eq!(a.started_at, started);
    assert_eq!(a.worker_id.as_deref(), Some("doomed"));

    let seen = events_for(&mut events, &job.id, 2).await;
    assert_eq!(kinds(&seen), [EventKind::Stalled, EventKind::Waiting]);
    assert_eq!(t.store.job_rescue_expired().await.unwrap().total(), 0, "rescued once only");

    let again = claim_one(&t, "q").await;
    assert_eq!(again.job.attempts_made, 1);
    finish_ok(&t, &again, json!(null)).await;
    assert_eq!(get(&t, &job.id).await.attempts.len(), 2);
}

/// A job found stalled more than `max_stalls` times ends `failed` with
/// error code `stalled` and `job:failed`, and is not claimed again.
pub async fn stalled_beyond_max_stalls_fails(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("poison").max_stalls(1).attempts(10)).await;
    let mut events = t.store.events();

    claim_as(&t, &["q"], 1, WORKER, 1_000).await;
    advance_ms(&t, 1_001);
    assert_eq!(t.store.job_rescue_expired().await.unwrap().requeued, std::slice::from_ref(&job.id));

    claim_as(&t, &["q"], 1, WORKER, 1_000).await;
    advance_ms(&t, 1_001);
    let report = t.store.job_rescue_expired().await.unwrap();
    assert_eq!(report.failed, std::slice::from_ref(&job.id));
    assert!(report.requeued.is_empty());

    let dead = get(&t, &job.id).await;
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(dead.stalls, 2);
    assert_eq!(dead.error.as_ref().and_then(|e| e.code.as_deref()), Some("stalled"));
    assert_eq!(dead.finished_at, Some(t.clock_now()));
    let outcomes: Vec<AttemptOutcome> = dead.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Stalled, AttemptOutcome::Stalled]);

    let seen = events_for(&mut events, &job.id, 6).await;
    assert_eq!(
        kinds(&seen),
        [
            EventKind::Active,
            EventKind::Stalled,
            EventKind::Waiting,
            EventKind::Active,
            EventKind::Stalled,
            EventKind::Failed
        ]
    );
    claim_none(&t, "q").await;
    assert_eq!(counts(&t, "q").await.failed, 1);
}

//! Small helpers the cases share: insert, claim and finish one job, read it
//! back, wait for events with a deadline. Each asserts what it relies on, so
//! a failure points at the store call that misbehaved.

use crate::testsuite::TestStore;
use crate::{ClaimedJob, FinishOutcome, Finished, JobClaimParams, JobFinish, StateCounts, StoreError, StoreResult};
use drover_core::{Event, EventKind, FailureReport, Job, JobError, JobId, JobSpec, JobState, LeaseToken};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long a case waits for a signal or an event before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The lease the helpers claim with, in milliseconds.
pub const LEASE_MS: u64 = 30_000;

/// The worker id the helpers claim as.
pub const WORKER: &str = "worker-1";

/// A caller-supplied job id.
pub fn jid(raw: &str) -> JobId {
    JobId::parse(raw).unwrap()
}

/// Moves the store's clock forward by `ms` milliseconds.
pub fn advance_ms(t: &TestStore, ms: u64) {
    t.clock.advance(Duration::from_millis(ms));
}

/// Inserts `specs` in one call, expects none to be a duplicate, and returns
/// the stored jobs in input order.
pub async fn insert_all(t: &TestStore, specs: Vec<JobSpec>) -> Vec<Job> {
    let n = specs.len();
    let inserted = t.store.job_insert_many(specs).await.unwrap();
    assert_eq!(inserted.len(), n, "one result per spec");
    inserted
        .into_iter()
        .map(|i| {
            assert!(!i.duplicate, "job {} unexpectedly reported as duplicate", i.job.id);
            i.job
        })
        .collect()
}

/// Inserts one job and returns it as stored.
pub async fn insert_one(t: &TestStore, spec: JobSpec) -> Job {
    insert_all(t, vec![spec]).await.pop().unwrap()
}

/// Reads a job that must exist (with its attempt history).
pub async fn get(t: &TestStore, id: &JobId) -> Job {
    t.store.job_get(id).await.unwrap().unwrap_or_else(|| panic!("job {id} should exist"))
}

/// Claims up to `max` jobs from `queues` as `worker` with a lease of `lease_ms`.
pub async fn claim_as(t: &TestStore, queues: &[&str], max: u32, worker: &str, lease_ms: u64) -> Vec<ClaimedJob> {
    let params = JobClaimParams {
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        worker_id: worker.to_owned(),
        max,
        lease_ms,
    };
    let claimed = t.store.job_claim(params).await.unwrap();
    assert!(claimed.len() <= max as usize, "claim handed out {} jobs, more than max {max}", claimed.len());
    claimed
}

/// Claims up to `max` jobs from `queues` as [`WORKER`] with [`LEASE_MS`].
pub async fn claim(t: &TestStore, queues: &[&str], max: u32) -> Vec<ClaimedJob> {
    claim_as(t, queues, max, WORKER, LEASE_MS).await
}

/// Claims from `queue` and expects exactly one job.
pub async fn claim_one(t: &TestStore, queue: &str) -> ClaimedJob {
    let mut claimed = claim(t, &[queue], 10).await;
    assert_eq!(claimed.len(), 1, "expected exactly one claimable job in `{queue}`");
    claimed.pop().unwrap()
}

/// Claims from `queue` and expects nothing to be handed out.
pub async fn claim_none(t: &TestStore, queue: &str) {
    let claimed = claim(t, &[queue], 10).await;
    assert!(claimed.is_empty(), "expected nothing claimable in `{queue}`, got {:?}", ids_of(&claimed));
}

/// The ids of claimed jobs, in the order they were handed out.
pub fn ids_of(claimed: &[ClaimedJob]) -> Vec<JobId> {
    claimed.iter().map(|c| c.job.id.clone()).collect()
}

/// Reports how one attempt ended; returns that item's own result.
pub async fn finish(
    t: &TestStore,
    id: &JobId,
    lease_token: LeaseToken,
    outcome: FinishOutcome,
) -> StoreResult<Finished> {
    let item = JobFinish { id: id.clone(), lease_token, outcome };
    let mut results = t.store.job_finish_many(vec![item]).await.unwrap();
    assert_eq!(results.len(), 1, "one result per finish item");
    results.pop().unwrap()
}

/// Completes a claimed job with `result` and expects it accepted.
pub async fn finish_ok(t: &TestStore, claimed: &ClaimedJob, result: Value) -> Finished {
    finish(t, &claimed.job.id, claimed.lease_token, FinishOutcome::Complete(result)).await.unwrap()
}

/// Fails a claimed job with `report` and expects it accepted.
pub async fn finish_fail(t: &TestStore, claimed: &ClaimedJob, report: FailureReport) -> Finished {
    finish(t, &claimed.job.id, claimed.lease_token, FinishOutcome::Fail(report)).await.unwrap()
}

/// A retryable failure with message `message`.
pub fn boom(message: &str) -> FailureReport {
    FailureReport::retryable(JobError::new(message))
}

/// Inserts one job on queue `q` with `attempts`, claims it and fails it
/// fatally, so that it ends `failed`.
pub async fn failed_job(t: &TestStore, spec: JobSpec) -> Job {
    let job = insert_one(t, spec).await;
    let claimed = claim_one(t, &job.queue).await;
    let done = finish_fail(t, &claimed, FailureReport::fatal(JobError::new("fatal"))).await;
    assert_eq!(done.state, JobState::Failed);
    get(t, &job.id).await
}

/// Inserts one job, claims it and completes it.
pub async fn completed_job(t: &TestStore, spec: JobSpec) -> Job {
    let job = insert_one(t, spec).await;
    let claimed = claim_one(t, &job.queue).await;
    assert_eq!(finish_ok(t, &claimed, Value::Null).await.state, JobState::Completed);
    get(t, &job.id).await
}

/// A queue's counts per state.
pub async fn counts(t: &TestStore, queue: &str) -> StateCounts {
    t.store.queue_get(queue).await.unwrap().counts
}

/// Asserts `res` is [`StoreError::LeaseLost`]; `what` names the call.
#[track_caller]
pub fn assert_lease_lost<T: std::fmt::Debug>(res: StoreResult<T>, what: &str) {
    match res {
        Err(StoreError::LeaseLost(_)) => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

/// Asserts `res` is [`StoreError::InvalidState`] naming `state`.
#[track_caller]
pub fn assert_invalid_state<T: std::fmt::Debug>(res: StoreResult<T>, state: JobState) {
    match res {
        Err(StoreError::InvalidState { state: got, .. }) => {
            assert_eq!(got, state, "InvalidState names the job's state")
        }
        other => panic!("expected InvalidState({state}), got {other:?}"),
    }
}

/// Asserts `res` is [`StoreError::NotFound`].
#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(res: StoreResult<T>) {
    match res {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Asserts `res` is [`StoreError::Invalid`] (and names `field` when given).
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(res: StoreResult<T>, field: Option<&str>) {
    match res {
        Err(StoreError::Invalid { field: got, .. }) => {
            if let Some(field) = field {
                assert_eq!(got, field, "Invalid names the culprit field");
            }
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The next event on `rx`, within [`DEADLINE`].
pub async fn next_event(rx: &mut broadcast::Receiver<Event>) -> Event {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("event stream broke: {e}"),
        Err(_) => panic!("no event within {DEADLINE:?}"),
    }
}

/// The next `n` events about job `id` (others are skipped), in order.
pub async fn events_for(rx: &mut broadcast::Receiver<Event>, id: &JobId, n: usize) -> Vec<Event> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let event = next_event(rx).await;
        if event.job_id.as_ref() == Some(id) {
            seen.push(event);
        }
    }
    seen
}

/// Skips events until one of `kind` about job `id` (or about no job, when
/// `id` is `None`) arrives, and returns it.
pub async fn wait_event(rx: &mut broadcast::Receiver<Event>, kind: EventKind, id: Option<&JobId>) -> Event {
    loop {
        let event = next_event(rx).await;
        if event.kind == kind && event.job_id.as_ref() == id {
            return event;
        }
    }
}

/// The kinds of `events`, for readable asserts.
pub fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

/// Asserts event ids strictly increase.
#[track_caller]
pub fn assert_ids_increase(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(pair[0].id < pair[1].id, "event ids must increase: {} then {}", pair[0].id, pair[1].id);
    }
}

/// The next event about a queue rather than a job, skipping job events.
pub async fn next_queue_event(rx: &mut broadcast::Receiver<Event>) -> Event {
    loop {
        let event = next_event(rx).await;
        if event.job_id.is_none() {
            return event;
        }
    }
}

//! Cases about batches: aggregate counts at every step, the completion job
//! enqueued exactly once, counts that survive retention (ADR 0007).

use super::support::*;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use crate::{BatchInfo, BatchState, JobListParams};
use drover_core::{BatchSpec, EventKind, FailureReport, JobError, JobSpec, QueueConfig, Retention, RetentionRule};
use serde_json::json;

async fn batch(t: &TestStore, id: &str) -> BatchInfo {
    t.store.batch_get(id).await.unwrap().unwrap_or_else(|| panic!("batch {id} should exist"))
}

/// (total, completed, failed, active, waiting, cancelled) of a batch.
fn tally(b: &BatchInfo) -> (u64, u64, u64, u64, u64, u64) {
    (b.total, b.completed, b.failed, b.active, b.waiting, b.cancelled)
}

/// Jobs on the completion queue `done`.
async fn completion_jobs(t: &TestStore) -> usize {
    let params = JobListParams { queue: Some("done".into()), limit: 1_000, ..JobListParams::default() };
    t.store.job_list(params).await.unwrap().items.len()
}

fn with_on_complete(jobs: Vec<JobSpec>) -> BatchSpec {
    BatchSpec { jobs, on_complete: Some(JobSpec::new("done", "report").payload(json!({"report": true}))) }
}

/// A batch of 1,000 jobs reports the right counts at every step: claims of
/// 100, each step completing 90 and failing 10 for good; then its state is
/// `completed`, `batch:completed` is emitted, and the completion job is
/// enqueued once.
pub async fn batch_of_1000_counts_every_step(make: Factory) {
    let t = fresh(make).await;
    let jobs = (0..1_000).map(|i| spec("item").payload(json!(i)).attempts(1)).collect();
    let created = t.store.batch_insert(with_on_complete(jobs)).await.unwrap();
    assert_eq!(created.total, 1_000);
    assert!(created.jobs.iter().all(|j| j.job.batch_id.as_deref() == Some(created.id.as_str())));
    let b = batch(&t, &created.id).await;
    assert_eq!(tally(&b), (1_000, 0, 0, 0, 1_000, 0));
    assert_eq!((b.progress, b.state), (0.0, BatchState::Running));
    let mut events = t.store.events();

    for step in 1..=10u64 {
        let claimed = claim(&t, &["q"], 100).await;
        assert_eq!(claimed.len(), 100);
        let b = batch(&t, &created.id).await;
        assert_eq!(tally(&b), (1_000, (step - 1) * 90, (step - 1) * 10, 100, 1_000 - step * 100, 0));
        for (i, c) in claimed.iter().enumerate() {
            if i < 10 {
                finish_fail(&t, c, FailureReport::fatal(JobError::new("bad row"))).await;
            } else {
                finish_ok(&t, c, json!(null)).await;
            }
        }
        let b = batch(&t, &created.id).await;
        assert_eq!(tally(&b), (1_000, step * 90, step * 10, 0, 1_000 - step * 100, 0));
        assert_eq!(b.progress, (step * 10) as f64);
        let expected = if step == 10 { BatchState::Completed } else { BatchState::Running };
        assert_eq!(b.state, expected);
        assert_eq!(completion_jobs(&t).await, usize::from(step == 10));
    }
    let event = loop {
        let e = next_event(&mut events).await;
        if e.kind == EventKind::BatchCompleted {
            break e;
        }
    };
    assert_eq!(event.batch_id.as_deref(), Some(created.id.as_str()));
    assert_eq!(event.data["completed"], json!(900));
    assert_eq!(event.data["failed"], json!(100));
    let b = batch(&t, &created.id).await;
    assert!(b.completed_at.is_some());
    let done = get(&t, b.on_complete_id.as_ref().expect("the completion job is recorded")).await;
    assert_eq!(done.payload, json!({"report": true}));
    assert_eq!(done.batch_id, None, "the completion job is not part of its batch");
}

/// The completion job is enqueued once: when the last jobs finish in
/// separate calls (separate writer batches), and not again after a manual
/// retry of a failed job of the completed batch, whose counters move back
/// and forth (its state stays `completed`).
pub async fn batch_on_complete_once(make: Factory) {
    let t = fresh(make).await;
    let jobs = (0..3).map(|i| spec("item").payload(json!(i)).attempts(1)).collect();
    let created = t.store.batch_insert(with_on_complete(jobs)).await.unwrap();
    let claimed = claim(&t, &["q"], 10).await;
    finish_fail(&t, &claimed[0], FailureReport::fatal(JobError::new("nope"))).await;
    finish_ok(&t, &claimed[1], json!(null)).await;
    assert_eq!(completion_jobs(&t).await, 0);
    finish_ok(&t, &claimed[2], json!(null)).await;
    assert_eq!(completion_jobs(&t).await, 1);
    assert_eq!(tally(&batch(&t, &created.id).await), (3, 2, 1, 0, 0, 0));

    t.store.job_retry(&claimed[0].job.id).await.unwrap();
    let b = batch(&t, &created.id).await;
    assert_eq!(tally(&b), (3, 2, 0, 0, 1, 0));
    assert_eq!(b.state, BatchState::Completed, "a retry does not re-open a completed batch");
    let again = claim_one(&t, "q").await;
    finish_ok(&t, &again, json!(null)).await;
    assert_eq!(tally(&batch(&t, &created.id).await), (3, 3, 0, 0, 0, 0));
    assert_eq!(completion_jobs(&t).await, 1, "on_complete is enqueued exactly once");
}

/// Batch counts come from counters kept with the batch: retention removing
/// its finished jobs does not lower them. Cancelled jobs count as finished.
pub async fn batch_counts_survive_retention(make: Factory) {
    let t = fresh(make).await;
    let keep_none = RetentionRule { count: Some(0), age_ms: None };
    let config =
        QueueConfig { retention: Retention { completed: keep_none, failed: keep_none }, ..QueueConfig::default() };
    t.store.queue_config_set("q", config).await.unwrap();
    let jobs = (0..4).map(|i| spec("item").payload(json!(i))).collect();
    let created = t.store.batch_insert(BatchSpec { jobs, on_complete: None }).await.unwrap();
    t.store.job_cancel(&created.jobs[3].job.id).await.unwrap();
    for c in claim(&t, &["q"], 2).await {
        finish_ok(&t, &c, json!(null)).await;
    }
    assert_eq!(tally(&batch(&t, &created.id).await), (4, 2, 0, 0, 1, 1));
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 3);
    let b = batch(&t, &created.id).await;
    assert_eq!(tally(&b), (4, 2, 0, 0, 1, 1));
    assert_eq!(b.progress, 75.0);
    let last = claim_one(&t, "q").await;
    finish_ok(&t, &last, json!(null)).await;
    let b = batch(&t, &created.id).await;
    assert_eq!((tally(&b), b.state), ((4, 3, 0, 0, 0, 1), BatchState::Completed));
}

/// An unknown batch reads as `None`; an empty batch is complete at once
/// and enqueues its completion job; a job may not name a batch itself.
pub async fn batch_edge_cases(make: Factory) {
    let t = fresh(make).await;
    assert!(t.store.batch_get("no-such-batch").await.unwrap().is_none());
    let empty = t.store.batch_insert(with_on_complete(Vec::new())).await.unwrap();
    let b = batch(&t, &empty.id).await;
    assert_eq!((b.total, b.state, b.progress), (0, BatchState::Completed, 100.0));
    assert_eq!(completion_jobs(&t).await, 1);
    let named = t.store.batch_insert(BatchSpec { jobs: vec![spec("x").batch_id("mine")], on_complete: None }).await;
    assert_invalid(named, Some("jobs[0].batch_id"));
    let late = t.store.job_insert_many(vec![spec("x").batch_id(empty.id.clone())]).await;
    assert_invalid(late, Some("batch_id"));
}

/// A batch none of whose jobs was inserted (all duplicates of existing
/// ids or unfinished unique keys) has total 0 and is complete at once, its
/// completion job enqueued, instead of `running` forever.
pub async fn batch_of_duplicates_completes_at_once(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("x").id(jid("old"))).await;
    insert_one(&t, spec("x").unique_key("k")).await;
    let jobs = vec![spec("x").id(jid("old")), spec("x").unique_key("k")];
    let created = t.store.batch_insert(with_on_complete(jobs)).await.unwrap();
    assert_eq!(created.total, 0);
    assert!(created.jobs.iter().all(|j| j.duplicate));
    let b = batch(&t, &created.id).await;
    assert_eq!((b.total, b.state), (0, BatchState::Completed));
    assert_eq!(completion_jobs(&t).await, 1);
}

/// A completion job may not name a parent or a batch: it is inserted when
/// the batch completes, when they may have finished, and its insert must
/// not fail the job that ended the batch. Refused at `batch_insert`.
pub async fn batch_on_complete_refuses_parent_and_batch(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("parent").id(jid("p"))).await;
    let on_complete = JobSpec::new("done", "report").parent_id(jid("p"));
    let refused = t.store.batch_insert(BatchSpec { jobs: vec![spec("x")], on_complete: Some(on_complete) }).await;
    assert_invalid(refused, Some("on_complete.parent_id"));
    let other = t.store.batch_insert(BatchSpec { jobs: vec![spec("x")], on_complete: None }).await.unwrap();
    let on_complete = JobSpec::new("done", "report").batch_id(other.id);
    let refused = t.store.batch_insert(BatchSpec { jobs: vec![spec("x")], on_complete: Some(on_complete) }).await;
    assert_invalid(refused, Some("on_complete.batch_id"));
    assert_eq!(counts(&t, "q").await.waiting, 2, "refused batches insert nothing");
}

/// A completion job that is a duplicate by unique key records the job it
/// matched as `on_complete_id`, not an id that names no job.
pub async fn batch_on_complete_duplicate_records_existing_job(make: Factory) {
    let t = fresh(make).await;
    let existing = insert_one(&t, JobSpec::new("done", "report").unique_key("daily-report")).await;
    let on_complete = JobSpec::new("done", "report").unique_key("daily-report");
    let created = t.store.batch_insert(BatchSpec { jobs: vec![spec("x")], on_complete: Some(on_complete) }).await;
    let created = created.unwrap();
    let job = claim_one(&t, "q").await;
    finish_ok(&t, &job, json!(null)).await;
    let b = batch(&t, &created.id).await;
    assert_eq!(b.state, BatchState::Completed);
    assert_eq!(b.on_complete_id, Some(existing.id));
    assert_eq!(completion_jobs(&t).await, 1);
}

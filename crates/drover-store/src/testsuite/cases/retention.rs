//! Cases about retention: finished jobs removed by count and by age, per
//! queue, in bounded batches, with their history; unfinished jobs never.

use super::support::*;
use crate::JobLogAppend;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use drover_core::{FailureReport, JobError, JobSpec, JobState, LogLevel, QueueConfig, Retention, RetentionRule};
use serde_json::{Value, json};

/// A rule keeping at most `count` (`None`: no limit) for at most `age_ms`.
fn rule(count: Option<u64>, age_ms: Option<u64>) -> RetentionRule {
    RetentionRule { count, age_ms }
}

/// Sets `queue`'s retention, everything else default.
async fn set_retention(t: &TestStore, queue: &str, completed: RetentionRule, failed: RetentionRule) {
    let config = QueueConfig { retention: Retention { completed, failed }, ..QueueConfig::default() };
    t.store.queue_config_set(queue, config).await.unwrap();
}

/// Completes `n` jobs on `queue`, one millisecond apart, oldest first.
async fn complete_n(t: &TestStore, queue: &str, n: usize) -> Vec<drover_core::Job> {
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        jobs.push(completed_job(t, JobSpec::new(queue, format!("job-{i}"))).await);
        advance_ms(t, 1);
    }
    jobs
}

/// True when the job is still stored.
async fn exists(t: &TestStore, job: &drover_core::Job) -> bool {
    t.store.job_get(&job.id).await.unwrap().is_some()
}

/// The count rule keeps the newest `count` completed jobs of a queue and
/// removes the older ones; the queue's counts follow; a second sweep finds
/// nothing.
pub async fn retention_count_rule(make: Factory) {
    let t = fresh(make).await;
    set_retention(&t, "q", rule(Some(2), None), rule(None, None)).await;
    let jobs = complete_n(&t, "q", 5).await;
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 3);
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(exists(&t, job).await, i >= 3, "job {i} of 5, keeping the newest 2");
    }
    assert_eq!(counts(&t, "q").await.completed, 2);
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 0, "nothing more to remove");
}

/// The age rule removes completed jobs that finished longer ago than
/// `age_ms`, and keeps younger ones until they age too.
pub async fn retention_age_rule(make: Factory) {
    let t = fresh(make).await;
    let hour = 3_600_000;
    set_retention(&t, "q", rule(None, Some(hour)), rule(None, None)).await;
    let old = completed_job(&t, spec("old")).await;
    advance_ms(&t, hour / 2);
    let young = completed_job(&t, spec("young")).await;
    advance_ms(&t, hour / 2 + 1);
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 1);
    assert!(!exists(&t, &old).await, "finished an hour and 1 ms ago: removed");
    assert!(exists(&t, &young).await, "finished half an hour ago: kept");
    assert_eq!(counts(&t, "q").await.completed, 1);
    advance_ms(&t, hour / 2);
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 1);
    assert!(!exists(&t, &young).await);
    assert_eq!(counts(&t, "q").await.completed, 0);
}

/// A queue never configured follows the defaults: a completed job goes
/// after one day, a failed one after seven.
pub async fn retention_defaults_by_age(make: Factory) {
    let t = fresh(make).await;
    let day = 86_400_000;
    let done = completed_job(&t, spec("done")).await;
    let failed = failed_job(&t, spec("failed")).await;
    advance_ms(&t, day);
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 0, "exactly one day old: kept");
    advance_ms(&t, 1);
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 1);
    assert!(!exists(&t, &done).await);
    assert!(exists(&t, &failed).await, "failed jobs are kept seven days");
    advance_ms(&t, 6 * day);
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 1);
    assert!(!exists(&t, &failed).await);
}

/// A removed job takes its attempt history and log lines with it: it is
/// gone from `job_get`, and its log is `NotFound`.
pub async fn retention_removes_attempts_and_logs(make: Factory) {
    let t = fresh(make).await;
    set_retention(&t, "q", rule(Some(0), None), rule(None, None)).await;
    let job = insert_one(&t, spec("logged").attempts(2)).await;
    let first = claim_one(&t, "q").await;
    let line = |token, message: &str| JobLogAppend {
        id: job.id.clone(),
        lease_token: token,
        level: LogLevel::Info,
        message: message.into(),
        metadata: json!({}),
    };
    t.store.job_log_append(line(first.lease_token, "first try")).await.unwrap();
    assert_eq!(finish_fail(&t, &first, boom("flaky")).await.state, JobState::Delayed);
    advance_ms(&t, 3_600_000);
    let second = claim_one(&t, "q").await;
    t.store.job_log_append(line(second.lease_token, "second try")).await.unwrap();
    finish_ok(&t, &second, Value::Null).await;
    assert_eq!(get(&t, &job.id).await.attempts.len(), 2, "two attempts on record before the sweep");

    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 1);
    assert!(t.store.job_get(&job.id).await.unwrap().is_none());
    assert_not_found(t.store.job_log_list(&job.id, 0, 100).await);
    assert_eq!(counts(&t, "q").await, crate::StateCounts::default());
}

/// Waiting, delayed and active jobs are never removed, however strict the
/// rules and however old the jobs.
pub async fn retention_keeps_unfinished_jobs(make: Factory) {
    let t = fresh(make).await;
    set_retention(&t, "q", rule(Some(0), Some(0)), rule(Some(0), Some(0))).await;
    let active = insert_one(&t, spec("active")).await;
    claim_one(&t, "q").await;
    let waiting = insert_one(&t, spec("waiting")).await;
    let delayed = insert_one(&t, spec("delayed").run_at(t.clock_now().plus_ms(30 * 86_400_000))).await;
    advance_ms(&t, 7 * 86_400_000);
    let before = counts(&t, "q").await;
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 0);
    for job in [&active, &waiting, &delayed] {
        assert!(exists(&t, job).await, "job {} is not finished and must stay", job.id);
    }
    assert_eq!(counts(&t, "q").await, before);
}

/// Each queue follows its own config: a strict rule on one queue leaves
/// another queue's jobs alone.
pub async fn retention_per_queue_config(make: Factory) {
    let t = fresh(make).await;
    set_retention(&t, "strict", rule(Some(1), None), rule(None, None)).await;
    let strict = complete_n(&t, "strict", 3).await;
    let lax = complete_n(&t, "lax", 3).await;
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 2);
    assert_eq!(counts(&t, "strict").await.completed, 1);
    assert!(exists(&t, &strict[2]).await, "the newest is kept");
    assert_eq!(counts(&t, "lax").await.completed, 3);
    for job in &lax {
        assert!(exists(&t, job).await, "the default keeps 1,000 for a day");
    }
}

/// `cancelled` jobs follow the `failed` rule, counted apart from the
/// failed ones; completed jobs follow their own.
pub async fn retention_cancelled_follows_failed_rule(make: Factory) {
    let t = fresh(make).await;
    set_retention(&t, "q", rule(None, None), rule(Some(1), None)).await;
    for name in ["c1", "c2"] {
        let job = insert_one(&t, spec(name)).await;
        t.store.job_cancel(&job.id).await.unwrap();
        advance_ms(&t, 1);
    }
    for name in ["f1", "f2"] {
        insert_one(&t, spec(name)).await;
        let claimed = claim_one(&t, "q").await;
        finish_fail(&t, &claimed, FailureReport::fatal(JobError::new("fatal"))).await;
        advance_ms(&t, 1);
    }
    complete_n(&t, "q", 2).await;
    assert_eq!(t.store.job_retention_sweep(100).await.unwrap(), 2);
    let after = counts(&t, "q").await;
    assert_eq!((after.cancelled, after.failed, after.completed), (1, 1, 2));
}

/// A sweep removes at most `limit` jobs; repeated calls finish the work
/// and then return 0.
pub async fn retention_sweep_respects_limit(make: Factory) {
    let t = fresh(make).await;
    set_retention(&t, "q", rule(Some(0), None), rule(None, None)).await;
    complete_n(&t, "q", 5).await;
    let mut removed = Vec::new();
    for _ in 0..4 {
        removed.push(t.store.job_retention_sweep(2).await.unwrap());
    }
    assert_eq!(removed, [2, 2, 1, 0]);
    assert_eq!(counts(&t, "q").await.completed, 0);
    assert_eq!(t.store.job_retention_sweep(0).await.unwrap(), 0, "a limit of 0 removes nothing");
}

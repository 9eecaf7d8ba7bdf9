//! Cases about flow control: concurrency caps and rate limits per queue and
//! per rate-limit key (exact and by prefix), and the hold a handler's "rate
//! limited, retry after T" puts on its key or queue.

use super::support::*;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use crate::{FinishOutcome, JobClaimParams, JobFinish, StoreError};
use drover_core::{EventKind, FailureReport, JobError, JobSpec, JobState, KeyLimit, QueueConfig, RateLimit};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

fn rate(max: u32, per_ms: u64) -> RateLimit {
    RateLimit { max, per_ms }
}

async fn set_queue(t: &TestStore, queue: &str, concurrency: Option<u32>, rate_limit: Option<RateLimit>) {
    let config = QueueConfig { concurrency, rate_limit, ..QueueConfig::default() };
    t.store.queue_config_set(queue, config).await.unwrap();
}

async fn set_key(t: &TestStore, key: &str, concurrency: Option<u32>, rate_limit: Option<RateLimit>) {
    t.store.rate_limit_set(key, KeyLimit { concurrency, rate_limit }).await.unwrap();
}

/// `claimers` tasks claim (up to 5 each time) and complete jobs of `queue`
/// until `total` are done; after every claim each checks, through the
/// store's own counts, that no more than `cap` jobs (of `key`, when given)
/// are active. Returns the largest number of jobs seen active at once.
async fn drain_under_cap(t: &TestStore, queue: &str, key: Option<&str>, cap: u64, total: usize) -> u64 {
    let done = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, done, peak) = (t.store.clone(), done.clone(), peak.clone());
        let (queue, key) = (queue.to_owned(), key.map(str::to_owned));
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while done.load(Ordering::SeqCst) < total {
                assert!(tokio::time::Instant::now() < deadline, "jobs left undone under the cap");
                let params = JobClaimParams {
                    queues: vec![queue.clone()],
                    worker_id: format!("w{w}"),
                    max: 5,
                    lease_ms: 60_000,
                };
                let claimed = store.job_claim(params).await.unwrap();
                if claimed.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let active = match &key {
                    None => store.queue_get(&queue).await.unwrap().counts.active,
                    Some(key) => store.rate_limit_get(key).await.unwrap().active,
                };
                assert!(active <= cap, "{active} jobs active under a cap of {cap}");
                peak.fetch_max(active as i64, Ordering::SeqCst);
                tokio::task::yield_now().await;
                let items = claimed
                    .iter()
                    .map(|c| JobFinish {
                        id: c.job.id.clone(),
                        lease_token: c.lease_token,
                        outcome: FinishOutcome::Complete(Value::Null),
                    })
                    .collect();
                for res in store.job_finish_many(items).await.unwrap() {
                    res.unwrap();
                }
                done.fetch_add(claimed.len(), Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), total, "every job ran exactly once");
    peak.load(Ordering::SeqCst) as u64
}

/// A queue's concurrency cap of 2 holds with 8 parallel claimers, and every
/// job still runs.
pub async fn queue_concurrency_cap_parallel(make: Factory) {
    let t = fresh(make).await;
    set_queue(&t, "q", Some(2), None).await;
    insert_all(&t, (0..40).map(|i| spec("n").payload(i.into())).collect()).await;
    let first = claim(&t, &["q"], 10).await;
    assert_eq!(first.len(), 2, "one claim of 10 gets only the 2 the cap allows");
    for c in &first {
        finish_ok(&t, c, Value::Null).await;
    }
    let peak = drain_under_cap(&t, "q", None, 2, 38).await;
    assert!(peak >= 1);
    assert_eq!(counts(&t, "q").await.completed, 40);
}

/// A key's cap limits its jobs across queues and claimers, while jobs
/// without the key, or with another, are not held back by it.
pub async fn key_concurrency_cap_parallel(make: Factory) {
    let t = fresh(make).await;
    set_key(&t, "places", Some(2), None).await;
    let mut specs: Vec<JobSpec> = (0..30).map(|_| spec("scrape").rate_limit_key("places")).collect();
    specs.extend((0..5).map(|_| spec("other")));
    specs.extend((0..5).map(|_| spec("hunter").rate_limit_key("hunter")));
    insert_all(&t, specs).await;
    let first = claim(&t, &["q"], 100).await;
    let places = first.iter().filter(|c| c.job.rate_limit_key.as_deref() == Some("places")).count();
    assert_eq!((places, first.len()), (2, 12), "2 places jobs, and every job of other keys behind them");
    assert_eq!(t.store.rate_limit_get("places").await.unwrap().active, 2);
    for c in &first {
        finish_ok(&t, c, Value::Null).await;
    }
    drain_under_cap(&t, "q", Some("places"), 2, 28).await;
    assert_eq!(counts(&t, "q").await.completed, 40);
}

/// Done-when of issue 4: 9 jobs under a limit of 3 per 2 s never show more
/// than 3 starts in any 2 s window, with parallel claimers polling every
/// 100 ms; and they all run, 3 every 2 s.
pub async fn queue_rate_limit_window(make: Factory) {
    let t = fresh(make).await;
    set_queue(&t, "q", None, Some(rate(3, 2_000))).await;
    insert_all(&t, (0..9).map(|i| spec("n").payload(i.into())).collect()).await;
    let mut starts: Vec<i64> = Vec::new();
    let mut elapsed = 0;
    while starts.len() < 9 {
        assert!(elapsed <= 10_000, "only {} of 9 jobs started in 10 s", starts.len());
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = t.store.clone();
            tasks.push(tokio::spawn(async move {
                let params =
                    JobClaimParams { queues: vec!["q".into()], worker_id: format!("w{w}"), max: 2, lease_ms: 60_000 };
                store.job_claim(params).await.unwrap()
            }));
        }
        for task in tasks {
            for c in task.await.unwrap() {
                starts.push(c.job.started_at.unwrap().0);
                finish_ok(&t, &c, Value::Null).await;
            }
        }
        advance_ms(&t, 100);
        elapsed += 100;
    }
    for (i, &s) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().filter(|&&later| later < s + 2_000).count();
        assert!(in_window <= 3, "{in_window} starts in the 2 s from {s}");
    }
    let t0 = starts[0];
    let offsets: Vec<i64> = starts.iter().map(|s| s - t0).collect();
    assert_eq!(offsets, vec![0, 0, 0, 2_000, 2_000, 2_000, 4_000, 4_000, 4_000]);
}

/// A claim that uses up a queue's rate limit says so: `queue:throttled`
/// with the instant it frees, `throttled_until` on the queue, and the next
/// due time for sleeping fetchers.
pub async fn queue_rate_limit_throttles(make: Factory) {
    let t = fresh(make).await;
    let mut rx = t.store.events();
    set_queue(&t, "q", None, Some(rate(2, 1_000))).await;
    insert_all(&t, (0..3).map(|_| spec("n")).collect()).await;
    let now = t.clock_now();
    assert_eq!(claim(&t, &["q"], 10).await.len(), 2);
    claim_none(&t, "q").await;
    let info = t.store.queue_get("q").await.unwrap();
    assert_eq!(info.throttled_until, Some(now.plus_ms(1_000)));
    assert_eq!(t.store.job_next_due(&["q".into()]).await.unwrap(), Some(now.plus_ms(1_000)));
    let throttled = loop {
        let event = next_event(&mut rx).await;
        if event.kind == EventKind::QueueThrottled {
            break event;
        }
    };
    assert_eq!(throttled.queue.as_deref(), Some("q"));
    assert_eq!(throttled.data["throttled_until"], serde_json::to_value(now.plus_ms(1_000)).unwrap());
    advance_ms(&t, 1_000);
    assert_eq!(t.store.queue_get("q").await.unwrap().throttled_until, None);
    assert_eq!(claim(&t, &["q"], 10).await.len(), 1);
}

/// A prefix rule applies to each matching key apart; the key's own rule
/// wins over the prefix; keys matching nothing are not limited.
pub async fn key_rate_limit_by_prefix(make: Factory) {
    let t = fresh(make).await;
    set_key(&t, "tenant:*", None, Some(rate(2, 1_000))).await;
    set_key(&t, "tenant:vip", None, Some(rate(3, 1_000))).await;
    let mut specs = Vec::new();
    for key in ["tenant:a", "tenant:b", "tenant:vip", "free"] {
        specs.extend((0..4).map(|_| spec("n").rate_limit_key(key)));
    }
    insert_all(&t, specs).await;
    let per_key = |claimed: &[crate::ClaimedJob], key: &str| {
        claimed.iter().filter(|c| c.job.rate_limit_key.as_deref() == Some(key)).count()
    };
    let first = claim(&t, &["q"], 100).await;
    assert_eq!(
        [
            per_key(&first, "tenant:a"),
            per_key(&first, "tenant:b"),
            per_key(&first, "tenant:vip"),
            per_key(&first, "free")
        ],
        [2, 2, 3, 4]
    );
    let state = t.store.rate_limit_get("tenant:a").await.unwrap();
    assert_eq!(state.rule.as_ref().map(|r| r.key.as_str()), Some("tenant:*"));
    assert_eq!((state.active, state.started_in_window), (2, 2));
    assert_eq!(state.throttled_until, Some(t.clock_now().plus_ms(1_000)));
    claim_none(&t, "q").await;
    advance_ms(&t, 1_000);
    let second = claim(&t, &["q"], 100).await;
    assert_eq!([per_key(&second, "tenant:a"), per_key(&second, "tenant:b"), per_key(&second, "tenant:vip")], [2, 2, 1]);
}

/// "Rate limited, retry after T" for a job with a key: the job waits T
/// without spending an attempt, every other job of the key is held back
/// for T (jobs of other keys are not), and `queue:throttled` names the key.
pub async fn rate_limited_failure_holds_key(make: Factory) {
    let t = fresh(make).await;
    let mut rx = t.store.events();
    insert_all(&t, (0..3).map(|_| spec("call").rate_limit_key("hunter")).collect()).await;
    let first = claim(&t, &["q"], 1).await.pop().unwrap();
    let now = t.clock_now();
    let report = FailureReport::rate_limited(JobError::new("429"), Duration::from_secs(5));
    let finished = finish_fail(&t, &first, report).await;
    assert_eq!((finished.state, finished.run_at), (JobState::Delayed, Some(now.plus_ms(5_000))));
    assert_eq!(get(&t, &first.job.id).await.attempts_made, 0, "a deferral spends no attempt");
    insert_one(&t, spec("other").rate_limit_key("places")).await;
    let claimed = claim(&t, &["q"], 10).await;
    assert_eq!(claimed.len(), 1, "only the job of another key runs");
    assert_eq!(claimed[0].job.name, "other");
    let state = t.store.rate_limit_get("hunter").await.unwrap();
    assert_eq!((state.rule, state.throttled_until), (None, Some(now.plus_ms(5_000))));
    assert_eq!(t.store.queue_get("q").await.unwrap().throttled_until, None, "the key is held, not the queue");
    assert_eq!(t.store.job_next_due(&["q".into()]).await.unwrap(), Some(now.plus_ms(5_000)));
    let throttled = loop {
        let event = next_event(&mut rx).await;
        if event.kind == EventKind::QueueThrottled {
            break event;
        }
    };
    assert_eq!(throttled.data["rate_limit_key"], "hunter");
    advance_ms(&t, 4_999);
    claim_none(&t, "q").await;
    advance_ms(&t, 1);
    assert_eq!(claim(&t, &["q"], 10).await.len(), 3, "the hold is over: all three hunter jobs run");
}

/// Without a key, "rate limited" holds the whole queue back, and
/// `GET /api/queues` shows until when.
pub async fn rate_limited_failure_holds_queue(make: Factory) {
    let t = fresh(make).await;
    insert_all(&t, vec![spec("a"), spec("b")]).await;
    insert_one(&t, JobSpec::new("elsewhere", "c")).await;
    let first = claim(&t, &["q"], 1).await.pop().unwrap();
    let now = t.clock_now();
    finish_fail(&t, &first, FailureReport::rate_limited(JobError::new("429"), Duration::from_secs(2))).await;
    claim_none(&t, "q").await;
    assert_eq!(t.store.queue_get("q").await.unwrap().throttled_until, Some(now.plus_ms(2_000)));
    assert_eq!(claim(&t, &["elsewhere"], 10).await.len(), 1, "other queues are not held");
    advance_ms(&t, 2_000);
    assert_eq!(claim(&t, &["q"], 10).await.len(), 2);
}

/// A job leaving `active` under a cap that held a claim back bumps the
/// ready signal, so a fetcher waiting for work looks again at once.
pub async fn cap_release_wakes_fetchers(make: Factory) {
    let t = fresh(make).await;
    set_queue(&t, "q", Some(1), None).await;
    insert_all(&t, vec![spec("a"), spec("b")]).await;
    let mut ready = t.store.ready_signal();
    let first = claim_one(&t, "q").await;
    ready.borrow_and_update();
    claim_none(&t, "q").await;
    finish_ok(&t, &first, Value::Null).await;
    tokio::time::timeout(DEADLINE, ready.changed()).await.expect("the freed slot wakes fetchers").unwrap();
    claim_one(&t, "q").await;
}

/// Rules are set, listed in key order, read back through a key, replaced
/// and deleted; bad patterns and limits are refused.
pub async fn rate_limit_rules_crud(make: Factory) {
    let t = fresh(make).await;
    set_key(&t, "places", Some(4), None).await;
    set_key(&t, "api:*", None, Some(rate(10, 60_000))).await;
    let keys: Vec<String> = t.store.rate_limit_list().await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["api:*", "places"]);
    set_key(&t, "places", Some(8), None).await;
    let state = t.store.rate_limit_get("places").await.unwrap();
    assert_eq!(state.rule.map(|r| r.limit.concurrency), Some(Some(8)));
    assert_eq!(t.store.rate_limit_get("api:maps").await.unwrap().rule.map(|r| r.key), Some("api:*".into()));
    assert!(t.store.rate_limit_delete("places").await.unwrap());
    assert!(!t.store.rate_limit_delete("places").await.unwrap());
    assert_eq!(t.store.rate_limit_list().await.unwrap().len(), 1);
    for (key, limit) in [
        ("a*b", KeyLimit::default()),
        ("", KeyLimit::default()),
        ("k", KeyLimit { concurrency: Some(0), rate_limit: None }),
        ("k", KeyLimit { concurrency: None, rate_limit: Some(rate(0, 1_000)) }),
    ] {
        assert!(matches!(t.store.rate_limit_set(key, limit).await, Err(StoreError::Invalid { .. })), "{key:?}");
    }
    let bad = QueueConfig { concurrency: Some(0), ..QueueConfig::default() };
    assert_invalid(t.store.queue_config_set("q", bad).await, Some("concurrency"));
    let bad = QueueConfig { rate_limit: Some(rate(5, 0)), ..QueueConfig::default() };
    assert_invalid(t.store.queue_config_set("q", bad).await, Some("rate_limit"));
}

/// A key held back by "rate limited" while its rate window also holds
/// starts: once the window has moved on, sleeping fetchers (of any queue)
/// are still told when the hold ends.
pub async fn hold_end_survives_window_change(make: Factory) {
    let t = fresh(make).await;
    set_key(&t, "k", None, Some(rate(5, 1_000))).await;
    insert_one(&t, spec("a").rate_limit_key("k")).await;
    insert_one(&t, JobSpec::new("other", "b").rate_limit_key("k")).await;
    let start = t.clock_now();
    let a = claim(&t, &["q"], 1).await.pop().unwrap();
    finish_fail(&t, &a, FailureReport::rate_limited(JobError::new("429"), Duration::from_secs(5))).await;
    assert_eq!(t.store.job_next_due(&["other".into()]).await.unwrap(), Some(start.plus_ms(1_000)), "the window");
    advance_ms(&t, 1_500);
    claim_none(&t, "other").await;
    assert_eq!(t.store.job_next_due(&["other".into()]).await.unwrap(), Some(start.plus_ms(5_000)), "the hold");
    advance_ms(&t, 3_500);
    assert_eq!(claim(&t, &["other"], 10).await.len(), 1);
}

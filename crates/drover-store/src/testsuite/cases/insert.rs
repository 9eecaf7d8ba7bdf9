//! Cases about `job_insert_many` and `job_get`: what a new job looks like,
//! delayed inserts, idempotency by id, all-or-nothing batches.

use super::support::*;
use crate::JobListParams;
use crate::testsuite::{Factory, fresh, spec};
use drover_core::{Backoff, EventKind, JobId, JobSpec, JobState, Progress};
use serde_json::json;

/// An inserted job reads back with every field as given, `waiting`, with no
/// attempt made; a spec without an id gets a generated one.
pub async fn insert_then_get(make: Factory) {
    let t = fresh(make).await;
    let now = t.clock_now();
    assert_eq!(t.store.now(), now, "the store reads the injected clock");
    let mut tags = serde_json::Map::new();
    tags.insert("team".into(), json!("growth"));
    let mut full = JobSpec::new("mail", "send_welcome")
        .id(jid("welcome:7"))
        .payload(json!({"user_id": 7, "nested": [1, 2, {"x": null}]}))
        .priority(-3)
        .attempts(7)
        .backoff(Backoff::exponential(250).max_delay_ms(10_000))
        .timeout_ms(60_000)
        .max_stalls(2)
        .rate_limit_key("smtp")
        .batch_id("signup-wave");
    full.tags = tags.clone();
    let [stored, generated] = insert_all(&t, vec![full, spec("bare")]).await.try_into().unwrap();

    for job in [&stored, &get(&t, &stored.id).await] {
        assert_eq!(job.id, jid("welcome:7"));
        assert_eq!(job.queue, "mail");
        assert_eq!(job.name, "send_welcome");
        assert_eq!(job.payload, json!({"user_id": 7, "nested": [1, 2, {"x": null}]}));
        assert_eq!(job.state, JobState::Waiting);
        assert_eq!(job.priority, -3);
        assert_eq!(job.attempts_made, 0);
        assert_eq!(job.max_attempts, 7);
        assert_eq!(job.backoff, Backoff::exponential(250).max_delay_ms(10_000));
        assert_eq!(job.timeout_ms, Some(60_000));
        assert_eq!(job.stalls, 0);
        assert_eq!(job.max_stalls, 2);
        assert_eq!(job.progress, Progress::default());
        assert_eq!(job.result, None);
        assert_eq!(job.error, None);
        assert_eq!(job.rate_limit_key.as_deref(), Some("smtp"));
        assert_eq!(job.batch_id.as_deref(), Some("signup-wave"));
        assert_eq!(job.parent_id, None);
        assert_eq!(job.tags, tags);
        assert_eq!(job.created_at, now);
        assert_eq!(job.run_at, now);
        assert_eq!(job.started_at, None);
        assert_eq!(job.finished_at, None);
        assert_eq!(job.worker_id, None);
        assert_eq!(job.lease_expires_at, None);
        assert!(!job.cancel_requested);
        assert!(job.attempts.is_empty());
    }

    assert!(!generated.id.as_str().is_empty(), "a spec without id gets one");
    assert_ne!(generated.id, stored.id);
    let read = get(&t, &generated.id).await;
    assert_eq!(read.max_attempts, JobSpec::DEFAULT_ATTEMPTS);
    assert_eq!(read.max_stalls, JobSpec::DEFAULT_MAX_STALLS);
    assert_eq!(read.backoff, Backoff::default());
    assert_eq!(t.store.job_get(&jid("nope")).await.unwrap(), None);
}

/// A job whose first `run_at` is after now is inserted `delayed` (by
/// `delay_ms` or `run_at`); a `run_at` at or before now is `waiting`.
pub async fn insert_delayed_when_run_at_in_future(make: Factory) {
    let t = fresh(make).await;
    let now = t.clock_now();
    let jobs = insert_all(
        &t,
        vec![
            spec("by_delay").delay_ms(5_000),
            spec("by_run_at").run_at(now.plus_ms(60_000)),
            spec("run_at_now").run_at(now),
            spec("run_at_past").run_at(now.plus_ms(-1_000)),
        ],
    )
    .await;
    let expected = [
        (JobState::Delayed, now.plus_ms(5_000)),
        (JobState::Delayed, now.plus_ms(60_000)),
        (JobState::Waiting, now),
        (JobState::Waiting, now.plus_ms(-1_000)),
    ];
    for (job, (state, run_at)) in jobs.iter().zip(expected) {
        let read = get(&t, &job.id).await;
        assert_eq!((job.state, job.run_at), (state, run_at), "insert result of {}", job.name);
        assert_eq!((read.state, read.run_at), (state, run_at), "stored {}", job.name);
    }
    let c = counts(&t, "q").await;
    assert_eq!((c.waiting, c.delayed), (2, 2));
}

/// A batch holding one invalid spec is refused with `Invalid` naming the
/// field, and inserts nothing, not even the valid specs before it.
pub async fn insert_many_is_all_or_nothing(make: Factory) {
    let t = fresh(make).await;
    let res = t
        .store
        .job_insert_many(vec![spec("ok1").id(jid("ok-1")), spec("ok2"), JobSpec::new("bad queue", "x"), spec("ok3")])
        .await;
    assert_invalid(res, Some("queue"));
    let res = t.store.job_insert_many(vec![spec("ok1").id(jid("ok-1")), spec("zero").attempts(0)]).await;
    assert_invalid(res, Some("attempts"));

    assert_eq!(t.store.job_get(&jid("ok-1")).await.unwrap(), None);
    assert_eq!(counts(&t, "q").await.total(), 0);
    let page = t.store.job_list(JobListParams::default()).await.unwrap();
    assert!(page.items.is_empty(), "nothing was inserted: {:?}", page.items);
    // The id is still free: a valid retry of the batch inserts it.
    let job = insert_one(&t, spec("ok1").id(jid("ok-1"))).await;
    assert_eq!(job.state, JobState::Waiting);
}

/// A second insert with an existing id returns `duplicate: true` and the
/// original job unchanged, even with another payload, queue or priority,
/// and even once the job finished; the same id twice in one call inserts
/// it once.
pub async fn insert_idempotent_by_id(make: Factory) {
    let t = fresh(make).await;
    let first = insert_one(&t, spec("order").id(jid("order-1")).payload(json!({"v": 1}))).await;

    advance_ms(&t, 10);
    let again = t
        .store
        .job_insert_many(vec![JobSpec::new("other", "changed").id(jid("order-1")).payload(json!({"v": 2})).priority(9)])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].duplicate);
    assert_eq!(again[0].job, first, "the duplicate answer is the original job");
    assert_eq!(get(&t, &first.id).await, first, "the stored job is unchanged");
    assert_eq!(counts(&t, "other").await.total(), 0);

    // Same id twice in one call, next to a fresh job.
    let batch = t
        .store
        .job_insert_many(vec![
            spec("pair").id(jid("order-2")).payload(json!("a")),
            spec("fresh"),
            spec("pair").id(jid("order-2")).payload(json!("b")),
        ])
        .await
        .unwrap();
    assert_eq!(batch.iter().map(|i| i.duplicate).collect::<Vec<_>>(), [false, false, true]);
    assert_eq!(batch[2].job, batch[0].job);
    assert_eq!(get(&t, &jid("order-2")).await.payload, json!("a"));
    assert_eq!(counts(&t, "q").await.total(), 3);

    // A finished job still holds its id.
    let claimed = claim(&t, &["q"], 10).await;
    for c in &claimed {
        finish_ok(&t, c, json!("done")).await;
    }
    let dup = t.store.job_insert_many(vec![spec("order").id(jid("order-1"))]).await.unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].job.state, JobState::Completed);
    assert_eq!(dup[0].job.result, Some(json!("done")));
    claim_none(&t, "q").await;
}

/// A duplicate insert publishes no event and changes no count.
pub async fn insert_duplicate_emits_nothing(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("once").id(jid("once"))).await;
    let mut events = t.store.events();
    let dup = t.store.job_insert_many(vec![spec("once").id(jid("once")), spec("marker")]).await.unwrap();
    assert!(dup[0].duplicate);
    let marker: JobId = dup[1].job.id.clone();
    // Events are published in order: the first one we see must be the marker's.
    let event = next_event(&mut events).await;
    assert_eq!(event.kind, EventKind::Waiting);
    assert_eq!(event.job_id.as_ref(), Some(&marker), "no event for the duplicate of {}", job.id);
    assert_eq!(counts(&t, "q").await.waiting, 2);
}

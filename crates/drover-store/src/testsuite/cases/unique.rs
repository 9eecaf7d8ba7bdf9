//! Cases about uniqueness keys: a second enqueue with the same key on the
//! same queue returns the existing job (`duplicate: true`) while that job is
//! unfinished, or within `unique_for_ms` of its creation.

use super::support::*;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use drover_core::{Job, JobSpec, JobState};
use serde_json::{Value, json};

/// Inserts one spec and returns (job, duplicate).
async fn enqueue(t: &TestStore, spec: JobSpec) -> (Job, bool) {
    let mut inserted = t.store.job_insert_many(vec![spec]).await.unwrap();
    assert_eq!(inserted.len(), 1);
    let i = inserted.pop().unwrap();
    (i.job, i.duplicate)
}

/// While the first job is unfinished (waiting, then active), a second
/// enqueue with its key returns it unchanged; once it finished, the key is
/// free again.
pub async fn unique_key_while_unfinished(make: Factory) {
    let t = fresh(make).await;
    let (first, dup) = enqueue(&t, spec("sync").unique_key("user-7").payload(json!(1))).await;
    assert!(!dup);
    let (again, dup) = enqueue(&t, spec("sync").unique_key("user-7").payload(json!(2))).await;
    assert!(dup, "same key while the first waits");
    assert_eq!((again.id.clone(), again.payload), (first.id.clone(), json!(1)), "the first job, unchanged");
    let claimed = claim_one(&t, "q").await;
    let (again, dup) = enqueue(&t, spec("sync").unique_key("user-7")).await;
    assert!(dup, "same key while the first runs");
    assert_eq!((again.id, again.state), (first.id.clone(), JobState::Active));
    finish_ok(&t, &claimed, Value::Null).await;
    let (fresh_job, dup) = enqueue(&t, spec("sync").unique_key("user-7")).await;
    assert!(!dup, "the first job finished: the key is free");
    assert_ne!(fresh_job.id, first.id);
    assert_eq!(counts(&t, "q").await.total(), 2);
}

/// Keys are per queue: the same key on another queue is another job, and
/// jobs without a key are never duplicates of each other.
pub async fn unique_key_is_per_queue(make: Factory) {
    let t = fresh(make).await;
    let (_, dup) = enqueue(&t, JobSpec::new("a", "n").unique_key("k")).await;
    assert!(!dup);
    let (_, dup) = enqueue(&t, JobSpec::new("b", "n").unique_key("k")).await;
    assert!(!dup, "another queue");
    let (_, dup) = enqueue(&t, JobSpec::new("a", "n").unique_key("other")).await;
    assert!(!dup, "another key");
    for _ in 0..2 {
        let (_, dup) = enqueue(&t, JobSpec::new("a", "n")).await;
        assert!(!dup, "no key, no uniqueness");
    }
    assert_eq!(counts(&t, "a").await.waiting, 4);
}

/// With `unique_for_ms`, the key holds for that long after the first job's
/// creation whatever its state (finished included), then frees up.
pub async fn unique_for_window(make: Factory) {
    let t = fresh(make).await;
    let first = completed_job(&t, spec("digest").unique_key("daily").unique_for_ms(60_000)).await;
    advance_ms(&t, 59_999);
    let (again, dup) = enqueue(&t, spec("digest").unique_key("daily").unique_for_ms(60_000)).await;
    assert!(dup, "within the window, though the first job completed");
    assert_eq!((again.id, again.state), (first.id.clone(), JobState::Completed));
    advance_ms(&t, 1);
    let (later, dup) = enqueue(&t, spec("digest").unique_key("daily").unique_for_ms(60_000)).await;
    assert!(!dup, "the window of 60 s from the first job's creation has passed");
    assert_ne!(later.id, first.id);
}

/// Within one bulk call, the second spec with a key is a duplicate of the
/// first (results stay in input order); only one job is stored.
pub async fn unique_key_within_bulk(make: Factory) {
    let t = fresh(make).await;
    let specs = vec![
        spec("a").unique_key("k").payload(json!("first")),
        spec("b"),
        spec("c").unique_key("k").payload(json!("second")),
    ];
    let inserted = t.store.job_insert_many(specs).await.unwrap();
    let dups: Vec<bool> = inserted.iter().map(|i| i.duplicate).collect();
    assert_eq!(dups, [false, false, true]);
    assert_eq!(inserted[2].job.id, inserted[0].job.id);
    assert_eq!(inserted[2].job.payload, json!("first"));
    assert_eq!(counts(&t, "q").await.waiting, 2);
}

/// `unique_for_ms` without a `unique_key`, or of 0, is refused.
pub async fn unique_for_ms_needs_key(make: Factory) {
    let t = fresh(make).await;
    assert_invalid(t.store.job_insert_many(vec![spec("n").unique_for_ms(1_000)]).await, Some("unique_for_ms"));
    assert_invalid(
        t.store.job_insert_many(vec![spec("n").unique_key("k").unique_for_ms(0)]).await,
        Some("unique_for_ms"),
    );
    assert_eq!(counts(&t, "q").await.total(), 0);
}

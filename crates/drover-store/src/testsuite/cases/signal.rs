//! Cases about what a store tells the rest of Drover: the ready signal and
//! the lifecycle events.

use super::support::*;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use drover_core::{Backoff, EventKind, JobState, Progress};
use serde_json::json;
use tokio::sync::watch;

/// Waits for `rx` to change within [`DEADLINE`]; `after` names the cause.
async fn changed(rx: &mut watch::Receiver<u64>, after: &str) {
    match tokio::time::timeout(DEADLINE, rx.changed()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("ready signal closed (after {after})"),
        Err(_) => panic!("ready signal did not change within {DEADLINE:?} after {after}"),
    }
    rx.borrow_and_update();
}

/// The ready signal changes after an insert: a fetcher that marked it seen
/// before an empty claim is woken.
pub async fn ready_signal_wakes_on_insert(make: Factory) {
    let t = fresh(make).await;
    let mut rx = t.store.ready_signal();
    rx.borrow_and_update();
    claim_none(&t, "q").await;
    insert_one(&t, spec("wake")).await;
    changed(&mut rx, "insert").await;
    claim_one(&t, "q").await;
}

/// The ready signal also changes when jobs become claimable another way: a
/// manual retry, a promotion of due jobs, a resume, a stalled job re-queued.
pub async fn ready_signal_wakes_on_requeue(make: Factory) {
    let t: TestStore = fresh(make).await;
    let mut rx = t.store.ready_signal();

    let failed = failed_job(&t, spec("f")).await;
    rx.borrow_and_update();
    t.store.job_retry(&failed.id).await.unwrap();
    changed(&mut rx, "retry").await;

    insert_one(&t, spec("d").delay_ms(1_000)).await;
    advance_ms(&t, 1_000);
    rx.borrow_and_update();
    assert_eq!(t.store.job_promote_due().await.unwrap(), 1);
    changed(&mut rx, "promotion").await;

    t.store.queue_pause_set("q", true).await.unwrap();
    rx.borrow_and_update();
    t.store.queue_pause_set("q", false).await.unwrap();
    changed(&mut rx, "resume").await;

    assert_eq!(claim_as(&t, &["q"], 10, WORKER, 1_000).await.len(), 2);
    advance_ms(&t, 1_001);
    rx.borrow_and_update();
    assert_eq!(t.store.job_rescue_expired().await.unwrap().requeued.len(), 2);
    changed(&mut rx, "stall rescue").await;
}

/// A job's events follow its life in order with increasing ids: insert
/// `job:waiting`, claim `job:active`, progress `job:progress`, finish
/// `job:completed`, each naming the job, its queue and the store's time.
pub async fn events_follow_lifecycle(make: Factory) {
    let t = fresh(make).await;
    let mut events = t.store.events();
    let job = insert_one(&t, spec("tracked").batch_id("b-9")).await;
    let c = claim_one(&t, "q").await;
    advance_ms(&t, 10);
    t.store.job_progress(&job.id, c.lease_token, Progress::Percent(50.0)).await.unwrap();
    advance_ms(&t, 10);
    finish_ok(&t, &c, json!({"ok": true})).await;

    let seen = events_for(&mut events, &job.id, 4).await;
    assert_eq!(kinds(&seen), [EventKind::Waiting, EventKind::Active, EventKind::Progress, EventKind::Completed]);
    assert_ids_increase(&seen);
    for e in &seen {
        assert_eq!(e.queue.as_deref(), Some("q"));
        assert_eq!(e.batch_id.as_deref(), Some("b-9"));
    }
    let start = job.created_at;
    let times: Vec<i64> = seen.iter().map(|e| e.at.as_millis() - start.as_millis()).collect();
    assert_eq!(times, [0, 0, 10, 20]);
}

/// A job that is delayed, retried and dead-lettered publishes `job:delayed`,
/// `job:waiting` (promotion), `job:active`, `job:retrying`, ... `job:failed`,
/// in order.
pub async fn events_follow_failure_path(make: Factory) {
    let t = fresh(make).await;
    let mut events = t.store.events();
    let job = insert_one(&t, spec("doomed").delay_ms(500).attempts(2).backoff(Backoff::fixed(100))).await;
    advance_ms(&t, 500);
    assert_eq!(t.store.job_promote_due().await.unwrap(), 1);
    let c = claim_one(&t, "q").await;
    assert_eq!(finish_fail(&t, &c, boom("one")).await.state, JobState::Delayed);
    advance_ms(&t, 100);
    let c = claim_one(&t, "q").await;
    assert_eq!(finish_fail(&t, &c, boom("two")).await.state, JobState::Failed);

    let seen = events_for(&mut events, &job.id, 7).await;
    use EventKind::*;
    assert_eq!(kinds(&seen), [Delayed, Waiting, Active, Retrying, Waiting, Active, Failed]);
    assert_ids_increase(&seen);
}

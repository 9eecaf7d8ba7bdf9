//! Cases about `job_claim`: what a claim records, its order, its limits,
//! delayed jobs, paused queues, and no double claim under parallel claimers.

use super::support::*;
use crate::JobFinish;
use crate::testsuite::{Factory, fresh, spec};
use crate::{FinishOutcome, JobClaimParams};
use drover_core::{EventKind, JobId, JobSpec, JobState};
use serde_json::Value;
use std::collections::HashSet;

/// A claim makes the job `active` with a fresh lease token, the worker id,
/// `started_at = now`, `lease_expires_at = now + lease_ms`, attempt 1 — as
/// returned and as read back.
pub async fn claim_sets_lease_and_attempt(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("a")).await;
    advance_ms(&t, 1_500);
    let now = t.clock_now();
    let claimed = claim_as(&t, &["q"], 5, "worker-7", 12_000).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.job.id, job.id);
    assert_eq!(c.attempt, 1);
    assert_eq!(c.lease_expires_at, now.plus_ms(12_000));
    for j in [&c.job, &get(&t, &job.id).await] {
        assert_eq!(j.state, JobState::Active);
        assert_eq!(j.attempts_made, 1);
        assert_eq!(j.started_at, Some(now));
        assert_eq!(j.worker_id.as_deref(), Some("worker-7"));
        assert_eq!(j.lease_expires_at, Some(now.plus_ms(12_000)));
        assert!(!j.cancel_requested);
    }
    assert!(c.job.attempts.is_empty(), "a claimed job carries no history");

    // Each claim mints a new token: a second job gets another one.
    let other = insert_one(&t, spec("b")).await;
    let second = claim_one(&t, "q").await;
    assert_eq!(second.job.id, other.id);
    assert_ne!(second.lease_token, c.lease_token, "every claim mints its own token");
}

/// Lower priority numbers are claimed first, across every queue named in one
/// claim, whatever the insertion order.
pub async fn claim_order_priority(make: Factory) {
    let t = fresh(make).await;
    let jobs = insert_all(
        &t,
        vec![
            JobSpec::new("a", "p5").priority(5),
            JobSpec::new("b", "p-1").priority(-1),
            JobSpec::new("a", "p0"),
            JobSpec::new("b", "p10").priority(10),
            JobSpec::new("b", "p2").priority(2),
            JobSpec::new("c", "p-100").priority(-100),
        ],
    )
    .await;
    let name_of = |id: &JobId| jobs.iter().find(|j| &j.id == id).unwrap().name.clone();
    let first = claim(&t, &["a", "b"], 2).await;
    let rest = claim(&t, &["b", "a"], 10).await;
    let order: Vec<String> = ids_of(&first).iter().chain(ids_of(&rest).iter()).map(name_of).collect();
    assert_eq!(order, ["p-1", "p0", "p2", "p5", "p10"], "queue `c` was not asked for");
    assert_eq!(counts(&t, "c").await.waiting, 1);
}

/// At equal priority, the earlier `run_at` is claimed first (delayed jobs
/// promoted by the claim included); priority still beats `run_at`.
pub async fn claim_order_run_at(make: Factory) {
    let t = fresh(make).await;
    let now = t.clock_now();
    let jobs = insert_all(
        &t,
        vec![
            JobSpec::new("a", "in-3s").delay_ms(3_000),
            JobSpec::new("b", "in-1s").delay_ms(1_000),
            JobSpec::new("a", "past-2s").run_at(now.plus_ms(-2_000)),
            JobSpec::new("b", "now"),
            JobSpec::new("a", "in-2s").delay_ms(2_000),
            JobSpec::new("b", "urgent-in-4s").delay_ms(4_000).priority(-1),
            JobSpec::new("a", "past-1s").run_at(now.plus_ms(-1_000)),
        ],
    )
    .await;
    advance_ms(&t, 5_000);
    let name_of = |id: &JobId| jobs.iter().find(|j| &j.id == id).unwrap().name.clone();
    let order: Vec<String> = ids_of(&claim(&t, &["a", "b"], 10).await).iter().map(name_of).collect();
    assert_eq!(order, ["urgent-in-4s", "past-2s", "past-1s", "now", "in-1s", "in-2s", "in-3s"]);
}

/// At equal priority and `run_at`, jobs are claimed in enqueue order, within
/// one insert call and across calls and queues — not in id order.
pub async fn claim_order_fifo(make: Factory) {
    let t = fresh(make).await;
    // Ids sort in reverse of enqueue order, so id order would be caught.
    let mut expected = Vec::new();
    let first_call: Vec<JobSpec> = (0..5)
        .map(|i| JobSpec::new(if i % 2 == 0 { "a" } else { "b" }, "j").id(jid(&format!("z-{}", 9 - i))))
        .collect();
    expected.extend(insert_all(&t, first_call).await.into_iter().map(|j| j.id));
    for i in 5..10 {
        let queue = if i % 2 == 0 { "a" } else { "b" };
        expected.push(insert_one(&t, JobSpec::new(queue, "j").id(jid(&format!("z-{}", 9 - i)))).await.id);
    }
    let mut order = ids_of(&claim(&t, &["a", "b"], 3).await);
    order.extend(ids_of(&claim(&t, &["b", "a"], 100).await));
    assert_eq!(order, expected);
}

/// A claim hands out at most `max` jobs, only from the queues it names; the
/// rest stay `waiting` for the next claim; an empty queue hands out nothing.
pub async fn claim_respects_max_and_queues(make: Factory) {
    let t = fresh(make).await;
    insert_all(&t, (0..5).map(|i| JobSpec::new("a", format!("a{i}"))).collect()).await;
    insert_all(&t, (0..2).map(|i| JobSpec::new("b", format!("b{i}"))).collect()).await;

    let first = claim(&t, &["a"], 3).await;
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|c| c.job.queue == "a"));
    assert_eq!(counts(&t, "a").await.active, 3);
    assert_eq!(counts(&t, "a").await.waiting, 2);

    let second = claim(&t, &["a"], 10).await;
    assert_eq!(second.len(), 2);
    claim_none(&t, "a").await;
    assert!(claim(&t, &["empty"], 10).await.is_empty());
    assert!(claim(&t, &[], 10).await.is_empty(), "no queue named, nothing handed out");

    let b = counts(&t, "b").await;
    assert_eq!((b.waiting, b.active), (2, 0), "queue `b` was never asked for");
    assert_eq!(claim(&t, &["b"], 1).await.len(), 1);
}

/// A delayed job is not claimed (nor promoted) before its `run_at`, and is
/// claimed once the clock reaches it; `job_next_due` names that instant.
pub async fn delayed_not_claimed_early(make: Factory) {
    let t = fresh(make).await;
    let start = t.clock_now();
    let job = insert_one(&t, spec("later").delay_ms(5_000)).await;
    assert_eq!(job.state, JobState::Delayed);
    claim_none(&t, "q").await;
    assert_eq!(t.store.job_next_due(&["q".to_owned()]).await.unwrap(), Some(start.plus_ms(5_000)));

    advance_ms(&t, 4_999);
    claim_none(&t, "q").await;
    assert_eq!(t.store.job_promote_due().await.unwrap(), 0);
    assert_eq!(get(&t, &job.id).await.state, JobState::Delayed);

    advance_ms(&t, 1);
    let claimed = claim_one(&t, "q").await;
    assert_eq!(claimed.job.id, job.id);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(t.store.job_next_due(&[]).await.unwrap(), None);
}

/// `job_promote_due` moves due `delayed` jobs to `waiting` (publishing
/// `job:waiting`), counts them, and leaves jobs not yet due alone.
pub async fn promote_due_moves_due_jobs(make: Factory) {
    let t = fresh(make).await;
    let soon = insert_one(&t, spec("soon").delay_ms(1_000)).await;
    let soon2 = insert_one(&t, JobSpec::new("other", "soon2").delay_ms(1_000)).await;
    let late = insert_one(&t, spec("late").delay_ms(10_000)).await;
    let mut events = t.store.events();
    advance_ms(&t, 1_000);
    assert_eq!(t.store.job_promote_due().await.unwrap(), 2);
    for id in [&soon.id, &soon2.id] {
        assert_eq!(get(&t, id).await.state, JobState::Waiting);
        wait_event(&mut events, EventKind::Waiting, Some(id)).await;
    }
    assert_eq!(get(&t, &late.id).await.state, JobState::Delayed);
    assert_eq!(t.store.job_promote_due().await.unwrap(), 0, "nothing left to promote");
    assert_eq!(counts(&t, "q").await.waiting, 1);
}

/// `job_next_due` is the earliest `run_at` of a delayed job in the queues
/// asked for (all queues when none), `None` when nothing is delayed.
pub async fn next_due_reports_earliest(make: Factory) {
    let t = fresh(make).await;
    let start = t.clock_now();
    assert_eq!(t.store.job_next_due(&[]).await.unwrap(), None);
    insert_all(
        &t,
        vec![
            JobSpec::new("a", "a9").delay_ms(9_000),
            JobSpec::new("a", "a4").delay_ms(4_000),
            JobSpec::new("b", "b2").delay_ms(2_000),
            JobSpec::new("c", "c-now"),
        ],
    )
    .await;
    let due = |queues: &[&str]| {
        let queues: Vec<String> = queues.iter().map(|q| (*q).to_owned()).collect();
        let store = t.store.clone();
        async move { store.job_next_due(&queues).await.unwrap() }
    };
    assert_eq!(due(&["a"]).await, Some(start.plus_ms(4_000)));
    assert_eq!(due(&["a", "b"]).await, Some(start.plus_ms(2_000)));
    assert_eq!(due(&[]).await, Some(start.plus_ms(2_000)));
    assert_eq!(due(&["c"]).await, None, "a waiting job is not `delayed`");
}

/// A paused queue keeps its jobs `waiting` and hands none out while other
/// queues in the same claim still do; active jobs run on; resuming makes
/// them claimable; `queue:paused` / `queue:resumed` are published once per
/// change.
pub async fn paused_queue_hands_nothing_out(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, JobSpec::new("p", "running")).await;
    let running = claim_one(&t, "p").await;
    let held = insert_one(&t, JobSpec::new("p", "held")).await;
    let mut events = t.store.events();

    let info = t.store.queue_pause_set("p", true).await.unwrap();
    assert!(info.paused);
    assert!(t.store.queue_get("p").await.unwrap().paused);
    let paused = next_queue_event(&mut events).await;
    assert_eq!((paused.kind, paused.queue.as_deref()), (EventKind::QueuePaused, Some("p")));
    assert!(t.store.queue_pause_set("p", true).await.unwrap().paused, "pausing twice is fine");

    let free = insert_one(&t, JobSpec::new("o", "free")).await;
    assert_eq!(ids_of(&claim(&t, &["p", "o"], 10).await), std::slice::from_ref(&free.id));
    assert_eq!(get(&t, &held.id).await.state, JobState::Waiting);
    assert_eq!(counts(&t, "p").await.waiting, 1);
    // The job that was already running finishes normally.
    assert_eq!(finish_ok(&t, &running, Value::Null).await.state, JobState::Completed);

    let info = t.store.queue_pause_set("p", false).await.unwrap();
    assert!(!info.paused);
    // Had the second pause published, its event would come first.
    let resumed = next_queue_event(&mut events).await;
    assert_eq!((resumed.kind, resumed.queue.as_deref()), (EventKind::QueueResumed, Some("p")));
    assert!(resumed.id > paused.id);
    t.store.queue_pause_set("p", false).await.unwrap(); // no change: no event
    t.store.queue_pause_set("o", true).await.unwrap(); // a marker
    let marker = next_queue_event(&mut events).await;
    assert_eq!((marker.kind, marker.queue.as_deref()), (EventKind::QueuePaused, Some("o")));

    assert_eq!(ids_of(&claim(&t, &["p", "o"], 10).await), std::slice::from_ref(&held.id));
}

/// Eight claimers racing over 100,000 jobs, claiming up to 100 at a time and
/// completing in batches, never get the same job twice, and every job ends
/// `completed`.
pub async fn no_double_claim_parallel(make: Factory) {
    const JOBS: usize = 100_000;
    const CHUNK: usize = 5_000;
    const CLAIMERS: usize = 8;
    let t = fresh(make).await;
    for chunk in 0..JOBS / CHUNK {
        let specs = (0..CHUNK).map(|i| JobSpec::new("bulk", "n").payload((chunk * CHUNK + i).into())).collect();
        insert_all(&t, specs).await;
    }
    assert_eq!(counts(&t, "bulk").await.waiting, JOBS as u64);

    let mut tasks = Vec::new();
    for w in 0..CLAIMERS {
        let store = t.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let params = JobClaimParams {
                    queues: vec!["bulk".into()],
                    worker_id: format!("claimer-{w}"),
                    max: 100,
                    lease_ms: 3_600_000,
                };
                let batch = store.job_claim(params).await.unwrap();
                if batch.is_empty() {
                    // Nothing goes back to `waiting` here: empty means done.
                    return mine;
                }
                assert!(batch.len() <= 100);
                let items = batch
                    .iter()
                    .map(|c| JobFinish {
                        id: c.job.id.clone(),
                        lease_token: c.lease_token,
                        outcome: FinishOutcome::Complete(Value::Null),
                    })
                    .collect();
                for res in store.job_finish_many(items).await.unwrap() {
                    assert_eq!(res.unwrap().state, JobState::Completed);
                }
                mine.extend(batch.into_iter().map(|c| c.job.id));
            }
        }));
    }
    let mut all = HashSet::with_capacity(JOBS);
    let mut handed_out = 0;
    for task in tasks {
        let mine = task.await.unwrap();
        handed_out += mine.len();
        for id in mine {
            assert!(all.insert(id.clone()), "job {id} was claimed twice");
        }
    }
    assert_eq!(handed_out, JOBS);
    assert_eq!(all.len(), JOBS);
    let c = counts(&t, "bulk").await;
    assert_eq!(c.completed, JOBS as u64);
    assert_eq!(c.total(), JOBS as u64);
}

//! Flows and batches with several servers on one database: children of one
//! parent, and jobs of one batch, finished at the same time through stores
//! with pools of their own (as separate processes would have). The parent
//! must be released, or failed, exactly once; the batch must complete
//! exactly once, with one completion job. Each test has its own schema
//! (`drover_postgres::testing`); without `DROVER_TEST_POSTGRES_URL` they
//! skip.

use drover_core::{
    BatchSpec, Event, EventKind, FailureReport, FlowSpec, JobError, JobId, JobSpec, JobState, Timestamp,
};
use drover_postgres::PgStore;
use drover_postgres::testing::TestDb;
use drover_store::{ClaimedJob, FinishOutcome, JobClaimParams, JobFinish, Store};
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const START: Timestamp = Timestamp(1_700_000_000_000);

/// The count of `queue`'s jobs in `state`, as the stored counts say
/// (`queue_counts` plus the deltas of transactional enqueues).
async fn count(db: &TestDb, queue: &str, state: JobState) -> i64 {
    let mut conn = db.raw_connection().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT sum(n) FROM queue_counts WHERE queue = $1 AND state = $2), 0)::bigint \
         + coalesce((SELECT sum(n) FROM queue_count_deltas WHERE queue = $1 AND state = $2), 0)::bigint",
    )
    .bind(queue)
    .bind(state.as_str())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    n
}

/// How many jobs `queue` holds, by their rows.
async fn rows_of(db: &TestDb, queue: &str) -> i64 {
    let mut conn = db.raw_connection().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = $1")
        .bind(queue)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    n
}

/// Claims up to `max` jobs of `queue` through `store`.
async fn claim(store: &PgStore, queue: &str, max: u32) -> Vec<ClaimedJob> {
    store
        .job_claim(JobClaimParams { queues: vec![queue.into()], worker_id: "w".into(), max, lease_ms: 60_000 })
        .await
        .unwrap()
}

/// Finishes each claimed job in a call of its own, all at once, the calls
/// spread over `stores`; `outcome` picks each job's ending by its index.
async fn finish_in_parallel(stores: &[PgStore], claimed: Vec<ClaimedJob>, outcome: impl Fn(usize) -> FinishOutcome) {
    let mut tasks = Vec::new();
    for (i, c) in claimed.into_iter().enumerate() {
        let store = stores[i % stores.len()].clone();
        let item = JobFinish { id: c.job.id, lease_token: c.lease_token, outcome: outcome(i) };
        tasks.push(tokio::spawn(async move { store.job_finish_many(vec![item]).await }));
    }
    for task in tasks {
        let results = task.await.unwrap().unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
}

/// Every event `rx` receives up to `marker`'s `job:waiting`, which another
/// server commits after everything the test waits for: notifications come
/// in commit order, so nothing committed before the marker is missed.
async fn events_until(rx: &mut broadcast::Receiver<Event>, marker: &JobId) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, rx.recv()).await.expect("the marker's event never came").unwrap();
        if event.job_id.as_ref() == Some(marker) && event.kind == EventKind::Waiting {
            return seen;
        }
        seen.push(event);
    }
}

/// A subscription to the first store's events once its listener hears the
/// second's: what the second commits from now on reaches it.
async fn listening(stores: &[PgStore]) -> broadcast::Receiver<Event> {
    let mut rx = stores[0].events();
    events_until(&mut rx, &marker(&stores[1], 99).await).await;
    rx
}

/// Inserts a marker job through `store`, for [`events_until`].
async fn marker(store: &PgStore, n: usize) -> JobId {
    // Unique, so a marker of another test's schema can never stand in for it.
    let id = JobId::parse(format!("marker-{n}-{}", JobId::generate())).unwrap();
    store.job_insert_many(vec![JobSpec::new("markers", "m").id(id.clone())]).await.unwrap();
    id
}

/// How many of `events` are of `kind` about job `id`.
fn count_of(events: &[Event], kind: EventKind, id: &JobId) -> usize {
    events.iter().filter(|e| e.kind == kind && e.job_id.as_ref() == Some(id)).count()
}

/// Sixteen children of one parent completed at once through two servers,
/// round after round: each parent leaves `waiting-children` once, with one
/// `job:waiting`, and its count moves once.
#[tokio::test]
async fn children_finished_on_two_servers_release_their_parent_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let mut rx = listening(&stores).await;
    let rounds = 4;
    let (mut parents, mut kids) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut flow = FlowSpec::new(JobSpec::new("parents", "p"));
        for _ in 0..16 {
            flow = flow.child(JobSpec::new("kids", "k"));
        }
        let inserted = stores[round % 2].flow_insert(flow).await.unwrap();
        assert_eq!(inserted[0].job.state, JobState::WaitingChildren);
        parents.push(inserted[0].job.id.clone());
        let claimed = claim(&stores[0], "kids", 100).await;
        assert_eq!(claimed.len(), 16);
        kids.extend(claimed.iter().map(|c| c.job.id.clone()));
        finish_in_parallel(&stores, claimed, |i| FinishOutcome::Complete(json!({ "i": i }))).await;
        let parent = stores[1].job_get(&parents[round]).await.unwrap().unwrap();
        assert_eq!(parent.state, JobState::Waiting, "round {round}");
    }
    assert_eq!(count(&db, "parents", JobState::Waiting).await, rounds as i64);
    assert_eq!(count(&db, "parents", JobState::WaitingChildren).await, 0);
    assert_eq!(count(&db, "kids", JobState::Completed).await, 16 * rounds as i64);
    let events = events_until(&mut rx, &marker(&stores[1], 0).await).await;
    for parent in &parents {
        assert_eq!(count_of(&events, EventKind::Waiting, parent), 1, "{parent}");
    }
    for kid in &kids {
        assert_eq!(count_of(&events, EventKind::Completed, kid), 1, "{kid}");
    }
}

/// Children failing at once through two servers under `fail_parent`: the
/// parent fails once (one `job:failed`, counted once), and the parent's own
/// parent, failed by it in turn, too.
#[tokio::test]
async fn children_failed_on_two_servers_fail_their_parent_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let mut rx = listening(&stores).await;
    let mut middle = FlowSpec::new(JobSpec::new("parents", "mid"));
    for _ in 0..12 {
        middle = middle.child(JobSpec::new("kids", "k").attempts(1));
    }
    let flow = FlowSpec::new(JobSpec::new("parents", "root")).child(middle);
    let inserted = stores[0].flow_insert(flow).await.unwrap();
    let (root, mid) = (inserted[0].job.id.clone(), inserted[1].job.id.clone());
    let claimed = claim(&stores[1], "kids", 100).await;
    assert_eq!(claimed.len(), 12);
    finish_in_parallel(&stores, claimed, |_| FinishOutcome::Fail(FailureReport::fatal(JobError::new("boom")))).await;
    for id in [&root, &mid] {
        let job = stores[1].job_get(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed, "{id}");
        assert_eq!(job.error.unwrap().code.as_deref(), Some("child_failed"));
    }
    assert_eq!(count(&db, "parents", JobState::Failed).await, 2);
    assert_eq!(count(&db, "parents", JobState::WaitingChildren).await, 0);
    assert_eq!(count(&db, "kids", JobState::Failed).await, 12);
    let events = events_until(&mut rx, &marker(&stores[1], 0).await).await;
    assert_eq!(count_of(&events, EventKind::Failed, &mid), 1);
    assert_eq!(count_of(&events, EventKind::Failed, &root), 1);
}

/// A batch's jobs ended at once through two servers, some completed, some
/// failed, round after round: each batch completes once, with one
/// `batch:completed` and one completion job.
#[tokio::test]
async fn a_batch_finished_on_two_servers_completes_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let mut rx = listening(&stores).await;
    let rounds = 4;
    let mut batches = Vec::new();
    for round in 0..rounds {
        let jobs = (0..24).map(|_| JobSpec::new("members", "m").attempts(1)).collect();
        let on_complete = Some(JobSpec::new("after", "report").payload(json!({ "round": round })));
        let batch = stores[round % 2].batch_insert(BatchSpec { jobs, on_complete }).await.unwrap();
        assert_eq!(batch.total, 24);
        batches.push(batch.id.clone());
        let claimed = claim(&stores[1], "members", 100).await;
        assert_eq!(claimed.len(), 24);
        finish_in_parallel(&stores, claimed, |i| {
            if i % 3 == 0 {
                FinishOutcome::Fail(FailureReport::fatal(JobError::new("no")))
            } else {
                FinishOutcome::Complete(json!(null))
            }
        })
        .await;
        let info = stores[0].batch_get(&batch.id).await.unwrap().unwrap();
        assert_eq!((info.completed, info.failed, info.active, info.waiting), (16, 8, 0, 0), "round {round}");
        assert!(info.completed_at.is_some());
        assert!(info.on_complete_id.is_some());
    }
    assert_eq!(rows_of(&db, "after").await, rounds as i64);
    assert_eq!(count(&db, "after", JobState::Waiting).await, rounds as i64);
    let events = events_until(&mut rx, &marker(&stores[1], 0).await).await;
    for batch in &batches {
        let completed = events
            .iter()
            .filter(|e| e.kind == EventKind::BatchCompleted && e.batch_id.as_deref() == Some(batch.as_str()))
            .count();
        assert_eq!(completed, 1, "{batch}");
    }
}

/// A parent and its child finished in one call while another call finishes
/// a sibling: the locks go upward in one order, so neither call fails (no
/// deadlock), and the parent, fanned out while it ran, waits for the last
/// child and is then released once.
#[tokio::test]
async fn a_parent_and_its_child_finished_together_beside_a_sibling() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    for round in 0..8 {
        let parent_id = JobId::parse(format!("parent-{round}")).unwrap();
        stores[0].job_insert_many(vec![JobSpec::new("parents", "p").id(parent_id.clone())]).await.unwrap();
        let parent = claim(&stores[0], "parents", 1).await.remove(0);
        // The running parent fans out: two children.
        let kids: Vec<JobSpec> = (0..2).map(|_| JobSpec::new("kids", "k").parent_id(parent_id.clone())).collect();
        stores[1].job_insert_many(kids).await.unwrap();
        let mut kids = claim(&stores[1], "kids", 10).await;
        assert_eq!(kids.len(), 2);
        let (a, b) = (kids.remove(0), kids.remove(0));
        let done = |c: &ClaimedJob| JobFinish {
            id: c.job.id.clone(),
            lease_token: c.lease_token,
            outcome: FinishOutcome::Complete(json!(1)),
        };
        let together = vec![done(&parent), done(&a)];
        let alone = vec![done(&b)];
        let (s0, s1) = (stores[0].clone(), stores[1].clone());
        let one = tokio::spawn(async move { s0.job_finish_many(together).await });
        let two = tokio::spawn(async move { s1.job_finish_many(alone).await });
        let (one, two) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
        assert!(one.iter().chain(two.iter()).all(Result::is_ok), "{one:?} {two:?}");
        // Fanned out, it runs again once both children have finished.
        let parent = stores[1].job_get(&parent_id).await.unwrap().unwrap();
        assert_eq!(parent.state, JobState::Waiting, "round {round}");
        let again = claim(&stores[1], "parents", 1).await;
        assert_eq!(again.len(), 1);
        stores[1]
            .job_finish_many(vec![JobFinish {
                id: again[0].job.id.clone(),
                lease_token: again[0].lease_token,
                outcome: FinishOutcome::Complete(json!(2)),
            }])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
    }
    assert_eq!(count(&db, "parents", JobState::Completed).await, 8);
    assert_eq!(count(&db, "kids", JobState::Completed).await, 16);
}

/// Children of one flow expiring while two servers run their expiry passes
/// at once: each child fails once, and the parent fails once (by its first
/// expired child).
#[tokio::test]
async fn children_expiring_on_two_servers_fail_their_parent_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(2, START).await;
    let mut rx = listening(&stores).await;
    let deadline = START.plus_ms(1_000);
    let kids: Vec<JobSpec> = (0..10).map(|_| JobSpec::new("kids", "k").expires_at(deadline)).collect();
    let mut flow = FlowSpec::new(JobSpec::new("parents", "p"));
    for kid in kids {
        flow = flow.child(kid);
    }
    let inserted = stores[0].flow_insert(flow).await.unwrap();
    let parent = inserted[0].job.id.clone();
    clock.advance(Duration::from_millis(1_000));
    let (a, b) = (stores[0].clone(), stores[1].clone());
    let one = tokio::spawn(async move { a.job_expire_due().await });
    let two = tokio::spawn(async move { b.job_expire_due().await });
    let expired = one.await.unwrap().unwrap() + two.await.unwrap().unwrap();
    assert_eq!(expired, 10);
    let job = stores[1].job_get(&parent).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.unwrap().code.as_deref(), Some("child_failed"));
    assert_eq!(count(&db, "kids", JobState::Failed).await, 10);
    assert_eq!(count(&db, "parents", JobState::Failed).await, 1);
    assert_eq!(count(&db, "parents", JobState::WaitingChildren).await, 0);
    let events = events_until(&mut rx, &marker(&stores[1], 0).await).await;
    assert_eq!(count_of(&events, EventKind::Failed, &parent), 1);
    for kid in &inserted[1..] {
        assert_eq!(count_of(&events, EventKind::Failed, &kid.job.id), 1);
    }
}

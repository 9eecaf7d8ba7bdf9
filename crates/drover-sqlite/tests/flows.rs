//! Flows and batches (ADR 0007) against stored states the public API no
//! longer lets callers create: data written by an older build, or rows
//! left inconsistent by one.

use drover_core::{BatchSpec, Clock, EventKind, JobId, JobSpec, JobState, ManualClock};
use drover_sqlite::{SqliteOptions, SqliteStore};
use drover_store::{FinishOutcome, JobClaimParams, JobFinish, Store};
use serde_json::json;
use std::time::Duration;

fn claim_params() -> JobClaimParams {
    JobClaimParams { queues: vec!["q".into()], worker_id: "w".into(), max: 10, lease_ms: 30_000 }
}

/// A completion job stored before `batch_insert` refused `parent_id` and
/// `batch_id` in it, naming a parent that is gone or a batch that has
/// completed: the job whose end completes the batch still completes, the
/// batch completes without its completion job (reported in
/// `batch:completed`), and stall rescue keeps working.
#[tokio::test]
async fn a_completion_job_that_cannot_be_inserted_does_not_fail_the_last_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let spec =
        || BatchSpec { jobs: vec![JobSpec::new("q", "item")], on_complete: Some(JobSpec::new("done", "report")) };
    let first = store.batch_insert(spec()).await.unwrap();
    let second = store.batch_insert(spec()).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let forge = "UPDATE batches SET on_complete = json_set(on_complete, ?2, ?3) WHERE id = ?1";
    conn.execute(forge, rusqlite::params![first.id, "$.parent_id", "ghost"]).unwrap();
    // `second` names `first`, which completes before it.
    conn.execute(forge, rusqlite::params![second.id, "$.batch_id", first.id]).unwrap();

    let mut events = store.events();
    let claimed = store.job_claim(claim_params()).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let finishes = claimed
        .iter()
        .map(|c| JobFinish {
            id: c.job.id.clone(),
            lease_token: c.lease_token,
            outcome: FinishOutcome::Complete(json!(1)),
        })
        .collect();
    for result in store.job_finish_many(finishes).await.unwrap() {
        assert_eq!(result.unwrap().state, JobState::Completed);
    }
    for batch in [&first.id, &second.id] {
        let b = store.batch_get(batch).await.unwrap().unwrap();
        assert_eq!((b.completed, b.state, b.on_complete_id), (1, drover_store::BatchState::Completed, None));
    }
    let mut reported = 0;
    while reported < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        if event.kind == EventKind::BatchCompleted {
            assert!(event.data["on_complete_error"].is_string(), "{:?}", event.data);
            reported += 1;
        }
    }
    let list = drover_store::JobListParams { queue: Some("done".into()), ..Default::default() };
    assert!(store.job_list(list).await.unwrap().items.is_empty(), "nothing half-inserted is left");
    store.job_rescue_expired().await.unwrap();
}

/// `job_expire_due` counts the jobs it expired, not the ones it found due:
/// a due parent failed meanwhile by its due child (through the flow hook)
/// did not expire. Such a parent (`waiting` with an unfinished child) is
/// forged: no path of this build leaves one.
#[tokio::test]
async fn expire_due_counts_only_the_jobs_it_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let clock = ManualClock::new(drover_core::Timestamp(1_767_225_600_000));
    let store = SqliteStore::open(&path, SqliteOptions::default().clock(clock.clone())).unwrap();
    let now = clock.now();
    let id = |s: &str| JobId::parse(s).unwrap();
    store.job_insert_many(vec![JobSpec::new("q", "parent").id(id("p")).expires_at(now.plus_ms(2_000))]).await.unwrap();
    let child = JobSpec::new("q", "child").id(id("c")).parent_id(id("p")).expires_at(now.plus_ms(1_000));
    store.job_insert_many(vec![child]).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE jobs SET state = 'waiting' WHERE id = 'p'", []).unwrap();

    clock.advance(Duration::from_millis(3_000));
    assert_eq!(store.job_expire_due().await.unwrap(), 1);
    let parent = store.job_get(&id("p")).await.unwrap().unwrap();
    assert_eq!(parent.state, JobState::Failed);
    assert_eq!(parent.error.unwrap().code.as_deref(), Some("child_failed"));
}

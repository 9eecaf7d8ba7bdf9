//! Leases with several servers on one database: rescues racing on the same
//! expired leases, heartbeats mixing current and stale tokens, a rescue
//! and a cancel meeting a worker's calls, and what `jsonb` cannot hold.
//! Each test has its own schema (`drover_postgres::testing`); without
//! `DROVER_TEST_POSTGRES_URL` they skip.

use drover_core::{EventKind, JobId, JobSpec, JobState, LeaseToken, LogLevel, Progress, Timestamp};
use drover_postgres::PgStore;
use drover_postgres::testing::TestDb;
use drover_store::{
    CancelOutcome, ClaimedJob, JobClaimParams, JobEventEmit, JobHeartbeat, JobLogAppend, RescueReport, Store,
    StoreError,
};
use serde_json::json;
use sqlx::Connection;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

const START: Timestamp = Timestamp(1_700_000_000_000);

async fn claim(store: &PgStore, max: u32, lease_ms: u64) -> Vec<ClaimedJob> {
    let params = JobClaimParams { queues: vec!["q".into()], worker_id: "w".into(), max, lease_ms };
    store.job_claim(params).await.unwrap()
}

fn beat(c: &ClaimedJob, token: LeaseToken, lease_ms: u64, progress: Option<Progress>) -> JobHeartbeat {
    JobHeartbeat { id: c.job.id.clone(), lease_token: token, lease_ms, progress }
}

/// `queue_counts` (with the deltas), zero rows left out.
async fn counts(db: &TestDb) -> BTreeMap<String, i64> {
    let mut conn = db.raw_connection().await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, sum(n)::bigint FROM (SELECT state, n FROM queue_counts UNION ALL \
         SELECT state, n FROM queue_count_deltas) c GROUP BY state HAVING sum(n) <> 0",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    rows.into_iter().collect()
}

/// Four servers rescue the same 300 expired leases at once, each twice:
/// every job is rescued exactly once (one `stalled` attempt, `stalls = 1`),
/// the reports add up to the jobs, and the counts follow.
#[tokio::test]
async fn parallel_rescues_take_each_job_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(4, START).await;
    let n = 300;
    let specs: Vec<JobSpec> = (0..n).map(|i| JobSpec::new("q", format!("j{i}"))).collect();
    stores[0].job_insert_many(specs).await.unwrap();
    assert_eq!(claim(&stores[0], n, 1_000).await.len(), n as usize);
    clock.set(START.plus_ms(1_001));

    let calls: Vec<_> = stores
        .iter()
        .chain(stores.iter())
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.job_rescue_expired().await })
        })
        .collect();
    let mut reports: Vec<RescueReport> = Vec::new();
    for call in calls {
        reports.push(call.await.unwrap().unwrap());
    }
    let mut rescued: Vec<JobId> = reports.iter().flat_map(|r| r.requeued.iter().cloned()).collect();
    assert!(reports.iter().all(|r| r.failed.is_empty() && r.cancelled.is_empty()));
    let total = rescued.len();
    rescued.sort();
    rescued.dedup();
    assert_eq!((total, rescued.len()), (n as usize, n as usize), "each job rescued once, none missed");

    let mut conn = db.raw_connection().await;
    let stalled: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT j.stalls, (SELECT count(*) FROM job_attempts a WHERE a.job_seq = j.seq AND a.outcome = 'stalled') \
         FROM jobs j",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    assert!(stalled.iter().all(|&(stalls, attempts)| stalls == 1 && attempts == 1), "{stalled:?}");
    assert_eq!(counts(&db).await, BTreeMap::from([("waiting".to_owned(), n as i64)]));
    assert_eq!(stores[1].job_rescue_expired().await.unwrap().total(), 0);
}

/// One heartbeat call with current, stale and made-up tokens, a job beaten
/// twice and a finished job: each item answers on its own, the job beaten
/// twice ends with the later beat's lease and progress, and a rescue
/// afterwards takes only the jobs whose beat was refused.
#[tokio::test]
async fn heartbeat_batch_with_mixed_tokens() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(2, START).await;
    let store = &stores[0];
    let specs: Vec<JobSpec> = (0..5).map(|i| JobSpec::new("q", format!("j{i}"))).collect();
    store.job_insert_many(specs).await.unwrap();
    let c = claim(store, 5, 1_000).await;
    clock.set(START.plus_ms(500));
    let stale = |t: LeaseToken| LeaseToken(t.0 ^ 0x5555);
    let replies = stores[1]
        .job_heartbeat_many(vec![
            beat(&c[0], c[0].lease_token, 10_000, Some(Progress::Percent(10.0))),
            beat(&c[1], stale(c[1].lease_token), 10_000, Some(Progress::Percent(20.0))),
            beat(&c[2], c[2].lease_token, 10_000, Some(Progress::Percent(30.0))),
            beat(&c[2], c[2].lease_token, 20_000, Some(Progress::Percent(35.0))),
            beat(&c[3], LeaseToken(1), 10_000, None),
            beat(&c[4], c[4].lease_token, 10_000, Some(Progress::Percent(101.0))),
        ])
        .await
        .unwrap();
    assert_eq!(replies.len(), 6);
    assert_eq!(replies[0].as_ref().unwrap().lease_expires_at, START.plus_ms(10_500));
    assert!(matches!(replies[1], Err(StoreError::LeaseLost(_))), "{:?}", replies[1]);
    assert_eq!(replies[2].as_ref().unwrap().lease_expires_at, START.plus_ms(10_500));
    assert_eq!(replies[3].as_ref().unwrap().lease_expires_at, START.plus_ms(20_500));
    assert!(matches!(replies[4], Err(StoreError::LeaseLost(_))), "{:?}", replies[4]);
    assert!(matches!(replies[5], Err(StoreError::Invalid { .. })), "{:?}", replies[5]);
    let job2 = store.job_get(&c[2].job.id).await.unwrap().unwrap();
    assert_eq!((job2.progress, job2.lease_expires_at), (Progress::Percent(35.0), Some(START.plus_ms(20_500))));
    assert_eq!(store.job_get(&c[1].job.id).await.unwrap().unwrap().progress, Progress::default());

    clock.set(START.plus_ms(1_001));
    let mut requeued = store.job_rescue_expired().await.unwrap().requeued;
    requeued.sort();
    let mut refused = vec![c[1].job.id.clone(), c[3].job.id.clone(), c[4].job.id.clone()];
    refused.sort();
    assert_eq!(requeued, refused, "only the refused beats' jobs stalled");
}

/// A job whose lease expired, rescued on one server, refuses its old
/// worker's calls on another; a cancel from a third server meets the
/// re-claimed job and only requests it, which the next heartbeat reports.
#[tokio::test]
async fn rescue_and_cancel_across_servers() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(3, START).await;
    let job = stores[0].job_insert_many(vec![JobSpec::new("q", "slow")]).await.unwrap().pop().unwrap().job;
    let old = claim(&stores[0], 1, 1_000).await.pop().unwrap();
    clock.set(START.plus_ms(1_001));
    assert_eq!(stores[1].job_rescue_expired().await.unwrap().requeued, std::slice::from_ref(&job.id));
    let line = JobLogAppend {
        id: job.id.clone(),
        lease_token: old.lease_token,
        level: LogLevel::Info,
        message: "late".into(),
        metadata: json!(null),
    };
    assert!(matches!(stores[0].job_log_append(line).await, Err(StoreError::LeaseLost(_))));

    let new = claim(&stores[1], 1, 60_000).await.pop().unwrap();
    let outcome = stores[2].job_cancel(&job.id).await.unwrap();
    assert!(matches!(outcome, CancelOutcome::Requested(ref j) if j.cancel_requested), "{outcome:?}");
    let reply = stores[0].job_heartbeat_many(vec![beat(&new, new.lease_token, 60_000, None)]).await.unwrap();
    assert!(reply[0].as_ref().unwrap().cancel_requested);
}

/// Two workers' log appends on one job at once (the same lease, as a
/// handler logging from several tasks) number their lines 1..=n without a
/// gap or a clash.
#[tokio::test]
async fn parallel_log_appends_number_lines_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let job = stores[0].job_insert_many(vec![JobSpec::new("q", "chatty")]).await.unwrap().pop().unwrap().job;
    let c = claim(&stores[0], 1, 60_000).await.pop().unwrap();
    let per_task = 20;
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = stores[t % 2].clone();
            let (id, token) = (job.id.clone(), c.lease_token);
            tokio::spawn(async move {
                for i in 0..per_task {
                    let line = JobLogAppend {
                        id: id.clone(),
                        lease_token: token,
                        level: LogLevel::Debug,
                        message: format!("{t}-{i}"),
                        metadata: json!(null),
                    };
                    store.job_log_append(line).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let lines = stores[1].job_log_list(&job.id, 0, 1_000).await.unwrap();
    assert_eq!(lines.len(), 4 * per_task);
    let distinct: HashSet<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(distinct.len(), lines.len());
    let mut conn = db.raw_connection().await;
    let numbers: Vec<i64> = sqlx::query_scalar("SELECT n FROM job_logs ORDER BY n").fetch_all(&mut conn).await.unwrap();
    let _ = conn.close().await;
    assert_eq!(numbers, (1..=(4 * per_task) as i64).collect::<Vec<_>>());
}

/// NUL characters, which `jsonb` and `text` refuse but SQLite stores, are
/// refused as `Invalid` in progress, log lines and log metadata, and
/// change nothing.
#[tokio::test]
async fn nul_characters_are_invalid() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(1, START).await;
    let store = &stores[0];
    let job = store.job_insert_many(vec![JobSpec::new("q", "nul")]).await.unwrap().pop().unwrap().job;
    let c = claim(store, 1, 60_000).await.pop().unwrap();
    let detailed = Progress::Detailed { total: None, processed: 1, failed: 0, message: Some("a\0b".into()) };
    assert!(matches!(
        store.job_progress(&job.id, c.lease_token, detailed.clone()).await,
        Err(StoreError::Invalid { .. })
    ));
    let replies = store.job_heartbeat_many(vec![beat(&c, c.lease_token, 1_000, Some(detailed))]).await.unwrap();
    assert!(matches!(replies[0], Err(StoreError::Invalid { .. })));
    for (message, metadata) in [("a\0b", json!(null)), ("ok", json!({"k": "v\u{0}"}))] {
        let line = JobLogAppend {
            id: job.id.clone(),
            lease_token: c.lease_token,
            level: LogLevel::Info,
            message: message.into(),
            metadata,
        };
        assert!(matches!(store.job_log_append(line).await, Err(StoreError::Invalid { .. })));
    }
    let read = store.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!((read.state, read.progress), (JobState::Active, Progress::default()));
    assert!(store.job_log_list(&job.id, 0, 10).await.unwrap().is_empty());
}

/// The next event about `id` on `rx` (others skipped), polled with a
/// deadline: events of another server come through its listener.
async fn next_for(rx: &mut tokio::sync::broadcast::Receiver<drover_core::Event>, id: &JobId) -> drover_core::Event {
    let deadline = std::time::Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout(deadline, rx.recv()).await.expect("an event within 10 s").unwrap();
        if event.job_id.as_ref() == Some(id) {
            return event;
        }
    }
}

/// What a rescue, a cancel request and a custom event publish on one
/// server reaches another server's subscribers, in order and with the
/// same data: `job:stalled` (`{"stalls"}`), `job:failed` with the stall
/// error, `job:cancel_requested`, the custom event.
#[tokio::test]
async fn lease_events_reach_other_servers() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(2, START).await;
    let mut remote = stores[1].events();
    let dead = stores[0].job_insert_many(vec![JobSpec::new("q", "dead").max_stalls(0)]).await.unwrap();
    let dead = dead[0].job.id.clone();
    claim(&stores[0], 1, 1_000).await;
    clock.set(START.plus_ms(1_001));
    assert_eq!(stores[0].job_rescue_expired().await.unwrap().failed, std::slice::from_ref(&dead));
    // Skips what the insert and the claim published.
    let mut stalled = next_for(&mut remote, &dead).await;
    while stalled.kind != EventKind::Stalled {
        stalled = next_for(&mut remote, &dead).await;
    }
    assert_eq!(stalled.data, json!({"stalls": 1}));
    let failed = next_for(&mut remote, &dead).await;
    assert_eq!(failed.kind, EventKind::Failed);
    assert_eq!(failed.data["error"]["code"], json!("stalled"));

    let live = stores[0].job_insert_many(vec![JobSpec::new("q", "live")]).await.unwrap()[0].job.id.clone();
    let c = claim(&stores[0], 1, 60_000).await.pop().unwrap();
    stores[0].job_cancel(&live).await.unwrap();
    let emit =
        JobEventEmit { id: live.clone(), lease_token: c.lease_token, kind: "lead:add".into(), data: json!({"n": 1}) };
    stores[0].job_event_emit(emit).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = next_for(&mut remote, &live).await;
        if matches!(event.kind, EventKind::CancelRequested | EventKind::Custom(_)) {
            kinds.push(event.kind);
        }
    }
    assert_eq!(kinds, [EventKind::CancelRequested, EventKind::Custom("lead:add".into())]);
}

/// Heartbeat batches naming the same jobs in different orders, from two
/// servers at once, never deadlock: each locks its rows in `seq` order
/// (a deadlock would surface as an `Unavailable` error here).
#[tokio::test]
async fn crossing_heartbeat_batches_do_not_deadlock() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let specs: Vec<JobSpec> = (0..40).map(|i| JobSpec::new("q", format!("j{i}"))).collect();
    stores[0].job_insert_many(specs).await.unwrap();
    let claimed = Arc::new(claim(&stores[0], 40, 60_000).await);
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let store = stores[t % 2].clone();
            let claimed = claimed.clone();
            tokio::spawn(async move {
                for round in 0..15 {
                    let mut beats: Vec<JobHeartbeat> =
                        claimed.iter().map(|c| beat(c, c.lease_token, 60_000, None)).collect();
                    if (t + round) % 2 == 1 {
                        beats.reverse();
                    } else {
                        fastrand::shuffle(&mut beats);
                    }
                    for reply in store.job_heartbeat_many(beats).await.unwrap() {
                        reply.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

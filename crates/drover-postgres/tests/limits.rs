//! Caps and rate limits with several servers on one database (ADR 0009):
//! stores with pools of their own, as separate processes would have,
//! claiming at once. Each test has its own schema
//! (`drover_postgres::testing`); without `DROVER_TEST_POSTGRES_URL` they
//! skip.
//!
//! What is asserted is what the store guarantees, observed without races:
//! a claimer counts a job as "in hand" from the moment its claim returned
//! (the job is active in the database then) until just *before* it sends
//! the finish (the job is still active then), so the jobs in hand are
//! never more than the jobs active, and the cap bounds those. Rate windows
//! are checked on the `started_at` the store recorded, with a manual clock
//! that only moves between rounds of claims.

use drover_core::{Clock, JobId, JobSpec, KeyLimit, QueueConfig, RateLimit, Timestamp};
use drover_postgres::PgStore;
use drover_postgres::testing::TestDb;
use drover_store::{ClaimedJob, FinishOutcome, JobClaimParams, JobFinish, Store};
use serde_json::Value;
use sqlx::Connection;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

const START: Timestamp = Timestamp(1_700_000_000_000);

/// How long a test waits for something that should happen at once.
const DEADLINE: Duration = Duration::from_secs(20);

fn params(queue: &str, worker: String, max: u32) -> JobClaimParams {
    JobClaimParams { queues: vec![queue.to_owned()], worker_id: worker, max, lease_ms: 3_600_000 }
}

async fn complete(store: &PgStore, claimed: &[ClaimedJob]) {
    let items = claimed
        .iter()
        .map(|c| JobFinish {
            id: c.job.id.clone(),
            lease_token: c.lease_token,
            outcome: FinishOutcome::Complete(Value::Null),
        })
        .collect();
    for result in store.job_finish_many(items).await.unwrap() {
        result.unwrap();
    }
}

/// Two servers, four claimers each, drain 60 jobs of a queue capped at 2:
/// no more than 2 are ever in hand (nor active, as the store counts them),
/// every job runs exactly once, and the cap is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_cap_holds_across_servers() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let config = QueueConfig { concurrency: Some(2), ..QueueConfig::default() };
    stores[0].queue_config_set("q", config).await.unwrap();
    let total = 60;
    stores[1].job_insert_many((0..total).map(|i| JobSpec::new("q", "n").payload(i.into())).collect()).await.unwrap();

    let in_hand = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Mutex::new(Vec::<JobId>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = stores[w % 2].clone();
        let (in_hand, peak, done) = (in_hand.clone(), peak.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                if done.lock().await.len() >= total {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "jobs left undone under the cap");
                let claimed = store.job_claim(params("q", format!("w{w}"), 3)).await.unwrap();
                if claimed.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let now = in_hand.fetch_add(claimed.len(), Ordering::SeqCst) + claimed.len();
                assert!(now <= 2, "{now} jobs in hand under a cap of 2");
                peak.fetch_max(now, Ordering::SeqCst);
                let active = store.queue_get("q").await.unwrap().counts.active;
                assert!(active <= 2, "{active} jobs active under a cap of 2");
                tokio::task::yield_now().await;
                // Out of hand before the finish is sent: still active until
                // it commits, so the count above never undercounts.
                in_hand.fetch_sub(claimed.len(), Ordering::SeqCst);
                complete(&store, &claimed).await;
                done.lock().await.extend(claimed.into_iter().map(|c| c.job.id));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let done = done.lock().await;
    let unique: HashSet<&JobId> = done.iter().collect();
    assert_eq!((done.len(), unique.len()), (total, total), "every job ran exactly once");
    // The first claim to return anything found no job active, so it got 2.
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(stores[0].queue_get("q").await.unwrap().counts.completed, total as u64);
}

/// Two servers, four claimers each, claim in rounds at one instant of a
/// manual clock, which moves 250 ms between rounds. Keys matching
/// `tenant:*` may start 3 per second each: no window of a second ever
/// holds more than 3 starts of one key, the key's window as the store
/// reports it agrees, unlimited jobs are not held back by it, and every
/// job runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_rate_limit_holds_across_servers() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(2, START).await;
    let limit = KeyLimit { concurrency: None, rate_limit: Some(RateLimit { max: 3, per_ms: 1_000 }) };
    stores[0].rate_limit_set("tenant:*", limit).await.unwrap();
    let mut specs = Vec::new();
    for key in ["tenant:a", "tenant:b"] {
        specs.extend((0..9).map(|_| JobSpec::new("q", "n").rate_limit_key(key)));
    }
    specs.extend((0..6).map(|_| JobSpec::new("q", "free")));
    let total = specs.len();
    stores[1].job_insert_many(specs).await.unwrap();

    let mut starts: Vec<(String, i64)> = Vec::new();
    let mut seen: HashSet<JobId> = HashSet::new();
    let mut rounds = 0;
    while seen.len() < total {
        rounds += 1;
        assert!(rounds <= 40, "only {} of {total} jobs ran in 10 s of the clock", seen.len());
        let calls: Vec<_> = (0..8)
            .map(|w| {
                let store = stores[w % 2].clone();
                tokio::spawn(async move {
                    let claimed = store.job_claim(params("q", format!("w{w}"), 2)).await.unwrap();
                    complete(&store, &claimed).await;
                    claimed
                })
            })
            .collect();
        let now = clock.now();
        for call in calls {
            for c in call.await.unwrap() {
                assert_eq!(c.job.started_at, Some(now));
                assert!(seen.insert(c.job.id.clone()), "job {} claimed twice", c.job.id);
                if let Some(key) = c.job.rate_limit_key {
                    starts.push((key, now.0));
                }
            }
        }
        for key in ["tenant:a", "tenant:b"] {
            let state = stores[rounds % 2].rate_limit_get(key).await.unwrap();
            let in_window = starts.iter().filter(|(k, at)| k == key && *at > now.0 - 1_000).count();
            assert_eq!(state.started_in_window as usize, in_window, "{key}: the store's window");
            assert!(in_window <= 3, "{key}: {in_window} starts in the second up to {now:?}");
        }
        clock.advance(Duration::from_millis(250));
    }
    for key in ["tenant:a", "tenant:b"] {
        let mine: Vec<i64> = starts.iter().filter(|(k, _)| k == key).map(|(_, at)| *at).collect();
        assert_eq!(mine.len(), 9);
        for &from in &mine {
            let in_window = mine.iter().filter(|&&at| at >= from && at < from + 1_000).count();
            assert!(in_window <= 3, "{key}: {in_window} starts in the second from {from}");
        }
    }
    // 9 starts at 3 per second need at least three windows.
    assert!(rounds >= 9, "{rounds} rounds");
}

/// A key another claimer is serving (its scope's advisory lock is held,
/// here by a bare transaction) is stepped over at once, not waited for:
/// the claim hands out the other keys' jobs. Once it is free, its jobs
/// run, under the key's cap.
#[tokio::test]
async fn busy_key_is_stepped_over() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(1, START).await;
    let store = &stores[0];
    store.rate_limit_set("places", KeyLimit { concurrency: Some(1), rate_limit: None }).await.unwrap();
    let mut specs: Vec<JobSpec> = (0..2).map(|_| JobSpec::new("q", "place").rate_limit_key("places")).collect();
    specs.push(JobSpec::new("q", "other").rate_limit_key("elsewhere"));
    specs.push(JobSpec::new("q", "plain"));
    store.job_insert_many(specs).await.unwrap();

    let mut holder = db.raw_connection().await;
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('k:places', 0))").execute(&mut *tx).await.unwrap();
    let claimed = tokio::time::timeout(DEADLINE, store.job_claim(params("q", "w".into(), 10)))
        .await
        .expect("a busy key is not waited for")
        .unwrap();
    let mut names: Vec<&str> = claimed.iter().map(|c| c.job.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["other", "plain"]);
    tx.rollback().await.unwrap();

    let claimed = store.job_claim(params("q", "w".into(), 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.job.name.as_str()).collect::<Vec<_>>(), ["place"], "the key's cap of 1");
    let _ = holder.close().await;
}

/// A claim of a capped queue waits for the queue's scope lock (held here
/// by a bare transaction) while claims of unlimited queues go on; once the
/// lock is free the waiting claim hands out what the cap allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_queue_claims_take_turns() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    let config = QueueConfig { concurrency: Some(1), ..QueueConfig::default() };
    stores[0].queue_config_set("capped", config).await.unwrap();
    stores[0]
        .job_insert_many(vec![JobSpec::new("capped", "a"), JobSpec::new("capped", "b"), JobSpec::new("free", "c")])
        .await
        .unwrap();

    let mut holder = db.raw_connection().await;
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('q:capped', 0))").execute(&mut *tx).await.unwrap();
    let waiting = {
        let store = stores[1].clone();
        tokio::spawn(async move { store.job_claim(params("capped", "w".into(), 10)).await })
    };
    // The claim is queued on the lock: PostgreSQL shows it waiting.
    let mut probe = db.raw_connection().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let queued: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('q:capped', 0))",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        if queued {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the claim never queued on the lock");
        assert!(!waiting.is_finished(), "the claim did not wait for the queue's lock");
        tokio::task::yield_now().await;
    }
    let free = stores[0].job_claim(params("free", "w".into(), 10)).await.unwrap();
    assert_eq!(free.len(), 1, "an unlimited queue takes no lock");
    assert!(!waiting.is_finished());
    tx.rollback().await.unwrap();
    let claimed = tokio::time::timeout(DEADLINE, waiting).await.expect("the claim goes on").unwrap().unwrap();
    assert_eq!(claimed.len(), 1, "the cap of 1");
    let _ = (holder.close().await, probe.close().await);
}

/// A slot freed under a cap on one server wakes fetchers on another, held
/// back by the cap (through `NOTIFY drover_ready`).
#[tokio::test]
async fn cap_release_wakes_other_servers() {
    let Some(db) = TestDb::new().await else { return };
    let (mut stores, clock) = db.servers(1, START).await;
    let a = stores.remove(0);
    let config = QueueConfig { concurrency: Some(1), ..QueueConfig::default() };
    a.queue_config_set("q", config).await.unwrap();
    a.job_insert_many(vec![JobSpec::new("q", "first"), JobSpec::new("q", "second")]).await.unwrap();
    let running = a.job_claim(params("q", "a".into(), 10)).await.unwrap();
    assert_eq!(running.len(), 1);

    // Server B starts now: nothing is notified from here on but the
    // finish, so the first change of its signal is its listener's
    // (re)connect bump, and the next one is the finish's.
    let b = db.connect().await.with_clock(Arc::new(clock.clone()));
    let mut ready = b.ready_signal();
    tokio::time::timeout(DEADLINE, ready.changed()).await.expect("b's listener connects").unwrap();
    ready.borrow_and_update();
    assert!(b.job_claim(params("q", "b".into(), 10)).await.unwrap().is_empty(), "held back by the cap");
    complete(&a, &running).await;
    tokio::time::timeout(DEADLINE, ready.changed()).await.expect("the freed slot wakes b").unwrap();
    assert_eq!(b.job_claim(params("q", "b".into(), 10)).await.unwrap().len(), 1);
}

/// Two servers, four claimers each, claim from two capped queues named in
/// both orders, and one queue's jobs also fall under a key cap per tenant:
/// queue locks are taken in sorted order and key locks are only tried, so
/// no claim deadlocks (PostgreSQL would abort one with 40P01, a failed
/// call here); the caps hold for the jobs in hand and every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limited_queues_in_any_order_never_deadlock() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(2, START).await;
    for (queue, cap) in [("a", 2), ("b", 3)] {
        let config = QueueConfig { concurrency: Some(cap), ..QueueConfig::default() };
        stores[0].queue_config_set(queue, config).await.unwrap();
    }
    stores[0].rate_limit_set("t:*", KeyLimit { concurrency: Some(1), rate_limit: None }).await.unwrap();
    let mut specs: Vec<JobSpec> =
        (0..30).map(|i| JobSpec::new("a", "n").rate_limit_key(format!("t:{}", i % 3))).collect();
    specs.extend((0..30).map(|_| JobSpec::new("b", "n")));
    let total = specs.len();
    stores[1].job_insert_many(specs).await.unwrap();

    // In hand per scope: queue a, queue b, tenants t:0..t:2.
    let in_hand: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
    let caps = [2, 3, 1, 1, 1];
    let scopes_of = |c: &ClaimedJob| -> Vec<usize> {
        let mut scopes = vec![if c.job.queue == "a" { 0 } else { 1 }];
        if let Some(key) = &c.job.rate_limit_key {
            scopes.push(2 + key["t:".len()..].parse::<usize>().unwrap());
        }
        scopes
    };
    let done = Arc::new(Mutex::new(Vec::<JobId>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = stores[w % 2].clone();
        let (in_hand, done) = (in_hand.clone(), done.clone());
        let queues: Vec<String> = if w % 4 < 2 { vec!["a".into(), "b".into()] } else { vec!["b".into(), "a".into()] };
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                if done.lock().await.len() >= total {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "jobs left undone");
                let p =
                    JobClaimParams { queues: queues.clone(), worker_id: format!("w{w}"), max: 4, lease_ms: 3_600_000 };
                let claimed = store.job_claim(p).await.unwrap();
                if claimed.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                for c in &claimed {
                    for scope in scopes_of(c) {
                        let now = in_hand[scope].fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= caps[scope], "{now} jobs in hand in scope {scope}, cap {}", caps[scope]);
                    }
                }
                tokio::task::yield_now().await;
                for c in &claimed {
                    for scope in scopes_of(c) {
                        in_hand[scope].fetch_sub(1, Ordering::SeqCst);
                    }
                }
                complete(&store, &claimed).await;
                done.lock().await.extend(claimed.into_iter().map(|c| c.job.id));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let done = done.lock().await;
    let unique: HashSet<&JobId> = done.iter().collect();
    assert_eq!((done.len(), unique.len()), (total, total), "every job ran exactly once");
}

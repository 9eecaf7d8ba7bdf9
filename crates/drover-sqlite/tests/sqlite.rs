//! Behaviour only the SQLite store has: pragmas, migrations across reopen,
//! savepoint isolation inside a group commit, and WAL checkpointing.

use drover_core::{JobId, JobSpec};
use drover_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use drover_store::{JobListParams, Store, StoreError};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

fn open(path: &std::path::Path, options: SqliteOptions) -> SqliteStore {
    SqliteStore::open(path, options).unwrap()
}

#[tokio::test]
async fn pragmas_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let full = open(&dir.path().join("full.db"), SqliteOptions::default());
    let p = full.pragmas().await.unwrap();
    assert_eq!(p.journal_mode, "wal");
    assert_eq!(p.synchronous, 1, "FULL fsyncs in the sync lane; the connection runs NORMAL");
    assert!(p.commit_fsync);
    assert_eq!(p.wal_autocheckpoint, 0, "the writer checkpoints by itself");
    assert!(p.busy_timeout_ms > 0);
    assert_eq!(p.user_version, 9);
    full.close().await;

    let normal = open(&dir.path().join("normal.db"), SqliteOptions::default().synchronous(Synchronous::Normal));
    let p = normal.pragmas().await.unwrap();
    assert_eq!(p.synchronous, 1, "NORMAL");
    assert!(!p.commit_fsync);
    normal.close().await;
}

#[tokio::test]
async fn open_creates_parent_dirs_and_accepts_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = open(&dir.path().join("a/b/drover.db"), SqliteOptions::default());
    assert!(dir.path().join("a/b/drover.db").exists());
    nested.close().await;
    let in_dir = open(dir.path(), SqliteOptions::default());
    assert_eq!(in_dir.path(), dir.path().join(drover_sqlite::DEFAULT_FILE_NAME));
    in_dir.close().await;
}

#[tokio::test]
async fn reopen_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    let id =
        store.job_insert_many(vec![JobSpec::new("q", "n").payload(json!({"k": 1}))]).await.unwrap()[0].job.id.clone();
    store.close().await;

    // A second run of 0001_init.sql would fail on `CREATE TABLE jobs`.
    let store = open(&path, SqliteOptions::default());
    assert_eq!(store.pragmas().await.unwrap().user_version, 9);
    let job = store.job_get(&id).await.unwrap().expect("job survived the reopen");
    assert_eq!(job.payload, json!({"k": 1}));
    // Dropping (not closing) must also stop the writer and release the file.
    drop(store);
    let store = open(&path, SqliteOptions::default());
    assert!(store.job_get(&id).await.unwrap().is_some());
    store.close().await;
}

#[tokio::test]
async fn close_applies_everything_already_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    // Send 20 inserts without waiting for them, then close.
    let mut pending: Vec<_> =
        (0..20).map(|i| Box::pin(store.job_insert_many(vec![JobSpec::new("q", format!("n{i}"))]))).collect();
    for fut in &mut pending {
        poll_once(fut.as_mut());
    }
    drop(pending);
    store.close().await;
    let store = open(&path, SqliteOptions::default());
    let page = store.job_list(JobListParams { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 20);
    store.close().await;
}

/// Polls a future once, which for a store call sends its command to the
/// writer; the answer is not awaited.
fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Option<F::Output> {
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[tokio::test]
async fn bad_command_in_a_batch_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    store.job_insert_many(vec![JobSpec::new("q", "warm-up")]).await.unwrap();

    // Hold the write lock from outside so that the writer stalls on BEGIN
    // while every command below queues up behind it: they land together in
    // at most two batches.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let before = store.writer_stats();

    let good = |i: usize| JobSpec::new("q", "good").id(JobId::parse(format!("good-{i}")).unwrap());
    let mut calls = Vec::new();
    for i in 0..10 {
        calls.push(Box::pin(store.job_insert_many(vec![good(i)])));
    }
    // Its first spec is fine; its second breaks the id CHECK constraint
    // inside the writer, after the first row was written.
    calls.push(Box::pin(store.job_insert_many(vec![
        JobSpec::new("q", "bad").id(JobId::parse("bad-first").unwrap()),
        JobSpec::new("q", "bad").id(JobId::from_trusted(String::new())),
    ])));
    for i in 10..20 {
        calls.push(Box::pin(store.job_insert_many(vec![good(i)])));
    }
    for call in &mut calls {
        assert!(poll_once(call.as_mut()).is_none());
    }
    blocker.execute_batch("COMMIT").unwrap();

    let mut results = Vec::new();
    for call in calls {
        results.push(call.await);
    }
    let after = store.writer_stats();
    assert_eq!(after.commands - before.commands, 21);
    assert!(after.batches - before.batches <= 2, "commands were group-committed: {before:?} -> {after:?}");
    assert_eq!(after.failed_batches, 0);
    assert!(after.isolated_batches > before.isolated_batches, "the failing batch was re-run with savepoints");

    for (i, result) in results.iter().enumerate() {
        if i == 10 {
            assert!(matches!(result, Err(StoreError::Backend(_))), "the bad call fails: {result:?}");
        } else {
            assert!(result.is_ok(), "call {i} must commit: {result:?}");
        }
    }
    for i in 0..20 {
        let id = JobId::parse(format!("good-{i}")).unwrap();
        assert!(store.job_get(&id).await.unwrap().is_some(), "good-{i} committed");
    }
    let first = JobId::parse("bad-first").unwrap();
    assert_eq!(store.job_get(&first).await.unwrap(), None, "the bad call's first row was rolled back");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_constant_readers() {
    const LIMIT: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = std::sync::Arc::new(open(&path, SqliteOptions::default().wal_limit_bytes(LIMIT)));
    let wal = dir.path().join("drover.db-wal");

    // Readers that never stop would pin an old snapshot without TRUNCATE.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (store, stop) = (store.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.job_list(JobListParams { limit: 20, ..Default::default() }).await.unwrap();
            }
        }));
    }

    let payload = json!({ "blob": "x".repeat(400) });
    let mut largest = 0;
    for round in 0..60 {
        let specs = (0..500).map(|_| JobSpec::new("q", "n").payload(payload.clone())).collect();
        store.job_insert_many(specs).await.unwrap();
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        largest = largest.max(size);
        assert!(size < 16 * LIMIT, "round {round}: WAL grew to {size} bytes");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    // 30,000 jobs of ~0.5 KB went through: without checkpoints the WAL would
    // hold all of them.
    let total = std::fs::metadata(&path).unwrap().len();
    assert!(total > 8 * LIMIT, "the data reached the main file ({total} bytes)");
    assert!(largest < total, "largest WAL {largest} stayed below the data size {total}");
    eprintln!("largest WAL {largest} bytes, data {total} bytes");
    std::sync::Arc::into_inner(store).unwrap().close().await;
    let after_close = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(after_close, 0, "close truncates the WAL");
}

/// Job counts as (queue, state, n), sorted.
type Counts = Vec<(String, String, i64)>;

/// The per-queue counts read from `queue_counts`, zero rows left out, and
/// the same counted afresh from the jobs.
fn counts_kept_and_counted(path: &std::path::Path) -> (Counts, Counts) {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let read = |sql: &str| -> Counts {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    };
    (
        read("SELECT queue, state, n FROM queue_counts WHERE n != 0 ORDER BY queue, state"),
        read("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state ORDER BY queue, state"),
    )
}

/// The writer keeps counts from in-memory deltas (migration 0002); after
/// every kind of transition, including a batch that failed and was re-run
/// with savepoints, and across a reopen, they must equal a `GROUP BY`.
#[tokio::test]
async fn queue_counts_match_a_group_by_after_a_mixed_workload() {
    use drover_core::{FailureReport, JobError, ManualClock, Timestamp};
    use drover_store::{FinishOutcome, JobClaimParams, JobFinish};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let clock = ManualClock::new(Timestamp(1_000_000));
    let store = open(&path, SqliteOptions::default().clock(clock.clone()));
    let claim = |queue: &str, max: u32| JobClaimParams {
        queues: vec![queue.to_owned(), "b".to_owned()],
        worker_id: "w".into(),
        max,
        lease_ms: 1_000,
    };

    // Inserts: waiting, delayed, and a duplicate that must not count.
    let mut specs: Vec<JobSpec> = (0..30).map(|i| JobSpec::new(if i % 3 == 0 { "b" } else { "a" }, "n")).collect();
    specs.extend((0..5).map(|_| JobSpec::new("a", "n").delay_ms(10_000)));
    specs.push(JobSpec::new("a", "n").id(JobId::parse("fixed").unwrap()).attempts(1));
    store.job_insert_many(specs).await.unwrap();
    let dup = store.job_insert_many(vec![JobSpec::new("a", "n").id(JobId::parse("fixed").unwrap())]).await.unwrap();
    assert!(dup[0].duplicate);

    // Claims, then every kind of finish.
    let claimed = store.job_claim(claim("a", 20)).await.unwrap();
    assert_eq!(claimed.len(), 20);
    let error = || JobError::new("boom");
    let outcomes = [
        FinishOutcome::Complete(json!(1)),
        FinishOutcome::Fail(FailureReport::retryable(error())),
        FinishOutcome::Fail(FailureReport::fatal(error())),
        FinishOutcome::Fail(FailureReport::rate_limited(error(), Duration::from_secs(1))),
        FinishOutcome::Release,
    ];
    let finishes: Vec<JobFinish> = claimed[..15]
        .iter()
        .zip(outcomes.iter().cycle())
        .map(|(c, outcome)| JobFinish { id: c.job.id.clone(), lease_token: c.lease_token, outcome: outcome.clone() })
        .collect();
    store.job_finish_many(finishes).await.unwrap();

    // A cancel request on an active job, a cancel at once, a manual retry.
    store.job_cancel(&claimed[15].job.id).await.unwrap();
    let waiting = store.job_list(JobListParams { state: Some(drover_core::JobState::Waiting), ..Default::default() });
    let waiting = waiting.await.unwrap().items;
    store.job_cancel(&waiting[0].id).await.unwrap();
    store.job_retry(&waiting[0].id).await.unwrap();

    // A failing command (the retry of a waiting job) sent together with a
    // good one, so that they usually share a batch, which then runs again
    // with savepoints: the good one's changes must count once.
    let bad = store.job_retry(&waiting[1].id);
    let good = store.job_insert_many(vec![JobSpec::new("c", "n")]);
    let (bad, good) = tokio::join!(bad, good);
    assert!(bad.is_err());
    good.unwrap();

    // Leases run out (rescue) and delayed jobs fall due (promote, via a claim).
    clock.advance(Duration::from_secs(60));
    let rescued = store.job_rescue_expired().await.unwrap();
    assert!(!rescued.requeued.is_empty());
    store.job_claim(claim("a", 3)).await.unwrap();
    store.job_promote_due().await.unwrap();

    let (kept, counted) = counts_kept_and_counted(&path);
    assert_eq!(kept, counted);
    // The store's own answer is the same.
    let listed: i64 = store.queue_list().await.unwrap().iter().map(|q| q.counts.total() as i64).sum();
    assert_eq!(listed, counted.iter().map(|(_, _, n)| n).sum::<i64>());
    store.close().await;

    // After a reopen, and more changes on top of the stored counts.
    let store = open(&path, SqliteOptions::default().clock(clock.clone()));
    let claimed = store.job_claim(claim("a", 4)).await.unwrap();
    let done = claimed
        .iter()
        .map(|c| JobFinish {
            id: c.job.id.clone(),
            lease_token: c.lease_token,
            outcome: FinishOutcome::Complete(json!(2)),
        })
        .collect();
    store.job_finish_many(done).await.unwrap();
    store.close().await;
    let (kept, counted) = counts_kept_and_counted(&path);
    assert_eq!(kept, counted);
}

/// A database written by schema version 1 (with no `queue_counts`) gets
/// its counts from the jobs it already holds when migration 0002 runs.
#[tokio::test]
async fn migration_0002_counts_existing_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    store.job_insert_many((0..7).map(|_| JobSpec::new("q", "n")).collect()).await.unwrap();
    store.job_insert_many(vec![JobSpec::new("r", "n").delay_ms(60_000)]).await.unwrap();
    store.close().await;
    {
        // Back to what version 1 left: no table, the old index, nothing of
        // 0003 onwards (limits, schedules, flows and batches included).
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE queue_counts; DROP INDEX jobs_finished; DROP INDEX jobs_expiring; DROP INDEX jobs_unique; ALTER TABLE jobs DROP COLUMN expires_at; \
             DROP TABLE rate_limit_rules; DROP TABLE throttles; DROP INDEX jobs_active_key; DROP TABLE schedules; \
             DROP TABLE batches; ALTER TABLE jobs DROP COLUMN pending_children; ALTER TABLE jobs DROP COLUMN on_failure; \
             ALTER TABLE jobs DROP COLUMN failed_child; ALTER TABLE jobs DROP COLUMN fanned_out; CREATE INDEX jobs_queue_state ON jobs (queue, state); \
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = open(&path, SqliteOptions::default());
    assert_eq!(store.pragmas().await.unwrap().user_version, 9);
    let q = store.queue_get("q").await.unwrap();
    assert_eq!((q.counts.waiting, q.counts.total()), (7, 7));
    assert_eq!(store.queue_get("r").await.unwrap().counts.delayed, 1);
    store.close().await;
    let (kept, counted) = counts_kept_and_counted(&path);
    assert_eq!(kept, counted);
}

/// A first-attempt completion writes no `job_attempts` row, yet `job_get`
/// returns the same one-attempt history as a job whose history is stored.
#[tokio::test]
async fn first_attempt_completion_is_read_from_the_job_row() {
    use drover_core::{AttemptOutcome, FailureReport, JobError};
    use drover_store::{FinishOutcome, JobClaimParams, JobFinish};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    store.job_insert_many(vec![JobSpec::new("q", "n"), JobSpec::new("q", "n")]).await.unwrap();
    let claim = || JobClaimParams { queues: vec!["q".into()], worker_id: "w1".into(), max: 2, lease_ms: 60_000 };
    let claimed = store.job_claim(claim()).await.unwrap();
    let (first, second) = (&claimed[0], &claimed[1]);
    let finish =
        |c: &drover_store::ClaimedJob, outcome| JobFinish { id: c.job.id.clone(), lease_token: c.lease_token, outcome };
    store
        .job_finish_many(vec![
            finish(first, FinishOutcome::Complete(json!("ok"))),
            finish(second, FinishOutcome::Fail(FailureReport::retryable(JobError::new("once")))),
        ])
        .await
        .unwrap();

    let done = store.job_get(&first.job.id).await.unwrap().unwrap();
    assert_eq!(done.attempts.len(), 1);
    let a = &done.attempts[0];
    assert_eq!((a.attempt, a.outcome, a.error.as_ref()), (1, AttemptOutcome::Completed, None));
    assert_eq!((Some(a.started_at), Some(a.finished_at)), (done.started_at, done.finished_at));
    assert_eq!(a.worker_id.as_deref(), Some("w1"));
    store.close().await;

    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn.query_row("SELECT count(*) FROM job_attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1, "only the failed attempt has a history row");
}

/// SQLite follows a symlinked database path and keeps its WAL next to the
/// real file; the sync lane must fsync that WAL, not `<link>-wal`. It used
/// to name the WAL from the given path: every durable call was answered
/// with "fsync of the WAL failed" although it had committed, and a stale
/// `<link>-wal` would have been fsynced instead, silently.
#[tokio::test]
async fn a_symlinked_database_fsyncs_the_real_wal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::File::create(dir.path().join("real/drover.db")).unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(dir.path().join("real/drover.db"), &link).unwrap();
    let store = open(&link, SqliteOptions::default());
    let inserted = store.job_insert_many(vec![JobSpec::new("q", "n")]).await.expect("a durable insert is answered Ok");
    assert!(dir.path().join("real/drover.db-wal").exists());
    assert!(!dir.path().join("link.db-wal").exists());
    store.close().await;
    let store = open(&link, SqliteOptions::default());
    assert!(store.job_get(&inserted[0].job.id).await.unwrap().is_some());
    store.close().await;
}

/// `queue_pause_set` and `queue_config_set` return the queue's counts, and
/// those must include the changes of the commands applied before them in
/// the same batch: the counts table only gets a batch's changes just before
/// `COMMIT`, so reading it mid-batch showed a claimed job still `waiting`
/// (and an inserted one not at all) next to a pause flag that the claim
/// had already been applied before.
#[tokio::test]
async fn queue_commands_see_counts_of_their_own_batch() {
    use drover_store::JobClaimParams;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    store.job_insert_many(vec![JobSpec::new("q", "n")]).await.unwrap();

    // The writer takes the first command and stalls on BEGIN; the rest queue
    // up behind it and make the next batch together, in the order sent.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut first = Box::pin(store.job_promote_due());
    assert!(poll_once(first.as_mut()).is_none());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let params = JobClaimParams { queues: vec!["q".into()], worker_id: "w".into(), max: 1, lease_ms: 60_000 };
    let mut claim = Box::pin(store.job_claim(params));
    let mut insert = Box::pin(store.job_insert_many(vec![JobSpec::new("q", "n2")]));
    let mut pause = Box::pin(store.queue_pause_set("q", true));
    let mut config = Box::pin(store.queue_config_set("q", drover_core::QueueConfig::default()));
    assert!(poll_once(claim.as_mut()).is_none());
    assert!(poll_once(insert.as_mut()).is_none());
    assert!(poll_once(pause.as_mut()).is_none());
    assert!(poll_once(config.as_mut()).is_none());
    let before = store.writer_stats();
    blocker.execute_batch("COMMIT").unwrap();
    first.await.unwrap();
    assert_eq!(claim.await.unwrap().len(), 1, "the claim ran before the pause");
    insert.await.unwrap();
    let paused = pause.await.unwrap();
    let configured = config.await.unwrap();
    assert_eq!(store.writer_stats().batches - before.batches, 1, "one batch after the first: {before:?}");
    assert!(paused.paused);
    assert_eq!((paused.counts.waiting, paused.counts.active), (1, 1), "{:?}", paused.counts);
    assert_eq!((configured.counts.waiting, configured.counts.active), (1, 1), "{:?}", configured.counts);
    assert_eq!(store.queue_get("q").await.unwrap().counts, paused.counts);
    store.close().await;
    let (kept, counted) = counts_kept_and_counted(&path);
    assert_eq!(kept, counted);
}

/// A stored schedule that can no longer fire (here its time zone was
/// rewritten to one that does not exist, as if it left the system's
/// database) is pushed back an hour; the other schedules still fire.
#[tokio::test]
async fn broken_schedule_does_not_block_the_others() {
    use drover_core::{ManualClock, ScheduleSpec, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let clock = ManualClock::new(Timestamp(1_767_225_600_000));
    let options = || SqliteOptions::default().clock(clock.clone());
    let store = open(&path, options());
    let job = JobSpec::new("q", "n");
    store.schedule_upsert(ScheduleSpec::cron("broken", "* * * * * *", job.clone())).await.unwrap();
    store.schedule_upsert(ScheduleSpec::every_ms("fine", 1_000, job)).await.unwrap();
    store.close().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE schedules SET timezone = 'Nowhere/Gone' WHERE id = 'broken'", [])
        .unwrap();
    let store = open(&path, options());
    clock.advance(std::time::Duration::from_millis(1_000));
    let fired = store.schedule_fire_due().await.unwrap();
    let ids: Vec<&str> = fired.iter().map(|f| f.schedule_id.as_str()).collect();
    assert_eq!(ids, ["fine"]);
    let broken = store.schedule_get("broken").await.unwrap().unwrap();
    assert_eq!(broken.next_run_at, Timestamp(1_767_225_601_000 + 3_600_000), "pushed back an hour");
    assert_eq!(broken.last_run_at, None);
    store.close().await;
}

/// Two stores on one file, as two servers on one database: firing the same
/// tick from both at once enqueues one job, whoever's transaction wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_fire_each_tick_once() {
    use drover_core::{ManualClock, ScheduleSpec, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let clock = ManualClock::new(Timestamp(1_767_225_600_000));
    let a = std::sync::Arc::new(open(&path, SqliteOptions::default().clock(clock.clone())));
    let b = std::sync::Arc::new(open(&path, SqliteOptions::default().clock(clock.clone())));
    a.schedule_upsert(ScheduleSpec::every_ms("shared", 1_000, JobSpec::new("q", "n"))).await.unwrap();
    for tick in 1..=5 {
        clock.advance(std::time::Duration::from_millis(1_000));
        let (fa, fb) = (a.clone(), b.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { fa.schedule_fire_due().await }),
            tokio::spawn(async move { fb.schedule_fire_due().await })
        );
        let fired: Vec<_> = ra.unwrap().unwrap().into_iter().chain(rb.unwrap().unwrap()).collect();
        assert_eq!(fired.iter().filter(|f| !f.duplicate).count(), 1, "tick {tick}: {fired:?}");
    }
    let page = b.job_list(JobListParams { queue: Some("q".into()), ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 5, "one job per tick");
}

/// Flows and batches move jobs through `waiting-children` and fail parents
/// from the flow hook; the per-queue counts must still equal a `GROUP BY`,
/// including after a refused insert (unknown parent) rolled back alone.
#[tokio::test]
async fn queue_counts_match_a_group_by_after_flows_and_batches() {
    use drover_core::{BatchSpec, ChildFailure, FailureReport, FlowSpec, JobError};
    use drover_store::{FinishOutcome, JobClaimParams, JobFinish};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open(&path, SqliteOptions::default());
    let id = |s: &str| JobId::parse(s).unwrap();
    let flow = FlowSpec::new(JobSpec::new("p", "root").id(id("root")))
        .child(FlowSpec::new(JobSpec::new("p", "mid").id(id("mid"))).child(JobSpec::new("c", "leaf").attempts(1)))
        .child(JobSpec::new("c", "leaf").on_failure(ChildFailure::Ignore).attempts(1))
        .child(JobSpec::new("c", "leaf"));
    store.flow_insert(flow).await.unwrap();
    store.job_insert_many(vec![JobSpec::new("p", "solo").id(id("solo"))]).await.unwrap();
    store.job_insert_many(vec![JobSpec::new("c", "kid").parent_id(id("solo"))]).await.unwrap();
    assert!(store.job_insert_many(vec![JobSpec::new("c", "x").parent_id(id("ghost"))]).await.is_err());
    let jobs = (0..6).map(|_| JobSpec::new("c", "item").attempts(1)).collect();
    let batch = store.batch_insert(BatchSpec { jobs, on_complete: Some(JobSpec::new("p", "done")) }).await.unwrap();

    let claim = JobClaimParams { queues: vec!["c".into()], worker_id: "w".into(), max: 100, lease_ms: 30_000 };
    let claimed = store.job_claim(claim).await.unwrap();
    let finishes: Vec<JobFinish> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| JobFinish {
            id: c.job.id.clone(),
            lease_token: c.lease_token,
            outcome: if i % 2 == 0 {
                FinishOutcome::Complete(json!(i))
            } else {
                FinishOutcome::Fail(FailureReport::fatal(JobError::new("no")))
            },
        })
        .collect();
    store.job_finish_many(finishes).await.unwrap();
    assert!(store.batch_get(&batch.id).await.unwrap().unwrap().completed_at.is_some());
    store.close().await;
    let (kept, counted) = counts_kept_and_counted(&path);
    assert_eq!(kept, counted);
}

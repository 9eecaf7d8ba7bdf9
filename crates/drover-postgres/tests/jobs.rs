//! The PostgreSQL store's first job operations on a real server: insert,
//! get, claim and finish (inherent methods of `PgStore` until the `Store`
//! trait). Each test has its own schema (`drover_postgres::testing`);
//! without `DROVER_TEST_POSTGRES_URL` they skip, and with
//! `DROVER_REQUIRE_POSTGRES=1` they fail instead.

use drover_core::{
    AttemptOutcome, Backoff, FailureReport, JobError, JobId, JobSpec, JobState, ManualClock, Progress, Timestamp,
};
use drover_postgres::PgStore;
use drover_postgres::testing::TestDb;
use drover_store::Store;
use drover_store::{ClaimedJob, FinishOutcome, Finished, JobClaimParams, JobFinish, StoreError};
use serde_json::json;
use sqlx::Connection;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const START: Timestamp = Timestamp(1_700_000_000_000);

/// A store on a fresh schema whose clock the test moves.
async fn store(db: &TestDb) -> (PgStore, ManualClock) {
    let clock = ManualClock::new(START);
    (db.connect().await.with_clock(Arc::new(clock.clone())), clock)
}

fn jid(s: &str) -> JobId {
    JobId::parse(s).unwrap()
}

fn spec(queue: &str, name: &str) -> JobSpec {
    JobSpec::new(queue, name)
}

fn claim_params(queues: &[&str], max: u32) -> JobClaimParams {
    JobClaimParams {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        worker_id: "w1".into(),
        max,
        lease_ms: 30_000,
    }
}

async fn claim(store: &PgStore, queues: &[&str], max: u32) -> Vec<ClaimedJob> {
    store.job_claim(claim_params(queues, max)).await.unwrap()
}

async fn finish(store: &PgStore, claimed: &ClaimedJob, outcome: FinishOutcome) -> Result<Finished, StoreError> {
    let item = JobFinish { id: claimed.job.id.clone(), lease_token: claimed.lease_token, outcome };
    store.job_finish_many(vec![item]).await.unwrap().pop().unwrap()
}

fn expect(pairs: &[(&str, &str, i64)]) -> BTreeMap<(String, String), i64> {
    pairs.iter().map(|(q, s, n)| ((q.to_string(), s.to_string()), *n)).collect()
}

async fn job_rows(db: &TestDb) -> i64 {
    let mut conn = db.raw_connection().await;
    let n = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&mut conn).await.unwrap();
    let _ = conn.close().await;
    n
}

#[tokio::test]
async fn insert_then_get_round_trips_every_field() {
    let Some(db) = TestDb::new().await else { return };
    let (store, _clock) = store(&db).await;
    assert_eq!(store.now(), START, "the store reads its injected clock");
    let mut tags = serde_json::Map::new();
    tags.insert("team".into(), json!("growth"));
    let mut full = spec("mail", "send_welcome")
        .id(jid("welcome:7"))
        .payload(json!({"user_id": 7, "big": u64::MAX, "ratio": 0.1, "nested": [1, 2, {"x": null}]}))
        .priority(-3)
        .attempts(7)
        .backoff(Backoff::exponential(250).max_delay_ms(10_000))
        .timeout_ms(60_000)
        .max_stalls(2)
        .rate_limit_key("smtp")
        .expires_at(START.plus_ms(86_400_000));
    full.tags = tags.clone();
    let inserted = store.job_insert_many(vec![full, spec("mail", "bare")]).await.unwrap();
    assert_eq!(inserted.len(), 2);
    assert!(inserted.iter().all(|i| !i.duplicate));

    let got = store.job_get(&jid("welcome:7")).await.unwrap().expect("stored");
    assert_eq!(got, inserted[0].job, "the returned job is the stored one");
    assert_eq!(got.payload, json!({"user_id": 7, "big": u64::MAX, "ratio": 0.1, "nested": [1, 2, {"x": null}]}));
    assert_eq!(got.state, JobState::Waiting);
    assert_eq!(got.priority, -3);
    assert_eq!(got.max_attempts, 7);
    assert_eq!(got.attempts_made, 0);
    assert_eq!(got.backoff, Backoff::exponential(250).max_delay_ms(10_000));
    assert_eq!(got.timeout_ms, Some(60_000));
    assert_eq!(got.max_stalls, 2);
    assert_eq!(got.progress, Progress::default());
    assert_eq!(got.rate_limit_key.as_deref(), Some("smtp"));
    assert_eq!(got.tags, tags);
    assert_eq!(got.created_at, START);
    assert_eq!(got.run_at, START);
    assert_eq!(got.expires_at, Some(START.plus_ms(86_400_000)));
    assert_eq!((got.started_at, got.finished_at, got.lease_expires_at), (None, None, None));
    assert!(got.attempts.is_empty());

    let bare = &inserted[1].job;
    assert!(!bare.id.as_str().is_empty(), "an id is generated");
    assert_eq!(store.job_get(&bare.id).await.unwrap().as_ref(), Some(bare));
    assert_eq!(store.job_get(&jid("nope")).await.unwrap(), None);
    assert_eq!(db.stored_counts().await, expect(&[("mail", "waiting", 2)]));
}

#[tokio::test]
async fn insert_delays_by_first_run_at() {
    let Some(db) = TestDb::new().await else { return };
    let (store, _clock) = store(&db).await;
    let inserted = store
        .job_insert_many(vec![
            spec("q", "later").delay_ms(5_000),
            spec("q", "at").run_at(START.plus_ms(60_000)),
            spec("q", "past").run_at(Timestamp(START.0 - 1_000)),
            spec("q", "now").delay_ms(0),
        ])
        .await
        .unwrap();
    let states: Vec<(JobState, Timestamp)> = inserted.iter().map(|i| (i.job.state, i.job.run_at)).collect();
    assert_eq!(
        states,
        [
            (JobState::Delayed, START.plus_ms(5_000)),
            (JobState::Delayed, START.plus_ms(60_000)),
            (JobState::Waiting, Timestamp(START.0 - 1_000)),
            (JobState::Waiting, START),
        ]
    );
    for i in &inserted {
        assert_eq!(store.job_get(&i.job.id).await.unwrap().unwrap(), i.job);
    }
    assert_eq!(db.stored_counts().await, expect(&[("q", "delayed", 2), ("q", "waiting", 2)]));
}

#[tokio::test]
async fn insert_is_idempotent_by_id() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    let first = store.job_insert_many(vec![spec("q", "a").id(jid("k1")).payload(json!(1))]).await.unwrap();
    clock.advance(Duration::from_secs(5));
    // Again, and twice within one call: the stored job, unchanged.
    let again = store
        .job_insert_many(vec![
            spec("q", "other").id(jid("k1")).payload(json!(2)),
            spec("q", "b").id(jid("k2")),
            spec("q", "b2").id(jid("k2")).payload(json!(3)),
        ])
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].job, first[0].job);
    assert!(!again[1].duplicate);
    assert!(again[2].duplicate);
    assert_eq!(again[2].job, again[1].job);
    assert_eq!(store.job_get(&jid("k1")).await.unwrap().unwrap().payload, json!(1));
    assert_eq!(job_rows(&db).await, 2);
    assert_eq!(db.stored_counts().await, expect(&[("q", "waiting", 2)]));
}

#[tokio::test]
async fn insert_is_all_or_nothing() {
    let Some(db) = TestDb::new().await else { return };
    let (store, _clock) = store(&db).await;
    let bad = store.job_insert_many(vec![spec("q", "ok"), spec("q", "")]).await.unwrap_err();
    assert!(matches!(bad, StoreError::Invalid { .. }), "{bad:?}");
    // A failure inside the transaction (a row the table refuses) rolls
    // back the rows written before it.
    let long = "x".repeat(300);
    let refused = store
        .job_insert_many(vec![spec("q", "ok").id(jid("first")), spec("q", "ok").id(JobId::from_trusted(long))])
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Backend(_)), "{refused:?}");
    assert_eq!(job_rows(&db).await, 0);
    assert_eq!(db.stored_counts().await, expect(&[]));
    assert!(store.job_insert_many(Vec::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn insert_refuses_unknown_parents_and_nul_characters() {
    let Some(db) = TestDb::new().await else { return };
    let (store, _clock) = store(&db).await;
    let err = store.job_insert_many(vec![spec("q", "ok"), spec("q", "child").parent_id(jid("p"))]).await.unwrap_err();
    match err {
        StoreError::Invalid { field, message } => {
            assert_eq!(field, "jobs[1].parent_id");
            assert!(message.contains("no job with id"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // jsonb and text cannot hold U+0000: refused by field, before a write.
    let err = store.job_insert_many(vec![spec("q", "nul").payload(json!({"a": "x\u{0}y"}))]).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid { field, .. } if field == "payload"), "{err:?}");
    let err = store.job_insert_many(vec![spec("q", "nul").unique_key("k\u{0}")]).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid { field, .. } if field == "unique_key"), "{err:?}");
    assert_eq!(job_rows(&db).await, 0);
    // A batch_id naming no batch is a plain label.
    let labelled = store.job_insert_many(vec![spec("q", "member").batch_id("b1")]).await.unwrap();
    assert_eq!(labelled[0].job.batch_id.as_deref(), Some("b1"));
}

#[tokio::test]
async fn unique_keys_deduplicate_unfinished_jobs_and_windows() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    let first = store.job_insert_many(vec![spec("q", "a").unique_key("u1")]).await.unwrap().remove(0);
    assert!(!first.duplicate);
    // Same key, same queue, within one call and across calls: the first job.
    let more = store
        .job_insert_many(vec![
            spec("q", "b").unique_key("u1"),
            spec("other", "c").unique_key("u1"),
            spec("q", "d").unique_key("u2"),
            spec("q", "e").unique_key("u2"),
        ])
        .await
        .unwrap();
    assert!(more[0].duplicate);
    assert_eq!(more[0].job, first.job);
    assert!(!more[1].duplicate, "keys are per queue");
    assert!(!more[2].duplicate);
    assert!(more[3].duplicate);
    assert_eq!(more[3].job.id, more[2].job.id);

    // Finished: no longer blocks without a window; blocks within one.
    let claimed = claim(&store, &["q"], 10).await;
    for c in claimed.iter().filter(|c| c.job.id == first.job.id) {
        finish(&store, c, FinishOutcome::Complete(json!(null))).await.unwrap();
    }
    let windowed = store.job_insert_many(vec![spec("q", "f").unique_key("u1").unique_for_ms(10_000)]).await.unwrap();
    assert!(windowed[0].duplicate, "created within the window");
    clock.advance(Duration::from_secs(11));
    let fresh = store
        .job_insert_many(vec![spec("q", "g").unique_key("u1").unique_for_ms(10_000), spec("q", "h").unique_key("u1")])
        .await
        .unwrap();
    assert!(!fresh[0].duplicate, "out of the window");
    assert!(fresh[1].duplicate, "the new job is unfinished");
    assert_eq!(fresh[1].job.id, fresh[0].job.id);
}

#[tokio::test]
async fn unique_keys_hold_across_parallel_inserts() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.connect_with(db.options().max_connections(8)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Keys in opposite orders: the sorted locks cannot deadlock.
                let mut specs = vec![spec("q", "a").unique_key("k-a"), spec("q", "b").unique_key("k-b")];
                if i % 2 == 1 {
                    specs.reverse();
                }
                store.job_insert_many(specs).await.unwrap()
            })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        new += task.await.unwrap().iter().filter(|i| !i.duplicate).count();
    }
    assert_eq!(new, 2, "one job per key");
    assert_eq!(job_rows(&db).await, 2);
    assert_eq!(db.stored_counts().await, expect(&[("q", "waiting", 2)]));
}

#[tokio::test]
async fn claim_takes_jobs_in_claim_order_across_queues() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    let ins = |id: &str, queue: &str, priority: i32| spec(queue, "n").id(jid(id)).priority(priority);
    store.job_insert_many(vec![ins("a1", "a", 0), ins("b1", "b", -1), ins("a2", "a", 0)]).await.unwrap();
    clock.advance(Duration::from_millis(10));
    store.job_insert_many(vec![ins("b2", "b", 0), ins("c1", "c", -5)]).await.unwrap();

    let got = claim(&store, &["b", "a", "b"], 3).await;
    let ids: Vec<&str> = got.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(ids, ["b1", "a1", "a2"], "priority, then run_at, then enqueue order; queue c not asked");
    let now = store.now();
    for c in &got {
        assert_eq!(c.attempt, 1);
        assert_eq!(c.lease_expires_at, now.plus_ms(30_000));
        assert_eq!(c.job.state, JobState::Active);
        assert_eq!(c.job.started_at, Some(now));
        assert_eq!(c.job.worker_id.as_deref(), Some("w1"));
        let stored = store.job_get(&c.job.id).await.unwrap().unwrap();
        assert_eq!(stored, c.job, "the claimed job is the stored one");
    }
    let tokens: HashSet<_> = got.iter().map(|c| c.lease_token).collect();
    assert_eq!(tokens.len(), 3, "fresh tokens");
    assert_eq!(
        db.stored_counts().await,
        expect(&[("a", "active", 2), ("b", "active", 1), ("b", "waiting", 1), ("c", "waiting", 1)])
    );
    assert!(claim(&store, &["a"], 5).await.is_empty());
    assert!(claim(&store, &[], 5).await.is_empty());
    assert!(claim(&store, &["b"], 0).await.is_empty());
}

#[tokio::test]
async fn claim_promotes_due_delayed_jobs_and_skips_paused_queues() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    store
        .job_insert_many(vec![
            spec("q", "later").id(jid("later")).delay_ms(1_000),
            spec("p", "paused").id(jid("paused")),
        ])
        .await
        .unwrap();
    let mut conn = db.raw_connection().await;
    sqlx::query("INSERT INTO queues (name, paused) VALUES ('p', true)").execute(&mut conn).await.unwrap();
    assert!(claim(&store, &["q", "p"], 5).await.is_empty());
    clock.advance(Duration::from_millis(1_000));
    let got = claim(&store, &["q", "p"], 5).await;
    assert_eq!(got.iter().map(|c| c.job.id.as_str()).collect::<Vec<_>>(), ["later"]);
    assert_eq!(db.stored_counts().await, expect(&[("p", "waiting", 1), ("q", "active", 1)]));
    sqlx::query("UPDATE queues SET paused = false").execute(&mut conn).await.unwrap();
    assert_eq!(claim(&store, &["p"], 5).await.len(), 1);

    // A capped queue hands out no more than its cap (tests/limits.rs has more).
    sqlx::query("INSERT INTO queues (name, config) VALUES ('capped', '{\"concurrency\": 1}')")
        .execute(&mut conn)
        .await
        .unwrap();
    store.job_insert_many(vec![spec("capped", "a"), spec("capped", "b")]).await.unwrap();
    assert_eq!(claim(&store, &["capped"], 5).await.len(), 1);
    assert_eq!(claim(&store, &["capped"], 5).await.len(), 0);
    let _ = conn.close().await;
    store.close().await;
}

#[tokio::test]
async fn claim_expires_jobs_past_their_ttl() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    store
        .job_insert_many(vec![
            spec("q", "ttl").id(jid("ttl")).expires_at(START.plus_ms(500)),
            spec("q", "ttl-later").id(jid("ttl-delayed")).delay_ms(2_000).expires_at(START.plus_ms(1_000)),
            spec("q", "keep").id(jid("keep")).priority(5),
        ])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3));
    let got = claim(&store, &["q"], 5).await;
    assert_eq!(got.iter().map(|c| c.job.id.as_str()).collect::<Vec<_>>(), ["keep"]);
    for id in ["ttl", "ttl-delayed"] {
        let job = store.job_get(&jid(id)).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.error.as_ref().and_then(|e| e.code.as_deref()), Some("expired"));
        assert_eq!(job.finished_at, Some(store.now()));
        assert!(job.attempts.is_empty());
    }
    assert_eq!(db.stored_counts().await, expect(&[("q", "active", 1), ("q", "failed", 2)]));
}

#[tokio::test]
async fn parallel_claimers_never_share_a_job() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.connect_with(db.options().max_connections(10)).await.unwrap();
    const JOBS: usize = 2_000;
    for chunk in 0..(JOBS / 500) {
        let specs = (0..500)
            .map(|i| {
                spec(if i % 2 == 0 { "even" } else { "odd" }, "n").priority(i % 3).id(jid(&format!("j{chunk}-{i}")))
            })
            .collect();
        store.job_insert_many(specs).await.unwrap();
    }
    let claimers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut empty = 0;
                while empty < 3 {
                    let params = JobClaimParams {
                        queues: vec!["even".into(), "odd".into()],
                        worker_id: format!("w{w}"),
                        max: 1 + (w % 7),
                        lease_ms: 60_000,
                    };
                    let got = store.job_claim(params).await.unwrap();
                    if got.is_empty() {
                        empty += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    mine.extend(got.into_iter().map(|c| c.job.id));
                }
                mine
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut busy = 0;
    for claimer in claimers {
        let mine = claimer.await.unwrap();
        busy += usize::from(!mine.is_empty());
        for id in mine {
            assert!(seen.insert(id.clone()), "job {id} was handed out twice");
        }
    }
    assert_eq!(seen.len(), JOBS, "every job claimed exactly once");
    assert!(busy > 1, "the claimers ran in parallel");
    assert_eq!(db.stored_counts().await, expect(&[("even", "active", 1_000), ("odd", "active", 1_000)]));
}

/// `jsonb` cannot hold U+0000: a result holding it is refused for its item
/// alone (the job stays active, the others apply), and a failure's error
/// text has it replaced by U+FFFD, so the failure is never lost.
#[tokio::test]
async fn finish_refuses_nul_results_and_mends_nul_errors() {
    let Some(db) = TestDb::new().await else { return };
    let (store, _clock) = store(&db).await;
    let ids = ["a", "b", "c"].map(jid);
    store.job_insert_many(ids.iter().map(|id| spec("q", "n").id(id.clone()).attempts(1)).collect()).await.unwrap();
    let got = claim(&store, &["q"], 3).await;
    let item = |i: usize, outcome| JobFinish { id: got[i].job.id.clone(), lease_token: got[i].lease_token, outcome };
    let mut error = JobError::new("bad\u{0}byte");
    error.details = json!({ "k\u{0}": ["v\u{0}"] });
    let out = store
        .job_finish_many(vec![
            item(0, FinishOutcome::Complete(json!({ "text": "a\u{0}b" }))),
            item(1, FinishOutcome::Fail(FailureReport::fatal(error))),
            item(2, FinishOutcome::Complete(json!("fine"))),
        ])
        .await
        .unwrap();
    assert!(matches!(&out[0], Err(StoreError::Invalid { field, .. }) if field == "result"), "{:?}", out[0]);
    assert_eq!(out[1], Ok(Finished { state: JobState::Failed, run_at: None }));
    assert_eq!(out[2], Ok(Finished { state: JobState::Completed, run_at: None }));
    let by_id = |i: usize| store.job_get(&got[i].job.id);
    assert_eq!(by_id(0).await.unwrap().unwrap().state, JobState::Active);
    let failed = by_id(1).await.unwrap().unwrap();
    let stored = failed.error.unwrap();
    assert_eq!(stored.message, "bad\u{FFFD}byte");
    assert_eq!(stored.details, json!({ "k\u{FFFD}": ["v\u{FFFD}"] }));
    assert_eq!(failed.attempts[0].error.as_ref().unwrap().message, "bad\u{FFFD}byte");
    // The refused item's lease still holds: a storable result ends it.
    let retried = store.job_finish_many(vec![item(0, FinishOutcome::Complete(json!("ok")))]).await.unwrap();
    assert_eq!(retried[0], Ok(Finished { state: JobState::Completed, run_at: None }));
}

#[tokio::test]
async fn finish_completes_and_fences_leases() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    store.job_insert_many(vec![spec("q", "a").id(jid("a")), spec("q", "b").id(jid("b"))]).await.unwrap();
    let got = claim(&store, &["q"], 2).await;
    clock.advance(Duration::from_millis(250));
    let stale = JobFinish {
        id: jid("b"),
        lease_token: drover_core::LeaseToken(got[0].lease_token.0 ^ 1),
        outcome: FinishOutcome::Complete(json!(0)),
    };
    let items = vec![
        JobFinish {
            id: jid("a"),
            lease_token: got[0].lease_token,
            outcome: FinishOutcome::Complete(json!({"ok": true})),
        },
        stale,
        // The same job twice in one call: the second finds no active lease.
        JobFinish { id: jid("a"), lease_token: got[0].lease_token, outcome: FinishOutcome::Complete(json!(1)) },
        JobFinish { id: jid("missing"), lease_token: got[0].lease_token, outcome: FinishOutcome::Release },
    ];
    let out = store.job_finish_many(items).await.unwrap();
    assert_eq!(out[0], Ok(Finished { state: JobState::Completed, run_at: None }));
    assert_eq!(out[1], Err(StoreError::LeaseLost("b".into())));
    assert_eq!(out[2], Err(StoreError::LeaseLost("a".into())));
    assert_eq!(out[3], Err(StoreError::LeaseLost("missing".into())));

    let a = store.job_get(&jid("a")).await.unwrap().unwrap();
    assert_eq!(a.state, JobState::Completed);
    assert_eq!(a.result, Some(json!({"ok": true})));
    assert_eq!(a.finished_at, Some(store.now()));
    assert_eq!(a.lease_expires_at, None);
    assert_eq!(a.attempts.len(), 1, "the first attempt, rebuilt from the row");
    assert_eq!(a.attempts[0].outcome, AttemptOutcome::Completed);
    assert_eq!(a.attempts[0].started_at, START);
    assert_eq!(a.attempts[0].finished_at, store.now());
    assert_eq!(a.attempts[0].worker_id.as_deref(), Some("w1"));
    let b = store.job_get(&jid("b")).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Active, "a lost lease changes nothing");
    assert_eq!(db.stored_counts().await, expect(&[("q", "active", 1), ("q", "completed", 1)]));
}

#[tokio::test]
async fn finish_fails_by_the_core_decision() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    store.job_insert_many(vec![spec("q", "r").id(jid("r")).attempts(2).backoff(Backoff::fixed(1_000))]).await.unwrap();
    let first = claim(&store, &["q"], 1).await.remove(0);
    let boom = JobError::new("boom");
    let retry = finish(&store, &first, FinishOutcome::Fail(FailureReport::retryable(boom.clone()))).await.unwrap();
    assert_eq!(retry, Finished { state: JobState::Delayed, run_at: Some(START.plus_ms(1_000)) });
    let job = store.job_get(&jid("r")).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made, job.run_at), (JobState::Delayed, 1, START.plus_ms(1_000)));
    assert_eq!(job.error, Some(boom.clone()));
    assert_eq!(job.attempts.len(), 1);
    assert_eq!((job.attempts[0].attempt, job.attempts[0].outcome), (1, AttemptOutcome::Failed));
    assert_eq!(job.attempts[0].error, Some(boom.clone()));
    assert!(claim(&store, &["q"], 1).await.is_empty(), "not before its run_at");

    clock.advance(Duration::from_millis(1_000));
    let second = claim(&store, &["q"], 1).await.remove(0);
    assert_eq!(second.attempt, 2);
    let dead = finish(&store, &second, FinishOutcome::Fail(FailureReport::retryable(boom.clone()))).await.unwrap();
    assert_eq!(dead, Finished { state: JobState::Failed, run_at: None });
    let job = store.job_get(&jid("r")).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made, job.finished_at), (JobState::Failed, 2, Some(store.now())));
    let outcomes: Vec<_> = job.attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(outcomes, [(1, AttemptOutcome::Failed), (2, AttemptOutcome::Failed)]);
    assert_eq!(db.stored_counts().await, expect(&[("q", "failed", 1)]));

    // A fatal error fails at once; a requested cancel wins over a retry.
    store
        .job_insert_many(vec![spec("q", "f").id(jid("f")).attempts(5), spec("q", "c").id(jid("c")).attempts(5)])
        .await
        .unwrap();
    let got = claim(&store, &["q"], 2).await;
    let fatal = finish(&store, &got[0], FinishOutcome::Fail(FailureReport::fatal(boom.clone()))).await.unwrap();
    assert_eq!(fatal.state, JobState::Failed);
    let mut conn = db.raw_connection().await;
    sqlx::query("UPDATE jobs SET cancel_requested = true WHERE id = 'c'").execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
    let cancelled = finish(&store, &got[1], FinishOutcome::Fail(FailureReport::retryable(boom))).await.unwrap();
    assert_eq!(cancelled, Finished { state: JobState::Cancelled, run_at: None });
    let c = store.job_get(&jid("c")).await.unwrap().unwrap();
    assert_eq!(c.attempts.last().map(|a| a.outcome), Some(AttemptOutcome::Cancelled));
    assert_eq!(db.stored_counts().await, expect(&[("q", "cancelled", 1), ("q", "failed", 2)]));
}

#[tokio::test]
async fn finish_defers_rate_limited_attempts_and_holds_their_scope() {
    let Some(db) = TestDb::new().await else { return };
    let (store, clock) = store(&db).await;
    store
        .job_insert_many(vec![
            spec("q", "k").id(jid("k1")).rate_limit_key("api"),
            spec("q", "k").id(jid("k2")).rate_limit_key("api").priority(1),
            spec("q", "plain").id(jid("plain")).priority(2),
            spec("solo", "s").id(jid("s1")),
            spec("solo", "s").id(jid("s2")),
        ])
        .await
        .unwrap();
    let k1 = claim(&store, &["q"], 1).await.remove(0);
    let limited = FailureReport {
        retry_after: Some(Duration::from_secs(10)),
        rate_limited: true,
        ..FailureReport::retryable(JobError::new("429"))
    };
    let deferred = finish(&store, &k1, FinishOutcome::Fail(limited.clone())).await.unwrap();
    assert_eq!(deferred, Finished { state: JobState::Delayed, run_at: Some(START.plus_ms(10_000)) });
    let job = store.job_get(&jid("k1")).await.unwrap().unwrap();
    assert_eq!(job.attempts_made, 0, "the attempt is handed back");
    assert_eq!(job.attempts[0].outcome, AttemptOutcome::RateLimited);
    // The key is held: k2 is stepped over, the job without a key runs.
    let next = claim(&store, &["q"], 5).await;
    assert_eq!(next.iter().map(|c| c.job.id.as_str()).collect::<Vec<_>>(), ["plain"]);

    // Without a key the whole queue is held.
    let s1 = claim(&store, &["solo"], 1).await.remove(0);
    finish(&store, &s1, FinishOutcome::Fail(limited)).await.unwrap();
    assert!(claim(&store, &["solo"], 5).await.is_empty());

    clock.advance(Duration::from_secs(10));
    let later = claim(&store, &["q", "solo"], 10).await;
    let mut ids: Vec<&str> = later.iter().map(|c| c.job.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["k1", "k2", "s1", "s2"]);
    let k1 = later.iter().find(|c| c.job.id.as_str() == "k1").unwrap();
    assert_eq!(k1.attempt, 1, "the deferred attempt did not count");
}

#[tokio::test]
async fn finish_release_hands_the_attempt_back() {
    let Some(db) = TestDb::new().await else { return };
    let (store, _clock) = store(&db).await;
    store.job_insert_many(vec![spec("q", "r").id(jid("r"))]).await.unwrap();
    let first = claim(&store, &["q"], 1).await.remove(0);
    let released = finish(&store, &first, FinishOutcome::Release).await.unwrap();
    assert_eq!(released, Finished { state: JobState::Waiting, run_at: None });
    let job = store.job_get(&jid("r")).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made, job.lease_expires_at), (JobState::Waiting, 0, None));
    assert_eq!(job.attempts[0].outcome, AttemptOutcome::Released);
    let again = claim(&store, &["q"], 1).await.remove(0);
    assert_eq!(again.attempt, 1);
    finish(&store, &again, FinishOutcome::Complete(json!("done"))).await.unwrap();
    let job = store.job_get(&jid("r")).await.unwrap().unwrap();
    let outcomes: Vec<_> = job.attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(outcomes, [(1, AttemptOutcome::Released), (2, AttemptOutcome::Completed)], "numbered by attempt_seq");
    assert_eq!(db.stored_counts().await, expect(&[("q", "completed", 1)]));
}

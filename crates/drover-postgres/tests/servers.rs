//! Schedules and retention with several servers on one database: stores
//! with pools of their own (as separate processes would have) firing and
//! sweeping at the same time, and one schedule's refused job rolled back
//! alone. Each test has its own schema (`drover_postgres::testing`);
//! without `DROVER_TEST_POSTGRES_URL` they skip.

use drover_core::{JobSpec, ScheduleSpec, Timestamp};
use drover_postgres::testing::TestDb;
use drover_store::{FinishOutcome, JobClaimParams, JobFinish, Store};
use serde_json::json;
use sqlx::Connection;
use std::collections::BTreeMap;

const START: Timestamp = Timestamp(1_700_000_000_000);
const DAY_MS: i64 = 86_400_000;

/// Runs one SQL statement on a plain connection.
async fn execute(db: &TestDb, sql: &str) {
    let mut conn = db.raw_connection().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
}

/// One number read by a query.
async fn scalar(db: &TestDb, sql: &str) -> i64 {
    let mut conn = db.raw_connection().await;
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut conn).await.unwrap();
    let _ = conn.close().await;
    n
}

/// Three servers, each firing twice at once, tick after tick: every tick of
/// every schedule inserts exactly one job, and none fails.
#[tokio::test]
async fn servers_firing_at_once_insert_each_tick_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(3, START).await;
    let schedules = 12;
    for i in 0..schedules {
        let spec = ScheduleSpec::every_ms(format!("s{i:02}"), 1_000, JobSpec::new("q", "tick"));
        stores[0].schedule_upsert(spec).await.unwrap();
    }
    let ticks = 4;
    for tick in 1..=ticks {
        clock.set(START.plus_ms(1_000 * tick));
        let calls: Vec<_> = stores
            .iter()
            .chain(stores.iter())
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.schedule_fire_due().await })
            })
            .collect();
        let mut inserted = 0;
        for call in calls {
            inserted += call.await.unwrap().unwrap().iter().filter(|f| !f.duplicate).count();
        }
        assert_eq!(inserted, schedules, "tick {tick}: one job per schedule");
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM jobs").await, (schedules as i64) * ticks);
    assert_eq!(
        db.stored_counts().await,
        BTreeMap::from([(("q".into(), "waiting".into()), (schedules as i64) * ticks)])
    );
    let next = scalar(&db, "SELECT count(*) FROM schedules WHERE next_run_at = 1700000005000").await;
    assert_eq!(next, schedules as i64, "every schedule moved past the last tick");
}

/// A job the database refuses (here a CHECK added for the test) rolls back
/// to its schedule's savepoint with its counts and events, the schedule is
/// pushed back, and the others due with it fire in the same transaction.
#[tokio::test]
async fn refused_job_rolls_back_alone() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(1, START).await;
    let store = &stores[0];
    execute(&db, "ALTER TABLE jobs ADD CONSTRAINT test_refuses CHECK (queue <> 'refused')").await;
    for (id, queue) in [("a-good", "q"), ("b-bad", "refused"), ("c-good", "q")] {
        store.schedule_upsert(ScheduleSpec::every_ms(id, 1_000, JobSpec::new(queue, "tick"))).await.unwrap();
    }
    let mut events = store.events();
    clock.set(START.plus_ms(1_000));
    let fired = store.schedule_fire_due().await.unwrap();
    let ids: Vec<&str> = fired.iter().map(|f| f.schedule_id.as_str()).collect();
    assert_eq!(ids, ["a-good", "c-good"]);
    assert_eq!(db.stored_counts().await, BTreeMap::from([(("q".into(), "waiting".into()), 2)]));
    let bad = store.schedule_get("b-bad").await.unwrap().unwrap();
    assert_eq!(bad.next_run_at, START.plus_ms(1_000 + 3_600_000), "pushed back an hour");
    assert_eq!((bad.last_run_at, bad.last_job_id), (None, None));
    let mut published = Vec::new();
    while let Ok(event) = events.try_recv() {
        published.push(event.job_id.map(|id| id.to_string()));
    }
    assert_eq!(
        published,
        [Some("sched:a-good:1700000001000".to_owned()), Some("sched:c-good:1700000001000".to_owned())],
        "no event of the rolled-back insert"
    );
}

/// Two servers sweeping at once, again and again, remove each due job
/// once: the counts end at zero, never below.
#[tokio::test]
async fn servers_sweeping_at_once_remove_each_job_once() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, clock) = db.servers(2, START).await;
    let jobs = 60;
    stores[0].job_insert_many((0..jobs).map(|i| JobSpec::new("q", format!("j{i}"))).collect()).await.unwrap();
    let claimed = stores[0]
        .job_claim(JobClaimParams { queues: vec!["q".into()], worker_id: "w".into(), max: 1_000, lease_ms: 60_000 })
        .await
        .unwrap();
    let items = claimed
        .iter()
        .map(|c| JobFinish {
            id: c.job.id.clone(),
            lease_token: c.lease_token,
            outcome: FinishOutcome::Complete(json!(1)),
        })
        .collect();
    for result in stores[0].job_finish_many(items).await.unwrap() {
        result.unwrap();
    }
    // The default keeps completed jobs for a day.
    clock.set(START.plus_ms(DAY_MS + 1));
    let mut removed = 0;
    loop {
        let calls: Vec<_> = stores
            .iter()
            .chain(stores.iter())
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.job_retention_sweep(7).await })
            })
            .collect();
        let mut round = 0;
        for call in calls {
            round += call.await.unwrap().unwrap();
        }
        if round == 0 {
            break;
        }
        removed += round;
    }
    assert_eq!(removed, jobs);
    assert_eq!(scalar(&db, "SELECT count(*) FROM jobs").await, 0);
    assert_eq!(db.stored_counts().await, BTreeMap::new());
}

/// `job_list` filters by batch and parent (set here by SQL, since inserting
/// into flows is another area's), newest first, with a cursor that pages.
#[tokio::test]
async fn list_filters_by_batch_and_parent() {
    let Some(db) = TestDb::new().await else { return };
    let (stores, _clock) = db.servers(1, START).await;
    let store = &stores[0];
    let specs = ["p", "c1", "c2", "other"].map(|id| JobSpec::new("q", "n").id(drover_core::JobId::parse(id).unwrap()));
    store.job_insert_many(specs.to_vec()).await.unwrap();
    execute(&db, "UPDATE jobs SET parent_id = 'p', batch_id = 'b' WHERE id IN ('c1', 'c2')").await;
    let ids = |page: &drover_store::JobPage| page.items.iter().map(|j| j.id.to_string()).collect::<Vec<_>>();
    let params = drover_store::JobListParams { batch_id: Some("b".into()), limit: 1, ..Default::default() };
    let first = store.job_list(params.clone()).await.unwrap();
    assert_eq!(ids(&first), ["c2"]);
    let second = store.job_list(drover_store::JobListParams { cursor: first.next_cursor, ..params }).await.unwrap();
    assert_eq!((ids(&second), second.next_cursor), (vec!["c1".to_owned()], None));
    let parent = drover_core::JobId::parse("p").unwrap();
    let children = store
        .job_list(drover_store::JobListParams {
            parent_id: Some(parent),
            name: Some("n".into()),
            state: Some(drover_core::JobState::Waiting),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&children), ["c2", "c1"]);
}

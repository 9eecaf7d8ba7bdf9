//! Transactional enqueue (issue 5): jobs inserted in the application's own
//! transaction exist if and only if it commits, and are announced only
//! then, on every server.

use drover_core::{EventKind, JobId, JobSpec, JobState};
use drover_postgres::testing::TestDb;
use drover_store::{Store, StoreError};
use sqlx::Connection;
use std::time::Duration;

/// The application's own table, next to Drover's in the test schema.
async fn signups_table(db: &TestDb) -> sqlx::PgConnection {
    let mut conn = db.raw_connection().await;
    sqlx::query("CREATE TABLE signups (email text PRIMARY KEY)").execute(&mut conn).await.unwrap();
    conn
}

fn welcome(id: &str) -> JobSpec {
    JobSpec::new("mail", "welcome").id(JobId::parse(id).unwrap())
}

#[tokio::test]
async fn a_job_exists_iff_the_application_commits() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.connect().await;
    let other_server = db.connect().await;
    let mut events = other_server.events();
    let mut ready = other_server.ready_signal();
    ready.mark_unchanged();
    let mut app = signups_table(&db).await;

    // Rolled back: neither the row nor the job.
    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO signups VALUES ('a@example.com')").execute(&mut *tx).await.unwrap();
    let inserted = store.job_insert_many_in(&mut tx, vec![welcome("welcome-a")]).await.unwrap();
    assert!(!inserted[0].duplicate);
    assert_eq!(store.job_get(&JobId::parse("welcome-a").unwrap()).await.unwrap(), None, "invisible before commit");
    tx.rollback().await.unwrap();
    assert_eq!(store.job_get(&JobId::parse("welcome-a").unwrap()).await.unwrap(), None);

    // Committed: both, with counts and an event on another store.
    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO signups VALUES ('b@example.com')").execute(&mut *tx).await.unwrap();
    store.job_insert_many_in(&mut tx, vec![welcome("welcome-b")]).await.unwrap();
    tx.commit().await.unwrap();
    let job = store.job_get(&JobId::parse("welcome-b").unwrap()).await.unwrap().expect("committed");
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(store.queue_get("mail").await.unwrap().counts.waiting, 1);

    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event").unwrap();
    assert_eq!(event.kind, EventKind::Waiting);
    assert_eq!(event.job_id.as_ref().map(JobId::as_str), Some("welcome-b"), "the rolled-back job sent nothing");
    tokio::time::timeout(Duration::from_secs(10), ready.changed()).await.expect("a wake-up").unwrap();

    // Claimable like any other job.
    let claimed = store
        .job_claim(drover_store::JobClaimParams {
            queues: vec!["mail".into()],
            worker_id: "w".into(),
            max: 5,
            lease_ms: 30_000,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.queue_get("mail").await.unwrap().counts.active, 1);
    assert_eq!(store.queue_get("mail").await.unwrap().counts.waiting, 0);
}

#[tokio::test]
async fn a_refused_insert_leaves_the_application_transaction_usable() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.connect().await;
    let mut app = signups_table(&db).await;
    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO signups VALUES ('c@example.com')").execute(&mut *tx).await.unwrap();
    let orphan = JobSpec::new("mail", "x").parent_id(JobId::parse("no-such-parent").unwrap());
    let refused = store.job_insert_many_in(&mut tx, vec![welcome("welcome-c"), orphan]).await;
    assert!(matches!(refused, Err(StoreError::Invalid { .. })), "{refused:?}");
    // The application's own statement still counts, the job does not.
    sqlx::query("INSERT INTO signups VALUES ('d@example.com')").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM signups").fetch_one(&mut app).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(store.job_get(&JobId::parse("welcome-c").unwrap()).await.unwrap(), None);
}

#[tokio::test]
async fn maintenance_folds_the_count_deltas_and_counts_stay_right() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.connect().await;
    let mut app = signups_table(&db).await;
    for i in 0..3 {
        let mut tx = app.begin().await.unwrap();
        store.job_insert_many_in(&mut tx, vec![welcome(&format!("fold-{i}"))]).await.unwrap();
        tx.commit().await.unwrap();
    }
    store.job_insert_many(vec![welcome("fold-plain")]).await.unwrap();
    let mut raw = db.raw_connection().await;
    assert_eq!(delta_rows(&mut raw).await, 4, "one delta row per transaction, the store's own too");
    assert_eq!(store.queue_get("mail").await.unwrap().counts.waiting, 4, "reads add the deltas");
    assert_eq!(store.queue_list().await.unwrap()[0].counts.waiting, 4);

    store.job_promote_due().await.unwrap();
    assert_eq!(delta_rows(&mut raw).await, 0, "the maintenance tick folded them");
    assert_eq!(store.queue_get("mail").await.unwrap().counts.waiting, 4, "and the counts did not change");
    store.job_insert_many(vec![welcome("fold-after")]).await.unwrap();
    store.job_retention_sweep(100).await.unwrap();
    assert_eq!(delta_rows(&mut raw).await, 0, "so did the retention sweep");
    assert_eq!(store.queue_get("mail").await.unwrap().counts.waiting, 5);
}

/// Rows waiting in `queue_count_deltas`.
async fn delta_rows(raw: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM queue_count_deltas").fetch_one(raw).await.unwrap()
}

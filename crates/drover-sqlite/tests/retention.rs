//! Retention as only the SQLite store can show it: the attempt and log rows
//! of a removed job are gone from their tables, the counts still equal a
//! `GROUP BY`, and the sweep's queries use the partial index of migrations
//! 0003 and 0006 rather than scanning the jobs.

use drover_core::Timestamp;
use drover_core::{FailureReport, JobError, JobSpec, LogLevel, ManualClock, QueueConfig, Retention, RetentionRule};
use drover_sqlite::{SqliteOptions, SqliteStore};
use drover_store::{FinishOutcome, JobClaimParams, JobFinish, JobLogAppend, Store};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn rows(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Three jobs, each failed once then completed with a log line per attempt,
/// on a queue keeping one completed job: the sweep removes two, and with
/// them exactly their rows in `job_attempts` and `job_logs`.
#[tokio::test]
async fn sweep_deletes_attempt_and_log_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let clock = ManualClock::new(Timestamp(1_767_225_600_000));
    let store = SqliteStore::open(&path, SqliteOptions::default().clock(clock.clone())).unwrap();
    let keep_one = RetentionRule { count: Some(1), age_ms: None };
    let config =
        QueueConfig { retention: Retention { completed: keep_one, ..Retention::default() }, ..Default::default() };
    store.queue_config_set("q", config).await.unwrap();
    for i in 0..3 {
        store.job_insert_many(vec![JobSpec::new("q", format!("n{i}")).attempts(2)]).await.unwrap();
        for attempt in 0..2 {
            let params = JobClaimParams { queues: vec!["q".into()], worker_id: "w".into(), max: 1, lease_ms: 30_000 };
            let claimed = store.job_claim(params).await.unwrap().pop().unwrap();
            let line = JobLogAppend {
                id: claimed.job.id.clone(),
                lease_token: claimed.lease_token,
                level: LogLevel::Info,
                message: format!("attempt {attempt}"),
                metadata: json!({}),
            };
            store.job_log_append(line).await.unwrap();
            let outcome = if attempt == 0 {
                FinishOutcome::Fail(FailureReport::retryable(JobError::new("once")))
            } else {
                FinishOutcome::Complete(json!(null))
            };
            let item = JobFinish { id: claimed.job.id, lease_token: claimed.lease_token, outcome };
            store.job_finish_many(vec![item]).await.unwrap().pop().unwrap().unwrap();
            clock.advance(Duration::from_secs(3_600));
        }
    }
    assert_eq!(store.job_retention_sweep(100).await.unwrap(), 2);
    store.close().await;

    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(rows(&conn, "SELECT count(*) FROM jobs"), 1);
    assert_eq!(rows(&conn, "SELECT count(*) FROM job_logs"), 2, "the kept job's two lines");
    assert_eq!(
        rows(&conn, "SELECT count(*) FROM job_attempts WHERE job_seq NOT IN (SELECT seq FROM jobs)"),
        0,
        "no attempt row outlives its job"
    );
    assert_eq!(rows(&conn, "SELECT count(*) FROM job_logs WHERE job_seq NOT IN (SELECT seq FROM jobs)"), 0);
    assert_eq!(rows(&conn, "SELECT n FROM queue_counts WHERE queue = 'q' AND state = 'completed'"), 1);
}

/// The plans of the sweep's two queries search `jobs_finished`; a plan
/// that scans `jobs` would make every sweep read the whole table.
#[tokio::test]
async fn sweep_queries_use_the_partial_index() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("drover.db");
    SqliteStore::open(path, SqliteOptions::default()).unwrap().close().await;
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in [
        "SELECT seq FROM jobs WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled') \
         AND queue = ?1 AND state = ?2 AND finished_at < ?3 ORDER BY finished_at LIMIT ?4",
        "SELECT seq FROM jobs WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled') \
         AND queue = ?1 AND state = ?2 ORDER BY finished_at DESC, seq DESC LIMIT ?3 OFFSET ?4",
    ] {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params!["q", "completed", 0, 1], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("INDEX jobs_finished"), "{sql}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql} should read in index order: {plan}");
    }
}

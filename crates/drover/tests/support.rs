//! Shared helpers of the drover integration tests: a real SQLite store in a
//! temporary directory, and waits with deadlines instead of sleeps.

#![allow(dead_code)]

use drover::model::Job;
use drover::{Client, JobId, JobState};
use std::time::{Duration, Instant};

/// A client on a fresh SQLite file that lives as long as the returned guard.
pub async fn client() -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open_sqlite(dir.path().join("jobs.db")).await.unwrap();
    (client, dir)
}

/// Polls a job until `done` holds, failing the test after `within`.
pub async fn wait_for_job(client: &Client, id: &JobId, within: Duration, done: impl Fn(&Job) -> bool) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = client.get(id).await.unwrap().expect("job exists");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still {} after {within:?}: {job:#?}", job.state);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls a job until it reaches `state`.
pub async fn wait_for_state(client: &Client, id: &JobId, state: JobState) -> Job {
    wait_for_job(client, id, Duration::from_secs(10), |job| job.state == state).await
}

//! `kill -9` in the middle of work loses nothing: a child process enqueues
//! and processes jobs on a SQLite file and is killed mid-batch; the parent
//! reopens the file and shows that every accepted job is there and that the
//! jobs that were active are recovered and completed.

mod support;

use drover::{Client, JobId, JobSpec, JobState, MaintenanceConfig, Worker};
use serde_json::json;
use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set in the child's environment: the SQLite file to work on.
const CHILD_ENV: &str = "DROVER_CRASH_CHILD_DB";
/// Jobs the child enqueues at most (the parent kills it long before it is done).
const CHILD_JOBS: usize = 5_000;
/// The child's lease, short so that the parent's rescue comes quickly.
const CHILD_LEASE: Duration = Duration::from_secs(1);

fn crash_job_id(n: usize) -> JobId {
    JobId::parse(format!("crash-{n}")).unwrap()
}

/// The child: runs only when the parent sets [`CHILD_ENV`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child half of sigkill_mid_batch_loses_nothing"]
async fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let client = Client::open_sqlite(&path).await.unwrap();
    let _worker = Worker::builder(client.clone())
        .queue("crash", 16)
        .lease(CHILD_LEASE)
        .handler("work", |ctx: drover::JobContext| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            println!("done {}", ctx.id());
            Ok(json!("done"))
        })
        .start();
    for first in (0..CHILD_JOBS).step_by(50) {
        let specs = (first..first + 50).map(|n| JobSpec::new("crash", "work").id(crash_job_id(n))).collect();
        client.enqueue_many(specs).await.unwrap();
        // Printed only after the enqueue returned: these jobs were accepted.
        println!("accepted {}", first + 50);
        // Pace the producer so that enqueues are still going on at the kill.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut accepted, mut done) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Kill once plenty is both accepted and done: enqueues, claims and
    // completions are all in flight at that moment.
    while accepted < 1_000 || done < 200 {
        assert!(Instant::now() < deadline, "child made too little progress: {accepted} accepted, {done} done");
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("child is alive")
            .unwrap()
            .expect("child exited early");
        if let Some(n) = line.strip_prefix("accepted ") {
            accepted = n.parse().unwrap();
        } else if line.starts_with("done ") {
            done += 1;
        }
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    let client = Client::open_sqlite(&path).await.unwrap();
    for n in 0..accepted {
        assert!(client.get(&crash_job_id(n)).await.unwrap().is_some(), "accepted job crash-{n} was lost");
    }
    let counts = client.store().queue_get("crash").await.unwrap().counts;
    assert!(counts.active > 0, "the kill should have caught jobs mid-flight: {counts:?}");
    let was_active: HashSet<JobId> = client
        .list(drover::store::JobListParams { state: Some(JobState::Active), limit: 1_000, ..Default::default() })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|job| job.id)
        .collect();

    let worker = Worker::builder(client.clone())
        .queue("crash", 16)
        .maintenance(Some(MaintenanceConfig { interval: Duration::from_millis(50), ..Default::default() }))
        .handler("work", |_ctx: drover::JobContext| async { Ok(json!("done")) })
        .start();
    let total = counts.total();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = client.store().queue_get("crash").await.unwrap().counts;
        if counts.completed == total {
            break;
        }
        assert!(Instant::now() < deadline, "not every job completed after the restart: {counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    for id in &was_active {
        let job = client.get(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(job.stalls, 1, "job {id} was rescued from its expired lease");
        assert!(job.attempts.iter().any(|a| a.outcome == drover::model::AttemptOutcome::Stalled));
    }
}

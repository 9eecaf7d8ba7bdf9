//! Rough throughput of the SQLite store on this machine.
//!
//! `cargo run --release -p drover-sqlite --example throughput [jobs] [normal]`
//!
//! Measures bulk inserts (`job_insert_many` of 1,000 specs per call) and the
//! processing of no-op jobs (many tasks claiming 50 and finishing 50 at a
//! time). The `drover bench` command is the project's real benchmark; this
//! one isolates the store.

use drover_core::JobSpec;
use drover_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use drover_store::{FinishOutcome, JobClaimParams, JobFinish, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const INSERT_BATCH: usize = 1_000;
const CLAIM_BATCH: u32 = 50;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let sync = if args.next().as_deref() == Some("normal") { Synchronous::Normal } else { Synchronous::Full };
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SqliteStore::open(dir.path().join("bench.db"), SqliteOptions::default().synchronous(sync)).unwrap());
    println!("synchronous={sync:?}, {jobs} jobs");

    for inserters in [1, 4] {
        let per_task = jobs / inserters;
        let started = Instant::now();
        let tasks: Vec<_> = (0..inserters)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task / INSERT_BATCH {
                        let specs = (0..INSERT_BATCH)
                            .map(|i| JobSpec::new("bench", "noop").payload(json!({ "n": i })))
                            .collect();
                        store.job_insert_many(specs).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!("insert  ({inserters} callers): {:>9.0} jobs/s", (per_task * inserters) as f64 / secs);
    }

    // Everything inserted above is waiting: process it all.
    let total = jobs * 2;
    for workers in [8, 32] {
        if workers == 32 {
            let specs: Vec<_> = (0..jobs).map(|i| JobSpec::new("bench", "noop").payload(json!({ "n": i }))).collect();
            for chunk in specs.chunks(INSERT_BATCH) {
                store.job_insert_many(chunk.to_vec()).await.unwrap();
            }
        }
        let stats_before = store.writer_stats();
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut done = 0usize;
                    loop {
                        let claimed = store
                            .job_claim(JobClaimParams {
                                queues: vec!["bench".into()],
                                worker_id: format!("w{w}"),
                                max: CLAIM_BATCH,
                                lease_ms: 30_000,
                            })
                            .await
                            .unwrap();
                        if claimed.is_empty() {
                            return done;
                        }
                        let finishes = claimed
                            .into_iter()
                            .map(|c| JobFinish {
                                id: c.job.id,
                                lease_token: c.lease_token,
                                outcome: FinishOutcome::Complete(serde_json::Value::Null),
                            })
                            .collect::<Vec<_>>();
                        done += finishes.len();
                        for r in store.job_finish_many(finishes).await.unwrap() {
                            r.unwrap();
                        }
                    }
                })
            })
            .collect();
        let mut processed = 0;
        for t in tasks {
            processed += t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let stats = store.writer_stats();
        let batches = stats.batches - stats_before.batches;
        let commands = stats.commands - stats_before.commands;
        println!(
            "process ({workers} workers): {:>9.0} jobs/s ({processed} jobs, {batches} commits, {:.1} commands/commit)",
            processed as f64 / secs,
            commands as f64 / batches.max(1) as f64
        );
        let _ = total;
    }
    Arc::into_inner(store).unwrap().close().await;
}

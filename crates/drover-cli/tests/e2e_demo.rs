//! `drover serve --demo`: sample jobs get enqueued and run to completion on
//! the built-in workers, and SIGTERM still ends the process cleanly, with
//! no demo job left active.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{Server, http};

const DEMO_QUEUES: [&str; 3] = ["demo-import", "demo-enrich", "demo-report"];

async fn get(server: &Server, path: &str) -> Value {
    http().get(server.url(path)).send().await.unwrap().json().await.unwrap()
}

/// Each demo queue's counts, by name (absent until its first job).
async fn demo_counts(server: &Server) -> Vec<(String, Value)> {
    let queues = get(server, "/api/queues").await;
    queues["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| DEMO_QUEUES.contains(&q["name"].as_str().unwrap()))
        .map(|q| (q["name"].as_str().unwrap().to_owned(), q["counts"].clone()))
        .collect()
}

fn count(counts: &[(String, Value)], queue: &str, state: &str) -> u64 {
    counts.iter().find(|(name, _)| name == queue).map_or(0, |(_, c)| c[state].as_u64().unwrap())
}

#[tokio::test]
async fn demo_jobs_flow_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    // A fast trickle, so the test does not wait on the newcomer-friendly pace.
    let server = Server::start_with(&db, &["--demo", "--demo-interval-ms", "100"]).await;

    // An import takes ~5 s, so every queue has completed work well inside
    // the deadline; reports fan out into enrich jobs with a parent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let counts = demo_counts(&server).await;
        if DEMO_QUEUES.iter().all(|q| count(&counts, q, "completed") > 0) {
            break counts;
        }
        assert!(Instant::now() < deadline, "demo jobs did not all complete in 30 s: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(counts.len(), 3, "every demo queue exists: {counts:?}");

    let imports = get(&server, "/api/jobs?queue=demo-import&state=completed").await;
    let import = &imports["items"][0];
    let progress = &import["progress"];
    assert_eq!(progress["processed"], progress["total"], "an import ends with detailed progress at 100%: {import}");
    let logs = get(&server, &format!("/api/jobs/{}/logs", import["id"].as_str().unwrap())).await;
    assert!(!logs["items"].as_array().unwrap().is_empty(), "an import writes log lines: {logs}");

    let enrich = get(&server, "/api/jobs?queue=demo-enrich&limit=1000").await;
    assert!(
        enrich["items"].as_array().unwrap().iter().any(|j| j["parent_id"].is_string()),
        "a report enqueued follow-up enrich jobs: {enrich}"
    );

    let started = Instant::now();
    let status = server.terminate().await;
    assert!(status.success(), "serve --demo exits cleanly on SIGTERM: {status}");
    assert!(started.elapsed() < Duration::from_secs(15), "shutdown took {:?}", started.elapsed());

    // The demo worker handed its running jobs back rather than leaving them
    // to lease expiry.
    let server = Server::start(&db).await;
    let counts = demo_counts(&server).await;
    for queue in DEMO_QUEUES {
        assert_eq!(count(&counts, queue, "active"), 0, "no demo job left active: {counts:?}");
    }
    assert!(server.terminate().await.success());
}

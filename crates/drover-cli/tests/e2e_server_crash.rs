//! `kill -9` of the server with 1,000 jobs queued and one active: after a
//! restart every job is there, the active one is handed out again once its
//! lease expires, and its old lease is refused.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, http};

async fn fetch(server: &Server, max: u32, lease_ms: u64, wait_ms: u64) -> Vec<Value> {
    let body =
        json!({ "worker_id": "crash-test", "queues": ["crash"], "max": max, "wait_ms": wait_ms, "lease_ms": lease_ms });
    let resp = http().post(server.url("/api/workers/fetch")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn kill_9_with_jobs_queued_and_one_active_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let server = Server::start(&db).await;
    let jobs: Vec<Value> =
        (0..1000).map(|i| json!({ "id": format!("c{i:04}"), "queue": "crash", "name": "n" })).collect();
    let resp = http().post(server.url("/api/jobs/bulk")).json(&json!({ "jobs": jobs })).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let active = fetch(&server, 1, 1_000, 0).await;
    assert_eq!(active.len(), 1);
    let (active_id, old_lease) = (active[0]["id"].as_str().unwrap().to_owned(), active[0]["lease_token"].clone());
    server.kill().await;

    let server = Server::start(&db).await;
    let resp = http().get(server.url("/api/queues/crash")).send().await.unwrap();
    let queue: Value = resp.json().await.unwrap();
    assert_eq!(queue["counts"]["waiting"].as_u64().unwrap() + queue["counts"]["active"].as_u64().unwrap(), 1000);
    assert_eq!(queue["counts"]["active"], 1, "the active job is still active after the restart: {queue}");

    // Drain the 999 waiting jobs; the active one comes back after its
    // lease (1 s) expires and the server's maintenance rescues it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut handed_again = None;
    while handed_again.is_none() {
        assert!(Instant::now() < deadline, "the active job was never handed out again");
        for job in fetch(&server, 100, 30_000, 500).await {
            if job["id"] == active_id.as_str() {
                handed_again = Some(job);
            }
        }
    }
    let again = handed_again.unwrap();
    assert_ne!(again["lease_token"], old_lease, "a new lease");
    assert_eq!(again["attempt"], 1, "the stalled attempt was handed back");

    let stale = http()
        .post(server.url(&format!("/api/jobs/{active_id}/complete")))
        .json(&json!({ "lease_token": old_lease, "result": "late" }))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "lease_lost");

    let fresh = http()
        .post(server.url(&format!("/api/jobs/{active_id}/complete")))
        .json(&json!({ "lease_token": again["lease_token"], "result": "done" }))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    let job: Value =
        http().get(server.url(&format!("/api/jobs/{active_id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["state"], "completed");
    assert_eq!(job["result"], "done");
    assert!(job["attempts"].as_array().unwrap().iter().any(|a| a["outcome"] == "stalled"), "{job}");
    // Every one of the 1,000 is still there.
    for i in (0..1000).step_by(97) {
        let resp = http().get(server.url(&format!("/api/jobs/c{i:04}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

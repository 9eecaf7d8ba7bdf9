//! End-to-end: job TTL over HTTP on the real `drover serve` binary. A job
//! posted with an `expires_at` already past is never fetched and ends
//! `failed` with error code `expired`; one with a later `expires_at` runs.

mod support;

use serde_json::{Value, json};
use support::{Server, http};

async fn post(server: &Server, path: &str, body: Value) -> Value {
    let resp = http().post(server.url(path)).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test]
async fn expired_job_is_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let late = post(
        &server,
        "/api/jobs",
        json!({ "id": "late", "queue": "ttl", "name": "n", "expires_at": "2020-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(late["expires_at"], "2020-01-01T00:00:00Z", "{late}");
    post(
        &server,
        "/api/jobs",
        json!({ "id": "fine", "queue": "ttl", "name": "n", "expires_at": "2999-01-01T00:00:00Z" }),
    )
    .await;

    let fetched = post(&server, "/api/workers/fetch", json!({ "worker_id": "w", "queues": ["ttl"], "max": 10 })).await;
    let ids: Vec<&str> = fetched["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fine"], "{fetched}");

    let job: Value = http().get(server.url("/api/jobs/late")).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "expired", "{job}");
    assert_eq!(job["attempts_made"], 0, "{job}");

    let resp = http()
        .post(server.url("/api/jobs"))
        .json(&json!({ "queue": "ttl", "name": "n", "expires_at": "soon" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"]["field"], "expires_at", "{body}");
}

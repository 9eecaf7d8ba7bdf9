//! End-to-end: uniqueness keys over HTTP on the real `drover serve` binary:
//! a second create with the key answers 200 with the first job and
//! `duplicate: true`, in bulk bodies too; `unique_for_ms` needs a key.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, http};

async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = http().post(server.url(path)).json(&body).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn duplicate_by_unique_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let spec = json!({ "queue": "sync", "name": "user", "unique_key": "user-7", "unique_for_ms": 60000 });
    let (status, first) = post(&server, "/api/jobs", spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["unique_key"], "user-7");
    let (status, again) = post(&server, "/api/jobs", spec).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!((&again["id"], &again["duplicate"]), (&first["id"], &json!(true)));

    let bulk = json!({ "jobs": [
        { "queue": "sync", "name": "user", "unique_key": "user-8" },
        { "queue": "sync", "name": "user", "unique_key": "user-8" },
    ] });
    let (status, answer) = post(&server, "/api/jobs/bulk", bulk).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let items = answer["items"].as_array().expect("a list of results");
    assert_eq!((&items[0]["duplicate"], &items[1]["duplicate"]), (&json!(false), &json!(true)), "{answer}");
    assert_eq!(items[1]["id"], items[0]["id"]);

    let (status, error) = post(&server, "/api/jobs", json!({ "queue": "sync", "name": "n", "unique_for_ms": 5 })).await;
    assert_eq!(status.as_u16(), 422, "{error}");
    assert_eq!(error["error"]["details"]["field"], "unique_for_ms", "{error}");
}

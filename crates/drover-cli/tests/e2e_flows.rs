//! End-to-end: flows and batches over HTTP on the real `drover serve`
//! binary. A 2-level flow worked through the worker protocol runs its
//! parent after its children; a batch reports its counts, announces
//! `batch:completed` on SSE and enqueues its completion job; bad inputs
//! answer 4xx with the error body.

#[path = "support/protocol.rs"]
mod protocol;
mod support;

use protocol::{SseReader, assert_error, fetch, fetch_one, get, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Server;

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    (server, dir)
}

async fn complete(server: &Server, job: &Value, result: Value) {
    let id = job["id"].as_str().unwrap();
    let (status, body) = post(
        server,
        &format!("/api/jobs/{id}/complete"),
        json!({ "lease_token": job["lease_token"], "result": result }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn state_of(server: &Server, id: &str) -> String {
    let (status, job) = get(server, &format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_two_level_flow_runs_its_parent_after_its_children() {
    let (server, _dir) = server().await;
    let flow = json!({
        "id": "report-1", "queue": "flow", "name": "report",
        "children": [
            { "id": "fetch-a", "queue": "flow", "name": "fetch", "payload": 1 },
            { "id": "fetch-b", "queue": "flow", "name": "fetch", "payload": 2, "on_failure": "ignore" },
        ]
    });
    let (status, created) = post(&server, "/api/flows", flow).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let items = created["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!((&items[0]["id"], &items[0]["state"]), (&json!("report-1"), &json!("waiting-children")));
    assert_eq!(items[1]["parent_id"], "report-1");
    assert_eq!((&items[1]["on_failure"], &items[2]["on_failure"]), (&json!("fail_parent"), &json!("ignore")));

    // Only the children are handed out.
    let first = fetch(&server, "flow", 10, 0, 30_000).await;
    let mut ids: Vec<_> = first.iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["fetch-a", "fetch-b"]);
    for job in &first {
        let n = job["payload"].as_i64().unwrap();
        complete(&server, job, json!({ "rows": n * 10 })).await;
    }
    assert_eq!(state_of(&server, "report-1").await, "waiting");

    let (status, children) = get(&server, "/api/jobs/report-1/children").await;
    assert_eq!(status, StatusCode::OK, "{children}");
    let results: Vec<_> = children["items"].as_array().unwrap().iter().map(|c| c["result"]["rows"].clone()).collect();
    assert_eq!(results.len(), 2);
    assert!(results.contains(&json!(10)) && results.contains(&json!(20)), "{children}");

    let parent = fetch_one(&server, "flow").await;
    assert_eq!(parent["id"], "report-1");
    complete(&server, &parent, json!("done")).await;
    assert_eq!(state_of(&server, "report-1").await, "completed");

    // A child added to a waiting job holds that job back until it finishes.
    let (status, job) = post(&server, "/api/jobs", json!({ "id": "later", "queue": "solo", "name": "n" })).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let (status, child) =
        post(&server, "/api/jobs", json!({ "queue": "kids", "name": "n", "parent_id": "later" })).await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert_eq!(state_of(&server, "later").await, "waiting-children");
    let kid = fetch_one(&server, "kids").await;
    complete(&server, &kid, Value::Null).await;
    assert_eq!(state_of(&server, "later").await, "waiting");
}

#[tokio::test]
async fn a_batch_counts_its_jobs_and_announces_its_completion() {
    let (server, _dir) = server().await;
    let mut events = SseReader::open(&server, "/api/events", None).await;
    let jobs: Vec<Value> = (0..5).map(|n| json!({ "queue": "rows", "name": "import", "payload": n })).collect();
    let body = json!({ "jobs": jobs, "on_complete": { "queue": "reports", "name": "summary" } });
    let (status, created) = post(&server, "/api/batches", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["total"], 5);
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, batch) = get(&server, &format!("/api/batches/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!((&batch["total"], &batch["waiting"], &batch["state"]), (&json!(5), &json!(5), &json!("running")));

    let claimed = fetch(&server, "rows", 5, 0, 30_000).await;
    assert_eq!(claimed.len(), 5);
    let (_, batch) = get(&server, &format!("/api/batches/{id}")).await;
    assert_eq!((&batch["active"], &batch["waiting"]), (&json!(5), &json!(0)), "{batch}");
    for job in &claimed[..3] {
        complete(&server, job, Value::Null).await;
    }
    let failing = &claimed[3];
    let (status, body) = post(
        &server,
        &format!("/api/jobs/{}/fail", failing["id"].as_str().unwrap()),
        json!({ "lease_token": failing["lease_token"], "error": { "message": "bad row" }, "retryable": false }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, batch) = get(&server, &format!("/api/batches/{id}")).await;
    assert_eq!(
        (&batch["completed"], &batch["failed"], &batch["active"], &batch["progress"]),
        (&json!(3), &json!(1), &json!(1), &json!(80.0)),
        "{batch}"
    );
    complete(&server, &claimed[4], Value::Null).await;

    let frame = events.until(|f| f.event == "batch:completed").await;
    assert_eq!(frame.data["batch_id"], id.as_str());
    assert_eq!(frame.data["data"]["completed"], 4);
    let (_, batch) = get(&server, &format!("/api/batches/{id}")).await;
    assert_eq!((&batch["state"], &batch["progress"]), (&json!("completed"), &json!(100.0)), "{batch}");
    let summary = fetch(&server, "reports", 5, 5_000, 30_000).await;
    assert_eq!(summary.len(), 1, "the completion job is enqueued once");
    assert_eq!(Some(summary[0]["id"].as_str().unwrap()), batch["on_complete_id"].as_str());
}

#[tokio::test]
async fn bad_flow_and_batch_inputs_answer_4xx() {
    let (server, _dir) = server().await;
    let (status, body) = post(&server, "/api/flows", json!({ "queue": "q", "name": "n" })).await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "children");
    let bad_child = json!({ "queue": "q", "name": "n", "children": [{ "queue": "q", "name": "bad name" }] });
    let (status, body) = post(&server, "/api/flows", bad_child).await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "children[0].name");
    let bad_policy =
        json!({ "queue": "q", "name": "n", "children": [{ "queue": "q", "name": "c", "on_failure": "shrug" }] });
    let (status, body) = post(&server, "/api/flows", bad_policy).await;
    assert_error(status, &body, 422, "invalid_body");
    let (status, body) = post(&server, "/api/jobs", json!({ "queue": "q", "name": "n", "children": [] })).await;
    assert_error(status, &body, 422, "validation_failed");

    let (status, body) = post(&server, "/api/jobs", json!({ "queue": "q", "name": "n", "parent_id": "ghost" })).await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "parent_id");
    let (status, body) = post(
        &server,
        "/api/jobs/bulk",
        json!({ "jobs": [{ "queue": "q", "name": "n", "id": "self", "parent_id": "self" }] }),
    )
    .await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "jobs[0].parent_id", "{body}");
    let bulk = json!({ "jobs": [{ "queue": "q", "name": "n" }, { "queue": "q", "name": "n", "parent_id": "ghost" }] });
    let (status, body) = post(&server, "/api/jobs/bulk", bulk).await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "jobs[1].parent_id", "{body}");

    // A finished parent takes no children: 409.
    let (_, _) = post(&server, "/api/jobs", json!({ "id": "gone", "queue": "done", "name": "n" })).await;
    let (status, _) = http_delete(&server, "/api/jobs/gone").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(&server, "/api/jobs", json!({ "queue": "q", "name": "n", "parent_id": "gone" })).await;
    assert_error(status, &body, 409, "invalid_state");

    let (status, body) = post(&server, "/api/batches", json!({ "jobs": [] })).await;
    assert_error(status, &body, 422, "validation_failed");
    let (status, body) =
        post(&server, "/api/batches", json!({ "jobs": [{ "queue": "q", "name": "n", "batch_id": "mine" }] })).await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "jobs[0].batch_id");
    let (status, body) = post(
        &server,
        "/api/batches",
        json!({ "jobs": [{ "queue": "q", "name": "n" }], "on_complete": { "queue": "", "name": "n" } }),
    )
    .await;
    assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["details"]["field"], "on_complete.queue");
    for field in ["parent_id", "batch_id"] {
        let on_complete = json!({ "queue": "q", "name": "n", field: "a" });
        let body = json!({ "jobs": [{ "queue": "q", "name": "n" }], "on_complete": on_complete });
        let (status, body) = post(&server, "/api/batches", body).await;
        assert_error(status, &body, 422, "validation_failed");
        assert_eq!(body["error"]["details"]["field"], format!("on_complete.{field}"));
    }
    let (status, body) =
        post(&server, "/api/batches", json!({ "jobs": [{ "queue": "q", "name": "n" }], "extra": 1 })).await;
    assert_error(status, &body, 422, "invalid_body");
    let (status, body) = get(&server, "/api/batches/nope").await;
    assert_error(status, &body, 404, "not_found");
}

async fn http_delete(server: &Server, path: &str) -> (StatusCode, Value) {
    let resp = support::http().delete(server.url(path)).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

//! End-to-end: flow control over HTTP on the real `drover serve` binary:
//! queue and key concurrency caps hold for HTTP workers, a worker's
//! `rate_limited: true` holds its queue back (`throttled_until`, the
//! `queue:throttled` event), the `/api/rate-limits` resource with its
//! errors, the `drover rate-limits` commands, and the CLI for flows and
//! batches (`drover flows create`, `drover batches create|show`,
//! `drover jobs children`).

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, http};

async fn call(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = http().request(method, server.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn fetch(server: &Server, queue: &str, max: u32) -> Vec<Value> {
    let body = json!({ "worker_id": "w", "queues": [queue], "max": max, "wait_ms": 0 });
    let (status, answer) = call(server, reqwest::Method::POST, "/api/workers/fetch", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["items"].as_array().unwrap().clone()
}

async fn enqueue(server: &Server, spec: Value) {
    let (status, job) = call(server, reqwest::Method::POST, "/api/jobs", Some(spec)).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
}

#[tokio::test]
async fn caps_hold_for_http_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let (status, queue) =
        call(&server, reqwest::Method::PUT, "/api/queues/capped", Some(json!({ "concurrency": 2 }))).await;
    assert_eq!((status, &queue["concurrency"]), (StatusCode::OK, &json!(2)), "{queue}");
    for _ in 0..5 {
        enqueue(&server, json!({ "queue": "capped", "name": "n" })).await;
    }
    assert_eq!(fetch(&server, "capped", 10).await.len(), 2, "the queue cap");
    assert!(fetch(&server, "capped", 10).await.is_empty(), "nothing more while 2 are active");

    let (status, rule) =
        call(&server, reqwest::Method::PUT, "/api/rate-limits/places", Some(json!({ "concurrency": 1 }))).await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule, json!({ "key": "places", "concurrency": 1, "rate_limit": null }));
    for key in ["places", "places", "hunter"] {
        enqueue(&server, json!({ "queue": "scrape", "name": "n", "rate_limit_key": key })).await;
    }
    let first = fetch(&server, "scrape", 10).await;
    assert_eq!(first.len(), 2, "one places job and the hunter job: {first:?}");
    let (status, state) = call(&server, reqwest::Method::GET, "/api/rate-limits/places", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&state["active"], &state["rule"]["key"]), (&json!(1), &json!("places")), "{state}");

    // Completing the places job frees its slot: a waiting long poll gets the next one at once.
    let poll = {
        let server_url = server.url("/api/workers/fetch");
        tokio::spawn(async move {
            let body = json!({ "worker_id": "w2", "queues": ["scrape"], "max": 10, "wait_ms": 20000 });
            let resp = http().post(server_url).json(&body).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    for job in &first {
        let body = json!({ "lease_token": job["lease_token"], "result": null });
        let path = format!("/api/jobs/{}/complete", job["id"].as_str().unwrap());
        let (status, answer) = call(&server, reqwest::Method::POST, &path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let next = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("the long poll wakes").unwrap();
    assert_eq!(next["items"].as_array().unwrap().len(), 1, "{next}");
}

#[tokio::test]
async fn rate_limited_failure_throttles_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let events = http().get(server.url("/api/events?queue=calls")).send().await.unwrap();
    enqueue(&server, json!({ "queue": "calls", "name": "n" })).await;
    enqueue(&server, json!({ "queue": "calls", "name": "n" })).await;
    let job = fetch(&server, "calls", 1).await.pop().unwrap();
    let body = json!({ "lease_token": job["lease_token"], "error": { "message": "429" },
                       "rate_limited": true, "retry_after_ms": 60000 });
    let path = format!("/api/jobs/{}/fail", job["id"].as_str().unwrap());
    let (status, answer) = call(&server, reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(fetch(&server, "calls", 10).await.is_empty(), "the queue is held back");
    let (_, queues) = call(&server, reqwest::Method::GET, "/api/queues", None).await;
    let calls = queues["items"].as_array().unwrap().iter().find(|q| q["name"] == "calls").unwrap().clone();
    assert!(calls["throttled_until"].is_string(), "{calls}");
    let (_, job_now) =
        call(&server, reqwest::Method::GET, &format!("/api/jobs/{}", job["id"].as_str().unwrap()), None).await;
    assert_eq!((&job_now["state"], &job_now["attempts_made"]), (&json!("delayed"), &json!(0)), "{job_now}");

    // The SSE stream carries `queue:throttled`.
    let mut events = events;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains("event: queue:throttled") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk()).await.expect("queue:throttled on SSE");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("stream open")));
    }
    assert!(seen.contains("throttled_until"), "{seen}");
}

#[tokio::test]
async fn rate_limit_rules_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let put = reqwest::Method::PUT;
    for (path, body, field) in [
        ("/api/rate-limits/a*b", json!({ "concurrency": 1 }), "key"),
        ("/api/rate-limits/k", json!({ "concurrency": 0 }), "concurrency"),
        ("/api/rate-limits/k", json!({ "rate_limit": { "max": 0, "per_ms": 10 } }), "rate_limit"),
    ] {
        let (status, error) = call(&server, put.clone(), path, Some(body)).await;
        assert_eq!(status.as_u16(), 422, "{path}: {error}");
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }
    let (status, error) = call(&server, put.clone(), "/api/rate-limits/k", Some(json!({ "cap": 1 }))).await;
    assert!(status.is_client_error() && error["error"]["code"].is_string(), "{status}: {error}");
    let (status, error) = call(&server, reqwest::Method::DELETE, "/api/rate-limits/nobody", None).await;
    assert_eq!((status, &error["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{error}");
    let (status, error) =
        call(&server, put, "/api/queues/q", Some(json!({ "rate_limit": { "max": 5, "per_ms": 0 } }))).await;
    assert_eq!(status.as_u16(), 422, "{error}");

    // The prefix rule shows through a concrete key, and DELETE removes it.
    let (status, _) = call(
        &server,
        reqwest::Method::PUT,
        "/api/rate-limits/tenant%3A*",
        Some(json!({ "rate_limit": { "max": 10, "per_ms": 60000 } })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, state) = call(&server, reqwest::Method::GET, "/api/rate-limits/tenant:acme", None).await;
    assert_eq!(state["rule"]["key"], "tenant:*", "{state}");
    let (_, list) = call(&server, reqwest::Method::GET, "/api/rate-limits", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (status, _) = call(&server, reqwest::Method::DELETE, "/api/rate-limits/tenant:*", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn rate_limits_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let drover = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        command.args(args).args(["--server", &server.base, "--json"]);
        command.env_remove("DROVER_CONCURRENCY").env_remove("DROVER_RATE_LIMIT");
        let out = command.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let rule = drover(&["rate-limits", "set", "places", "--concurrency", "4"]);
    assert_eq!(rule, json!({ "key": "places", "concurrency": 4, "rate_limit": null }));
    // Settings not named keep their value.
    let rule = drover(&["rate-limits", "set", "places", "--rate-limit", "10/60000"]);
    assert_eq!(rule, json!({ "key": "places", "concurrency": 4, "rate_limit": { "max": 10, "per_ms": 60000 } }));
    let list = drover(&["rate-limits", "list"]);
    assert_eq!(list["items"][0]["key"], "places");
    let state = drover(&["rate-limits", "show", "places"]);
    assert_eq!((&state["active"], &state["rule"]["concurrency"]), (&json!(0), &json!(4)), "{state}");
    drover(&["rate-limits", "remove", "places"]);
    assert!(drover(&["rate-limits", "list"])["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn flows_and_batches_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let drover = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        command.args(args).args(["--server", &server.base, "--json"]);
        command.env_remove("DROVER_FILE").env_remove("DROVER_ON_COMPLETE");
        command.output().unwrap()
    };
    let json_of = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };

    let flow = dir.path().join("flow.json");
    std::fs::write(
        &flow,
        json!({ "id": "report", "queue": "q", "name": "finalize",
                "children": [{ "queue": "q", "name": "fetch" }, { "queue": "q", "name": "fetch" }] })
        .to_string(),
    )
    .unwrap();
    let created = json_of(drover(&["flows", "create", "--file", flow.to_str().unwrap()]));
    let items = created["items"].as_array().unwrap();
    assert_eq!((items.len(), &items[0]["state"]), (3, &json!("waiting-children")), "{created}");
    let children = json_of(drover(&["jobs", "children", "report"]));
    assert_eq!(children["items"].as_array().unwrap().len(), 2, "{children}");
    let listed = json_of(drover(&["jobs", "list", "--parent-id", "report"]));
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");

    let jobs = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs, "{\"queue\": \"b\", \"name\": \"n\"}\n\n{\"queue\": \"b\", \"name\": \"n\"}\n").unwrap();
    let on_complete = json!({ "queue": "b", "name": "done" }).to_string();
    let batch =
        json_of(drover(&["batches", "create", "--file", jobs.to_str().unwrap(), "--on-complete", &on_complete]));
    assert_eq!(batch["total"], 2, "{batch}");
    let id = batch["id"].as_str().unwrap().to_owned();
    let shown = json_of(drover(&["batches", "show", &id]));
    assert_eq!((&shown["waiting"], &shown["completed"], &shown["state"]), (&json!(2), &json!(0), &json!("running")));
    let listed = json_of(drover(&["jobs", "list", "--batch-id", &id]));
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");

    // A bad line is named by the server with its index; a missing batch is 404.
    std::fs::write(&jobs, "{\"queue\": \"b\", \"name\": \"n\", \"attempts\": 0}\n").unwrap();
    let bad = drover(&["batches", "create", "--file", jobs.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("jobs[0].attempts"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = drover(&["batches", "show", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not_found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

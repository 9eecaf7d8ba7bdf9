//! End-to-end: the real `drover serve` binary, the jobs and queues API, and
//! every kind of bad input answered with the error body and a 4xx.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, http};

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    (server, dir)
}

async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = http().post(server.url(path)).json(&body).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    let resp = http().get(server.url(path)).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// Asserts the spec's error body with `code`.
fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}

#[tokio::test]
async fn health_and_readiness() {
    let (server, _dir) = server().await;
    assert_eq!(get(&server, "/healthz").await, (StatusCode::OK, json!({ "status": "ok" })));
    assert_eq!(get(&server, "/readyz").await, (StatusCode::OK, json!({ "status": "ready" })));
}

#[tokio::test]
async fn create_get_and_idempotent_create() {
    let (server, _dir) = server().await;
    let (status, job) = post(&server, "/api/jobs", json!({ "queue": "mail", "name": "send" })).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["attempts_made"], 0);
    assert_eq!(job["max_attempts"], 3);
    assert_eq!(job["duplicate"], false);
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'), "RFC 3339 in UTC: {job}");

    let spec = json!({ "id": "order-7", "queue": "mail", "name": "send", "payload": { "n": 1 } });
    let (status, first) = post(&server, "/api/jobs", spec).await;
    assert_eq!(status, StatusCode::CREATED);
    let again = json!({ "id": "order-7", "queue": "mail", "name": "send", "payload": { "n": 2 } });
    let (status, second) = post(&server, "/api/jobs", again).await;
    assert_eq!(status, StatusCode::OK, "a duplicate is 200");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["payload"], json!({ "n": 1 }), "the first job is kept unchanged");
    assert_eq!(second["created_at"], first["created_at"]);

    let (status, shown) = get(&server, "/api/jobs/order-7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["attempts"], json!([]));
    let (status, body) = get(&server, "/api/jobs/nope").await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn delayed_jobs_and_run_at() {
    let (server, _dir) = server().await;
    let (_, job) = post(&server, "/api/jobs", json!({ "queue": "q", "name": "n", "delay_ms": 60000 })).await;
    assert_eq!(job["state"], "delayed");
    let (_, job) =
        post(&server, "/api/jobs", json!({ "queue": "q", "name": "n", "run_at": "2099-01-01T00:00:00Z" })).await;
    assert_eq!(job["state"], "delayed");
    assert_eq!(job["run_at"], "2099-01-01T00:00:00Z");
}

#[tokio::test]
async fn list_filters_and_pages() {
    let (server, _dir) = server().await;
    let jobs: Vec<Value> = (0..120).map(|i| json!({ "id": format!("j{i:03}"), "queue": "a", "name": "n" })).collect();
    let (status, body) = post(&server, "/api/jobs/bulk", json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 120);
    post(&server, "/api/jobs", json!({ "queue": "b", "name": "other" })).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/jobs?queue=a&limit=50&cursor={c}"),
            None => "/api/jobs?queue=a&limit=50".to_owned(),
        };
        let (status, page) = get(&server, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["queue"], "a");
            assert!(item.get("attempts").is_none(), "lists carry no history");
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..120).rev().map(|i| format!("j{i:03}")).collect();
    assert_eq!(seen, expected, "newest first, each once");

    let (_, page) = get(&server, "/api/jobs?name=other").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, page) = get(&server, "/api/jobs?state=waiting&queue=b").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    for bad in ["/api/jobs?state=running", "/api/jobs?limit=0", "/api/jobs?limit=1001", "/api/jobs?cursor=xyz"] {
        let (status, body) = get(&server, bad).await;
        assert_error(status, &body, 422, "validation_failed");
    }
    let (status, body) = get(&server, "/api/jobs?limit=ten").await;
    assert_error(status, &body, 400, "invalid_query");
    let (status, body) = get(&server, "/api/jobs?colour=red").await;
    assert_error(status, &body, 400, "invalid_query");
}

#[tokio::test]
async fn bulk_create_is_all_or_nothing() {
    let (server, _dir) = server().await;
    let body = json!({ "jobs": [
        { "id": "ok-1", "queue": "q", "name": "n" },
        { "id": "bad-1", "queue": "no spaces", "name": "n" },
    ]});
    let (status, err) = post(&server, "/api/jobs/bulk", body).await;
    assert_error(status, &err, 422, "validation_failed");
    assert_eq!(err["error"]["details"]["field"], "jobs[1].queue");
    let (status, _) = get(&server, "/api/jobs/ok-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was inserted");
    let (status, err) = post(&server, "/api/jobs/bulk", json!({ "jobs": [] })).await;
    assert_error(status, &err, 422, "validation_failed");
}

#[tokio::test]
async fn every_bad_input_gets_the_error_body() {
    let (server, _dir) = server().await;
    let client = http();
    let raw = |body: &'static str| {
        client.post(server.url("/api/jobs")).header("content-type", "application/json").body(body).send()
    };
    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        ("malformed JSON", raw("{\"queue\": ").await.unwrap(), 400, "invalid_json"),
        ("unknown field", raw(r#"{"queue":"q","name":"n","prio":1}"#).await.unwrap(), 422, "invalid_body"),
        ("wrong type", raw(r#"{"queue":"q","name":"n","priority":"high"}"#).await.unwrap(), 422, "invalid_body"),
        ("missing name", raw(r#"{"queue":"q"}"#).await.unwrap(), 422, "invalid_body"),
        ("out of range", raw(r#"{"queue":"q","name":"n","priority":99999999999}"#).await.unwrap(), 422, "invalid_body"),
        ("zero attempts", raw(r#"{"queue":"q","name":"n","attempts":0}"#).await.unwrap(), 422, "validation_failed"),
        ("negative delay", raw(r#"{"queue":"q","name":"n","delay_ms":-5}"#).await.unwrap(), 422, "invalid_body"),
        ("bad run_at", raw(r#"{"queue":"q","name":"n","run_at":"tomorrow"}"#).await.unwrap(), 422, "validation_failed"),
        (
            "delay and run_at",
            raw(r#"{"queue":"q","name":"n","delay_ms":5,"run_at":"2099-01-01T00:00:00Z"}"#).await.unwrap(),
            422,
            "validation_failed",
        ),
        ("bad id", raw("{\"queue\":\"q\",\"name\":\"n\",\"id\":\"\"}").await.unwrap(), 422, "validation_failed"),
        (
            "bad backoff",
            raw(r#"{"queue":"q","name":"n","backoff":{"type":"linear","delay_ms":1}}"#).await.unwrap(),
            422,
            "invalid_body",
        ),
        (
            "jitter out of range",
            raw(r#"{"queue":"q","name":"n","backoff":{"type":"fixed","delay_ms":1,"jitter":3}}"#).await.unwrap(),
            422,
            "validation_failed",
        ),
        (
            "no content type",
            client.post(server.url("/api/jobs")).body(r#"{"queue":"q","name":"n"}"#).send().await.unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            "too large",
            client
                .post(server.url("/api/jobs"))
                .json(&json!({ "queue": "q", "name": "n", "payload": "x".repeat(1_100_000) }))
                .send()
                .await
                .unwrap(),
            413,
            "payload_too_large",
        ),
        ("unknown route", client.get(server.url("/api/nothing")).send().await.unwrap(), 404, "route_not_found"),
        ("wrong method", client.put(server.url("/api/jobs")).send().await.unwrap(), 405, "method_not_allowed"),
    ];
    for (what, resp, status, code) in cases {
        let got = resp.status();
        let body: Value = resp.json().await.unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        assert_eq!(got.as_u16(), status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // Nothing was created by any of them.
    let (_, page) = get(&server, "/api/jobs").await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn cancel_and_retry() {
    let (server, _dir) = server().await;
    post(&server, "/api/jobs", json!({ "id": "c1", "queue": "q", "name": "n" })).await;
    let resp = http().delete(server.url("/api/jobs/c1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["state"], "cancelled");
    let resp = http().delete(server.url("/api/jobs/c1")).send().await.unwrap();
    let status = resp.status();
    assert_error(status, &resp.json().await.unwrap(), 409, "invalid_state");

    let (status, job) = post(&server, "/api/jobs/c1/retry", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "waiting");
    let (status, body) = post(&server, "/api/jobs/c1/retry", json!({})).await;
    assert_error(status, &body, 409, "invalid_state");
    let (status, body) = post(&server, "/api/jobs/ghost/retry", json!({})).await;
    assert_error(status, &body, 404, "not_found");
    let resp = http().delete(server.url("/api/jobs/ghost")).send().await.unwrap();
    let status = resp.status();
    assert_error(status, &resp.json().await.unwrap(), 404, "not_found");
}

#[tokio::test]
async fn children_and_logs() {
    let (server, _dir) = server().await;
    post(&server, "/api/jobs", json!({ "id": "parent", "queue": "q", "name": "p" })).await;
    post(&server, "/api/jobs", json!({ "id": "kid", "queue": "q", "name": "c", "parent_id": "parent" })).await;
    let (status, page) = get(&server, "/api/jobs/parent/children").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], "kid");
    let (status, body) = get(&server, "/api/jobs/ghost/children").await;
    assert_error(status, &body, 404, "not_found");
    let (status, page) = get(&server, "/api/jobs/kid/logs").await;
    assert_eq!((status, page["items"].clone()), (StatusCode::OK, json!([])));
    let (status, body) = get(&server, "/api/jobs/ghost/logs").await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn queues_counts_config_pause_resume() {
    let (server, _dir) = server().await;
    post(&server, "/api/jobs", json!({ "queue": "emails", "name": "n" })).await;
    post(&server, "/api/jobs", json!({ "queue": "emails", "name": "n", "delay_ms": 60000 })).await;
    let (status, page) = get(&server, "/api/queues").await;
    assert_eq!(status, StatusCode::OK);
    let emails = page["items"].as_array().unwrap().iter().find(|q| q["name"] == "emails").unwrap().clone();
    assert_eq!(emails["counts"]["waiting"], 1);
    assert_eq!(emails["counts"]["delayed"], 1);
    assert_eq!(emails["counts"]["waiting-children"], 0);
    assert_eq!(emails["paused"], false);

    let config = json!({ "concurrency": 10, "rate_limit": { "max": 10, "per_ms": 60000 },
        "default_job_options": { "attempts": 5 }, "retention": { "completed": { "count": 100, "age_ms": 86400000 } } });
    let resp = http().put(server.url("/api/queues/emails")).json(&config).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let queue: Value = resp.json().await.unwrap();
    assert_eq!(queue["concurrency"], 10);
    assert_eq!(queue["rate_limit"], json!({ "max": 10, "per_ms": 60000 }));
    assert_eq!(queue["retention"]["completed"]["count"], 100);

    for (bad, code) in [
        (json!({ "concurrency": 0 }), "validation_failed"),
        (json!({ "rate_limit": { "max": 0, "per_ms": 1000 } }), "validation_failed"),
        (json!({ "default_job_options": { "colour": "red" } }), "validation_failed"),
        (json!({ "default_job_options": { "attempts": 0 } }), "validation_failed"),
        (json!({ "concurency": 3 }), "invalid_body"),
    ] {
        let resp = http().put(server.url("/api/queues/emails")).json(&bad).send().await.unwrap();
        let status = resp.status();
        assert_error(status, &resp.json().await.unwrap(), 422, code);
    }

    let (status, queue) = post(&server, "/api/queues/emails/pause", json!({})).await;
    assert_eq!((status, queue["paused"].clone()), (StatusCode::OK, json!(true)));
    let (_, queue) = post(&server, "/api/queues/emails/resume", json!({})).await;
    assert_eq!(queue["paused"], false);
    let (status, body) = post(&server, "/api/queues/emails/retry-failed", json!({})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "retried": 0 })));
    let (status, body) = post(&server, "/api/queues/bad%20name/pause", json!({})).await;
    assert_error(status, &body, 422, "validation_failed");
}

#[tokio::test]
async fn jobs_survive_kill_9_and_sigterm_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db");
    let server = Server::start(&db).await;
    let jobs: Vec<Value> = (0..1000).map(|i| json!({ "id": format!("k{i}"), "queue": "q", "name": "n" })).collect();
    let (status, _) = post(&server, "/api/jobs/bulk", json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::CREATED);
    server.kill().await;

    let server = Server::start(&db).await;
    let (_, page) = get(&server, "/api/queues").await;
    assert_eq!(page["items"][0]["counts"]["waiting"], 1000, "every accepted job survived kill -9");
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM ends the server cleanly: {status:?}");
}

#[tokio::test]
async fn without_api_keys_serve_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "--listen", "0.0.0.0:0", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("x.db").display()))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback only"), "{stderr}");
}

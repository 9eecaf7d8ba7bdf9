//! End-to-end: the HTTP worker protocol on the real `drover serve` binary —
//! long-poll fetch, heartbeats, progress, logs, events, complete, fail,
//! batch ack, lease fencing and expiry, and bad inputs answered with the
//! error body.

#[path = "support/protocol.rs"]
mod protocol;
mod support;

use protocol::{assert_error, enqueue, fetch, fetch_one, get, millis, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, http};

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    (server, dir)
}

fn report(job: &Value, route: &str) -> String {
    format!("/api/jobs/{}/{route}", job["id"].as_str().unwrap())
}

#[tokio::test]
async fn fetch_returns_at_once_when_a_job_is_enqueued_while_it_waits() {
    let (server, _dir) = server().await;
    let started = Instant::now();
    let body = json!({ "worker_id": "w1", "queues": ["wake"], "max": 5, "wait_ms": 20000 });
    let call = tokio::spawn(http().post(server.url("/api/workers/fetch")).json(&body).send());
    // Gives the fetch time to reach its wait, so the enqueue wakes a waiting
    // poll; the assertions hold whichever comes first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id =
        enqueue(&server, json!({ "queue": "wake", "name": "ping", "payload": { "n": 1 }, "timeout_ms": 9000 })).await;
    let resp = call.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    assert!(elapsed < Duration::from_secs(5), "the enqueue woke the fetch ({elapsed:?})");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{answer}");
    let item = &items[0];
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["queue"], "wake");
    assert_eq!(item["name"], "ping");
    assert_eq!(item["payload"], json!({ "n": 1 }));
    assert_eq!(item["attempt"], 1);
    assert_eq!(item["timeout_ms"], 9000);
    assert!(item["lease_token"].as_str().is_some_and(|t| !t.is_empty()), "{item}");
    assert!(item["lease_expires_at"].as_str().unwrap().ends_with('Z'), "{item}");
    let (_, job) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["state"], "active");
    assert_eq!(job["worker_id"], "w1");
}

#[tokio::test]
async fn fetch_returns_when_a_delayed_job_comes_due() {
    let (server, _dir) = server().await;
    let id = enqueue(&server, json!({ "queue": "later", "name": "n", "delay_ms": 1500 })).await;
    let started = Instant::now();
    let items = fetch(&server, "later", 1, 20_000, 30_000).await;
    let elapsed = started.elapsed();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert!(elapsed >= Duration::from_millis(1000), "not before it was due ({elapsed:?})");
    assert!(elapsed < Duration::from_secs(10), "soon after it was due ({elapsed:?})");
}

#[tokio::test]
async fn fetch_answers_empty_items_after_wait_ms() {
    let (server, _dir) = server().await;
    let started = Instant::now();
    let items = fetch(&server, "empty", 10, 400, 30_000).await;
    assert!(items.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(fetch(&server, "empty", 10, 0, 30_000).await.is_empty(), "wait_ms 0 answers at once");
}

#[tokio::test]
async fn heartbeat_extends_by_the_fetched_lease_and_reports_cancel() {
    let (server, _dir) = server().await;
    enqueue(&server, json!({ "queue": "hb", "name": "n" })).await;
    let job = fetch(&server, "hb", 1, 5_000, 5_000).await.remove(0);
    let token = job["lease_token"].clone();
    let first = millis(&job["lease_expires_at"]);

    let (status, beat) = post(&server, &report(&job, "heartbeat"), json!({ "lease_token": token })).await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    assert_eq!(beat["cancel_requested"], false);
    let extended = millis(&beat["lease_expires_at"]);
    assert!(extended >= first, "{extended} >= {first}");
    assert!(extended - first < 10_000, "extended by the 5 s lease of the fetch, not the 30 s default");

    let (status, beat) =
        post(&server, &report(&job, "heartbeat"), json!({ "lease_token": token, "progress": 40 })).await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    let (_, shown) = get(&server, &format!("/api/jobs/{}", job["id"].as_str().unwrap())).await;
    assert_eq!(shown["progress"], 40.0);

    let resp = http().delete(server.url(&format!("/api/jobs/{}", job["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, beat) = post(&server, &report(&job, "heartbeat"), json!({ "lease_token": token })).await;
    assert_eq!(beat["cancel_requested"], true, "{beat}");
    let (status, done) =
        post(&server, &report(&job, "complete"), json!({ "lease_token": token, "result": null })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "cancelled");
}

#[tokio::test]
async fn progress_logs_events_and_complete() {
    let (server, _dir) = server().await;
    let id = enqueue(&server, json!({ "queue": "work", "name": "n" })).await;
    let job = fetch_one(&server, "work").await;
    let token = job["lease_token"].clone();

    let (status, body) =
        post(&server, &report(&job, "progress"), json!({ "lease_token": token, "progress": 50 })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detailed = json!({ "total": 10, "processed": 4, "failed": 1, "message": "rows" });
    let (status, body) =
        post(&server, &report(&job, "progress"), json!({ "lease_token": token, "progress": detailed })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, shown) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(shown["progress"], detailed);

    let line = json!({ "lease_token": token, "level": "warn", "message": "slow API", "metadata": { "ms": 900 } });
    let (status, body) = post(&server, &report(&job, "logs"), line).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        post(&server, &report(&job, "logs"), json!({ "lease_token": token, "message": "plain" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, logs) = get(&server, &format!("/api/jobs/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK, "the GET of the same path still works: {logs}");
    let lines = logs["items"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{logs}");
    assert_eq!(lines[0]["level"], "warn");
    assert_eq!(lines[0]["metadata"], json!({ "ms": 900 }));
    assert_eq!(lines[1]["level"], "info", "info is the default level");

    let event = json!({ "lease_token": token, "type": "lead:add", "data": { "lead": 7 } });
    let (status, body) = post(&server, &report(&job, "events"), event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reserved = json!({ "lease_token": token, "type": "job:completed", "data": {} });
    let (status, body) = post(&server, &report(&job, "events"), reserved).await;
    assert_error(status, &body, 422, "validation_failed");

    let (status, done) =
        post(&server, &report(&job, "complete"), json!({ "lease_token": token, "result": { "ok": 1 } })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "completed");
    let (_, shown) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["result"], json!({ "ok": 1 }));
    // The attempt is over: its lease is refused from now on.
    let (status, body) = post(&server, &report(&job, "heartbeat"), json!({ "lease_token": token })).await;
    assert_error(status, &body, 409, "lease_lost");
}

#[tokio::test]
async fn retryable_failure_delays_then_the_job_is_fetched_again() {
    let (server, _dir) = server().await;
    let spec = json!({ "queue": "flaky", "name": "n", "attempts": 2, "backoff": { "type": "fixed", "delay_ms": 300 } });
    let id = enqueue(&server, spec).await;
    let job = fetch_one(&server, "flaky").await;
    let failure = json!({ "lease_token": job["lease_token"], "error": { "message": "503 upstream", "details": { "status": 503 } } });
    let (status, body) = post(&server, &report(&job, "fail"), failure).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "delayed");
    assert!(body["run_at"].as_str().unwrap().ends_with('Z'));

    let again = fetch_one(&server, "flaky").await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["attempt"], 2);
    assert_ne!(again["lease_token"], job["lease_token"], "each claim mints a new token");
    let failure =
        json!({ "lease_token": again["lease_token"], "error": { "message": "still down" }, "retryable": true });
    let (_, body) = post(&server, &report(&again, "fail"), failure).await;
    assert_eq!(body["state"], "failed", "attempts exhausted: {body}");
    let (_, shown) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(shown["error"]["message"], "still down");
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn non_retryable_failure_fails_at_once() {
    let (server, _dir) = server().await;
    let id = enqueue(&server, json!({ "queue": "fatal", "name": "n", "attempts": 5 })).await;
    let job = fetch_one(&server, "fatal").await;
    let failure =
        json!({ "lease_token": job["lease_token"], "error": { "message": "bad payload" }, "retryable": false });
    let (_, body) = post(&server, &report(&job, "fail"), failure).await;
    assert_eq!(body["state"], "failed", "{body}");
    let (_, shown) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(shown["attempts_made"], 1);
}

#[tokio::test]
async fn rate_limited_failure_hands_the_attempt_back() {
    let (server, _dir) = server().await;
    let id = enqueue(&server, json!({ "queue": "limited", "name": "n", "attempts": 1 })).await;
    let job = fetch_one(&server, "limited").await;
    let failure = json!({ "lease_token": job["lease_token"], "error": { "message": "429" }, "rate_limited": true, "retry_after_ms": 300 });
    let (status, body) = post(&server, &report(&job, "fail"), failure).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "delayed", "a deferral, even on the last attempt: {body}");
    let (_, shown) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(shown["attempts_made"], 0, "the attempt was handed back: {shown}");
    let again = fetch_one(&server, "limited").await;
    assert_eq!(again["id"], id.as_str());
    let (_, body) =
        post(&server, &report(&again, "complete"), json!({ "lease_token": again["lease_token"], "result": 1 })).await;
    assert_eq!(body["state"], "completed");
}

#[tokio::test]
async fn ack_finishes_a_batch_with_per_item_answers() {
    let (server, _dir) = server().await;
    for n in 0..4 {
        enqueue(&server, json!({ "queue": "batch", "name": "n", "id": format!("b{n}"), "attempts": 1 })).await;
    }
    let mut jobs = fetch(&server, "batch", 10, 5_000, 30_000).await;
    assert_eq!(jobs.len(), 4);
    jobs.sort_by_key(|j| j["id"].as_str().unwrap().to_owned());
    let ack = json!({ "items": [
        { "id": "b0", "lease_token": jobs[0]["lease_token"], "result": { "n": 0 } },
        { "id": "b1", "lease_token": jobs[1]["lease_token"], "error": { "message": "nope" }, "retryable": false },
        { "id": "b2", "lease_token": jobs[3]["lease_token"], "result": null },
        { "id": "ghost", "lease_token": "1f", "result": 1 },
        { "id": "b3", "lease_token": jobs[3]["lease_token"], "result": null },
    ]});
    let (status, body) = post(&server, "/api/workers/ack", ack).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0], json!({ "id": "b0", "ok": true, "state": "completed", "run_at": null }));
    assert_eq!(items[1]["state"], "failed");
    assert_eq!(items[2]["ok"], false);
    assert_eq!(items[2]["error"]["code"], "lease_lost", "b2 under b3's token: {body}");
    assert_eq!(items[3]["error"]["code"], "not_found");
    assert_eq!(items[4]["ok"], true);
    let (_, b2) = get(&server, "/api/jobs/b2").await;
    assert_eq!(b2["state"], "active", "a refused item changes nothing");
    let (_, b0) = get(&server, "/api/jobs/b0").await;
    assert_eq!(b0["result"], json!({ "n": 0 }));
    let retry = json!({ "items": [{ "id": "b2", "lease_token": jobs[2]["lease_token"], "result": "late" }] });
    let (_, body) = post(&server, "/api/workers/ack", retry).await;
    assert_eq!(body["items"][0]["state"], "completed", "{body}");
}

#[tokio::test]
async fn a_wrong_lease_is_refused_on_every_route_and_unknown_jobs_are_404() {
    let (server, _dir) = server().await;
    enqueue(&server, json!({ "queue": "fence", "name": "n" })).await;
    let job = fetch_one(&server, "fence").await;
    let calls: [(&str, Value); 6] = [
        ("heartbeat", json!({})),
        ("progress", json!({ "progress": 5 })),
        ("logs", json!({ "message": "x" })),
        ("events", json!({ "type": "lead:add", "data": {} })),
        ("complete", json!({ "result": 1 })),
        ("fail", json!({ "error": { "message": "x" } })),
    ];
    // A token no claim minted, and a string that is no token at all.
    for token in ["1234abcd", "not-a-token"] {
        for (route, extra) in &calls {
            let mut body = extra.clone();
            body["lease_token"] = json!(token);
            let (status, answer) = post(&server, &report(&job, route), body.clone()).await;
            assert_error(status, &answer, 409, "lease_lost");
            let (status, answer) = post(&server, &format!("/api/jobs/ghost/{route}"), body).await;
            assert_error(status, &answer, 404, "not_found");
        }
    }
    let (_, shown) = get(&server, &format!("/api/jobs/{}", job["id"].as_str().unwrap())).await;
    assert_eq!(shown["state"], "active", "nothing a wrong lease sent changed the job");
}

#[tokio::test]
async fn a_vanished_workers_job_comes_back_and_its_old_lease_is_refused() {
    let (server, _dir) = server().await;
    let id = enqueue(&server, json!({ "queue": "stall", "name": "n" })).await;
    let first = fetch(&server, "stall", 1, 5_000, 1_000).await.remove(0);
    // No heartbeat: the lease runs out and maintenance re-queues the job,
    // which wakes this fetch.
    let second = fetch(&server, "stall", 1, 20_000, 30_000).await.remove(0);
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["attempt"], 1, "a stall hands its attempt back (ADR 0001)");
    assert_ne!(second["lease_token"], first["lease_token"]);
    let (status, body) =
        post(&server, &report(&first, "heartbeat"), json!({ "lease_token": first["lease_token"] })).await;
    assert_error(status, &body, 409, "lease_lost");
    let (status, body) =
        post(&server, &report(&first, "complete"), json!({ "lease_token": first["lease_token"], "result": 1 })).await;
    assert_error(status, &body, 409, "lease_lost");
    let (status, body) =
        post(&server, &report(&second, "complete"), json!({ "lease_token": second["lease_token"], "result": 2 })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, shown) = get(&server, &format!("/api/jobs/{id}")).await;
    assert_eq!(shown["result"], 2);
    assert_eq!(shown["stalls"], 1);
}

#[tokio::test]
async fn bad_inputs_get_the_error_body_never_a_500() {
    let (server, _dir) = server().await;
    let fetch_cases = [
        (json!({ "worker_id": "w", "queues": ["q"], "max": 0 }), 422, "validation_failed"),
        (json!({ "worker_id": "w", "queues": ["q"], "max": 1001 }), 422, "validation_failed"),
        (json!({ "worker_id": "w", "queues": ["q"], "wait_ms": 60001 }), 422, "validation_failed"),
        (json!({ "worker_id": "w", "queues": ["q"], "lease_ms": 999 }), 422, "validation_failed"),
        (json!({ "worker_id": "w", "queues": [] }), 422, "validation_failed"),
        (json!({ "worker_id": "", "queues": ["q"] }), 422, "validation_failed"),
        (json!({ "worker_id": "w", "queues": ["q"], "colour": 1 }), 422, "invalid_body"),
        (json!({ "queues": ["q"] }), 422, "invalid_body"),
        (json!({ "worker_id": "w", "queues": "q" }), 422, "invalid_body"),
    ];
    for (body, status, code) in fetch_cases {
        let (got, answer) = post(&server, "/api/workers/fetch", body.clone()).await;
        assert_error(got, &answer, status, code);
    }
    let resp = http()
        .post(server.url("/api/workers/fetch"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_error(status, &resp.json().await.unwrap(), 400, "invalid_json");

    let ack_cases = [
        json!({ "items": [] }),
        json!({ "items": [{ "id": "a", "lease_token": "1" }] }),
        json!({ "items": [{ "id": "a", "lease_token": "1", "result": 1, "error": { "message": "x" } }] }),
        json!({ "items": [{ "id": "a", "lease_token": "1", "result": 1, "retryable": false }] }),
        json!({ "items": [{ "id": "a", "lease_token": "1", "error": { "message": "x" }, "retry_after_ms": 99_999_999_999u64 }] }),
    ];
    for body in ack_cases {
        let (got, answer) = post(&server, "/api/workers/ack", body).await;
        assert_error(got, &answer, 422, "validation_failed");
    }
    let (got, answer) = post(&server, "/api/workers/ack", json!({ "items": [{ "id": "a" }] })).await;
    assert_error(got, &answer, 422, "invalid_body");

    enqueue(&server, json!({ "queue": "bad", "name": "n" })).await;
    let job = fetch_one(&server, "bad").await;
    let token = job["lease_token"].clone();
    let job_cases = [
        ("progress", json!({ "lease_token": token, "progress": 150 }), "validation_failed"),
        ("progress", json!({ "lease_token": token, "progress": "half" }), "invalid_body"),
        ("heartbeat", json!({ "lease_token": token, "progress": -1 }), "validation_failed"),
        ("logs", json!({ "lease_token": token, "level": "loud", "message": "x" }), "validation_failed"),
        ("events", json!({ "lease_token": token, "type": "nocolon" }), "validation_failed"),
        ("fail", json!({ "lease_token": token, "error": "boom" }), "invalid_body"),
        ("complete", json!({ "lease_token": 5, "result": 1 }), "invalid_body"),
    ];
    for (route, body, code) in job_cases {
        let (got, answer) = post(&server, &report(&job, route), body).await;
        assert_error(got, &answer, 422, code);
    }
    let (_, shown) = get(&server, &format!("/api/jobs/{}", job["id"].as_str().unwrap())).await;
    assert_eq!(shown["state"], "active");
}

#[tokio::test]
async fn concurrent_long_polls_share_a_burst_without_handing_a_job_out_twice() {
    let (server, _dir) = server().await;
    let polls: Vec<_> = (0..20)
        .map(|w| {
            let body = json!({ "worker_id": format!("w{w}"), "queues": ["burst"], "max": 5, "wait_ms": 3000 });
            tokio::spawn(http().post(server.url("/api/workers/fetch")).json(&body).send())
        })
        .collect();
    let jobs: Vec<Value> = (0..60).map(|n| json!({ "queue": "burst", "name": "n", "id": format!("j{n}") })).collect();
    let (status, body) = post(&server, "/api/jobs/bulk", json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // 20 polls could take 100 jobs: the ones left without work answer
    // empty at their deadline.
    let mut seen = Vec::new();
    for poll in polls {
        let answer: Value = poll.await.unwrap().unwrap().json().await.unwrap();
        seen.extend(answer["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
    }
    // Whatever the first wave left is still there for the next fetch.
    loop {
        let rest = fetch(&server, "burst", 100, 0, 30_000).await;
        if rest.is_empty() {
            break;
        }
        seen.extend(rest.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "no job was handed out twice");
    assert_eq!(total, 60, "every job was handed out");
}

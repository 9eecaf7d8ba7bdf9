//! End-to-end: live events from the real `drover serve` binary — SSE with
//! ids, filters and `Last-Event-ID` resume, custom events from the worker
//! protocol, the WebSocket, and streams that end on shutdown.

#[path = "support/protocol.rs"]
mod protocol;
mod support;

use futures::{SinkExt, StreamExt};
use protocol::{Frame, SseReader, assert_error, enqueue, fetch, fetch_one, get, post};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, http};
use tokio_tungstenite::tungstenite::Message;

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    (server, dir)
}

const WAIT: Duration = Duration::from_secs(10);

fn is_waiting_of(id: &str) -> impl Fn(&Frame) -> bool + '_ {
    move |f| f.event == "job:waiting" && f.data["job_id"] == id
}

#[tokio::test]
async fn sse_events_carry_ids_types_and_json_and_filters_apply() {
    let (server, _dir) = server().await;
    let mut all = SseReader::open(&server, "/api/events", None).await;
    let mut only_a = SseReader::open(&server, "/api/events?queue=a", None).await;
    let b = enqueue(&server, json!({ "queue": "b", "name": "n", "batch_id": "batch-9" })).await;
    let a = enqueue(&server, json!({ "queue": "a", "name": "n" })).await;

    let first = all.next_within(WAIT).await.unwrap();
    assert_eq!(first.event, "job:waiting");
    assert_eq!(first.data["type"], "job:waiting");
    assert_eq!(first.data["job_id"], b.as_str());
    assert_eq!(first.data["queue"], "b");
    assert_eq!(first.data["batch_id"], "batch-9");
    assert!(first.data["at"].as_str().unwrap().ends_with('Z'), "{:?}", first.data);
    assert!(first.data.get("data").is_some());
    let second = all.next_within(WAIT).await.unwrap();
    assert_eq!(second.data["job_id"], a.as_str());
    assert!(second.data.get("batch_id").is_none(), "batch_id only when set: {:?}", second.data);
    assert!(second.id.unwrap() > first.id.unwrap(), "ids increase");
    assert_eq!(second.data["id"], second.id.unwrap());

    let filtered = only_a.next_within(WAIT).await.unwrap();
    assert_eq!(filtered.data["job_id"], a.as_str(), "the queue filter dropped b's event");
    assert_eq!(filtered.id, second.id);

    let mut by_job = SseReader::open(&server, &format!("/api/events?job_id={a}"), None).await;
    let mut by_batch = SseReader::open(&server, "/api/events?batch_id=batch-9", None).await;
    let job = fetch_one(&server, "a").await;
    let active = by_job.next_within(WAIT).await.unwrap();
    assert_eq!((active.event.as_str(), &active.data["job_id"]), ("job:active", &json!(a)));
    let (_, _) = post(
        &server,
        &format!("/api/jobs/{a}/complete"),
        json!({ "lease_token": job["lease_token"], "result": { "done": true } }),
    )
    .await;
    let completed = by_job.until(|f| f.event == "job:completed").await;
    assert_eq!(completed.data["job_id"], a.as_str());
    let batch_job = fetch_one(&server, "b").await;
    let active_b = by_batch.next_within(WAIT).await.unwrap();
    assert_eq!(active_b.data["job_id"], batch_job["id"], "the batch filter passes b's events only");
}

#[tokio::test]
async fn last_event_id_resume_gets_exactly_the_missed_events() {
    let (server, _dir) = server().await;
    let mut stream = SseReader::open(&server, "/api/events?queue=r", None).await;
    let first = enqueue(&server, json!({ "queue": "r", "name": "n", "id": "r1" })).await;
    let seen = stream.until(is_waiting_of(&first)).await;
    drop(stream);

    // Missed while disconnected: two jobs of this queue and one of another.
    enqueue(&server, json!({ "queue": "r", "name": "n", "id": "r2" })).await;
    enqueue(&server, json!({ "queue": "other", "name": "n", "id": "o1" })).await;
    enqueue(&server, json!({ "queue": "r", "name": "n", "id": "r3" })).await;

    let last = seen.id.unwrap().to_string();
    let mut resumed = SseReader::open(&server, "/api/events?queue=r", Some(&last)).await;
    let a = resumed.next_within(WAIT).await.unwrap();
    let b = resumed.next_within(WAIT).await.unwrap();
    assert_eq!((a.event.as_str(), &a.data["job_id"]), ("job:waiting", &json!("r2")));
    assert_eq!((b.event.as_str(), &b.data["job_id"]), ("job:waiting", &json!("r3")));
    assert!(a.id.unwrap() > seen.id.unwrap() && b.id.unwrap() > a.id.unwrap());
    // Then live, with nothing repeated.
    enqueue(&server, json!({ "queue": "r", "name": "n", "id": "r4" })).await;
    let c = resumed.next_within(WAIT).await.unwrap();
    assert_eq!(c.data["job_id"], "r4", "no duplicate or gap between buffered and live: {c:?}");

    // The query parameter works for clients that cannot set headers.
    let mut by_query = SseReader::open(&server, &format!("/api/events?queue=r&last_event_id={last}"), None).await;
    assert_eq!(by_query.next_within(WAIT).await.unwrap().data["job_id"], "r2");
}

#[tokio::test]
async fn resume_from_an_unknown_id_starts_with_a_reset() {
    let (server, _dir) = server().await;
    let mut stream = SseReader::open(&server, "/api/events", Some("999999")).await;
    let reset = stream.next_within(WAIT).await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.id, None, "a reset moves no client position");
    assert_eq!(reset.data["type"], "reset");
    assert_eq!(reset.data["requested_after"], 999_999);
    let id = enqueue(&server, json!({ "queue": "z", "name": "n" })).await;
    stream.until(is_waiting_of(&id)).await;

    let resp = http().get(server.url("/api/events")).header("last-event-id", "abc").send().await.unwrap();
    let status = resp.status();
    assert_error(status, &resp.json().await.unwrap(), 400, "invalid_header");
    let (status, body) = get(&server, "/api/events?job_id=").await;
    assert_error(status, &body, 422, "validation_failed");
    let (status, body) = get(&server, "/api/events?colour=red").await;
    assert_error(status, &body, 400, "invalid_query");
}

#[tokio::test]
async fn a_custom_event_from_the_worker_protocol_reaches_sse() {
    let (server, _dir) = server().await;
    let id = enqueue(&server, json!({ "queue": "leads", "name": "scan" })).await;
    let mut stream = SseReader::open(&server, &format!("/api/events?job_id={id}"), None).await;
    let job = fetch_one(&server, "leads").await;
    let event = json!({ "lease_token": job["lease_token"], "type": "lead:add", "data": { "name": "ACME" } });
    let (status, body) = post(&server, &format!("/api/jobs/{id}/events"), event).await;
    assert!(status.is_success(), "{body}");
    let lead = stream.until(|f| f.event == "lead:add").await;
    assert_eq!(lead.data["type"], "lead:add");
    assert_eq!(lead.data["data"], json!({ "name": "ACME" }));
    assert_eq!(lead.data["queue"], "leads");
    assert!(lead.id.is_some());
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON (within 10 s); `None` once closed.
async fn ws_next(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("a WebSocket message in time");
        match message {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

#[tokio::test]
async fn websocket_subscribe_filters_and_bad_messages_get_errors() {
    let (server, _dir) = server().await;
    let url = server.url("/api/ws").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    ws_send(&mut ws, "not json").await;
    let error = ws_next(&mut ws).await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_json", "{error}");
    ws_send(&mut ws, r#"{"subscribe": {"queue": 7}}"#).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["error"]["code"], "invalid_body");
    ws_send(&mut ws, r#"{"hello": {}}"#).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["error"]["code"], "invalid_body");

    ws_send(&mut ws, r#"{"subscribe": {"queue": "w"}}"#).await;
    let ack = ws_next(&mut ws).await.unwrap();
    assert_eq!(ack["subscribed"]["queue"], "w", "{ack}");
    enqueue(&server, json!({ "queue": "elsewhere", "name": "n" })).await;
    let id = enqueue(&server, json!({ "queue": "w", "name": "n" })).await;
    let event = ws_next(&mut ws).await.unwrap();
    assert_eq!(event["type"], "job:waiting", "{event}");
    assert_eq!(event["job_id"], id.as_str(), "the other queue's event was filtered out");
    assert_eq!(event["queue"], "w");
    assert!(event["id"].as_u64().is_some());
    assert!(event["at"].as_str().unwrap().ends_with('Z'));

    // A new subscribe replaces the filter.
    ws_send(&mut ws, &json!({ "subscribe": { "job_id": id } }).to_string()).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["subscribed"]["job_id"], id.as_str());
    enqueue(&server, json!({ "queue": "w", "name": "n" })).await;
    let job = fetch(&server, "w", 1, 5_000, 30_000).await.remove(0);
    let event = ws_next(&mut ws).await.unwrap();
    if job["id"] == id.as_str() {
        assert_eq!((event["type"].as_str(), event["job_id"].as_str()), (Some("job:active"), Some(id.as_str())));
    } else {
        // The other job was claimed first; only this job's events come.
        assert_eq!(event["job_id"], id.as_str(), "{event}");
    }
}

#[tokio::test]
async fn ws_without_an_upgrade_gets_the_error_body() {
    let (server, _dir) = server().await;
    let (status, body) = get(&server, "/api/ws").await;
    assert_error(status, &body, 426, "upgrade_required");
}

#[tokio::test]
async fn streams_and_long_polls_end_on_shutdown() {
    let (server, _dir) = server().await;
    let mut sse = SseReader::open(&server, "/api/events", None).await;
    let url = server.url("/api/ws").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws_send(&mut ws, r#"{"subscribe": {}}"#).await;
    assert!(ws_next(&mut ws).await.unwrap().get("subscribed").is_some());
    let body = json!({ "worker_id": "w", "queues": ["idle"], "wait_ms": 60000 });
    let poll = tokio::spawn(http().post(server.url("/api/workers/fetch")).json(&body).send());
    // Lets the fetch reach its wait; if it has not, it answers the same.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let status = server.terminate().await;
    assert!(status.success(), "graceful shutdown completed: {status:?}");
    assert!(sse.next_within(WAIT).await.is_none(), "the SSE stream ended");
    assert!(ws_next(&mut ws).await.is_none(), "the WebSocket closed");
    let resp = poll.await.unwrap().unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({ "items": [] }), "the long poll answered empty");
}

//! Helpers for the worker-protocol and events end-to-end tests: JSON calls,
//! the error-body check, fetch, and a small Server-Sent Events reader.
//! Loaded with `#[path]` next to `support/mod.rs`, so the shared harness
//! stays untouched.

#![allow(dead_code)]

use crate::support::{Server, http};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// POSTs JSON; the status and the JSON answer.
pub async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = http().post(server.url(path)).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GETs JSON; the status and the JSON answer.
pub async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    let resp = http().get(server.url(path)).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts the spec's error body with `code`.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Enqueues a job; its id.
pub async fn enqueue(server: &Server, spec: Value) -> String {
    let (status, job) = post(server, "/api/jobs", spec).await;
    assert!(status.is_success(), "{job}");
    job["id"].as_str().unwrap().to_owned()
}

/// One fetch call; the items.
pub async fn fetch(server: &Server, queue: &str, max: u32, wait_ms: u64, lease_ms: u64) -> Vec<Value> {
    let body =
        json!({ "worker_id": "test-worker", "queues": [queue], "max": max, "wait_ms": wait_ms, "lease_ms": lease_ms });
    let (status, answer) = post(server, "/api/workers/fetch", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["items"].as_array().unwrap().clone()
}

/// Fetches exactly one job (waiting up to 20 s for it).
pub async fn fetch_one(server: &Server, queue: &str) -> Value {
    let items = fetch(server, queue, 1, 20_000, 30_000).await;
    assert_eq!(items.len(), 1, "expected one job from {queue}: {items:?}");
    items[0].clone()
}

/// An RFC 3339 time as milliseconds since the epoch.
pub fn millis(text: &Value) -> i64 {
    drover_server::dto::parse_rfc3339("time", text.as_str().expect("a time string")).unwrap().0
}

/// One SSE frame.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The `id:` line, if any.
    pub id: Option<u64>,
    /// The `event:` line.
    pub event: String,
    /// The `data:` lines, parsed as JSON.
    pub data: Value,
}

/// Reads frames from an SSE response, skipping keep-alive comments.
pub struct SseReader {
    /// The open response, read chunk by chunk.
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Opens `GET path` with optional `Last-Event-ID`; panics unless 200.
    pub async fn open(server: &Server, path: &str, last_event_id: Option<&str>) -> SseReader {
        // No overall timeout: the stream is long-lived; reads use deadlines.
        let client = reqwest::Client::new();
        let mut req = client.get(server.url(path)).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        SseReader { resp, buf: String::new() }
    }

    /// The next frame, or `None` when the stream ended. Panics after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.next()).await.expect("an SSE frame in time")
    }

    /// The next frame, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                if let Some(frame) = parse_frame(&raw) {
                    return Some(frame);
                }
                continue;
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Frames until one satisfies `want` (within 10 s); that frame.
    pub async fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_within(left).await.expect("the stream ended before the wanted frame");
            if want(&frame) {
                return frame;
            }
        }
    }
}

/// A frame from its lines; `None` for a comment-only (keep-alive) block.
fn parse_frame(raw: &str) -> Option<Frame> {
    let mut frame = Frame::default();
    let mut data = String::new();
    let mut any = false;
    for line in raw.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => frame.id = Some(value.parse().expect("numeric event ids")),
            "event" => frame.event = value.to_owned(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => continue,
        }
        any = true;
    }
    if !any {
        return None;
    }
    frame.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
    Some(frame)
}

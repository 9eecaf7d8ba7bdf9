//! `drover jobs watch ID`: a live progress bar fed by
//! `GET /api/events?job_id=ID`, until the job ends.
//!
//! Order matters: the event stream is opened *before* the job is read, so an
//! end that happens between the two is seen either in the read or on the
//! stream, never missed. A dropped stream is reopened with `Last-Event-ID`,
//! and the job read again, for the same reason. A server without the events
//! route is polled instead.

use crate::client::events::{SseEvent, SseParser};
use crate::client::output::{Output, text};
use crate::client::{Api, ApiError};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when the job failed for good.
pub const EXIT_FAILED: u8 = 3;
/// Exit status when the job was cancelled.
pub const EXIT_CANCELLED: u8 = 4;

/// Consecutive failed reconnects before giving up (about a minute in all).
const MAX_RECONNECTS: u32 = 15;
/// How often a server without events is polled.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Failed,
    Cancelled,
}

impl End {
    fn of_state(state: &str) -> Option<End> {
        match state {
            "completed" => Some(End::Completed),
            "failed" => Some(End::Failed),
            "cancelled" => Some(End::Cancelled),
            _ => None,
        }
    }

    fn of_event(kind: &str) -> Option<End> {
        End::of_state(kind.strip_prefix("job:")?)
    }

    fn exit_code(self) -> ExitCode {
        match self {
            End::Completed => ExitCode::SUCCESS,
            End::Failed => ExitCode::from(EXIT_FAILED),
            End::Cancelled => ExitCode::from(EXIT_CANCELLED),
        }
    }
}

/// Runs `drover jobs watch`.
pub async fn run(api: &Api, out: Output, id: &str) -> anyhow::Result<ExitCode> {
    let bar = Bar::new(out.terminal);
    let end = follow(api, &bar, id).await;
    bar.inner.finish_and_clear();
    let end = end?;
    // Read the job once more for its result or error; the events only carry part of it.
    let job = api.job(id).await?;
    out.show(&job, |job| {
        let mut line = format!("job {id} {}", text(job.get("state").unwrap_or(&Value::Null)));
        let detail = match end {
            End::Completed => job.get("result").filter(|r| !r.is_null()).map(text),
            _ => job.get("error").and_then(|e| e.get("message")).map(text),
        };
        if let Some(detail) = detail {
            line.push_str(": ");
            line.push_str(&detail);
        }
        line
    })?;
    Ok(end.exit_code())
}

/// Follows the job until it ends.
async fn follow(api: &Api, bar: &Bar, id: &str) -> anyhow::Result<End> {
    let mut parser = SseParser::default();
    let mut failures = 0u32;
    loop {
        let stream = match api.events(&[("job_id", id)], parser.last_event_id()).await {
            Ok(response) => Some(response),
            Err(e) if no_events_route(&e) => None,
            Err(e) if e.downcast_ref::<ApiError>().is_none() && failures < MAX_RECONNECTS => {
                failures += 1;
                bar.message(&format!("reconnecting ({e:#})"));
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let job = api.job(id).await?;
        bar.job(&job);
        if let Some(end) = job.get("state").and_then(Value::as_str).and_then(End::of_state) {
            return Ok(end);
        }
        let Some(response) = stream else {
            return poll(api, bar, id).await;
        };
        let mut body = response.bytes_stream();
        // Ends when the stream does: server restart, proxy timeout, dead connection.
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            for event in parser.push(&chunk) {
                failures = 0;
                // The server could not resume where we left off: events may
                // have been missed, so read the job again.
                if event.event == "reset" {
                    let job = api.job(id).await?;
                    bar.job(&job);
                    if let Some(end) = job.get("state").and_then(Value::as_str).and_then(End::of_state) {
                        return Ok(end);
                    }
                    continue;
                }
                if let Some(end) = bar.event(id, &event) {
                    return Ok(end);
                }
            }
        }
        failures += 1;
        if failures > MAX_RECONNECTS {
            anyhow::bail!("the event stream keeps dropping; gave up after {MAX_RECONNECTS} reconnects");
        }
        bar.message("event stream dropped; reconnecting");
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// A server that predates `GET /api/events` (or has it switched off).
fn no_events_route(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>().is_some_and(|e| {
        (e.status == StatusCode::NOT_FOUND && e.code == "route_not_found") || e.status == StatusCode::NOT_IMPLEMENTED
    })
}

async fn poll(api: &Api, bar: &Bar, id: &str) -> anyhow::Result<End> {
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let job = api.job(id).await?;
        bar.job(&job);
        if let Some(end) = job.get("state").and_then(Value::as_str).and_then(End::of_state) {
            return Ok(end);
        }
    }
}

/// 250 ms, doubling, at most 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((250u64 << failures.min(5)).min(5_000))
}

/// The progress bar, on stderr; drawn only when stdout is a terminal.
struct Bar {
    inner: ProgressBar,
}

impl Bar {
    fn new(terminal: bool) -> Self {
        let target = if terminal { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let inner = ProgressBar::with_draw_target(Some(100), target);
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        inner.set_style(style);
        inner.enable_steady_tick(Duration::from_millis(200));
        Self { inner }
    }

    fn message(&self, msg: &str) {
        self.inner.set_message(msg.to_owned());
    }

    /// Shows a job read over the API.
    fn job(&self, job: &Value) {
        if let Some(progress) = job.get("progress") {
            self.progress(progress);
        }
        let state = job.get("state").and_then(Value::as_str).unwrap_or("?");
        self.message(state);
    }

    /// Shows a progress value: a percentage, or `{total, processed, message}`.
    fn progress(&self, progress: &Value) {
        match progress {
            Value::Number(n) => {
                self.inner.set_length(100);
                self.inner.set_position(n.as_f64().unwrap_or(0.0).clamp(0.0, 100.0) as u64);
            }
            Value::Object(p) => {
                let processed = p.get("processed").and_then(Value::as_u64).unwrap_or(0);
                if let Some(total) = p.get("total").and_then(Value::as_u64) {
                    self.inner.set_length(total);
                }
                self.inner.set_position(processed);
                if let Some(msg) = p.get("message").and_then(Value::as_str) {
                    self.message(msg);
                }
            }
            _ => {}
        }
    }

    /// Applies one event; returns how the job ended if it did.
    fn event(&self, id: &str, event: &SseEvent) -> Option<End> {
        let Ok(body) = serde_json::from_str::<Value>(&event.data) else {
            return None;
        };
        // The server filters by job; this guards against one that does not.
        if body.get("job_id").and_then(Value::as_str).is_some_and(|j| j != id) {
            return None;
        }
        let kind = body.get("type").and_then(Value::as_str).unwrap_or(&event.event);
        let data = body.get("data").unwrap_or(&Value::Null);
        match kind {
            "job:progress" => self.progress(data.get("progress").unwrap_or(data)),
            "job:retrying" => {
                let error = data.get("error").and_then(|e| e.get("message")).or_else(|| data.get("message"));
                self.message(&format!("retrying: {}", error.map(text).unwrap_or_default()));
            }
            "job:cancel_requested" => self.message("cancel requested"),
            other => {
                if let Some(end) = End::of_event(other) {
                    return Some(end);
                }
                if let Some(state) = other.strip_prefix("job:") {
                    self.message(state);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> SseEvent {
        SseEvent { id: Some("1".into()), event: "message".into(), data: data.into() }
    }

    #[test]
    fn events_drive_the_bar_and_end_the_watch() {
        let bar = Bar::new(false);
        let progress =
            event(r#"{"type":"job:progress","job_id":"j","queue":"q","at":"t","data":{"total":8,"processed":2}}"#);
        assert_eq!(bar.event("j", &progress), None);
        assert_eq!((bar.inner.position(), bar.inner.length()), (2, Some(8)));
        let percent = event(r#"{"type":"job:progress","job_id":"j","data":55}"#);
        assert_eq!(bar.event("j", &percent), None);
        assert_eq!((bar.inner.position(), bar.inner.length()), (55, Some(100)));
        let other_job = event(r#"{"type":"job:completed","job_id":"k","data":null}"#);
        assert_eq!(bar.event("j", &other_job), None);
        assert_eq!(bar.event("j", &event(r#"{"type":"job:failed","job_id":"j","data":{}}"#)), Some(End::Failed));
        assert_eq!(bar.event("j", &event(r#"{"type":"job:completed","job_id":"j"}"#)), Some(End::Completed));
        assert_eq!(bar.event("j", &event(r#"{"type":"job:retrying","job_id":"j"}"#)), None);
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(30), Duration::from_millis(5_000));
    }
}

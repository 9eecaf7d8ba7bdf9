//! Live events: `GET /api/events` (Server-Sent Events, resumable with
//! `Last-Event-ID`) and `GET /api/ws` (WebSocket with a `subscribe`
//! message). Both read the server's [`crate::event_log::EventLog`] and end
//! when the server shuts down.
//!
//! SSE frames are `id: <event id>`, `event: <type>`, `data: <JSON>`. When a
//! resume id is older than the log's window (or from before a restart), an
//! `event: reset` frame without an id comes first, with data
//! `{"type": "reset", "requested_after", "oldest_available"}`: the client
//! should reload what it shows.

use crate::AppState;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::event_log::{Delivery, EventCursor};
use crate::extract::ApiQuery;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drover::EventFilter;
use drover_core::{Event, JobId};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/events", get(sse)).route("/api/ws", get(ws))
}

/// Keep-alive comments keep proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// An event as SSE and WebSocket subscribers get it:
/// `{"id", "type", "job_id", "queue", "batch_id"?, "at", "data"}`. The id is
/// also the SSE `id:` line; WebSocket clients have only this one.
#[derive(Debug, Clone, Serialize)]
struct EventView<'a> {
    /// Monotonic per server process.
    id: u64,
    /// `job:completed`, `lead:add`, ...
    #[serde(rename = "type")]
    kind: &'a str,
    /// The job concerned, if any.
    job_id: Option<&'a str>,
    /// The queue concerned, if any.
    queue: Option<&'a str>,
    /// The job's batch, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<&'a str>,
    /// When it happened.
    at: String,
    /// Type-specific detail.
    data: &'a Value,
}

impl<'a> From<&'a Event> for EventView<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            id: e.id,
            kind: e.kind.as_str(),
            job_id: e.job_id.as_ref().map(JobId::as_str),
            queue: e.queue.as_deref(),
            batch_id: e.batch_id.as_deref(),
            at: rfc3339(e.at),
            data: &e.data,
        }
    }
}

/// The filter of a subscription; empty fields match everything.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    batch_id: Option<String>,
}

impl FilterBody {
    fn into_filter(self) -> ApiResult<EventFilter> {
        let job_id = match self.job_id {
            None => None,
            Some(id) => Some(JobId::parse(id).map_err(|e| ApiError::invalid_field("job_id", e.to_string()))?),
        };
        Ok(EventFilter { queue: self.queue, job_id, batch_id: self.batch_id })
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SseQuery {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    batch_id: Option<String>,
    /// For clients that cannot set headers on their first connection; the
    /// `Last-Event-ID` header wins when both are present.
    #[serde(default)]
    last_event_id: Option<u64>,
}

/// The id to resume after: the `Last-Event-ID` header, else the query.
fn resume_after(headers: &HeaderMap, query: Option<u64>) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get("last-event-id") else { return Ok(query) };
    let bad = || ApiError::new(ErrorCode::InvalidHeader, "Last-Event-ID must be an event id this server sent");
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text.is_empty() {
        // Browsers send an empty value when no event had an id: start live.
        return Ok(query);
    }
    text.parse::<u64>().map(Some).map_err(|_| bad())
}

/// One SSE frame for a delivery, or none when the filter drops it.
fn sse_frame(delivery: &Delivery, filter: &EventFilter) -> Option<SseEvent> {
    match delivery {
        Delivery::Event(e) if filter.matches(e) => {
            let data = serde_json::to_string(&EventView::from(&**e)).ok()?;
            Some(SseEvent::default().id(e.id.to_string()).event(e.kind.as_str()).data(data))
        }
        Delivery::Event(_) => None,
        Delivery::Reset(reset) => {
            let data = serde_json::to_string(reset).ok()?;
            Some(SseEvent::default().event("reset").data(data))
        }
    }
}

#[utoipa::path(get, path = "/api/events", tag = "events", params(SseQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-Sent Events: `id:`, `event:` (the type), `data:` `{type, job_id, queue, batch_id?, at, data}`", content_type = "text/event-stream", body = String)))]
pub(crate) async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<SseQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let after = resume_after(&headers, q.last_event_id)?;
    let filter = FilterBody { queue: q.queue, job_id: q.job_id, batch_id: q.batch_id }.into_filter()?;
    // The cursor exists before the response headers go out: a client that
    // has the headers will see every event published after that.
    let cursor = match after {
        Some(id) => state.events.cursor_after(id),
        None => state.events.live(),
    };
    let stream = sse_stream(cursor, filter, state.shutdown.clone());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn sse_stream(
    cursor: EventCursor,
    filter: EventFilter,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let pending: VecDeque<SseEvent> = VecDeque::new();
    futures::stream::unfold((cursor, pending), move |(mut cursor, mut pending)| {
        let filter = filter.clone();
        let shutdown = shutdown.clone();
        async move {
            loop {
                if let Some(frame) = pending.pop_front() {
                    return Some((Ok(frame), (cursor, pending)));
                }
                let batch = tokio::select! {
                    batch = cursor.next() => batch,
                    // Ending the stream ends the response, so graceful
                    // shutdown does not wait for subscribers.
                    _ = shutdown.cancelled() => return None,
                };
                pending.extend(batch.iter().filter_map(|d| sse_frame(d, &filter)));
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: FilterBody,
}

#[utoipa::path(get, path = "/api/ws", tag = "events",
    responses((status = 101, description = "WebSocket: send `{\"subscribe\": {queue?, job_id?, batch_id?}}`, receive the same JSON objects as SSE"), (status = 426, description = "Not a WebSocket upgrade", body = crate::error::ErrorBody)))]
pub(crate) async fn ws(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| ws_session(state, socket)),
        Err(rejection) => ApiError::new(
            ErrorCode::UpgradeRequired,
            format!("GET /api/ws speaks WebSocket; send an upgrade request ({})", rejection.body_text()),
        )
        .into_response(),
    }
}

/// `{"error": {"code", "message"}}` as a WebSocket message.
fn ws_error(e: &ApiError) -> Message {
    Message::text(json!({ "error": { "code": e.code.as_str(), "message": e.message } }).to_string())
}

/// Nothing is sent until the first `subscribe`; each one replaces the
/// filter, is acknowledged with `{"subscribed": {...}}`, and starts live
/// from that moment (events published after the acknowledgement match).
async fn ws_session(state: AppState, mut socket: WebSocket) {
    let mut cursor = state.events.live();
    let mut filter: Option<EventFilter> = None;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                let frame = CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            message = socket.recv() => {
                let reply = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => match subscribe(text.as_str()) {
                        Ok((new_filter, ack)) => {
                            cursor.skip_to_now();
                            filter = Some(new_filter);
                            Message::text(ack)
                        }
                        Err(e) => ws_error(&e),
                    },
                    Some(Ok(Message::Binary(_))) => ws_error(&ApiError::new(
                        ErrorCode::InvalidJson,
                        "send text messages holding JSON such as {\"subscribe\": {\"queue\": \"emails\"}}",
                    )),
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(_)) => continue,
                };
                if socket.send(reply).await.is_err() {
                    return;
                }
            }
            batch = cursor.next(), if filter.is_some() => {
                let Some(filter) = &filter else { continue };
                for delivery in batch {
                    let text = match &delivery {
                        Delivery::Event(e) if filter.matches(e) => serde_json::to_string(&EventView::from(&**e)),
                        Delivery::Event(_) => continue,
                        Delivery::Reset(reset) => serde_json::to_string(reset),
                    };
                    let Ok(text) = text else { continue };
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Parses a client message; the answer is the filter and its
/// acknowledgement text.
fn subscribe(text: &str) -> ApiResult<(EventFilter, String)> {
    let message: ClientMessage = serde_json::from_str(text).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { ErrorCode::InvalidJson } else { ErrorCode::InvalidBody };
        ApiError::new(code, format!("expected {{\"subscribe\": {{\"queue\", \"job_id\", \"batch_id\"}}}}: {e}"))
    })?;
    let filter = message.subscribe.into_filter()?;
    let ack = json!({ "subscribed": {
        "queue": filter.queue,
        "job_id": filter.job_id.as_ref().map(JobId::as_str),
        "batch_id": filter.batch_id,
    }});
    Ok((filter, ack.to_string()))
}

//! Cross-server wake-ups and events over `LISTEN/NOTIFY` (ADR 0009): what a
//! transaction sends before it commits, and how a listener reads it back.
//!
//! Three channels:
//! - `drover_ready`: jobs may have become claimable; wake fetchers.
//! - `drover_schedules`: a schedule changed; wake schedulers.
//! - `drover_events`: the transaction's events, as `ORIGIN [event, ...]`
//!   (the origin in decimal, a space, a JSON array), cut into payloads
//!   under PostgreSQL's 8000-byte limit. The origin comes first so that a
//!   listener skips its own store's payloads without parsing them.
//!
//! PostgreSQL delivers notifications only when (and if) the transaction
//! commits, in commit order, and folds identical ones within a transaction.
//! The origin is a random number per `PgStore` (shared by its clones): a
//! store publishes its own events on its bus right after commit, without
//! the round trip, and its listener skips them when they come back. A
//! transaction opened by the application (transactional enqueue) sends
//! origin 0, which every listener publishes, its own store's included.

use crate::error::SqlResultExt;
use crate::fx::Effects;
use drover_core::{EventKind, JobId, Timestamp};
use drover_store::{PendingEvent, StoreResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

/// Jobs may be claimable.
pub(crate) const READY: &str = "drover_ready";
/// A schedule changed.
pub(crate) const SCHEDULES: &str = "drover_schedules";
/// Events, as JSON.
pub(crate) const EVENTS: &str = "drover_events";
/// The origin of transactions no store of this process committed.
pub(crate) const FOREIGN: u64 = 0;

/// The largest payload we send; PostgreSQL refuses 8000 bytes and more.
const MAX_PAYLOAD: usize = 7_800;

/// One event on the wire: short keys, since payloads are small.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    /// Kind, as [`EventKind::as_str`].
    k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    j: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<String>,
    at: i64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    d: Value,
}

impl WireEvent {
    fn of(e: &PendingEvent) -> Self {
        WireEvent {
            k: e.kind.as_str().to_owned(),
            j: e.job_id.as_ref().map(|id| id.as_str().to_owned()),
            q: e.queue.clone(),
            b: e.batch_id.clone(),
            at: e.at.0,
            d: e.data.clone(),
        }
    }

    fn into_pending(self) -> PendingEvent {
        PendingEvent {
            kind: EventKind::parse(&self.k),
            job_id: self.j.map(JobId::from_trusted),
            queue: self.q,
            batch_id: self.b,
            at: Timestamp(self.at),
            data: self.d,
        }
    }
}

/// The `(channel, payload)` pairs a transaction's effects need.
pub(crate) fn messages(origin: u64, fx: &Effects) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if fx.ready {
        out.push((READY, String::new()));
    }
    if fx.schedules_changed {
        out.push((SCHEDULES, String::new()));
    }
    let mut chunk: Vec<String> = Vec::new();
    let mut size = 0;
    let head = format!("{origin} [");
    for event in &fx.events {
        let mut one = serde_json::to_string(&WireEvent::of(event)).unwrap_or_default();
        if head.len() + one.len() + 2 > MAX_PAYLOAD {
            // Too big to travel whole (a large result or custom event):
            // other servers see it without its data (ADR 0009).
            let mut slim = WireEvent::of(event);
            slim.d = serde_json::json!({ "truncated": true });
            one = serde_json::to_string(&slim).unwrap_or_default();
        }
        if !chunk.is_empty() && head.len() + size + one.len() + 2 > MAX_PAYLOAD {
            out.push((EVENTS, format!("{head}{}]", chunk.join(","))));
            chunk.clear();
            size = 0;
        }
        size += one.len() + 1;
        chunk.push(one);
    }
    if !chunk.is_empty() {
        out.push((EVENTS, format!("{head}{}]", chunk.join(","))));
    }
    out
}

/// Queues the notifications of `fx` in the transaction on `conn`, in one
/// statement (nothing is sent when there is nothing to say).
pub(crate) async fn send(conn: &mut PgConnection, origin: u64, fx: &Effects) -> StoreResult<()> {
    let messages = messages(origin, fx);
    if messages.is_empty() {
        return Ok(());
    }
    let (channels, payloads): (Vec<&str>, Vec<String>) = messages.into_iter().unzip();
    // `WITH ORDINALITY ... ORDER BY` keeps the events in order.
    sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS m(c, p, i) ORDER BY i")
        .bind(channels)
        .bind(payloads)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// The events of an events-channel payload, unless `own` sent them (that
/// store published them itself); `None` for a payload that is not ours.
pub(crate) fn decode(payload: &str, own: u64) -> Option<Vec<PendingEvent>> {
    let (origin, events) = payload.split_once(' ')?;
    let origin: u64 = origin.parse().ok()?;
    if origin == own && own != FOREIGN {
        return Some(Vec::new());
    }
    let events: Vec<WireEvent> = serde_json::from_str(events).ok()?;
    Some(events.into_iter().map(WireEvent::into_pending).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::Timestamp;
    use serde_json::json;

    fn fx_with(events: Vec<PendingEvent>) -> Effects {
        let mut fx = Effects::new(Timestamp(5));
        fx.events = events;
        fx
    }

    fn event(n: usize, data: Value) -> PendingEvent {
        PendingEvent::job(
            EventKind::Completed,
            &JobId::from_trusted(format!("j{n}")),
            "q",
            Some("b"),
            Timestamp(7),
            data,
        )
    }

    #[test]
    fn events_round_trip_and_skip_their_origin() {
        let fx = fx_with(vec![event(1, json!({"x": 1})), event(2, Value::Null)]);
        let messages = messages(42, &fx);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].0, EVENTS);
        let back = decode(&messages[0].1, 7).unwrap();
        assert_eq!(back, fx.events);
        assert!(decode(&messages[0].1, 42).unwrap().is_empty(), "own events come back empty");
        assert!(decode("not json", 7).is_none());
    }

    #[test]
    fn payloads_stay_under_the_limit_and_keep_order() {
        let events: Vec<PendingEvent> = (0..500).map(|n| event(n, json!({"n": n}))).collect();
        let fx = fx_with(events.clone());
        let messages = messages(1, &fx);
        assert!(messages.len() > 1);
        let mut back = Vec::new();
        for (channel, payload) in &messages {
            assert_eq!(*channel, EVENTS);
            assert!(payload.len() < 8000, "{}", payload.len());
            back.extend(decode(payload, 9).unwrap());
        }
        assert_eq!(back, events);
    }

    #[test]
    fn an_oversized_event_travels_without_its_data() {
        let big = "x".repeat(20_000);
        let fx = fx_with(vec![event(1, json!({ "result": big })), event(2, json!(2))]);
        let messages = messages(1, &fx);
        let back: Vec<PendingEvent> = messages.iter().flat_map(|(_, p)| decode(p, 9).unwrap()).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].data, json!({"truncated": true}));
        assert_eq!(back[1].data, json!(2));
    }

    #[test]
    fn signals_only_when_set() {
        let mut fx = fx_with(Vec::new());
        assert!(messages(1, &fx).is_empty());
        fx.ready = true;
        fx.schedules_changed = true;
        assert_eq!(messages(1, &fx), vec![(READY, String::new()), (SCHEDULES, String::new())]);
    }
}

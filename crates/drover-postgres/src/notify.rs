//! Cross-server wake-ups and events over `LISTEN/NOTIFY` (ADR 0009): what a
//! transaction sends before it commits, and how a listener reads it back.
//!
//! Three channels per schema ([`Channels`]; NOTIFY is per database, and
//! stores on different schemas of one database must not hear each other):
//! - `drover_ready:SCHEMA`: jobs may have become claimable; wake fetchers.
//! - `drover_schedules:SCHEMA`: a schedule changed; wake schedulers.
//! - `drover_events:SCHEMA`: the transaction's events, as `ORIGIN [event, ...]`
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

/// The longest channel name PostgreSQL accepts (`NAMEDATALEN - 1`).
const MAX_CHANNEL: usize = 63;

/// The channel names of one schema's stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Channels {
    /// Jobs may be claimable.
    pub ready: String,
    /// A schedule changed.
    pub schedules: String,
    /// Events, as JSON.
    pub events: String,
}

impl Channels {
    /// The channels of the stores on `schema` (`None`: the connection's
    /// default schema, named `public` here). A schema name too long for a
    /// channel name is replaced by a stable hash of it (FNV-1a, the same
    /// in every build, so servers of different versions still agree).
    pub(crate) fn of_schema(schema: Option<&str>) -> Channels {
        let schema = schema.unwrap_or("public");
        let name = |kind: &str| {
            let full = format!("drover_{kind}:{schema}");
            if full.len() <= MAX_CHANNEL {
                return full;
            }
            let hash = schema
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
            format!("drover_{kind}:#{hash:016x}")
        };
        Channels { ready: name("ready"), schedules: name("schedules"), events: name("events") }
    }
}
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
pub(crate) fn messages<'c>(channels: &'c Channels, origin: u64, fx: &Effects) -> Vec<(&'c str, String)> {
    let mut out = Vec::new();
    if fx.ready {
        out.push((channels.ready.as_str(), String::new()));
    }
    if fx.schedules_changed {
        out.push((channels.schedules.as_str(), String::new()));
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
            out.push((channels.events.as_str(), format!("{head}{}]", chunk.join(","))));
            chunk.clear();
            size = 0;
        }
        size += one.len() + 1;
        chunk.push(one);
    }
    if !chunk.is_empty() {
        out.push((channels.events.as_str(), format!("{head}{}]", chunk.join(","))));
    }
    out
}

/// The last statement of a transaction before COMMIT: appends its count
/// changes (`fx.counts`, taken) to `queue_count_deltas` and queues its
/// notifications, in one round trip (nothing is sent when there is nothing
/// to say).
pub(crate) async fn send(
    conn: &mut PgConnection,
    channels: &Channels,
    origin: u64,
    fx: &mut Effects,
) -> StoreResult<()> {
    let (queues, states, deltas) = std::mem::take(&mut fx.counts).into_columns();
    let messages = messages(channels, origin, fx);
    if messages.is_empty() && queues.is_empty() {
        return Ok(());
    }
    let (channels, payloads): (Vec<&str>, Vec<String>) = messages.into_iter().unzip();
    // A data-modifying `WITH` runs once whether or not it is referenced;
    // `WITH ORDINALITY ... ORDER BY` keeps the events in order.
    sqlx::query(
        "WITH deltas AS (INSERT INTO queue_count_deltas (queue, state, n) \
             SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[])) \
         SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS m(c, p, i) ORDER BY i",
    )
    .bind(channels)
    .bind(payloads)
    .bind(queues)
    .bind(states)
    .bind(deltas)
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
        let ch = Channels::of_schema(None);
        let messages = messages(&ch, 42, &fx);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].0, "drover_events:public");
        let back = decode(&messages[0].1, 7).unwrap();
        assert_eq!(back, fx.events);
        assert!(decode(&messages[0].1, 42).unwrap().is_empty(), "own events come back empty");
        assert!(decode("not json", 7).is_none());
    }

    #[test]
    fn payloads_stay_under_the_limit_and_keep_order() {
        let events: Vec<PendingEvent> = (0..500).map(|n| event(n, json!({"n": n}))).collect();
        let fx = fx_with(events.clone());
        let ch = Channels::of_schema(Some("s"));
        let messages = messages(&ch, 1, &fx);
        assert!(messages.len() > 1);
        let mut back = Vec::new();
        for (channel, payload) in &messages {
            assert_eq!(*channel, "drover_events:s");
            assert!(payload.len() < 8000, "{}", payload.len());
            back.extend(decode(payload, 9).unwrap());
        }
        assert_eq!(back, events);
    }

    #[test]
    fn an_oversized_event_travels_without_its_data() {
        let big = "x".repeat(20_000);
        let fx = fx_with(vec![event(1, json!({ "result": big })), event(2, json!(2))]);
        let ch = Channels::of_schema(None);
        let messages = messages(&ch, 1, &fx);
        let back: Vec<PendingEvent> = messages.iter().flat_map(|(_, p)| decode(p, 9).unwrap()).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].data, json!({"truncated": true}));
        assert_eq!(back[1].data, json!(2));
    }

    #[test]
    fn signals_only_when_set() {
        let ch = Channels::of_schema(None);
        let mut fx = fx_with(Vec::new());
        assert!(messages(&ch, 1, &fx).is_empty());
        fx.ready = true;
        fx.schedules_changed = true;
        assert_eq!(
            messages(&ch, 1, &fx),
            vec![("drover_ready:public", String::new()), ("drover_schedules:public", String::new())]
        );
    }

    #[test]
    fn channels_are_per_schema_and_fit_postgres() {
        let a = Channels::of_schema(Some("tenant_a"));
        let b = Channels::of_schema(Some("tenant_b"));
        assert_ne!(a.ready, b.ready);
        assert_eq!(a.events, "drover_events:tenant_a");
        let long = "s".repeat(63);
        let one = Channels::of_schema(Some(&long));
        assert!(one.schedules.len() <= MAX_CHANNEL, "{}", one.schedules);
        assert_eq!(one, Channels::of_schema(Some(&long)), "stable");
        assert_ne!(one, Channels::of_schema(Some(&"t".repeat(63))));
    }
}

//! Events: lifecycle changes that stores publish after they commit, and
//! typed events that handlers emit (e.g. `lead:add`).

use crate::{JobId, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `job:waiting` — enqueued, promoted from delayed, or re-queued.
    Waiting,
    /// `job:delayed` — enqueued to run later.
    Delayed,
    /// `job:active` — claimed by a worker.
    Active,
    /// `job:progress` — the handler reported progress.
    Progress,
    /// `job:completed`.
    Completed,
    /// `job:failed` — failed for good.
    Failed,
    /// `job:retrying` — an attempt failed and the job will run again.
    Retrying,
    /// `job:cancelled`.
    Cancelled,
    /// `job:cancel_requested` — a cancel reached an active job; its handler
    /// is being told.
    CancelRequested,
    /// `job:stalled` — the lease of an active job ran out.
    Stalled,
    /// `queue:paused`.
    QueuePaused,
    /// `queue:resumed`.
    QueueResumed,
    /// `queue:throttled` — a queue or rate-limit key is held back: a handler
    /// reported "rate limited", or the queue's rate limit is used up.
    QueueThrottled,
    /// `batch:completed` — every job of a batch finished; the event carries
    /// the batch id and its counts.
    BatchCompleted,
    /// Any other type, emitted by a handler (e.g. `lead:add`).
    Custom(String),
}

impl EventKind {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Waiting => "job:waiting",
            EventKind::Delayed => "job:delayed",
            EventKind::Active => "job:active",
            EventKind::Progress => "job:progress",
            EventKind::Completed => "job:completed",
            EventKind::Failed => "job:failed",
            EventKind::Retrying => "job:retrying",
            EventKind::Cancelled => "job:cancelled",
            EventKind::CancelRequested => "job:cancel_requested",
            EventKind::Stalled => "job:stalled",
            EventKind::QueuePaused => "queue:paused",
            EventKind::QueueResumed => "queue:resumed",
            EventKind::QueueThrottled => "queue:throttled",
            EventKind::BatchCompleted => "batch:completed",
            EventKind::Custom(name) => name,
        }
    }

    /// Parses a wire name; unknown names become [`EventKind::Custom`].
    pub fn parse(name: &str) -> Self {
        const BUILT_IN: [EventKind; 14] = [
            EventKind::Waiting,
            EventKind::Delayed,
            EventKind::Active,
            EventKind::Progress,
            EventKind::Completed,
            EventKind::Failed,
            EventKind::Retrying,
            EventKind::Cancelled,
            EventKind::CancelRequested,
            EventKind::Stalled,
            EventKind::QueuePaused,
            EventKind::QueueResumed,
            EventKind::QueueThrottled,
            EventKind::BatchCompleted,
        ];
        BUILT_IN.into_iter().find(|k| k.as_str() == name).unwrap_or_else(|| EventKind::Custom(name.to_owned()))
    }

    /// Checks a handler-chosen type: `prefix:name` of letters, digits, `_ - .`,
    /// and not in the reserved `job:`, `queue:` and `batch:` namespaces.
    pub fn validate_custom(name: &str) -> Result<(), String> {
        let Some((prefix, rest)) = name.split_once(':') else {
            return Err("event type must look like `prefix:name`, e.g. `lead:add`".into());
        };
        if matches!(prefix, "job" | "queue" | "batch") {
            return Err(format!("event types under `{prefix}:` are reserved for Drover"));
        }
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok(prefix) || !ok(rest) || name.len() > 128 {
            return Err(
                "event type may contain only letters, digits and _ - . around one colon (128 bytes at most)".into()
            );
        }
        Ok(())
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(EventKind::parse(&String::deserialize(d)?))
    }
}

/// One event, as delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic per store, for resuming a stream.
    pub id: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The job concerned, if any.
    pub job_id: Option<JobId>,
    /// The queue concerned.
    pub queue: Option<String>,
    /// The batch of the job concerned, for batch filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// When it happened.
    pub at: Timestamp,
    /// Type-specific detail (progress value, error, result, custom data).
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in [EventKind::Completed, EventKind::QueuePaused, EventKind::Custom("lead:add".into())] {
            assert_eq!(EventKind::parse(kind.as_str()), kind);
        }
    }

    #[test]
    fn custom_types_are_checked() {
        assert!(EventKind::validate_custom("lead:add").is_ok());
        assert!(EventKind::validate_custom("job:completed").is_err());
        assert!(EventKind::validate_custom("nocolon").is_err());
        assert!(EventKind::validate_custom("a b:c").is_err());
    }
}

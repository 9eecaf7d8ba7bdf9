//! Per-queue configuration, as stored with the queue.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most `max` job starts in any window of `per_ms` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Starts allowed per window.
    pub max: u32,
    /// Window length, in milliseconds.
    pub per_ms: u64,
}

impl RateLimit {
    /// Checks that the limit allows something: `max` and `per_ms` at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.max == 0 || self.per_ms == 0 {
            return Err("max and per_ms must both be at least 1".into());
        }
        if self.per_ms > i64::MAX as u64 / 2 {
            return Err("per_ms is too large".into());
        }
        Ok(())
    }
}

/// How many finished jobs of one kind to keep, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Keep at most this many (the newest).
    #[serde(default)]
    pub count: Option<u64>,
    /// Keep none older than this, in milliseconds since they finished.
    #[serde(default)]
    pub age_ms: Option<u64>,
}

/// Retention of finished jobs, per outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Completed jobs: by default 1 day / 1,000.
    #[serde(default = "Retention::default_completed")]
    pub completed: RetentionRule,
    /// Failed jobs: by default 7 days / 5,000.
    #[serde(default = "Retention::default_failed")]
    pub failed: RetentionRule,
}

impl Retention {
    fn default_completed() -> RetentionRule {
        RetentionRule { count: Some(1_000), age_ms: Some(86_400_000) }
    }

    fn default_failed() -> RetentionRule {
        RetentionRule { count: Some(5_000), age_ms: Some(7 * 86_400_000) }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self { completed: Self::default_completed(), failed: Self::default_failed() }
    }
}

/// A queue's settings (`PUT /api/queues/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most jobs of this queue active at once, across all workers.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Most job starts per window, across all workers.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Options applied to jobs enqueued without them (`attempts`, `backoff`,
    /// `timeout_ms`, `priority`).
    #[serde(default)]
    pub default_job_options: Map<String, Value>,
    /// Retention of finished jobs.
    #[serde(default)]
    pub retention: Retention,
}

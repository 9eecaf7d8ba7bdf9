//! [`JobSpec`]: what a caller asks to enqueue, and its validation.

use crate::{Backoff, JobId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest queue or job name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 10_000;

/// A job to enqueue. Only `queue` and `name` are required; everything else
/// has the defaults of the HTTP API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Caller-supplied id for idempotent enqueue; generated when absent.
    #[serde(default)]
    pub id: Option<JobId>,
    /// The queue the job goes to.
    pub queue: String,
    /// The job type: which handler runs it.
    pub name: String,
    /// Handler input, any JSON.
    #[serde(default)]
    pub payload: Value,
    /// Lower runs first; default 0.
    #[serde(default)]
    pub priority: i32,
    /// Run no earlier than this many milliseconds from now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this instant. Exclusive with `delay_ms`.
    #[serde(default)]
    pub run_at: Option<Timestamp>,
    /// How many attempts in all, the first included; default 3.
    #[serde(default = "default_attempts", rename = "attempts")]
    pub max_attempts: u32,
    /// Delay between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// How long one attempt may run before it counts as a (retryable) failure.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How many times the job may be found stalled (its worker vanished)
    /// before it fails for good; default 3.
    #[serde(default = "default_max_stalls")]
    pub max_stalls: u32,
    /// Uniqueness key: a second enqueue on the same queue with the same key
    /// returns the first job (`duplicate: true`) instead of inserting,
    /// while that job is unfinished, or within `unique_for_ms` of its
    /// creation when given.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// With `unique_key`: the window of uniqueness, in milliseconds from the
    /// existing job's creation, whatever its state (instead of "while it is
    /// unfinished").
    #[serde(default)]
    pub unique_for_ms: Option<u64>,
    /// Key for rate limits and concurrency caps shared by jobs, e.g. one
    /// external API.
    #[serde(default)]
    pub rate_limit_key: Option<String>,
    /// The parent job, for flows.
    #[serde(default)]
    pub parent_id: Option<JobId>,
    /// The batch this job belongs to.
    #[serde(default)]
    pub batch_id: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Map<String, Value>,
    /// Drop the job if it has not started by then: it becomes `failed` with
    /// error code `expired` instead of running late.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// With `parent_id`: what this job's failure (or cancel) does to its
    /// parent: `fail_parent` (the default) or `ignore`.
    #[serde(default)]
    pub on_failure: crate::ChildFailure,
}

fn default_attempts() -> u32 {
    JobSpec::DEFAULT_ATTEMPTS
}

fn default_max_stalls() -> u32 {
    JobSpec::DEFAULT_MAX_STALLS
}

/// Why a [`JobSpec`] was refused; `field` names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field at fault, as named on the wire.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

impl JobSpec {
    /// Attempts given when the caller names none.
    pub const DEFAULT_ATTEMPTS: u32 = 3;
    /// Stalls tolerated when the caller names none.
    pub const DEFAULT_MAX_STALLS: u32 = 3;

    /// A job of type `name` on `queue`, with every default.
    pub fn new(queue: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: None,
            queue: queue.into(),
            name: name.into(),
            payload: Value::Null,
            priority: 0,
            delay_ms: None,
            run_at: None,
            max_attempts: Self::DEFAULT_ATTEMPTS,
            backoff: Backoff::default(),
            timeout_ms: None,
            max_stalls: Self::DEFAULT_MAX_STALLS,
            unique_key: None,
            unique_for_ms: None,
            rate_limit_key: None,
            parent_id: None,
            batch_id: None,
            tags: Map::new(),
            expires_at: None,
            on_failure: crate::ChildFailure::FailParent,
        }
    }

    /// Sets the id (for idempotent enqueue).
    pub fn id(mut self, id: JobId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Runs the job no earlier than `delay_ms` from enqueue.
    pub fn delay_ms(mut self, delay_ms: u64) -> Self {
        self.delay_ms = Some(delay_ms);
        self
    }

    /// Runs the job no earlier than `at`.
    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the total number of attempts.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the retry delay policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Sets how many stalls are tolerated.
    pub fn max_stalls(mut self, max_stalls: u32) -> Self {
        self.max_stalls = max_stalls;
        self
    }

    /// Makes the job unique on its queue by `key` while it is unfinished.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Makes `unique_key` hold for `ms` from the first job's creation
    /// instead of while it is unfinished.
    pub fn unique_for_ms(mut self, ms: u64) -> Self {
        self.unique_for_ms = Some(ms);
        self
    }

    /// Sets the rate-limit key.
    pub fn rate_limit_key(mut self, key: impl Into<String>) -> Self {
        self.rate_limit_key = Some(key.into());
        self
    }

    /// Sets the parent job.
    pub fn parent_id(mut self, parent: JobId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// Drops the job (`failed`, code `expired`) if it has not started by `at`.
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets what this child's failure does to its parent.
    pub fn on_failure(mut self, policy: crate::ChildFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Sets the batch.
    pub fn batch_id(mut self, batch: impl Into<String>) -> Self {
        self.batch_id = Some(batch.into());
        self
    }

    /// Checks every field; the first fault found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name("queue", &self.queue)?;
        check_name("name", &self.name)?;
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(SpecError::new("attempts", format!("must be between 1 and {MAX_ATTEMPTS}")));
        }
        if self.delay_ms.is_some() && self.run_at.is_some() {
            return Err(SpecError::new("delay_ms", "give delay_ms or run_at, not both"));
        }
        if let Some(delay) = self.delay_ms
            && delay > i64::MAX as u64 / 2
        {
            return Err(SpecError::new("delay_ms", "is too large"));
        }
        if self.timeout_ms == Some(0) {
            return Err(SpecError::new("timeout_ms", "must be positive"));
        }
        self.backoff.validate().map_err(|m| SpecError::new("backoff", m))?;
        if let Some(window) = self.unique_for_ms {
            if self.unique_key.is_none() {
                return Err(SpecError::new("unique_for_ms", "needs a unique_key"));
            }
            if window == 0 || window > i64::MAX as u64 / 2 {
                return Err(SpecError::new("unique_for_ms", "must be positive and not absurdly large"));
            }
        }
        if self.parent_id.is_some() && self.parent_id == self.id {
            return Err(SpecError::new("parent_id", "a job cannot be its own parent"));
        }
        for (field, key) in
            [("unique_key", &self.unique_key), ("rate_limit_key", &self.rate_limit_key), ("batch_id", &self.batch_id)]
        {
            if let Some(key) = key
                && (key.is_empty() || key.len() > 255)
            {
                return Err(SpecError::new(field, "must be 1 to 255 bytes"));
            }
        }
        Ok(())
    }

    /// When the job may first run, given the time of enqueue.
    pub fn first_run_at(&self, now: Timestamp) -> Timestamp {
        match (self.run_at, self.delay_ms) {
            (Some(at), _) => at,
            (None, Some(delay)) => now.plus_ms(delay as i64),
            (None, None) => now,
        }
    }
}

/// Queue and job names: 1–128 bytes of letters, digits and `_ - . : /`, so
/// they are safe in URLs, metrics labels and terminal tables.
fn check_name(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(SpecError::new(field, format!("must be 1 to {MAX_NAME_LEN} bytes")));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b)) {
        return Err(SpecError::new(field, "may contain only letters, digits and _ - . : /"));
    }
    Ok(())
}

/// Validates a queue name on its own (for queue routes and configs).
pub fn validate_queue_name(queue: &str) -> Result<(), SpecError> {
    check_name("queue", queue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_wire_spec_gets_defaults() {
        let spec: JobSpec = serde_json::from_value(json!({"queue": "q", "name": "n"})).unwrap();
        assert_eq!(spec, JobSpec::new("q", "n"));
        spec.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<JobSpec>(json!({"queue": "q", "name": "n", "prio": 1})).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |spec: JobSpec| spec.validate().unwrap_err().field;
        assert_eq!(bad(JobSpec::new("", "n")), "queue");
        assert_eq!(bad(JobSpec::new("q q", "n")), "queue");
        assert_eq!(bad(JobSpec::new("q", "")), "name");
        assert_eq!(bad(JobSpec::new("q", "n").attempts(0)), "attempts");
        assert_eq!(bad(JobSpec::new("q", "n").delay_ms(5).run_at(Timestamp(1))), "delay_ms");
        assert_eq!(bad(JobSpec::new("q", "n").timeout_ms(0)), "timeout_ms");
        assert_eq!(bad(JobSpec::new("q", "n").backoff(Backoff::fixed(1).jitter(2.0))), "backoff");
    }

    #[test]
    fn first_run_at() {
        let now = Timestamp(1_000);
        assert_eq!(JobSpec::new("q", "n").first_run_at(now), now);
        assert_eq!(JobSpec::new("q", "n").delay_ms(500).first_run_at(now), Timestamp(1_500));
        assert_eq!(JobSpec::new("q", "n").run_at(Timestamp(9)).first_run_at(now), Timestamp(9));
    }
}

//! The wire shapes of the API (`shared/spec/http-api.md`): engine types
//! rendered with RFC 3339 times, and request bodies parsed into engine types.

use crate::error::ApiError;
use drover_core::{
    Attempt, Backoff, ChildFailure, FlowSpec, Job, JobError, JobId, JobSpec, LogEntry, Progress, Timestamp,
};
use drover_store::BatchInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Renders an engine time as RFC 3339 in UTC.
pub fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0).map_or_else(|_| t.0.to_string(), |ts| ts.to_string())
}

/// Parses an RFC 3339 time (any offset) into an engine time.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    text.parse::<jiff::Timestamp>().map(|ts| Timestamp(ts.as_millisecond())).map_err(|e| {
        ApiError::invalid_field(field, format!("must be an RFC 3339 time such as 2026-01-31T12:00:00Z ({e})"))
    })
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Unique id.
    pub id: String,
    /// Queue.
    pub queue: String,
    /// Job type.
    pub name: String,
    /// Handler input.
    pub payload: Value,
    /// State name.
    #[schema(value_type = String)]
    pub state: &'static str,
    /// Lower runs first.
    pub priority: i32,
    /// Attempts spent.
    pub attempts_made: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Latest progress: a percentage, or `{total, processed, failed, message}`.
    #[schema(value_type = Object)]
    pub progress: Progress,
    /// Handler result, once completed.
    pub result: Option<Value>,
    /// Last error: `{message, code?, details?}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<JobError>,
    /// Parent job.
    pub parent_id: Option<String>,
    /// Batch.
    pub batch_id: Option<String>,
    /// Rate-limit key.
    pub rate_limit_key: Option<String>,
    /// Uniqueness key.
    pub unique_key: Option<String>,
    /// Labels.
    pub tags: Map<String, Value>,
    /// Per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// Times found stalled.
    pub stalls: u32,
    /// A cancel reached the job while it ran.
    pub cancel_requested: bool,
    /// Enqueue time.
    pub created_at: String,
    /// When it may (next) run.
    pub run_at: String,
    /// Start of the current or last attempt.
    pub started_at: Option<String>,
    /// End of the job.
    pub finished_at: Option<String>,
    /// Worker holding or last holding it.
    pub worker_id: Option<String>,
    /// Dropped (`failed`, code `expired`) if not started by then.
    pub expires_at: Option<String>,
    /// What this job's failure does to its parent: `fail_parent` or `ignore`.
    #[schema(value_type = String)]
    pub on_failure: &'static str,
    /// Every attempt, on single-job reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
    /// On create: true when the job already existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

impl JobView {
    /// A job for lists (no attempt history).
    pub fn list_item(job: Job) -> Self {
        Self::build(job, false)
    }

    /// A job with its attempt history.
    pub fn detailed(job: Job) -> Self {
        Self::build(job, true)
    }

    fn build(job: Job, with_attempts: bool) -> Self {
        Self {
            id: job.id.to_string(),
            queue: job.queue,
            name: job.name,
            payload: job.payload,
            state: job.state.as_str(),
            priority: job.priority,
            attempts_made: job.attempts_made,
            max_attempts: job.max_attempts,
            progress: job.progress,
            result: job.result,
            error: job.error,
            parent_id: job.parent_id.map(|p| p.to_string()),
            batch_id: job.batch_id,
            rate_limit_key: job.rate_limit_key,
            unique_key: job.unique_key,
            tags: job.tags,
            timeout_ms: job.timeout_ms,
            stalls: job.stalls,
            cancel_requested: job.cancel_requested,
            created_at: rfc3339(job.created_at),
            run_at: rfc3339(job.run_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            worker_id: job.worker_id,
            expires_at: job.expires_at.map(rfc3339),
            on_failure: job.on_failure.as_str(),
            attempts: with_attempts.then(|| job.attempts.into_iter().map(AttemptView::from).collect()),
            duplicate: None,
        }
    }
}

/// One attempt as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1-based number.
    pub attempt: u32,
    /// Claim time.
    pub started_at: String,
    /// End time.
    pub finished_at: String,
    /// `completed`, `failed`, `stalled`, `rate_limited`, `cancelled` or `released`.
    #[schema(value_type = String)]
    pub outcome: &'static str,
    /// The error, if any: `{message, code?, details?}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<JobError>,
    /// Who ran it.
    pub worker_id: Option<String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: rfc3339(a.started_at),
            finished_at: rfc3339(a.finished_at),
            outcome: a.outcome.as_str(),
            error: a.error,
            worker_id: a.worker_id,
        }
    }
}

/// One log line as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogView {
    /// When.
    pub at: String,
    /// `debug`, `info`, `warn` or `error`.
    #[schema(value_type = String)]
    pub level: &'static str,
    /// The line.
    pub message: String,
    /// Structured context.
    pub metadata: Value,
}

impl From<LogEntry> for LogView {
    fn from(l: LogEntry) -> Self {
        Self { at: rfc3339(l.at), level: l.level.as_str(), message: l.message, metadata: l.metadata }
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    /// This page.
    pub items: Vec<T>,
    /// Where the next page starts; null on the last page.
    pub next_cursor: Option<String>,
}

/// The body of `POST /api/jobs` (and of each item of a bulk create).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpecBody {
    /// Caller-supplied id.
    #[serde(default)]
    pub id: Option<String>,
    /// Queue.
    pub queue: String,
    /// Job type.
    pub name: String,
    /// Handler input.
    #[serde(default)]
    pub payload: Value,
    /// Lower runs first.
    #[serde(default)]
    pub priority: i32,
    /// Run no earlier than this many ms from now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this RFC 3339 time.
    #[serde(default)]
    pub run_at: Option<String>,
    /// Attempts in all.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Retry delays: `{type: fixed|exponential, delay_ms, max_delay_ms, jitter}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Stalls tolerated.
    #[serde(default)]
    pub max_stalls: Option<u32>,
    /// Uniqueness key (per queue): while a job with it is unfinished, an
    /// enqueue returns that job with `duplicate: true`.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// With `unique_key`: uniqueness lasts this many ms from the first
    /// job's creation, whatever its state.
    #[serde(default)]
    pub unique_for_ms: Option<u64>,
    /// Rate-limit key.
    #[serde(default)]
    pub rate_limit_key: Option<String>,
    /// Parent job.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Batch.
    #[serde(default)]
    pub batch_id: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: Map<String, Value>,
    /// RFC 3339 time after which the job, if it has not started, is
    /// dropped (`failed`, error code `expired`).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// With `parent_id` (or inside a flow): what this job's failure or
    /// cancel does to its parent, `fail_parent` (default) or `ignore`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub on_failure: Option<ChildFailure>,
    /// `POST /api/flows` only: the jobs this one waits for, each a job spec
    /// that may have children of its own.
    #[serde(default)]
    #[schema(no_recursion)]
    pub children: Option<Vec<JobSpecBody>>,
}

impl JobSpecBody {
    /// The engine spec, validated; errors name the field, prefixed by
    /// `prefix` (e.g. `jobs[3].`) inside bulk bodies.
    pub fn into_spec(self, prefix: &str) -> Result<JobSpec, ApiError> {
        let field = |name: &str| format!("{prefix}{name}");
        if self.children.is_some() {
            return Err(ApiError::invalid_field(field("children"), "children are created with POST /api/flows"));
        }
        let mut spec = JobSpec::new(self.queue, self.name);
        if let Some(id) = self.id {
            spec.id = Some(JobId::parse(id).map_err(|e| ApiError::invalid_field(field("id"), e.to_string()))?);
        }
        if let Some(parent) = self.parent_id {
            spec.parent_id =
                Some(JobId::parse(parent).map_err(|e| ApiError::invalid_field(field("parent_id"), e.to_string()))?);
        }
        if let Some(run_at) = self.run_at {
            spec.run_at = Some(parse_rfc3339(&field("run_at"), &run_at)?);
        }
        if let Some(expires_at) = self.expires_at {
            spec.expires_at = Some(parse_rfc3339(&field("expires_at"), &expires_at)?);
        }
        spec.payload = self.payload;
        spec.priority = self.priority;
        spec.delay_ms = self.delay_ms;
        spec.max_attempts = self.attempts.unwrap_or(JobSpec::DEFAULT_ATTEMPTS);
        spec.backoff = self.backoff.unwrap_or_default();
        spec.timeout_ms = self.timeout_ms;
        spec.max_stalls = self.max_stalls.unwrap_or(JobSpec::DEFAULT_MAX_STALLS);
        spec.unique_key = self.unique_key;
        spec.unique_for_ms = self.unique_for_ms;
        spec.rate_limit_key = self.rate_limit_key;
        spec.batch_id = self.batch_id;
        spec.tags = self.tags;
        spec.on_failure = self.on_failure.unwrap_or_default();
        spec.validate().map_err(|e| ApiError::invalid_field(field(e.field), e.message))?;
        Ok(spec)
    }
}

impl JobSpecBody {
    /// The engine flow: this job and its children, validated; errors name
    /// the field by its path (`children[1].children[0].queue`).
    pub fn into_flow(mut self, prefix: &str) -> Result<FlowSpec, ApiError> {
        let children = self.children.take().unwrap_or_default();
        let mut flow = FlowSpec::new(self.into_spec(prefix)?);
        for (i, child) in children.into_iter().enumerate() {
            let path = format!("{prefix}children[{i}].");
            if child.parent_id.is_some() {
                return Err(ApiError::invalid_field(
                    format!("{path}parent_id"),
                    "a child in a flow takes its parent from the tree",
                ));
            }
            flow.children.push(child.into_flow(&path)?);
        }
        Ok(flow)
    }
}

/// A batch as the API shows it (`GET /api/batches/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    /// Batch id.
    pub id: String,
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed for good.
    pub failed: u64,
    /// Jobs running.
    pub active: u64,
    /// Jobs not started yet (waiting, delayed or waiting for children).
    pub waiting: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Percentage of the jobs that have finished, 0 to 100.
    pub progress: f64,
    /// `running`, or `completed` once every job has finished.
    #[schema(value_type = String)]
    pub state: &'static str,
    /// Creation time.
    pub created_at: String,
    /// When the last job first finished.
    pub completed_at: Option<String>,
    /// The completion job, once enqueued.
    pub on_complete_id: Option<String>,
}

impl From<BatchInfo> for BatchView {
    fn from(b: BatchInfo) -> Self {
        Self {
            id: b.id,
            total: b.total,
            completed: b.completed,
            failed: b.failed,
            active: b.active,
            waiting: b.waiting,
            cancelled: b.cancelled,
            progress: b.progress,
            state: b.state.as_str(),
            created_at: rfc3339(b.created_at),
            completed_at: b.completed_at.map(rfc3339),
            on_complete_id: b.on_complete_id.map(|id| id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = Timestamp(1_767_225_600_123);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00.123Z");
        assert_eq!(parse_rfc3339("run_at", "2026-01-01T01:00:00.123+01:00").unwrap(), t);
        assert!(parse_rfc3339("run_at", "tomorrow").is_err());
    }
}

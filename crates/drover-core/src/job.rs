//! [`Job`]: the stored record of a job, with its attempts, logs, progress and error.

use crate::{Backoff, JobId, JobState, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job as the store holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id.
    pub id: JobId,
    /// Queue it belongs to.
    pub queue: String,
    /// Job type: which handler runs it.
    pub name: String,
    /// Handler input.
    pub payload: Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Lower runs first.
    pub priority: i32,
    /// Attempts that have started and not been handed back (a stall or a
    /// rate-limit deferral gives its attempt back).
    pub attempts_made: u32,
    /// Attempts allowed before the job fails for good. A manual retry raises
    /// it by the job's original budget, so the history stays numbered.
    pub max_attempts: u32,
    /// Retry delay policy.
    pub backoff: Backoff,
    /// Per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// Times the job was found stalled.
    pub stalls: u32,
    /// Stalls tolerated before the job fails for good.
    pub max_stalls: u32,
    /// Latest progress reported by the handler.
    pub progress: Progress,
    /// What the handler returned, once completed.
    pub result: Option<Value>,
    /// The last error, if an attempt failed.
    pub error: Option<JobError>,
    /// Uniqueness key.
    pub unique_key: Option<String>,
    /// Rate-limit / concurrency key.
    pub rate_limit_key: Option<String>,
    /// Parent job, for flows.
    pub parent_id: Option<JobId>,
    /// Batch it belongs to.
    pub batch_id: Option<String>,
    /// Free-form labels.
    pub tags: Map<String, Value>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it may next run.
    pub run_at: Timestamp,
    /// When its current or last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it finished (completed, failed for good or cancelled).
    pub finished_at: Option<Timestamp>,
    /// Worker holding (or last holding) it.
    pub worker_id: Option<String>,
    /// When the current lease runs out, while active.
    pub lease_expires_at: Option<Timestamp>,
    /// A cancel was asked for while the job was active.
    pub cancel_requested: bool,
    /// The job is dropped (`failed`, code `expired`) if it has not started
    /// by then.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// What this job's failure or cancel does to its parent, if it has one.
    #[serde(default)]
    pub on_failure: crate::ChildFailure,
    /// Every attempt so far, oldest first. Filled by single-job reads only;
    /// empty in lists.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

impl Job {
    /// The job a new row holds when `spec` is enqueued: no attempt yet, no
    /// progress, result or error. Stores build what they return to the
    /// enqueuer with it, so every backend answers alike.
    pub fn from_spec(
        spec: crate::JobSpec,
        id: JobId,
        state: JobState,
        created_at: Timestamp,
        run_at: Timestamp,
    ) -> Self {
        Self {
            id,
            queue: spec.queue,
            name: spec.name,
            payload: spec.payload,
            state,
            priority: spec.priority,
            attempts_made: 0,
            max_attempts: spec.max_attempts,
            backoff: spec.backoff,
            timeout_ms: spec.timeout_ms,
            stalls: 0,
            max_stalls: spec.max_stalls,
            progress: Progress::default(),
            result: None,
            error: None,
            unique_key: spec.unique_key,
            rate_limit_key: spec.rate_limit_key,
            parent_id: spec.parent_id,
            batch_id: spec.batch_id,
            tags: spec.tags,
            created_at,
            run_at,
            started_at: None,
            finished_at: None,
            worker_id: None,
            lease_expires_at: None,
            cancel_requested: false,
            expires_at: spec.expires_at,
            on_failure: spec.on_failure,
            attempts: Vec::new(),
        }
    }
}

impl Job {
    /// The attempt a job completed by its first attempt keeps on its own row
    /// (stores write no history row for it: one B-tree insert fewer on the
    /// busiest path): its times and worker. `None` for any other job. Stores
    /// add it when they read a completed job with an empty history.
    pub fn implied_first_attempt(&self) -> Option<Attempt> {
        let finished_at = self.finished_at.filter(|_| self.state == JobState::Completed)?;
        Some(Attempt {
            attempt: 1,
            started_at: self.started_at.unwrap_or(finished_at),
            finished_at,
            outcome: AttemptOutcome::Completed,
            error: None,
            worker_id: self.worker_id.clone(),
        })
    }
}

/// Progress as reported by a handler: a percentage or a detailed count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Progress {
    /// A percentage, 0–100.
    Percent(f64),
    /// Counts of a long operation, e.g. rows of an import.
    Detailed {
        /// Items in all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        /// Items done.
        #[serde(default)]
        processed: u64,
        /// Items that failed.
        #[serde(default)]
        failed: u64,
        /// A human line about what is happening.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl Default for Progress {
    fn default() -> Self {
        Progress::Percent(0.0)
    }
}

impl Progress {
    /// Checks a handler-reported value is sensible.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Progress::Percent(p) if !(0.0..=100.0).contains(p) => Err("progress must be between 0 and 100".into()),
            Progress::Detailed { total: Some(total), processed, .. } if processed > total => {
                Err("progress.processed must not exceed progress.total".into())
            }
            _ => Ok(()),
        }
    }
}

/// An error as recorded on a job and its attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// A human sentence.
    pub message: String,
    /// A machine code when the engine produced the error (`timeout`,
    /// `stalled`, `panic`, `expired`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Anything structured the handler wants to keep.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl JobError {
    /// An error with just a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: None, details: Value::Null }
    }

    /// An engine error with a machine code.
    pub fn with_code(code: &str, message: impl Into<String>) -> Self {
        Self { message: message.into(), code: Some(code.to_owned()), details: Value::Null }
    }
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The handler succeeded.
    Completed,
    /// The handler failed; the job was retried or failed for good.
    Failed,
    /// The worker vanished and the lease ran out.
    Stalled,
    /// The handler reported a rate limit; the attempt was handed back.
    RateLimited,
    /// The job was cancelled while it ran.
    Cancelled,
    /// The worker shut down and handed the job back unfinished.
    Released,
}

impl AttemptOutcome {
    /// The outcome's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Stalled => "stalled",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Released => "released",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Completed, Self::Failed, Self::Stalled, Self::RateLimited, Self::Cancelled, Self::Released]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One run of a job's handler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based, counting every attempt the job ever had.
    pub attempt: u32,
    /// When the worker claimed it.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error, when it did not complete.
    pub error: Option<JobError>,
    /// Who ran it.
    pub worker_id: Option<String>,
}

/// Severity of a job log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd but handled.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The level's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Debug, Self::Info, Self::Warn, Self::Error].into_iter().find(|l| l.as_str() == s)
    }
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was written.
    pub at: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// The line.
    pub message: String,
    /// Structured context.
    #[serde(default)]
    pub metadata: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_wire_forms() {
        assert_eq!(serde_json::from_value::<Progress>(json!(42.5)).unwrap(), Progress::Percent(42.5));
        let detailed: Progress =
            serde_json::from_value(json!({"total": 1000, "processed": 250, "failed": 3, "message": "rows"})).unwrap();
        assert_eq!(
            detailed,
            Progress::Detailed { total: Some(1000), processed: 250, failed: 3, message: Some("rows".into()) }
        );
        assert!(Progress::Percent(101.0).validate().is_err());
        assert!(Progress::Detailed { total: Some(1), processed: 2, failed: 0, message: None }.validate().is_err());
    }

    #[test]
    fn outcome_and_level_names_round_trip() {
        for o in [AttemptOutcome::Completed, AttemptOutcome::Stalled, AttemptOutcome::RateLimited] {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(LogLevel::parse("warn"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("loud"), None);
    }
}

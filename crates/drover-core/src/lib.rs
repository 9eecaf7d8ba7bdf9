//! Drover's job model and its pure rules.
//!
//! Everything here is plain data and plain functions: no I/O, no clocks read
//! behind the caller's back, no async. Every backend and every door (Rust API,
//! HTTP API, CLI) shares these types, so a rule written here holds everywhere.
//!
//! | module | what it holds |
//! |---|---|
//! | [`id`] | job ids (caller-supplied or time-ordered) and lease tokens |
//! | [`time`] | [`Timestamp`] and the injectable [`Clock`] |
//! | [`state`] | [`JobState`] and which transitions it allows |
//! | [`backoff`] | [`Backoff`] policies and the delay before a retry |
//! | [`spec`] | [`JobSpec`]: what a caller asks to enqueue |
//! | [`job`] | [`Job`]: the stored record, attempts, logs, progress, errors |
//! | [`failure`] | what a failed, timed-out or stalled attempt leads to |
//! | [`queue`] | per-queue configuration |
//! | [`limit`] | per-key limits and the sliding window of starts behind rate limits |
//! | [`schedule`] | [`ScheduleSpec`]: cron and interval schedules, the next-tick rule |
//! | [`event`] | lifecycle and handler-defined events |
//! | [`flow`] | flows (a parent and its children) and batches |
//!
//! ```
//! use drover_core::{Backoff, JobSpec};
//! use serde_json::json;
//!
//! let spec = JobSpec::new("emails", "send_welcome")
//!     .payload(json!({"user_id": 7}))
//!     .attempts(5)
//!     .backoff(Backoff::exponential(1_000));
//! assert_eq!(spec.max_attempts, 5);
//! ```

pub mod backoff;
pub mod event;
pub mod failure;
pub mod flow;
pub mod id;
pub mod job;
pub mod limit;
pub mod queue;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod time;

pub use backoff::{Backoff, BackoffKind};
pub use event::{Event, EventKind};
pub use failure::{FailureDecision, FailureReport, StallDecision, decide_failure, decide_stall};
pub use flow::{BatchSpec, ChildFailure, FlowSpec};
pub use id::{JobId, LeaseToken};
pub use job::{Attempt, AttemptOutcome, Job, JobError, LogEntry, LogLevel, Progress};
pub use limit::{KeyLimit, StartWindow};
pub use queue::{QueueConfig, RateLimit, Retention, RetentionRule};
pub use schedule::{Schedule, ScheduleError, ScheduleRule, ScheduleSpec};
pub use spec::{JobSpec, SpecError};
pub use state::JobState;
pub use time::{Clock, ManualClock, SystemClock, Timestamp};

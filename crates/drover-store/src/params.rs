//! Params and result structs of the [`crate::Store`] methods.

use drover_core::{FailureReport, Job, JobId, JobState, LeaseToken, LogLevel, Progress, QueueConfig, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest page a list returns.
pub const MAX_PAGE: u32 = 1_000;

/// One result of [`crate::Store::job_insert_many`].
#[derive(Clone, Debug, PartialEq)]
pub struct Inserted {
    /// The job as stored (the existing one for a duplicate).
    pub job: Job,
    /// True when a job with that id already existed and nothing was inserted.
    pub duplicate: bool,
}

/// Filters and paging of [`crate::Store::job_list`]. `None` filters match all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobListParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this job type.
    pub name: Option<String>,
    /// Only this batch.
    pub batch_id: Option<String>,
    /// Only children of this job.
    pub parent_id: Option<JobId>,
    /// Page size, 1..=[`MAX_PAGE`] (0 means 50).
    pub limit: u32,
    /// Where the previous page stopped.
    pub cursor: Option<String>,
}

/// One page of jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    /// Jobs, newest first, without attempt history.
    pub items: Vec<Job>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What [`crate::Store::job_claim`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobClaimParams {
    /// Queues to take from.
    pub queues: Vec<String>,
    /// Who is claiming (recorded on the job and its attempt).
    pub worker_id: String,
    /// Most jobs to hand out.
    pub max: u32,
    /// How long the lease lasts without a heartbeat.
    pub lease_ms: u64,
}

/// A job handed to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedJob {
    /// The job, now `active` (no attempt history).
    pub job: Job,
    /// The lease to present on every report about this attempt.
    pub lease_token: LeaseToken,
    /// When the lease runs out without a heartbeat.
    pub lease_expires_at: Timestamp,
    /// This attempt's number, 1-based.
    pub attempt: u32,
}

/// One item of [`crate::Store::job_heartbeat_many`].
#[derive(Clone, Debug, PartialEq)]
pub struct JobHeartbeat {
    /// The job.
    pub id: JobId,
    /// Its lease.
    pub lease_token: LeaseToken,
    /// The lease is extended to now + this.
    pub lease_ms: u64,
    /// Progress to record with the beat.
    pub progress: Option<Progress>,
}

/// The answer to a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The new expiry.
    pub lease_expires_at: Timestamp,
    /// The job should stop: a cancel was requested.
    pub cancel_requested: bool,
}

/// What [`crate::Store::job_log_append`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobLogAppend {
    /// The job.
    pub id: JobId,
    /// Its lease.
    pub lease_token: LeaseToken,
    /// Severity.
    pub level: LogLevel,
    /// The line.
    pub message: String,
    /// Structured context.
    pub metadata: Value,
}

/// What [`crate::Store::job_event_emit`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEventEmit {
    /// The job.
    pub id: JobId,
    /// Its lease.
    pub lease_token: LeaseToken,
    /// The event type, e.g. `lead:add`.
    pub kind: String,
    /// Its data.
    pub data: Value,
}

/// How an attempt ended, as reported by its worker.
#[derive(Clone, Debug, PartialEq)]
pub enum FinishOutcome {
    /// Success, with the handler's result.
    Complete(Value),
    /// Failure.
    Fail(FailureReport),
    /// The worker hands the job back unfinished (graceful shutdown ran out
    /// of time): the job goes back to `waiting` at once, the attempt handed
    /// back (`attempts_made - 1`) and recorded with outcome `released` (or
    /// `cancelled` when a cancel was requested).
    Release,
}

/// One item of [`crate::Store::job_finish_many`].
#[derive(Clone, Debug, PartialEq)]
pub struct JobFinish {
    /// The job.
    pub id: JobId,
    /// Its lease.
    pub lease_token: LeaseToken,
    /// How the attempt ended.
    pub outcome: FinishOutcome,
}

/// Where a finished attempt left its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The job's new state.
    pub state: JobState,
    /// When it runs next, if it was sent back to `delayed`.
    pub run_at: Option<Timestamp>,
}

/// What [`crate::Store::job_cancel`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    /// The job was not running and is now `cancelled`.
    Cancelled(Job),
    /// The job is running; its handler is being told (`cancel_requested`).
    Requested(Job),
}

impl CancelOutcome {
    /// The job after the cancel.
    pub fn job(&self) -> &Job {
        match self {
            CancelOutcome::Cancelled(job) | CancelOutcome::Requested(job) => job,
        }
    }
}

/// What [`crate::Store::job_rescue_expired`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Jobs sent back to `waiting`.
    pub requeued: Vec<JobId>,
    /// Jobs failed for good (too many stalls).
    pub failed: Vec<JobId>,
    /// Jobs cancelled (a cancel had been requested).
    pub cancelled: Vec<JobId>,
}

impl RescueReport {
    /// How many jobs were rescued in all.
    pub fn total(&self) -> usize {
        self.requeued.len() + self.failed.len() + self.cancelled.len()
    }
}

/// Jobs per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// `waiting`.
    pub waiting: u64,
    /// `delayed`.
    pub delayed: u64,
    /// `waiting-children`.
    #[serde(rename = "waiting-children")]
    pub waiting_children: u64,
    /// `active`.
    pub active: u64,
    /// `completed`.
    pub completed: u64,
    /// `failed`.
    pub failed: u64,
    /// `cancelled`.
    pub cancelled: u64,
}

impl StateCounts {
    /// The count for one state.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::WaitingChildren => self.waiting_children,
            JobState::Active => self.active,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
        }
    }

    /// Adds `n` to one state's count.
    pub fn add(&mut self, state: JobState, n: u64) {
        let slot = match state {
            JobState::Waiting => &mut self.waiting,
            JobState::Delayed => &mut self.delayed,
            JobState::WaitingChildren => &mut self.waiting_children,
            JobState::Active => &mut self.active,
            JobState::Completed => &mut self.completed,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    /// Jobs in all states.
    pub fn total(&self) -> u64 {
        JobState::ALL.into_iter().map(|s| self.get(s)).sum()
    }
}

/// A queue with its settings and counts.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// True while it hands out no jobs.
    pub paused: bool,
    /// Its settings.
    pub config: QueueConfig,
    /// Jobs per state.
    pub counts: StateCounts,
    /// Until when the queue hands out no job although it may have some
    /// ready: a handler's "rate limited" hold on it, or its rate limit used
    /// up. `None` when it is not held back.
    pub throttled_until: Option<drover_core::Timestamp>,
}

/// Limits configured for a rate-limit key, or for each key with a prefix
/// (`key` ending in `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitRule {
    /// The key, or the prefix followed by `*`.
    pub key: String,
    /// The limits.
    pub limit: drover_core::KeyLimit,
}

/// Where one rate-limit key stands now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitState {
    /// The key asked about.
    pub key: String,
    /// The rule that applies to it (its own, or the longest matching
    /// prefix), if any.
    pub rule: Option<RateLimitRule>,
    /// Jobs with the key active now.
    pub active: u64,
    /// Starts of jobs with the key in the current rate-limit window (0
    /// without a rate limit).
    pub started_in_window: u32,
    /// Until when no job with the key is handed out: a handler's "rate
    /// limited" hold, or the rate limit used up. `None` when not held back.
    pub throttled_until: Option<drover_core::Timestamp>,
}

/// What [`crate::Store::schedule_upsert`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleUpserted {
    /// The schedule as stored now.
    pub schedule: drover_core::Schedule,
    /// True when no schedule had this id before (false: it was replaced).
    pub created: bool,
}

/// Paging of [`crate::Store::schedule_list`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleListParams {
    /// Page size, 1..=[`MAX_PAGE`] (0 means 50).
    pub limit: u32,
    /// Where the previous page stopped.
    pub cursor: Option<String>,
}

/// One page of schedules.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulePage {
    /// Schedules, by id.
    pub items: Vec<drover_core::Schedule>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One tick fired by [`crate::Store::schedule_fire_due`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleFired {
    /// The schedule.
    pub schedule_id: String,
    /// The tick that fired: the schedule's `next_run_at` when it was due.
    pub tick: Timestamp,
    /// The job of that tick (`sched:{schedule_id}:{tick}`).
    pub job_id: JobId,
    /// True when that job already existed (another scheduler fired the
    /// tick first): nothing was inserted.
    pub duplicate: bool,
    /// The schedule's next tick, strictly after now.
    pub next_run_at: Timestamp,
}

/// What [`crate::Store::batch_insert`] created.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchInserted {
    /// The new batch's id.
    pub id: String,
    /// How many jobs it holds.
    pub total: u64,
    /// Its jobs as stored, in input order.
    pub jobs: Vec<Inserted>,
}

/// A batch's aggregate status ([`crate::Store::batch_get`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// The batch id.
    pub id: String,
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs `completed`.
    pub completed: u64,
    /// Jobs `failed`.
    pub failed: u64,
    /// Jobs `active`.
    pub active: u64,
    /// Jobs not started yet: `waiting`, `delayed` or `waiting-children`.
    pub waiting: u64,
    /// Jobs `cancelled`.
    pub cancelled: u64,
    /// Percentage of the jobs that have finished (completed, failed or
    /// cancelled), 0 to 100; 100 for an empty batch.
    pub progress: f64,
    /// `running` until every job has finished once, then `completed`.
    pub state: BatchState,
    /// When the batch was created.
    pub created_at: Timestamp,
    /// When its last job first finished (and `on_complete` was enqueued).
    pub completed_at: Option<Timestamp>,
    /// The completion job, once enqueued.
    pub on_complete_id: Option<JobId>,
}

/// Where a batch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Some job has not finished yet.
    Running,
    /// Every job finished once; `batch:completed` was emitted. A later
    /// manual retry of one of its jobs does not re-open it.
    Completed,
}

impl BatchState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Running => "running",
            BatchState::Completed => "completed",
        }
    }
}

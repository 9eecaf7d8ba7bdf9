//! The storage seam of Drover: the [`Store`] trait that every backend
//! implements, its parameter and result types, [`StoreError`], and (behind
//! the `testsuite` feature) the conformance suite every backend must pass.
//!
//! Methods are named noun-first (`job_insert_many`, `job_claim`,
//! `queue_pause`) so that related operations sort together, and each takes
//! one params struct or a plain id. Every mutation is committed when it
//! returns, and its events are published after the commit. Mutations that
//! promise something to a caller (insert, finish, cancel, retry, logs,
//! custom events, queue settings, schedules) are also durable on power loss
//! when they return; a backend may answer claims, heartbeats, progress,
//! maintenance passes and schedule firing before its commit reaches the
//! disk, since losing one only means a job runs again, a tick fires again
//! (under the same job id), or shows older progress (see the SQLite sync
//! lane, ADR 0002).
//!
//! | module | what it holds |
//! |---|---|
//! | [`error`] | [`StoreError`] |
//! | [`params`] | params and result structs of the trait's methods |
//! | [`signal`] | the ready signal that wakes fetchers, and the event bus |
//! | `testsuite` | the conformance suite (feature `testsuite`) |

pub mod error;
pub mod flow;
pub mod params;
pub mod signal;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use error::{StoreError, StoreResult};
pub use params::*;
pub use signal::{EventBus, PendingEvent, ReadySignal};

use async_trait::async_trait;
use drover_core::{Event, Job, JobId, QueueConfig, Schedule, ScheduleSpec, Timestamp};
use tokio::sync::{broadcast, watch};

/// Where Drover keeps every job. Implementations: `drover-sqlite` (embedded)
/// and, later, `drover-postgres`. Both must pass the conformance suite.
///
/// Unless a method says otherwise, errors are [`StoreError::Unavailable`] /
/// [`StoreError::Backend`] when the backend itself fails, and
/// [`StoreError::Closed`] after the store was closed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The time as this store sees it (its injected clock).
    fn now(&self) -> Timestamp;

    /// Inserts jobs in one transaction: all or nothing.
    ///
    /// A spec whose `id` already exists (in the store, or earlier in the same
    /// call) is not inserted again: the existing job is returned with
    /// `duplicate: true` and is left unchanged. So is a spec with a
    /// `unique_key` when its queue holds a job with the same key that is
    /// unfinished, or (when the spec gives `unique_for_ms`) was created
    /// less than `unique_for_ms` ago: the newest such job is returned
    /// (checked before the id; within one call too). Results are in input
    /// order.
    /// A job is `delayed` when its first `run_at` is after now, else
    /// `waiting`. A spec's `expires_at` is stored as given (see
    /// [`Store::job_expire_due`]).
    ///
    /// Errors: [`StoreError::Invalid`] when a spec fails
    /// [`drover_core::JobSpec::validate`] (nothing is inserted).
    /// Events: `job:waiting` or `job:delayed` per inserted job.
    async fn job_insert_many(&self, specs: Vec<drover_core::JobSpec>) -> StoreResult<Vec<Inserted>>;

    /// One job with its attempt history, or `None`.
    async fn job_get(&self, id: &JobId) -> StoreResult<Option<Job>>;

    /// Jobs matching the filters, newest first, one page at a time.
    ///
    /// Errors: [`StoreError::Invalid`] for a cursor this store did not issue.
    async fn job_list(&self, params: JobListParams) -> StoreResult<JobPage>;

    /// Claims up to `max` ready jobs from `queues` for one worker.
    ///
    /// First promotes `delayed` jobs whose `run_at` has passed to `waiting`.
    /// Then takes `waiting` jobs of queues that are not paused, ordered by
    /// priority (lower first), then `run_at`, then enqueue order, across all
    /// the given queues. Each becomes `active` with a fresh lease token,
    /// `lease_expires_at = now + lease_ms`, `started_at = now`, the worker id,
    /// and `attempts_made + 1`. No job is handed to two claimers.
    ///
    /// Flow control holds even with parallel claimers: a queue with a
    /// `concurrency` cap never has more active jobs than it; a queue with a
    /// `rate_limit` never starts more than `max` jobs in any `per_ms`
    /// window; a job with a `rate_limit_key` is skipped (later jobs may be
    /// taken) while its key is at its cap or rate limit
    /// ([`Store::rate_limit_set`]); and a queue or key held back by a
    /// handler's "rate limited, retry after T" hands out nothing until then.
    /// So a claim may return fewer than `max` jobs although more are ready.
    ///
    /// Events: `job:waiting` per promoted job, `job:active` per claimed job,
    /// `queue:throttled` (data `{"throttled_until"}`) when the claim used up
    /// a queue's rate limit.
    async fn job_claim(&self, params: JobClaimParams) -> StoreResult<Vec<ClaimedJob>>;

    /// Extends leases and optionally records progress, one entry per job.
    ///
    /// Per item: [`StoreError::LeaseLost`] when the job is not active under
    /// that token; the other items still apply.
    /// Events: `job:progress` for items that carry progress.
    async fn job_heartbeat_many(&self, beats: Vec<JobHeartbeat>) -> StoreResult<Vec<StoreResult<HeartbeatReply>>>;

    /// Records progress of an active job (lease required).
    ///
    /// Errors: [`StoreError::LeaseLost`], [`StoreError::NotFound`].
    /// Events: `job:progress`.
    async fn job_progress(
        &self,
        id: &JobId,
        lease_token: drover_core::LeaseToken,
        progress: drover_core::Progress,
    ) -> StoreResult<()>;

    /// Appends a line to an active job's log (lease required).
    ///
    /// Errors: [`StoreError::LeaseLost`], [`StoreError::NotFound`].
    async fn job_log_append(&self, params: JobLogAppend) -> StoreResult<()>;

    /// A job's log lines, oldest first, up to `limit` after `after` lines.
    ///
    /// Errors: [`StoreError::NotFound`] when the job does not exist.
    async fn job_log_list(&self, id: &JobId, after: u64, limit: u32) -> StoreResult<Vec<drover_core::LogEntry>>;

    /// Publishes a handler-defined event for an active job (lease required).
    ///
    /// Errors: [`StoreError::LeaseLost`], [`StoreError::NotFound`],
    /// [`StoreError::Invalid`] for a reserved or malformed type.
    /// Events: the custom event itself.
    async fn job_event_emit(&self, params: JobEventEmit) -> StoreResult<()>;

    /// Ends attempts: completions and failures, in one transaction.
    ///
    /// Per item: [`StoreError::LeaseLost`] when the job is not active under
    /// that token (nothing changes for that item; the others apply).
    /// A completion makes the job `completed` with its result (or
    /// `cancelled`, keeping the result, when a cancel was requested). A
    /// failure follows [`drover_core::decide_failure`]: `delayed` for a retry
    /// or a rate-limit deferral (which hands the attempt back:
    /// `attempts_made - 1`), else `failed` (or `cancelled` when a cancel was
    /// requested). A rate-limit deferral also holds back, until its
    /// `run_at`, every job with the same `rate_limit_key`, or, for a job
    /// without a key, its whole queue. A release ([`FinishOutcome::Release`]) sends the job back
    /// to `waiting` with the attempt handed back. Every item appends one
    /// attempt to the history.
    ///
    /// Events: `job:completed`, `job:retrying`, `job:failed`,
    /// `job:cancelled` or `job:waiting` per item; `queue:throttled` (data
    /// `{"throttled_until", "rate_limit_key"}`) per rate-limit deferral.
    async fn job_finish_many(&self, items: Vec<JobFinish>) -> StoreResult<Vec<StoreResult<Finished>>>;

    /// Cancels a job.
    ///
    /// `waiting`, `delayed` and `waiting-children` jobs become `cancelled` at
    /// once; an `active` job gets `cancel_requested` (its worker learns it
    /// from the heartbeat reply and the `job:cancel_requested` event) and
    /// ends `cancelled` when its worker reports back or its lease runs out.
    ///
    /// Errors: [`StoreError::NotFound`]; [`StoreError::InvalidState`] when
    /// the job already finished.
    /// Events: `job:cancelled` or `job:cancel_requested`.
    async fn job_cancel(&self, id: &JobId) -> StoreResult<CancelOutcome>;

    /// Manual retry: a `failed` or `cancelled` job goes back to `waiting`
    /// with a fresh attempt budget (`max_attempts` set to `attempts_made`
    /// plus the job's original budget, as in ADR 0001), its error, stalls
    /// and `expires_at` cleared, its history kept.
    ///
    /// Errors: [`StoreError::NotFound`]; [`StoreError::InvalidState`] for any
    /// other state.
    /// Events: `job:waiting`.
    async fn job_retry(&self, id: &JobId) -> StoreResult<Job>;

    /// Rescues active jobs whose lease has expired, following
    /// [`drover_core::decide_stall`]: back to `waiting` (the attempt handed
    /// back), `failed` with error code `stalled`, or `cancelled` when a cancel
    /// was requested. Each appends a `stalled` attempt to the history.
    ///
    /// Events: `job:stalled` per job, then `job:waiting`, `job:failed` or
    /// `job:cancelled`.
    async fn job_rescue_expired(&self) -> StoreResult<RescueReport>;

    /// Promotes `delayed` jobs whose `run_at` has passed to `waiting` and
    /// returns how many moved. (Claims do this too; the maintenance loop
    /// calls it so that states and events stay true without claimers.)
    ///
    /// Events: `job:waiting` per promoted job.
    async fn job_promote_due(&self) -> StoreResult<u64>;

    /// Fails every job that has an `expires_at` at or before now and has
    /// never started (`waiting` or `delayed`, no attempt yet), with error
    /// code `expired` and no attempt appended; returns how many. Claims do
    /// this first too, so an expired job is never handed out; the
    /// maintenance loop calls it so that such jobs end without claimers.
    /// A job that started once is past its TTL's reach (its retries run).
    ///
    /// Events: `job:failed` per expired job, with `{"error": ...}`.
    async fn job_expire_due(&self) -> StoreResult<u64>;

    /// Removes finished jobs beyond their queue's
    /// [`drover_core::Retention`], at most `limit` of them, and returns how
    /// many it removed (fewer than `limit`: nothing more is due now).
    ///
    /// Per queue, `completed` jobs follow `retention.completed`, `failed`
    /// and `cancelled` jobs `retention.failed` (each state counted apart).
    /// A rule's `age_ms` removes jobs whose `finished_at` is older than
    /// `now - age_ms`; its `count` keeps only the newest `count` by
    /// `finished_at`. Jobs that have not finished are never removed. A job's
    /// attempt history and log lines go with it, and the queue's counts
    /// drop. Small `limit`s keep each call short; call again until it
    /// returns less than `limit`.
    ///
    /// Events: none (removal is housekeeping, not a change of state).
    async fn job_retention_sweep(&self, limit: u32) -> StoreResult<u64>;

    /// The earliest `run_at` of a `delayed` job in `queues` (all queues when
    /// empty), or the earliest future instant a rate limit or hold may let
    /// a held-back job go, whichever comes first: when a fetcher with
    /// nothing to do should look again.
    async fn job_next_due(&self, queues: &[String]) -> StoreResult<Option<Timestamp>>;

    /// Every known queue (configured, or holding jobs) with its counts per
    /// state, sorted by name.
    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>>;

    /// One queue; a queue never configured and holding no job is returned
    /// with zero counts and the default config.
    async fn queue_get(&self, name: &str) -> StoreResult<QueueInfo>;

    /// Replaces a queue's config.
    ///
    /// Errors: [`StoreError::Invalid`] for a bad queue name.
    async fn queue_config_set(&self, name: &str, config: QueueConfig) -> StoreResult<QueueInfo>;

    /// Sets the limits shared by every job whose `rate_limit_key` is `key`
    /// (or, for a `key` ending in `*`, by each key with that prefix, each
    /// key counted apart), replacing any limits set before for it.
    ///
    /// Claims then hand out a job with such a key only while fewer than
    /// `concurrency` jobs with the key are active, and while fewer than
    /// `rate_limit.max` jobs with the key started in the last
    /// `rate_limit.per_ms` (see [`drover_core::StartWindow`]). The key's
    /// own rule applies, else the longest matching prefix rule.
    ///
    /// Errors: [`StoreError::Invalid`] for a bad pattern or limit.
    async fn rate_limit_set(&self, key: &str, limit: drover_core::KeyLimit) -> StoreResult<RateLimitRule>;

    /// Removes the limits set for `key` (a key or a prefix pattern); false
    /// when there were none. Its jobs run unlimited (or under a prefix rule)
    /// from the next claim on.
    async fn rate_limit_delete(&self, key: &str) -> StoreResult<bool>;

    /// Every rule set with [`Store::rate_limit_set`], sorted by key.
    async fn rate_limit_list(&self) -> StoreResult<Vec<RateLimitRule>>;

    /// Where the concrete key `key` stands: the rule that applies, its
    /// active jobs, its starts in the current window, and until when it is
    /// held back (a key nobody configured can still be held back by a
    /// handler's "rate limited").
    async fn rate_limit_get(&self, key: &str) -> StoreResult<RateLimitState>;

    /// Pauses (true) or resumes (false) a queue. A paused queue keeps its jobs
    /// `waiting` and hands none out; active jobs run on.
    ///
    /// Events: `queue:paused` or `queue:resumed` when the flag changed.
    async fn queue_pause_set(&self, name: &str, paused: bool) -> StoreResult<QueueInfo>;

    /// A watch that changes whenever jobs may have become claimable (insert,
    /// retry, re-queue, promotion, resume). Mark it seen before claiming and
    /// wait for a change after an empty claim: no wake-up is lost.
    fn ready_signal(&self) -> watch::Receiver<u64>;

    /// Every event this store publishes from now on.
    fn events(&self) -> broadcast::Receiver<Event>;

    // Schedules (ADR 0006): job templates enqueued on a cron expression or
    // an interval. A scheduler loop calls `schedule_fire_due` when
    // `schedule_next_due` says a tick is due; every server may run one.

    /// Creates the schedule, or replaces the one with the same id.
    ///
    /// A new schedule's next tick is the first strictly after now (for
    /// `every_ms`, now plus one interval). A replaced schedule keeps its
    /// `created_at`, `last_run_at`, `last_job_id` and paused flag, and its
    /// `next_run_at` too when its cadence (`cron`, `every_ms`, `timezone`)
    /// is unchanged; a new cadence starts from now. The new job template
    /// applies from the next tick.
    ///
    /// Errors: [`StoreError::Invalid`] when the spec fails
    /// [`drover_core::ScheduleSpec::validate`] (field `id`, `cron`,
    /// `every_ms`, `timezone` or `job.*`).
    /// Events: none; the [`Store::schedule_signal`] changes.
    async fn schedule_upsert(&self, spec: ScheduleSpec) -> StoreResult<ScheduleUpserted>;

    /// One schedule, or `None`.
    async fn schedule_get(&self, id: &str) -> StoreResult<Option<Schedule>>;

    /// Schedules sorted by id, one page at a time.
    async fn schedule_list(&self, params: ScheduleListParams) -> StoreResult<SchedulePage>;

    /// Pauses (true) or resumes (false) a schedule. A paused schedule fires
    /// nothing; resuming moves its `next_run_at` to the first tick after
    /// now, so the ticks that passed while it was paused never run.
    /// Replacing a schedule keeps its paused flag.
    ///
    /// Errors: [`StoreError::NotFound`].
    /// Events: none; the [`Store::schedule_signal`] changes.
    async fn schedule_pause_set(&self, id: &str, paused: bool) -> StoreResult<Schedule>;

    /// Deletes a schedule; true when it existed. Jobs it already enqueued
    /// stay.
    ///
    /// Events: none; the [`Store::schedule_signal`] changes.
    async fn schedule_delete(&self, id: &str) -> StoreResult<bool>;

    /// Fires every schedule not paused whose `next_run_at` is at or before now, in one
    /// transaction, and returns what fired (by `next_run_at`).
    ///
    /// Each due schedule enqueues exactly one job, as
    /// [`Store::job_insert_many`] would, with the id
    /// `sched:{schedule id}:{tick}` where `tick` is its `next_run_at` in
    /// milliseconds: a second scheduler firing the same tick finds that job
    /// and inserts nothing (`duplicate: true`). Its `next_run_at` then moves
    /// to the first tick strictly after now, so ticks missed while nothing
    /// ran (downtime) collapse into this one run; `last_run_at` becomes the
    /// tick and `last_job_id` the job.
    ///
    /// Events: `job:waiting` or `job:delayed` per inserted job.
    async fn schedule_fire_due(&self) -> StoreResult<Vec<ScheduleFired>>;

    /// The earliest `next_run_at` of any schedule not paused: when a scheduler with
    /// nothing due should look again.
    async fn schedule_next_due(&self) -> StoreResult<Option<Timestamp>>;

    /// A watch that changes whenever a schedule is created, replaced,
    /// paused, resumed or deleted through this store, so a sleeping scheduler can look again.
    fn schedule_signal(&self) -> watch::Receiver<u64>;

    // Flows and batches (ADR 0007). The one rule behind them: whenever a
    // job reaches a final state (`completed`, `failed`, `cancelled`) by any
    // path (finish, cancel, stall rescue, expiry, a parent failed by its
    // child), the same transaction updates its parent and its batch:
    // - parent: one child fewer pending; a `waiting-children` parent with
    //   none left becomes `waiting` (`job:waiting`, ready signal). A child
    //   that ends `failed` or `cancelled` with
    //   [`drover_core::ChildFailure::FailParent`] fails an unfinished parent
    //   with error code `child_failed` (`details.child_id`) at once, or, if
    //   the parent is active, when its handler returns. A parent whose
    //   handler completes while children it enqueued are unfinished goes to
    //   `waiting-children` instead of `completed`, and runs again after them.
    // - batch: its finished counters (kept apart from the jobs, so they
    //   survive retention); when every job has finished, the batch's
    //   `on_complete` job is inserted, once, and `batch:completed` emitted.
    // An insert with a `parent_id` (any insert, not only these methods)
    // checks the parent: unknown → [`StoreError::Invalid`] on `parent_id`;
    // finished → [`StoreError::InvalidState`]; `waiting` or `delayed` →
    // the parent becomes `waiting-children`. A manual retry of a finished
    // child gives its batch its counters back and re-opens a
    // `waiting-children` parent's wait.

    /// The children of job `id`, in enqueue order, without attempt history.
    ///
    /// Errors: [`StoreError::NotFound`] when the job does not exist.
    async fn job_children(&self, id: &JobId) -> StoreResult<Vec<Job>>;

    /// Inserts a flow in one transaction, all or nothing: the jobs in
    /// pre-order ([`drover_core::FlowSpec::flatten`]), every job with
    /// children created `waiting-children`, leaves `waiting` or `delayed`.
    /// Results are in pre-order. Duplicates (by id or unique key) are
    /// returned as by [`Store::job_insert_many`], and a duplicate's new
    /// children attach to the existing job.
    ///
    /// Errors: [`StoreError::Invalid`] for a bad spec or an unknown
    /// `parent_id` at the root; [`StoreError::InvalidState`] when a parent
    /// has already finished.
    /// Events: `job:waiting` or `job:delayed` per inserted leaf (jobs
    /// created `waiting-children` emit nothing until they are released).
    async fn flow_insert(&self, flow: drover_core::FlowSpec) -> StoreResult<Vec<Inserted>>;

    /// Creates a batch: a new batch id, its jobs (their `batch_id` set to
    /// it) and its completion job spec, in one transaction. A batch with no
    /// jobs is complete at once (its `on_complete` is inserted at once).
    ///
    /// Errors: [`StoreError::Invalid`] for a bad spec, a spec naming
    /// another batch, or more than [`drover_core::flow::MAX_FLOW_JOBS`] jobs.
    /// Events: as [`Store::job_insert_many`] per job.
    async fn batch_insert(&self, batch: drover_core::BatchSpec) -> StoreResult<BatchInserted>;

    /// A batch's counts, or `None`. Finished counts come from counters kept
    /// with the batch (so retention does not lower them); `active` and
    /// `waiting` are counted from its unfinished jobs.
    async fn batch_get(&self, id: &str) -> StoreResult<Option<BatchInfo>>;
}

//! The single writer: one OS thread owns the only read-write connection and
//! applies every mutation, many at a time (group commit).
//!
//! Callers send a [`Command`] carrying a oneshot for its reply. The thread
//! blocks for the first command, drains whatever else is pending (up to
//! `max_batch`), and applies them all in one `BEGIN IMMEDIATE` transaction.
//! One failing command rolls back alone and gets its own error: when a
//! command fails, the batch is run again with each command inside its own
//! savepoint (see `apply_batch` for why not always). Only after `COMMIT`
//! are events published, the ready signal bumped and callers answered:
//! nobody hears of a change that a crash could still undo. One fsync serves
//! the whole batch.

use crate::counts::CountDeltas;
use crate::error::store_error;
use crate::sync::{Committed, SyncLane};
use crate::{SqlitePragmas, claim, expire, finish, job_sql, limits, queue_sql, retention, schedule_sql};
use drover_core::{
    Clock, Job, JobId, KeyLimit, LeaseToken, Progress, QueueConfig, ScheduleRule, ScheduleSpec, Timestamp,
};
use drover_store::{
    CancelOutcome, ClaimedJob, EventBus, Finished, HeartbeatReply, JobClaimParams, JobEventEmit, JobFinish,
    JobHeartbeat, JobLogAppend, PendingEvent, QueueInfo, RateLimitRule, ReadySignal, RescueReport, ScheduleFired,
    ScheduleUpserted, StoreError, StoreResult,
};
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a command's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// The answer to an insert: one outcome per row.
type InsertReply = Reply<Vec<job_sql::InsertOutcome>>;

/// Every mutation the store knows, with its reply channel.
pub(crate) enum Command {
    JobInsert { rows: Vec<job_sql::NewRow>, reply: Reply<Vec<job_sql::InsertOutcome>> },
    BatchInsert { id: String, rows: Vec<job_sql::NewRow>, on_complete: Option<String>, reply: InsertReply },
    JobClaim { params: JobClaimParams, reply: Reply<Vec<ClaimedJob>> },
    JobHeartbeat { beats: Vec<JobHeartbeat>, reply: Reply<Vec<StoreResult<HeartbeatReply>>> },
    JobProgress { id: JobId, lease_token: LeaseToken, progress: Progress, reply: Reply<()> },
    JobLogAppend { params: JobLogAppend, reply: Reply<()> },
    JobEventEmit { params: JobEventEmit, reply: Reply<()> },
    JobFinish { items: Vec<JobFinish>, reply: Reply<Vec<StoreResult<Finished>>> },
    JobCancel { id: JobId, reply: Reply<CancelOutcome> },
    JobRetry { id: JobId, reply: Reply<Job> },
    JobRescue { reply: Reply<RescueReport> },
    JobPromote { reply: Reply<u64> },
    JobRetentionSweep { limit: u32, reply: Reply<u64> },
    JobExpire { reply: Reply<u64> },
    QueueConfigSet { name: String, config: QueueConfig, reply: Reply<QueueInfo> },
    QueuePauseSet { name: String, paused: bool, reply: Reply<QueueInfo> },
    RateLimitSet { key: String, limit: KeyLimit, reply: Reply<RateLimitRule> },
    RateLimitDelete { key: String, reply: Reply<bool> },
    // Boxed: a spec with its job template is several times the other commands.
    ScheduleUpsert { spec: Box<(ScheduleSpec, ScheduleRule)>, reply: Reply<ScheduleUpserted> },
    ScheduleDelete { id: String, reply: Reply<bool> },
    SchedulePauseSet { id: String, paused: bool, reply: Reply<drover_core::Schedule> },
    ScheduleFireDue { reply: Reply<Vec<ScheduleFired>> },
    Pragmas { reply: Reply<SqlitePragmas> },
}

/// What a command sees while it runs: the connection, the time, and the
/// side effects to release after commit.
pub(crate) struct Ctx<'c> {
    /// The write connection, inside the batch's transaction.
    pub conn: &'c Connection,
    clock: &'c dyn Clock,
    /// Events to publish after commit; only collected when someone listens.
    events: Vec<PendingEvent>,
    want_events: bool,
    /// Something became claimable (or due earlier): bump the ready signal.
    pub ready: bool,
    /// State changes per queue, written to `queue_counts` before `COMMIT`.
    /// Every command that inserts a job or changes its state records it here.
    pub counts: CountDeltas,
    /// The row of each lease handed out, so a finish can skip the id index.
    pub leases: &'c mut LeaseRows,
    /// A claim left jobs behind because a concurrency cap was reached: the
    /// next job to leave `active` must wake fetchers (see [`Ctx::slot_freed`]).
    /// Kept across batches; a stale `true` costs one needless wake-up.
    cap_waiters: &'c mut bool,
    /// A savepoint could not be rolled back: the batch must not commit.
    poisoned: bool,
}

impl Ctx<'_> {
    /// The store's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// True when events are wanted; lets callers skip building their data.
    pub fn wants_events(&self) -> bool {
        self.want_events
    }

    /// A claim was held back by a concurrency cap.
    pub fn cap_reached(&mut self) {
        *self.cap_waiters = true;
    }

    /// A job left `active`: if a claim was held back by a cap, fetchers
    /// must look again, since the slot may be theirs.
    pub fn slot_freed(&mut self) {
        if *self.cap_waiters {
            *self.cap_waiters = false;
            self.ready = true;
        }
    }

    /// Records an event for after commit, built only if someone listens.
    pub fn event(&mut self, build: impl FnOnce() -> PendingEvent) {
        if self.want_events {
            self.events.push(build());
        }
    }
}

/// Which row each lease handed out by this writer belongs to: a finish
/// presents the job's text id and its lease token, and finding the row by
/// `seq` spares a lookup in the `id` index, one of the costliest steps of a
/// finish.
///
/// Only a hint, never trusted: the row found through it must still hold
/// that lease, be `active` and carry the presented id, else the finish
/// looks the job up by id as before. So entries left behind (a claim whose
/// batch rolled back, a lease lost to a rescue, a store reopened) cost
/// nothing but memory, and the map is cleared if it ever grows past
/// [`LeaseRows::LIMIT`].
#[derive(Debug, Default)]
pub(crate) struct LeaseRows(std::collections::HashMap<i64, i64>);

impl LeaseRows {
    /// Far more leases than a store has active at once.
    const LIMIT: usize = 1 << 20;

    /// Remembers that `lease` was handed out for row `seq`.
    pub fn insert(&mut self, lease: LeaseToken, seq: i64) {
        if self.0.len() >= Self::LIMIT {
            self.0.clear();
        }
        self.0.insert(lease.0, seq);
    }

    /// The row `lease` was handed out for, forgotten (the lease is ending).
    pub fn take(&mut self, lease: i64) -> Option<i64> {
        self.0.remove(&lease)
    }
}

/// Counters the writer keeps, for metrics and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub failed_batches: AtomicU64,
    pub isolated_batches: AtomicU64,
}

/// Tuning of the writer thread.
pub(crate) struct WriterConfig {
    pub max_batch: usize,
    pub wal_limit_bytes: u64,
    pub wal_path: PathBuf,
    /// Fsync the WAL before answering durable commands (`Synchronous::Full`).
    pub sync_lane: bool,
}

/// The store's handle on the writer thread.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    /// Shared with the thread.
    pub counters: Arc<Counters>,
}

impl Writer {
    /// Starts the thread that owns `conn`.
    pub fn spawn(
        conn: Connection,
        clock: Arc<dyn Clock>,
        bus: Arc<EventBus>,
        ready: Arc<ReadySignal>,
        config: WriterConfig,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let sync_lane =
            if config.sync_lane { Some(SyncLane::spawn(config.wal_path.clone(), bus.clone())?) } else { None };
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("drover-sqlite-writer".into())
            .spawn(move || {
                let mut state = WriterThread {
                    sync_lane,
                    checkpoint: Checkpointer::new(config.wal_path, config.wal_limit_bytes),
                    conn,
                    clock,
                    bus,
                    ready,
                    max_batch: config.max_batch.max(1),
                    counters: thread_counters,
                    counts: CountDeltas::default(),
                    leases: LeaseRows::default(),
                    cap_waiters: false,
                };
                state.run(rx);
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { tx: Some(tx), thread: Some(thread), counters })
    }

    /// Sends a command and waits for its answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Lets the thread apply what is queued, then stops it and waits for it.
    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite writer thread panicked");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long the writer waits for work before it calls itself idle and tries
/// to truncate the WAL.
const IDLE: Duration = Duration::from_millis(500);

struct WriterThread {
    /// Present under `Synchronous::Full`: fsyncs and answers durable calls.
    sync_lane: Option<SyncLane>,
    conn: Connection,
    clock: Arc<dyn Clock>,
    bus: Arc<EventBus>,
    ready: Arc<ReadySignal>,
    max_batch: usize,
    checkpoint: Checkpointer,
    counters: Arc<Counters>,
    /// Kept between batches only to reuse its allocation; always empty there.
    counts: CountDeltas,
    leases: LeaseRows,
    cap_waiters: bool,
}

impl WriterThread {
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.max_batch.min(4096));
        loop {
            match rx.recv_timeout(IDLE) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint.idle(&self.conn);
                    continue;
                }
                // Every sender is gone and the queue is empty: closing.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.apply_batch(&mut batch);
        }
        self.checkpoint.idle(&self.conn);
        if let Some(lane) = &mut self.sync_lane {
            lane.shutdown();
        }
    }

    fn apply_batch(&mut self, batch: &mut Vec<Command>) {
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut calls: Vec<Box<dyn Pending>> = batch.drain(..).map(Command::into_pending).collect();
        // Under the sync lane, commands that need no fsync are answered at
        // commit; the rest wait for the lane.
        let fast: Vec<bool> = calls.iter().map(|call| self.sync_lane.is_none() || !call.needs_fsync()).collect();
        let want_events = self.bus.has_subscribers();
        let mut ctx = Ctx {
            conn: &self.conn,
            clock: &*self.clock,
            events: Vec::new(),
            want_events,
            ready: false,
            counts: std::mem::take(&mut self.counts),
            leases: &mut self.leases,
            cap_waiters: &mut self.cap_waiters,
            poisoned: false,
        };

        // First pass without savepoints: each one copies every page its
        // command touches into the statement journal, which costs about a
        // quarter of the throughput of small commands. Commands rarely fail,
        // so the batch runs bare and only a batch with a failure is rolled
        // back and run again, each command in its own savepoint.
        let cap_waiters_before = *ctx.cap_waiters;
        let mut outcome = exec(ctx.conn, "BEGIN IMMEDIATE").map_err(store_error);
        if outcome.is_ok() && !calls.iter_mut().all(|call| call.apply(&mut ctx)) {
            self.counters.isolated_batches.fetch_add(1, Ordering::Relaxed);
            ctx.events.clear();
            ctx.ready = false;
            ctx.counts.clear();
            // A finish of the rolled-back pass may have used up the flag.
            *ctx.cap_waiters = cap_waiters_before;
            outcome = exec(ctx.conn, "ROLLBACK")
                .and_then(|()| exec(ctx.conn, "BEGIN IMMEDIATE"))
                .map_err(store_error)
                .map(|()| calls.iter_mut().for_each(|call| apply_isolated(&mut ctx, call.as_mut())));
        }
        let (events, ready, poisoned, mut counts) = (ctx.events, ctx.ready, ctx.poisoned, ctx.counts);
        let outcome = outcome.and_then(|()| {
            if poisoned {
                Err(StoreError::Backend("a savepoint could not be rolled back; the batch was abandoned".into()))
            } else {
                // The counts go in with the changes they describe, or not at all.
                counts.flush(&self.conn).and_then(|()| exec(&self.conn, "COMMIT")).map_err(store_error)
            }
        });
        // Whatever happened, nothing of this batch is left to count; the
        // allocation is kept for the next one.
        counts.clear();
        self.counts = counts;
        match outcome {
            Ok(()) => {
                // The wake-up goes out at commit: a fetcher may claim a job
                // whose insert is still being fsynced (a power cut would take
                // both back together). Durable callers are answered after
                // their batch's events are published, so they find them; fast
                // callers (claims, heartbeats, progress) may hear back first.
                if ready {
                    self.ready.notify();
                }
                match &self.sync_lane {
                    None => {
                        if !events.is_empty() {
                            self.bus.publish(events);
                        }
                        calls.into_iter().for_each(|call| call.answer(None));
                    }
                    Some(lane) => {
                        let mut durable = Vec::with_capacity(calls.len());
                        for (call, fast) in calls.into_iter().zip(fast) {
                            if fast { call.answer(None) } else { durable.push(call) }
                        }
                        lane.send(Committed { calls: durable, events });
                    }
                }
                self.checkpoint.after_commit(&self.conn);
            }
            Err(err) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                self.cap_waiters = cap_waiters_before;
                if !self.conn.is_autocommit()
                    && let Err(e) = self.conn.execute_batch("ROLLBACK")
                {
                    tracing::warn!(error = %e, "rollback of a failed batch failed");
                }
                for call in calls {
                    call.answer(Some(&err));
                }
            }
        }
    }
}

/// A command on its way through a batch: applied (perhaps twice, the first
/// run rolled back), then answered once the batch's fate is known.
pub(crate) trait Pending: Send {
    /// Runs the command and keeps its result; true when it succeeded.
    fn apply(&mut self, ctx: &mut Ctx<'_>) -> bool;
    /// Replaces the kept result with an error.
    fn fail(&mut self, err: StoreError);
    /// False for commands whose loss on a power cut only means a re-run
    /// (claims, heartbeats, progress): answered before the fsync.
    fn needs_fsync(&self) -> bool;
    /// Sends the kept result, or `commit_error` when the batch did not commit.
    fn answer(self: Box<Self>, commit_error: Option<&StoreError>);
}

struct Call<T, F> {
    run: F,
    needs_fsync: bool,
    result: Option<StoreResult<T>>,
    reply: Reply<T>,
}

impl<T: Send, F: FnMut(&mut Ctx<'_>) -> StoreResult<T> + Send> Pending for Call<T, F> {
    fn apply(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let result = (self.run)(ctx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn fail(&mut self, err: StoreError) {
        self.result = Some(Err(err));
    }

    fn needs_fsync(&self) -> bool {
        self.needs_fsync
    }

    fn answer(self: Box<Self>, commit_error: Option<&StoreError>) {
        let answer = match (commit_error, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Backend("command was never applied".into())),
        };
        // The caller may have given up waiting; that is its business.
        let _ = self.reply.send(answer);
    }
}

fn call<T, F>(reply: Reply<T>, run: F) -> Box<dyn Pending>
where
    T: Send + 'static,
    F: FnMut(&mut Ctx<'_>) -> StoreResult<T> + Send + 'static,
{
    Box::new(Call { run, needs_fsync: true, result: None, reply })
}

/// A command answered at commit, before the fsync (see [`Pending::needs_fsync`]).
fn fast_call<T, F>(reply: Reply<T>, run: F) -> Box<dyn Pending>
where
    T: Send + 'static,
    F: FnMut(&mut Ctx<'_>) -> StoreResult<T> + Send + 'static,
{
    Box::new(Call { run, needs_fsync: false, result: None, reply })
}

impl Command {
    /// Binds the command's data to the function that applies it.
    fn into_pending(self) -> Box<dyn Pending> {
        match self {
            Command::JobInsert { rows, reply } => call(reply, move |c| job_sql::insert(c, &rows)),
            Command::BatchInsert { id, rows, on_complete, reply } => {
                call(reply, move |c| crate::flow::batch_insert(c, &id, &rows, on_complete.as_deref()))
            }
            Command::JobClaim { params, reply } => fast_call(reply, move |c| claim::claim(c, &params)),
            Command::JobHeartbeat { beats, reply } => fast_call(reply, move |c| job_sql::heartbeat(c, &beats)),
            Command::JobProgress { id, lease_token, progress, reply } => {
                fast_call(reply, move |c| job_sql::progress(c, &id, lease_token, &progress))
            }
            Command::JobLogAppend { params, reply } => call(reply, move |c| job_sql::log_append(c, &params)),
            Command::JobEventEmit { params, reply } => call(reply, move |c| job_sql::event_emit(c, &params)),
            Command::JobFinish { items, reply } => call(reply, move |c| finish::finish(c, &items)),
            Command::JobCancel { id, reply } => call(reply, move |c| job_sql::cancel(c, &id)),
            Command::JobRetry { id, reply } => call(reply, move |c| job_sql::retry(c, &id)),
            Command::JobRescue { reply } => call(reply, finish::rescue),
            Command::JobPromote { reply } => call(reply, claim::promote),
            // Losing a sweep to a power cut only means running it again.
            Command::JobRetentionSweep { limit, reply } => fast_call(reply, move |c| retention::sweep(c, limit)),
            Command::JobExpire { reply } => call(reply, expire::expire_due),
            Command::QueueConfigSet { name, config, reply } => {
                call(reply, move |c| queue_sql::config_set(c, &name, &config))
            }
            Command::QueuePauseSet { name, paused, reply } => {
                call(reply, move |c| queue_sql::pause_set(c, &name, paused))
            }
            Command::RateLimitSet { key, limit, reply } => call(reply, move |c| limits::rule_set(c, &key, &limit)),
            Command::RateLimitDelete { key, reply } => call(reply, move |c| limits::rule_delete(c, &key)),
            Command::ScheduleUpsert { spec, reply } => call(reply, move |c| schedule_sql::upsert(c, &spec.0, &spec.1)),
            Command::ScheduleDelete { id, reply } => call(reply, move |c| schedule_sql::delete(c, &id)),
            Command::SchedulePauseSet { id, paused, reply } => {
                call(reply, move |c| schedule_sql::pause_set(c, &id, paused))
            }
            // A power cut takes a fired tick's job back together with the
            // schedule's advance, so the tick fires again, under the same id:
            // the scheduler need not wait for the fsync.
            Command::ScheduleFireDue { reply } => fast_call(reply, schedule_sql::fire_due),
            Command::Pragmas { reply } => call(reply, |c| crate::schema::pragmas(c.conn)),
        }
    }
}

/// Applies one command inside a savepoint; on error rolls it back and
/// forgets what it had recorded (see [`Mark`]).
fn apply_isolated(ctx: &mut Ctx<'_>, call: &mut dyn Pending) {
    let mark = ctx.mark();
    if let Err(e) = exec(ctx.conn, "SAVEPOINT cmd") {
        call.fail(store_error(e));
        return;
    }
    if call.apply(ctx) {
        if let Err(e) = exec(ctx.conn, "RELEASE cmd") {
            call.fail(store_error(e));
            ctx.poisoned = true;
        }
        return;
    }
    if exec(ctx.conn, "ROLLBACK TO cmd").and_then(|()| exec(ctx.conn, "RELEASE cmd")).is_err() {
        ctx.poisoned = true;
    }
    ctx.restore(mark);
}

/// What a [`Ctx`] had recorded at one point: its events, wake-up, count
/// changes and the cap flag, to restore when the work after it rolls back.
struct Mark {
    events: usize,
    ready: bool,
    /// A copy, taken only on the rare paths that may roll back.
    counts: CountDeltas,
    cap_waiters: bool,
}

impl Ctx<'_> {
    fn mark(&self) -> Mark {
        Mark {
            events: self.events.len(),
            ready: self.ready,
            counts: self.counts.clone(),
            cap_waiters: *self.cap_waiters,
        }
    }

    fn restore(&mut self, mark: Mark) {
        self.events.truncate(mark.events);
        self.ready = mark.ready;
        self.counts = mark.counts;
        *self.cap_waiters = mark.cap_waiters;
    }

    /// Runs `part` of a command in a savepoint: when it fails, its rows,
    /// events, count changes and wake-ups are undone and its error is
    /// returned, while the rest of the command (and the batch) goes on. For
    /// work that must not sink the command it belongs to (firing one of
    /// several schedules).
    pub fn isolated<T>(&mut self, part: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        let mark = self.mark();
        exec(self.conn, "SAVEPOINT part").map_err(store_error)?;
        match part(self) {
            Ok(value) => {
                exec(self.conn, "RELEASE part").map_err(store_error)?;
                Ok(value)
            }
            Err(e) => {
                if exec(self.conn, "ROLLBACK TO part").and_then(|()| exec(self.conn, "RELEASE part")).is_err() {
                    self.poisoned = true;
                }
                self.restore(mark);
                Err(e)
            }
        }
    }
}

/// Runs a parameterless statement through the statement cache.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Keeps the WAL bounded. SQLite's own auto-checkpoint is off on the writer
/// (it would run inside a commit, on the caller's time); instead the writer
/// checkpoints between batches.
///
/// A PASSIVE checkpoint never waits: it copies what no reader still needs,
/// and once everything is copied the next commit starts the WAL over from
/// its beginning. Readers that always hold a snapshot can keep it from
/// wrapping, so when the file passes the limit, or the writer is idle, a
/// TRUNCATE checkpoint waits (briefly) for readers to move on and cuts the
/// file to zero.
struct Checkpointer {
    wal_path: PathBuf,
    limit_bytes: u64,
    commits: u32,
    last_passive: Instant,
    last_truncate: Instant,
    dirty: bool,
}

/// PASSIVE checkpoint after this many commits...
const CHECKPOINT_COMMITS: u32 = 256;
/// ...or this long after the last one, whichever comes first.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How long a TRUNCATE checkpoint may wait for readers.
const TRUNCATE_WAIT: Duration = Duration::from_millis(100);
/// How soon a TRUNCATE that found readers busy is tried again.
const TRUNCATE_RETRY: Duration = Duration::from_millis(200);

impl Checkpointer {
    fn new(wal_path: PathBuf, limit_bytes: u64) -> Self {
        let long_ago = Instant::now().checked_sub(TRUNCATE_RETRY).unwrap_or_else(Instant::now);
        Self { wal_path, limit_bytes, commits: 0, last_passive: Instant::now(), last_truncate: long_ago, dirty: false }
    }

    fn after_commit(&mut self, conn: &Connection) {
        self.commits += 1;
        self.dirty = true;
        // A stat is cheap next to the fsync the commit just paid for.
        let wal_bytes = std::fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if wal_bytes > self.limit_bytes && self.last_truncate.elapsed() >= TRUNCATE_RETRY {
            self.truncate(conn);
            return;
        }
        if self.commits < CHECKPOINT_COMMITS && self.last_passive.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        self.commits = 0;
        self.last_passive = Instant::now();
        if let Err(e) = wal_checkpoint(conn, "PASSIVE") {
            tracing::warn!(error = %e, "passive WAL checkpoint failed");
        }
    }

    fn idle(&mut self, conn: &Connection) {
        if self.dirty {
            self.truncate(conn);
        }
    }

    fn truncate(&mut self, conn: &Connection) {
        self.last_truncate = Instant::now();
        self.commits = 0;
        self.last_passive = Instant::now();
        // A short busy timeout: the writer must not stall its callers waiting
        // on a slow reader; it tries again later.
        let outcome = conn.busy_timeout(TRUNCATE_WAIT).and_then(|()| wal_checkpoint(conn, "TRUNCATE"));
        if let Err(e) = conn.busy_timeout(crate::schema::BUSY_TIMEOUT) {
            tracing::warn!(error = %e, "cannot restore the writer's busy timeout");
        }
        match outcome {
            Ok((0, _, _)) => self.dirty = false,
            Ok(_) => tracing::debug!("TRUNCATE checkpoint found readers busy; will retry"),
            Err(e) => tracing::debug!(error = %e, "TRUNCATE checkpoint failed; will retry"),
        }
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames checkpointed).
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

//! Drover's embedded store: one SQLite file in WAL mode.
//!
//! | module | what it holds |
//! |---|---|
//! | `writer` | the writer thread: group commit, savepoints, WAL checkpoints |
//! | `reader` | the pool of read-only connections |
//! | `schema` | pragmas (read back) and migrations (`migrations/*.sql`) |
//! | `job_sql` | insert, heartbeat, progress, logs, events, cancel, retry |
//! | `claim` | promotion of due jobs and claims |
//! | `expire` | job TTL: unstarted jobs past `expires_at` fail as `expired` |
//! | `finish` | finishes and stall rescues, with the attempt history |
//! | `flow` | flows and batches: the hook run when a job ends, batch counters |
//! | `job_query` | job reads: get, list, logs, next due time |
//! | `queue_sql` | queue config, pause flag and counts |
//! | `retention` | removal of finished jobs beyond their queue's rules |
//! | `schedule_sql` | schedules: upsert, delete, fire due ticks, reads |
//! | `counts` | per-queue counts by state, kept by the writer per batch |
//! | `rows` | rows to model types |
//! | `error` | SQLite errors to [`StoreError`] |
//!
//! Every mutation goes to a single writer thread, which applies all the
//! mutations pending at once in one transaction and answers them after one
//! fsync (group commit); reads use separate read-only connections.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use drover_core::JobSpec;
//! use drover_sqlite::{SqliteOptions, SqliteStore};
//! use drover_store::Store;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("drover.db"), SqliteOptions::default()).unwrap();
//! let inserted = store.job_insert_many(vec![JobSpec::new("emails", "send")]).await.unwrap();
//! assert!(store.job_get(&inserted[0].job.id).await.unwrap().is_some());
//! store.close().await;
//! # }
//! ```

mod claim;
mod counts;
mod error;
mod expire;
mod finish;
mod flow;
mod job_query;
mod job_sql;
mod limits;
mod queue_sql;
mod reader;
mod retention;
mod rows;
mod schedule_sql;
mod schema;
mod sync;
mod writer;

use async_trait::async_trait;
use drover_core::{Clock, Event, EventKind, Job, JobId, JobSpec, LeaseToken, LogEntry, Progress, QueueConfig};
use drover_core::{KeyLimit, Schedule, ScheduleSpec, SystemClock, Timestamp};
use drover_store::{
    BatchInfo, BatchInserted, CancelOutcome, ClaimedJob, EventBus, Finished, HeartbeatReply, Inserted, JobClaimParams,
    JobEventEmit, JobFinish, JobHeartbeat, JobListParams, JobLogAppend, JobPage, QueueInfo, RateLimitRule,
    RateLimitState, ReadySignal, RescueReport, ScheduleFired, ScheduleListParams, SchedulePage, ScheduleUpserted,
    Store, StoreError, StoreResult,
};
use error::SqlResultExt;
use reader::Readers;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use writer::{Command, Writer, WriterConfig};

/// The file name used when [`SqliteStore::open`] is given a directory.
pub const DEFAULT_FILE_NAME: &str = "drover.sqlite3";

/// How hard SQLite works to make a commit survive a power cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit that returned survives power loss: the WAL is fsynced
    /// after the commit and before the caller is answered. The default.
    ///
    /// This is SQLite's `synchronous=FULL` guarantee, but the fsync runs on
    /// a thread of its own (the sync lane) while the writer executes the next
    /// batch, so the connection itself runs with `synchronous=NORMAL`. See
    /// `docs/decisions/0002-sqlite-sync-lane.md`.
    #[default]
    Full,
    /// fsync only at checkpoints: much faster; a power cut (not a crash of
    /// the process) may lose the last commits, never corrupt the file.
    Normal,
}

impl Synchronous {
    /// The value of `PRAGMA synchronous`.
    pub(crate) fn pragma_value(self) -> i64 {
        // FULL's fsync is done by the sync lane, not inside COMMIT.
        1
    }
}

/// Settings of [`SqliteStore::open`]; start from `Default` and change fields.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Durability of each commit.
    pub synchronous: Synchronous,
    /// Where the store reads the time.
    pub clock: Arc<dyn Clock>,
    /// Read-only connections in the reader pool (at least 1).
    pub readers: usize,
    /// Most commands applied in one transaction.
    pub max_batch: usize,
    /// The writer truncates the WAL once it holds this many bytes (it
    /// checkpoints well before, but readers can keep it from wrapping).
    pub wal_limit_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            clock: Arc::new(SystemClock),
            readers: 4,
            max_batch: 2_048,
            wal_limit_bytes: 64 * 1024 * 1024,
        }
    }
}

impl SqliteOptions {
    /// The same options with another durability level.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The same options with another clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The same options with another reader pool size.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// The same options with another group-commit batch limit.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// The same options with another WAL size limit.
    pub fn wal_limit_bytes(mut self, bytes: u64) -> Self {
        self.wal_limit_bytes = bytes;
        self
    }
}

/// Pragmas as the writer's connection reads them back (for diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlitePragmas {
    /// `wal`.
    pub journal_mode: String,
    /// The connection's `PRAGMA synchronous`: 1 (NORMAL) in both modes;
    /// under [`Synchronous::Full`] the sync lane fsyncs every commit.
    pub synchronous: i64,
    /// True when every durable commit is fsynced before it is answered
    /// ([`Synchronous::Full`]).
    pub commit_fsync: bool,
    /// How long a connection waits on a lock.
    pub busy_timeout_ms: i64,
    /// 0: the writer checkpoints by itself.
    pub wal_autocheckpoint: i64,
    /// The schema version.
    pub user_version: i64,
}

/// What the writer has done since the store opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions attempted (one per group commit).
    pub batches: u64,
    /// Commands applied in them.
    pub commands: u64,
    /// Batches whose `BEGIN` or `COMMIT` failed (every caller got the error).
    pub failed_batches: u64,
    /// Batches run a second time, each command in its own savepoint,
    /// because a command failed.
    pub isolated_batches: u64,
}

/// The SQLite [`Store`]. See the crate docs for its design.
pub struct SqliteStore {
    /// The only path to the read-write connection.
    writer: Writer,
    /// Connections for reads.
    readers: Arc<Readers>,
    clock: Arc<dyn Clock>,
    bus: Arc<EventBus>,
    ready: Arc<ReadySignal>,
    /// Bumped after a schedule is created, replaced, paused, resumed or deleted.
    schedules_changed: ReadySignal,
    path: PathBuf,
    synchronous: Synchronous,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date. Given an existing directory, uses
    /// [`DEFAULT_FILE_NAME`] inside it; missing parent directories are created.
    ///
    /// Errors: [`StoreError::Backend`] when the file cannot be opened, a
    /// pragma does not take (e.g. WAL on a network drive), or the schema is
    /// newer than this build.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push(DEFAULT_FILE_NAME);
        } else if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", parent.display())))?;
        }
        let conn = schema::open_writer(&path, options.synchronous, options.wal_limit_bytes)?;
        // Readers open after the writer made the file WAL and migrated it.
        let readers = Readers::open(path.clone(), options.readers)?;
        let bus = Arc::new(EventBus::default());
        let ready = Arc::new(ReadySignal::default());
        // The WAL's name comes from SQLite, not from `path`: SQLite resolves
        // the path (symlinks included) and puts the WAL next to the real
        // file. Named from `path`, a symlinked database had the sync lane
        // fsync a file that does not exist (every durable call answered with
        // an error although it committed) or, worse, a stale one (answered
        // "durable" without the WAL ever being fsynced).
        let mut wal_path =
            conn.path().filter(|p| !p.is_empty()).map_or_else(|| path.clone().into_os_string(), Into::into);
        wal_path.push("-wal");
        let config = WriterConfig {
            max_batch: options.max_batch,
            wal_limit_bytes: options.wal_limit_bytes,
            wal_path: wal_path.into(),
            sync_lane: options.synchronous == Synchronous::Full,
        };
        let writer = Writer::spawn(conn, options.clock.clone(), bus.clone(), ready.clone(), config)?;
        Ok(Self {
            writer,
            readers,
            clock: options.clock,
            bus,
            ready,
            schedules_changed: ReadySignal::default(),
            path,
            synchronous: options.synchronous,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the group-commit writer.
    pub fn writer_stats(&self) -> WriterStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.writer.counters;
        WriterStats {
            batches: c.batches.load(Relaxed),
            commands: c.commands.load(Relaxed),
            failed_batches: c.failed_batches.load(Relaxed),
            isolated_batches: c.isolated_batches.load(Relaxed),
        }
    }

    /// Reads back the writer connection's pragmas.
    pub async fn pragmas(&self) -> StoreResult<SqlitePragmas> {
        let mut pragmas = self.writer.call(|reply| Command::Pragmas { reply }).await?;
        pragmas.commit_fsync = self.synchronous == Synchronous::Full;
        Ok(pragmas)
    }

    /// Applies every mutation already sent, stops the writer thread (after
    /// a last WAL checkpoint) and closes the connections. Dropping the store
    /// does the same, blocking the dropping thread while it does.
    pub async fn close(self) {
        let Self { mut writer, readers, .. } = self;
        readers.close();
        let joined = tokio::task::spawn_blocking(move || writer.shutdown()).await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "closing the SQLite writer failed");
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn job_insert_many(&self, specs: Vec<JobSpec>) -> StoreResult<Vec<Inserted>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let (jobs, rows) = job_sql::prepare_insert(specs)?;
        let outcomes = self.writer.call(|reply| Command::JobInsert { rows, reply }).await?;
        Ok(job_sql::assemble_inserted(jobs, outcomes))
    }

    async fn job_get(&self, id: &JobId) -> StoreResult<Option<Job>> {
        let id = id.clone();
        self.readers
            .read(move |conn| {
                // One snapshot for the job and its attempts.
                let tx = conn.unchecked_transaction().db()?;
                job_query::get(&tx, &id)
            })
            .await
    }

    async fn job_list(&self, params: JobListParams) -> StoreResult<JobPage> {
        self.readers.read(move |conn| job_query::list(conn, &params)).await
    }

    async fn job_claim(&self, params: JobClaimParams) -> StoreResult<Vec<ClaimedJob>> {
        self.writer.call(|reply| Command::JobClaim { params, reply }).await
    }

    async fn job_heartbeat_many(&self, beats: Vec<JobHeartbeat>) -> StoreResult<Vec<StoreResult<HeartbeatReply>>> {
        if beats.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.call(|reply| Command::JobHeartbeat { beats, reply }).await
    }

    async fn job_progress(&self, id: &JobId, lease_token: LeaseToken, progress: Progress) -> StoreResult<()> {
        progress.validate().map_err(|m| StoreError::invalid("progress", m))?;
        let id = id.clone();
        self.writer.call(|reply| Command::JobProgress { id, lease_token, progress, reply }).await
    }

    async fn job_log_append(&self, params: JobLogAppend) -> StoreResult<()> {
        self.writer.call(|reply| Command::JobLogAppend { params, reply }).await
    }

    async fn job_log_list(&self, id: &JobId, after: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
        let id = id.clone();
        self.readers.read(move |conn| job_query::log_list(conn, &id, after, limit)).await
    }

    async fn job_event_emit(&self, params: JobEventEmit) -> StoreResult<()> {
        EventKind::validate_custom(&params.kind).map_err(|m| StoreError::invalid("type", m))?;
        self.writer.call(|reply| Command::JobEventEmit { params, reply }).await
    }

    async fn job_finish_many(&self, items: Vec<JobFinish>) -> StoreResult<Vec<StoreResult<Finished>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.call(|reply| Command::JobFinish { items, reply }).await
    }

    async fn job_cancel(&self, id: &JobId) -> StoreResult<CancelOutcome> {
        let id = id.clone();
        self.writer.call(|reply| Command::JobCancel { id, reply }).await
    }

    async fn job_retry(&self, id: &JobId) -> StoreResult<Job> {
        let id = id.clone();
        self.writer.call(|reply| Command::JobRetry { id, reply }).await
    }

    async fn job_rescue_expired(&self) -> StoreResult<RescueReport> {
        self.writer.call(|reply| Command::JobRescue { reply }).await
    }

    async fn job_promote_due(&self) -> StoreResult<u64> {
        self.writer.call(|reply| Command::JobPromote { reply }).await
    }

    async fn job_expire_due(&self) -> StoreResult<u64> {
        self.writer.call(|reply| Command::JobExpire { reply }).await
    }

    async fn job_retention_sweep(&self, limit: u32) -> StoreResult<u64> {
        if limit == 0 {
            return Ok(0);
        }
        self.writer.call(|reply| Command::JobRetentionSweep { limit, reply }).await
    }

    async fn job_next_due(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        let queues = queues.to_vec();
        let now = self.clock.now();
        self.readers
            .read(move |conn| {
                let due = job_query::next_due(conn, &queues)?;
                let released = limits::next_change(conn, now)?;
                Ok(match (due, released) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
            })
            .await
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        let now = self.clock.now();
        self.readers
            .read(move |conn| {
                let tx = conn.unchecked_transaction().db()?;
                queue_sql::list(&tx, now)
            })
            .await
    }

    async fn queue_get(&self, name: &str) -> StoreResult<QueueInfo> {
        let name = name.to_owned();
        let now = self.clock.now();
        self.readers
            .read(move |conn| {
                let tx = conn.unchecked_transaction().db()?;
                queue_sql::get(&tx, &name, now)
            })
            .await
    }

    async fn queue_config_set(&self, name: &str, config: QueueConfig) -> StoreResult<QueueInfo> {
        drover_core::spec::validate_queue_name(name)?;
        if config.concurrency == Some(0) {
            return Err(StoreError::invalid("concurrency", "must be at least 1 (pause the queue to stop it)"));
        }
        if let Some(limit) = &config.rate_limit {
            limit.validate().map_err(|m| StoreError::invalid("rate_limit", m))?;
        }
        let name = name.to_owned();
        self.writer.call(|reply| Command::QueueConfigSet { name, config, reply }).await
    }

    async fn queue_pause_set(&self, name: &str, paused: bool) -> StoreResult<QueueInfo> {
        drover_core::spec::validate_queue_name(name)?;
        let name = name.to_owned();
        self.writer.call(|reply| Command::QueuePauseSet { name, paused, reply }).await
    }

    async fn rate_limit_set(&self, key: &str, limit: KeyLimit) -> StoreResult<RateLimitRule> {
        drover_core::limit::validate_key_pattern(key).map_err(|m| StoreError::invalid("key", m))?;
        limit.validate().map_err(|(field, m)| StoreError::invalid(field, m))?;
        let key = key.to_owned();
        self.writer.call(|reply| Command::RateLimitSet { key, limit, reply }).await
    }

    async fn rate_limit_delete(&self, key: &str) -> StoreResult<bool> {
        let key = key.to_owned();
        self.writer.call(|reply| Command::RateLimitDelete { key, reply }).await
    }

    async fn rate_limit_list(&self) -> StoreResult<Vec<RateLimitRule>> {
        self.readers.read(limits::rule_list).await
    }

    async fn rate_limit_get(&self, key: &str) -> StoreResult<RateLimitState> {
        drover_core::limit::validate_key_pattern(key).map_err(|m| StoreError::invalid("key", m))?;
        let key = key.to_owned();
        let now = self.clock.now();
        self.readers
            .read(move |conn| {
                let tx = conn.unchecked_transaction().db()?;
                limits::key_state(&tx, &key, now)
            })
            .await
    }

    fn ready_signal(&self) -> watch::Receiver<u64> {
        self.ready.subscribe()
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.bus.subscribe()
    }

    async fn schedule_upsert(&self, spec: ScheduleSpec) -> StoreResult<ScheduleUpserted> {
        // Parsed on the caller's task: the writer only stores.
        let rule = spec.validate()?;
        let spec = Box::new((spec, rule));
        let upserted = self.writer.call(|reply| Command::ScheduleUpsert { spec, reply }).await?;
        self.schedules_changed.notify();
        Ok(upserted)
    }

    async fn schedule_get(&self, id: &str) -> StoreResult<Option<Schedule>> {
        let id = id.to_owned();
        self.readers.read(move |conn| schedule_sql::get(conn, &id)).await
    }

    async fn schedule_list(&self, params: ScheduleListParams) -> StoreResult<SchedulePage> {
        self.readers.read(move |conn| schedule_sql::list(conn, &params)).await
    }

    async fn schedule_delete(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        let existed = self.writer.call(|reply| Command::ScheduleDelete { id, reply }).await?;
        if existed {
            self.schedules_changed.notify();
        }
        Ok(existed)
    }

    async fn schedule_pause_set(&self, id: &str, paused: bool) -> StoreResult<Schedule> {
        let id = id.to_owned();
        let schedule = self.writer.call(|reply| Command::SchedulePauseSet { id, paused, reply }).await?;
        self.schedules_changed.notify();
        Ok(schedule)
    }

    async fn schedule_fire_due(&self) -> StoreResult<Vec<ScheduleFired>> {
        self.writer.call(|reply| Command::ScheduleFireDue { reply }).await
    }

    async fn schedule_next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.readers.read(schedule_sql::next_due).await
    }

    fn schedule_signal(&self) -> watch::Receiver<u64> {
        self.schedules_changed.subscribe()
    }

    async fn job_children(&self, id: &JobId) -> StoreResult<Vec<Job>> {
        let id = id.clone();
        self.readers.read(move |conn| flow::children(conn, &id)).await
    }

    async fn flow_insert(&self, flow: drover_core::FlowSpec) -> StoreResult<Vec<Inserted>> {
        let flat = flow.flatten()?;
        let counts: Vec<usize> = flat.iter().map(|(_, n)| *n).collect();
        let (jobs, mut rows) = job_sql::prepare_insert(flat.into_iter().map(|(spec, _)| spec).collect())?;
        for (row, children) in rows.iter_mut().zip(counts) {
            row.children = children;
        }
        let outcomes = self.writer.call(|reply| Command::JobInsert { rows, reply }).await?;
        Ok(job_sql::assemble_inserted(jobs, outcomes))
    }

    async fn batch_insert(&self, batch: drover_core::BatchSpec) -> StoreResult<BatchInserted> {
        let drover_store::flow::PreparedBatch { id, jobs, on_complete } = drover_store::flow::prepare_batch(batch)?;
        let on_complete = on_complete.map(|spec| rows::to_json(&spec));
        let (specs, rows) = job_sql::prepare_insert(jobs)?;
        let batch_id = id.clone();
        let outcomes =
            self.writer.call(|reply| Command::BatchInsert { id: batch_id, rows, on_complete, reply }).await?;
        let jobs = job_sql::assemble_inserted(specs, outcomes);
        // A duplicate (an existing id) stays where it was and is not counted.
        let total = jobs.iter().filter(|j| !j.duplicate).count() as u64;
        Ok(BatchInserted { id, total, jobs })
    }

    async fn batch_get(&self, id: &str) -> StoreResult<Option<BatchInfo>> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| {
                // One snapshot for the counters and the unfinished jobs.
                let tx = conn.unchecked_transaction().db()?;
                flow::batch_get(&tx, &id)
            })
            .await
    }
}

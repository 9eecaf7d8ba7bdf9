//! [`Worker`]: claims jobs from its queues, runs their handlers, keeps their
//! leases alive, and reports how they ended.
//!
//! Per queue one fetcher claims up to its free slots in one call and then
//! sleeps until the store's ready signal fires (an enqueue), the next delayed
//! job comes due, or a fallback poll interval passes. Each job runs in its
//! own task; outcomes go to one completer that reports them in batches.
//! Heartbeats run on a thread of their own, so a handler that hogs the CPU
//! does not lose its lease.

mod completer;
mod executor;
mod fetcher;
mod heartbeat;

use crate::handler::{ErasedHandler, Job, erase_closure, erase_job};
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::{Client, HandlerError, JobContext};
use drover_core::{JobId, LeaseToken};
use drover_store::{JobFinish, Store};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Entry point: `Worker::builder(client)`.
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Starts configuring a worker over `client`'s store.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder::new(client)
    }
}

/// How a worker behaves.
#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    /// Recorded on every job and attempt this worker runs.
    pub worker_id: String,
    /// Queues served, with the most jobs of each running at once.
    pub queues: Vec<(String, usize)>,
    /// Lease length; a job whose worker stops heartbeating comes back after it.
    pub lease: Duration,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// How long shutdown waits for running jobs before handing them back.
    pub shutdown_grace: Duration,
    /// How long a cancelled handler may take to return before it is dropped.
    pub cancel_grace: Duration,
    /// Safety-net poll when no wake-up came (wake-ups are pushed).
    pub poll_interval: Duration,
    /// Most outcomes reported in one store call.
    pub finish_batch: usize,
    /// Run a maintenance loop alongside (lease rescue, promotion).
    pub maintenance: Option<MaintenanceConfig>,
}

/// Configures and starts a [`Worker`].
pub struct WorkerBuilder {
    client: Client,
    config: WorkerConfig,
    handlers: HashMap<String, ErasedHandler>,
    heartbeat_set: bool,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Concurrency given to a typed job's queue when none was configured.
pub const DEFAULT_CONCURRENCY: usize = 10;

impl WorkerBuilder {
    fn new(client: Client) -> Self {
        let lease = Duration::from_secs(30);
        Self {
            client,
            config: WorkerConfig {
                worker_id: default_worker_id(),
                queues: Vec::new(),
                lease,
                heartbeat_interval: lease / 3,
                shutdown_grace: Duration::from_secs(30),
                cancel_grace: Duration::from_secs(10),
                poll_interval: Duration::from_secs(5),
                finish_batch: 512,
                maintenance: Some(MaintenanceConfig::default()),
            },
            handlers: HashMap::new(),
            heartbeat_set: false,
        }
    }

    /// Serves `queue` with at most `concurrency` jobs running at once.
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        let queue = queue.into();
        let concurrency = concurrency.max(1);
        match self.config.queues.iter_mut().find(|(q, _)| *q == queue) {
            Some(entry) => entry.1 = concurrency,
            None => self.config.queues.push((queue, concurrency)),
        }
        self
    }

    /// Registers a typed job; serves its queue with
    /// [`DEFAULT_CONCURRENCY`] unless [`Self::queue`] set it.
    pub fn register<J: Job>(mut self) -> Self {
        self.handlers.insert(J::NAME.to_owned(), erase_job::<J>());
        if !self.config.queues.iter().any(|(q, _)| q == J::QUEUE) {
            self.config.queues.push((J::QUEUE.to_owned(), DEFAULT_CONCURRENCY));
        }
        self
    }

    /// Registers a closure handler for jobs named `name`.
    pub fn handler<F, Fut, R>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.handlers.insert(name.into(), erase_closure(handler));
        self
    }

    /// Names this worker (default: host, process id and a random suffix).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.config.worker_id = id.into();
        self
    }

    /// Sets the lease length (default 30 s); heartbeats follow at a third
    /// of it unless [`Self::heartbeat_interval`] says otherwise.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(10));
        if !self.heartbeat_set {
            self.config.heartbeat_interval = self.config.lease / 3;
        }
        self
    }

    /// Sets the time between heartbeats.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval.max(Duration::from_millis(1));
        self.heartbeat_set = true;
        self
    }

    /// Sets how long shutdown waits for running jobs (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Sets how long a cancelled handler may take to return (default 10 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// Sets the fallback poll interval (default 5 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Runs (or, with `None`, does not run) a maintenance loop alongside.
    pub fn maintenance(mut self, config: Option<MaintenanceConfig>) -> Self {
        self.config.maintenance = config;
        self
    }

    /// Starts the worker on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> WorkerHandle {
        let store = self.client.store().clone();
        let (finish_tx, finish_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client: self.client,
            store: store.clone(),
            config: self.config,
            handlers: self.handlers,
            active: Mutex::new(HashMap::new()),
            finish_tx,
            stopping: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let fetchers = shared
            .config
            .queues
            .iter()
            .map(|(queue, concurrency)| {
                let slots = Arc::new(Semaphore::new(*concurrency));
                tokio::spawn(fetcher::run(shared.clone(), queue.clone(), slots))
            })
            .collect();
        let completer_stop = CancellationToken::new();
        let completer = tokio::spawn(completer::run(shared.clone(), finish_rx, completer_stop.clone()));
        let heartbeat = heartbeat::spawn(shared.clone());
        let cancels = tokio::spawn(executor::watch_cancels(shared.clone()));
        let maintenance = shared.config.maintenance.map(|config| Maintenance::start(store, config));
        let stopped = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            shared.clone(),
            Parts { fetchers, completer, completer_stop, heartbeat, cancels, maintenance },
            stopped.clone(),
        ));
        WorkerHandle { shared, supervisor: Some(supervisor), stopped }
    }
}

/// State shared by a worker's tasks.
pub(crate) struct Shared {
    /// For handler contexts.
    pub client: Client,
    /// Where jobs come from.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: WorkerConfig,
    /// Handlers by job name.
    pub handlers: HashMap<String, ErasedHandler>,
    /// Jobs running now: what heartbeats extend and cancels reach.
    pub active: Mutex<HashMap<JobId, ActiveJob>>,
    /// Outcomes on their way to the completer.
    pub finish_tx: mpsc::UnboundedSender<JobFinish>,
    /// Fired by shutdown: fetchers stop claiming.
    pub stopping: CancellationToken,
    /// Fired when the grace period ran out: running jobs are handed back.
    pub hard_stop: CancellationToken,
    /// Every running job's task.
    pub tracker: TaskTracker,
}

/// A running job as the heartbeat and cancel paths see it.
pub(crate) struct ActiveJob {
    /// Its lease.
    pub lease_token: LeaseToken,
    /// Fired to tell its handler to stop.
    pub cancel: CancellationToken,
}

struct Parts {
    fetchers: Vec<JoinHandle<()>>,
    completer: JoinHandle<()>,
    completer_stop: CancellationToken,
    heartbeat: heartbeat::HeartbeatThread,
    cancels: JoinHandle<()>,
    maintenance: Option<Maintenance>,
}

/// Waits for shutdown, then takes the worker down in order: no new claims,
/// running jobs finish (or are handed back when the grace runs out), every
/// outcome is reported, then the helpers stop.
async fn supervise(shared: Arc<Shared>, parts: Parts, stopped: CancellationToken) {
    shared.stopping.cancelled().await;
    for fetcher in parts.fetchers {
        let _ = fetcher.await;
    }
    shared.tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, shared.tracker.wait()).await.is_err() {
        tracing::info!(running = shared.tracker.len(), "shutdown grace ran out; handing running jobs back");
        shared.hard_stop.cancel();
        shared.tracker.wait().await;
    }
    parts.completer_stop.cancel();
    let _ = parts.completer.await;
    parts.cancels.abort();
    parts.heartbeat.stop().await;
    if let Some(maintenance) = parts.maintenance {
        maintenance.stop().await;
    }
    stopped.cancel();
}

/// A running worker. Dropping it starts a shutdown in the background; call
/// [`WorkerHandle::shutdown`] to wait for it.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
    stopped: CancellationToken,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").field("worker_id", &self.shared.config.worker_id).finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.shared.active.lock().len()
    }

    /// Stops claiming, lets running jobs finish within the shutdown grace,
    /// hands the rest back, reports every outcome, and returns when done.
    pub async fn shutdown(mut self) {
        self.shared.stopping.cancel();
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.await;
        }
    }

    /// Resolves once the worker has fully stopped.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shared.stopping.cancel();
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "worker".into());
    // The suffix tells two workers of one process apart.
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

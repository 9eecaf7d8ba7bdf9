//! The sync lane: how `Synchronous::Full` stays durable without making the
//! writer wait for the disk.
//!
//! SQLite's own `synchronous=FULL` fsyncs the WAL inside `COMMIT`, on the
//! writer thread: while the disk works, no command runs. Instead the writer
//! connection runs with `synchronous=NORMAL` (a commit appends to the WAL
//! without an fsync; checkpoints still fsync before they copy pages into the
//! database), and after each commit hands the batch to this thread, which
//! fsyncs the WAL file and only then publishes the batch's events and answers
//! its callers. The next batch executes meanwhile, and one fsync covers every
//! batch that committed while the previous one was syncing.
//!
//! A caller told "done" is durable exactly as under `synchronous=FULL`: its
//! commit's frames are in the WAL, and the WAL was fsynced after they were
//! written. Commands whose loss on a power cut costs nothing but a re-run
//! (claims, heartbeats, progress: see `Command::needs_fsync`) are answered
//! straight after `COMMIT`; their events still wait here, so events always
//! come out in commit order.

use crate::writer::Pending;
use drover_store::{EventBus, PendingEvent, StoreError};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// What a committed batch leaves to do once it is on disk.
pub(crate) struct Committed {
    /// Callers waiting for durability.
    pub calls: Vec<Box<dyn Pending>>,
    /// Events to publish, in commit order.
    pub events: Vec<PendingEvent>,
}

/// The handle on the sync thread.
pub(crate) struct SyncLane {
    tx: Option<mpsc::Sender<Committed>>,
    thread: Option<JoinHandle<()>>,
}

impl SyncLane {
    /// Starts the thread that fsyncs `wal_path`.
    pub fn spawn(wal_path: PathBuf, bus: Arc<EventBus>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Committed>();
        let thread = std::thread::Builder::new()
            .name("drover-sqlite-sync".into())
            .spawn(move || run(&wal_path, &bus, &rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the sync thread: {e}")))?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues a committed batch; answered once the WAL is fsynced.
    pub fn send(&self, committed: Committed) {
        if let Some(tx) = &self.tx
            && let Err(mpsc::SendError(committed)) = tx.send(committed)
        {
            // Only after shutdown, which happens after the writer's last batch.
            let err = StoreError::Closed;
            committed.calls.into_iter().for_each(|call| call.answer(Some(&err)));
        }
    }

    /// Syncs and answers what is queued, then stops the thread.
    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite sync thread panicked");
        }
    }
}

impl Drop for SyncLane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(wal_path: &PathBuf, bus: &EventBus, rx: &mpsc::Receiver<Committed>) {
    let mut wal: Option<File> = None;
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        pending.extend(rx.try_iter());
        let synced = sync(&mut wal, wal_path);
        if let Err(e) = &synced {
            tracing::error!(error = %e, "fsync of the WAL failed; callers are told their commits may not be durable");
        }
        for committed in pending.drain(..) {
            if !committed.events.is_empty() {
                bus.publish(committed.events);
            }
            let err = synced.as_ref().err().map(|e| StoreError::Backend(format!("fsync of the WAL failed: {e}")));
            for call in committed.calls {
                call.answer(err.as_ref());
            }
        }
    }
}

/// fsyncs the WAL. The file is opened once and kept: checkpoints truncate
/// it in place, so the descriptor stays valid for the store's life.
fn sync(wal: &mut Option<File>, wal_path: &PathBuf) -> std::io::Result<()> {
    if wal.is_none() {
        *wal = Some(File::open(wal_path)?);
    }
    wal.as_ref().map_or(Ok(()), File::sync_data)
}

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
            .spawn(move || {
                let mut wal = None;
                run(&bus, &rx, || sync(&mut wal, &wal_path));
            })
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

/// Answers each batch after `sync` (the fsync of the WAL) returns.
///
/// A failed fsync is final. Linux reports a writeback error to `fsync`
/// once, marks the pages clean, and the next `fsync` succeeds although
/// they never reached the disk. Unlike under SQLite's own FULL (where a
/// failed sync fails the commit and the next commit rewrites those frames),
/// later batches here committed on top of the frames that were lost, and
/// WAL recovery stops at the first missing frame: a later successful fsync
/// proves nothing. So once one failed, no durable caller is told "done"
/// again; reopening the store (WAL recovery) shows what really survived.
/// A failure to open the file is not final: no write was lost, and the
/// next fsync covers everything written before it.
fn run(bus: &EventBus, rx: &mpsc::Receiver<Committed>, mut sync: impl FnMut() -> std::io::Result<Synced>) {
    let mut pending = Vec::new();
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        pending.push(first);
        pending.extend(rx.try_iter());
        let err = match (&failed, sync()) {
            (Some(reason), _) => Some(StoreError::Backend(format!(
                "an earlier fsync of the WAL failed ({reason}); commits since are not known to be durable"
            ))),
            (None, Ok(Synced::Done)) => None,
            (None, Ok(Synced::NotOpened(e))) => {
                tracing::error!(error = %e, "cannot open the WAL to fsync it; callers are told their commits may not be durable");
                Some(StoreError::Backend(format!("cannot open the WAL to fsync it: {e}")))
            }
            (None, Err(e)) => {
                tracing::error!(error = %e, "fsync of the WAL failed; no durable call will succeed until the store is reopened");
                failed = Some(e.to_string());
                Some(StoreError::Backend(format!("fsync of the WAL failed: {e}")))
            }
        };
        for committed in pending.drain(..) {
            if !committed.events.is_empty() {
                bus.publish(committed.events);
            }
            for call in committed.calls {
                call.answer(err.as_ref());
            }
        }
    }
}

/// How an fsync that did not fail went.
enum Synced {
    /// The WAL is on disk.
    Done,
    /// The WAL could not be opened, so nothing was fsynced (nor lost).
    NotOpened(std::io::Error),
}

/// fsyncs the WAL. The file is opened once and kept: checkpoints truncate
/// it in place, so the descriptor stays valid for the store's life.
fn sync(wal: &mut Option<File>, wal_path: &PathBuf) -> std::io::Result<Synced> {
    if wal.is_none() {
        match File::open(wal_path) {
            Ok(file) => *wal = Some(file),
            Err(e) => return Ok(Synced::NotOpened(e)),
        }
    }
    wal.as_ref().map_or(Ok(()), File::sync_data).map(|()| Synced::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Ctx;
    use std::collections::VecDeque;

    /// A durable caller whose answer goes to a channel.
    struct Probe(mpsc::Sender<Result<(), StoreError>>);

    impl Pending for Probe {
        fn apply(&mut self, _: &mut Ctx<'_>) -> bool {
            true
        }
        fn fail(&mut self, _: StoreError) {}
        fn needs_fsync(&self) -> bool {
            true
        }
        fn answer(self: Box<Self>, commit_error: Option<&StoreError>) {
            let _ = self.0.send(commit_error.map_or(Ok(()), |e| Err(e.clone())));
        }
    }

    /// Runs the lane over `script` (one fsync outcome per batch, batches
    /// sent one at a time) and returns each batch's answer.
    fn answers(script: Vec<std::io::Result<Synced>>) -> Vec<Result<(), StoreError>> {
        let n = script.len();
        let mut script = VecDeque::from(script);
        let (tx, rx) = mpsc::channel::<Committed>();
        let lane = std::thread::spawn(move || {
            run(&EventBus::default(), &rx, || script.pop_front().expect("one fsync per batch"));
        });
        let mut out = Vec::new();
        for _ in 0..n {
            let (answer_tx, answer_rx) = mpsc::channel();
            tx.send(Committed { calls: vec![Box::new(Probe(answer_tx))], events: Vec::new() }).unwrap();
            out.push(answer_rx.recv().unwrap());
        }
        drop(tx);
        lane.join().unwrap();
        out
    }

    /// After a failed fsync, a later one that succeeds does not make later
    /// commits durable (see `run`): their callers must not be told "done".
    #[test]
    fn a_failed_fsync_fails_every_later_durable_call() {
        let eio = || std::io::Error::from_raw_os_error(5);
        let got = answers(vec![Ok(Synced::Done), Err(eio()), Ok(Synced::Done), Ok(Synced::Done)]);
        assert!(got[0].is_ok());
        for (i, answer) in got.iter().enumerate().skip(1) {
            assert!(matches!(answer, Err(StoreError::Backend(_))), "batch {i}: {answer:?}");
        }
    }

    /// A WAL that cannot be opened was not fsynced, but nothing was lost
    /// either: the next fsync that works covers every earlier write.
    #[test]
    fn a_failed_open_fails_only_its_batch() {
        let enoent = || std::io::Error::from_raw_os_error(2);
        let got = answers(vec![Ok(Synced::NotOpened(enoent())), Ok(Synced::Done)]);
        assert!(matches!(got[0], Err(StoreError::Backend(_))));
        assert!(got[1].is_ok());
    }
}

//! The reader pool: a few read-only connections, each used by one blocking
//! task at a time. In WAL mode they read committed data while the writer
//! writes, so reads never queue behind the group commit.

use crate::schema;
use drover_store::{StoreError, StoreResult};
use parking_lot::Mutex;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Read-only connections handed out one per blocking task.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection, so a task never finds the pool empty.
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens `n` (at least one) read-only connections to `path`.
    pub fn open(path: PathBuf, n: usize) -> StoreResult<Arc<Self>> {
        let n = n.max(1);
        let conns = (0..n).map(|_| schema::open_reader(&path)).collect::<StoreResult<Vec<_>>>()?;
        Ok(Arc::new(Self { path, idle: Mutex::new(conns), permits: Arc::new(Semaphore::new(n)) }))
    }

    /// Runs `f` on a pooled connection on tokio's blocking threads.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A connection lost to a panicking read is replaced here.
            let conn = match pool.idle.lock().pop() {
                Some(conn) => conn,
                None => schema::open_reader(&pool.path)?,
            };
            let result = f(&conn);
            pool.idle.lock().push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Closes every idle connection (used at close).
    pub fn close(&self) {
        self.idle.lock().clear();
        self.permits.close();
    }
}

//! Transactional enqueue: jobs inserted inside the application's own
//! transaction, so a job exists if and only if that transaction commits
//! (issue 5, ADR 0009).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::notify;
use drover_core::JobSpec;
use drover_store::{Inserted, StoreResult};
use sqlx::{Acquire, PgConnection};

impl PgStore {
    /// Inserts jobs as [`drover_store::Store::job_insert_many`] does, but
    /// inside the caller's open transaction on `conn` (a
    /// `sqlx::Transaction<'_, Postgres>` derefs to it): the jobs become
    /// visible, claimable and announced (events, wake-ups on every server,
    /// this one included) when the caller commits, and vanish without a
    /// trace when it rolls back. `conn` must reach the store's database and
    /// schema (e.g. a transaction begun on [`PgStore::pool`]).
    ///
    /// The insert runs in a savepoint: when it fails (a bad spec, an
    /// unknown `parent_id`), nothing of it remains and the caller's
    /// transaction stays usable.
    ///
    /// Costs while the caller's transaction stays open: the new rows are
    /// invisible to others, and a spec with a `unique_key` holds that key's
    /// lock (another insert of the same key waits for the commit), and a
    /// spec with a `parent_id` or a `batch_id` holds that parent's or batch's
    /// row (its other children's finishes wait for the commit). Queue
    /// counts are appended as deltas rather than updated in place, so no
    /// shared row stays locked.
    ///
    /// ```no_run
    /// # async fn demo(store: drover_postgres::PgStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use drover_core::JobSpec;
    /// use serde_json::json;
    ///
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO signups (email) VALUES ($1)").bind("ada@example.com").execute(&mut *tx).await?;
    /// let spec = JobSpec::new("emails", "send_welcome").payload(json!({ "email": "ada@example.com" }));
    /// store.job_insert_many_in(&mut tx, vec![spec]).await?;
    /// tx.commit().await?; // the signup and its job, or neither
    /// # Ok(()) }
    /// ```
    pub async fn job_insert_many_in(&self, conn: &mut PgConnection, specs: Vec<JobSpec>) -> StoreResult<Vec<Inserted>> {
        for spec in &specs {
            spec.validate()?;
        }
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let mut savepoint = conn.begin().await.db()?;
        let mut fx = Effects::new(self.now());
        let result = async {
            let inserted = crate::jobs::insert_in(&mut savepoint, &mut fx, specs).await?;
            // Origin "foreign": no store publishes these events at once,
            // so every listener (this store's too) publishes them when the
            // notification arrives, that is after the caller's commit.
            notify::send(&mut savepoint, &self.shared.channels, notify::FOREIGN, &mut fx).await?;
            Ok(inserted)
        }
        .await;
        match result {
            Ok(inserted) => {
                savepoint.commit().await.db()?;
                Ok(inserted)
            }
            Err(e) => {
                let _ = savepoint.rollback().await;
                Err(e)
            }
        }
    }
}

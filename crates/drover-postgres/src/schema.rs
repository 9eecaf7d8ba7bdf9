//! Migrations (`migrations/*.sql`, embedded at build time by
//! `sqlx::migrate!`, no database needed to build). Never edit a released
//! migration: sqlx checks each applied file's checksum and refuses to start
//! on a mismatch. Add a file instead.

use crate::PgOptions;
use crate::error::{SqlResultExt, migrate_error};
use drover_store::{StoreError, StoreResult};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The table recording applied migrations, in Drover's schema. Not sqlx's
/// default `_sqlx_migrations`, so that Drover's tables can share a schema
/// with an application that migrates its own tables with sqlx.
pub const MIGRATIONS_TABLE: &str = "drover_migrations";

/// The newest migration this build knows; [`crate::PgStore::connect`]
/// brings every database to it.
pub const SCHEMA_VERSION: i64 = 2;

/// Brings the database to [`SCHEMA_VERSION`].
///
/// Runs on a connection of its own, never a pooled one: sqlx holds a
/// session-level advisory lock (`pg_advisory_lock`, keyed on the database
/// name) while it migrates and releases it only on success, so closing the
/// connection is what guarantees the lock never outlives this call. While
/// one server migrates, others block on the lock, then find every
/// migration applied and skip them; a migration runs in a transaction, so
/// a failed one leaves nothing half done.
pub(crate) async fn migrate(connect: &PgConnectOptions, options: &PgOptions) -> StoreResult<()> {
    let mut conn = tokio::time::timeout(options.acquire_timeout, PgConnection::connect_with(connect))
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("could not reach PostgreSQL within {:?}", options.acquire_timeout))
        })?
        .db()?;
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    if let Some(schema) = &options.schema {
        migrator.create_schema(schema.clone());
    }
    // `run_direct` is `run` without the `Acquire` indirection, whose
    // higher-ranked bound makes every future awaiting `connect` fail the
    // `Send` check (sqlx documents it as the way around that error).
    let result = migrator.run_direct(None, &mut conn, false).await.map_err(migrate_error);
    // Closing ends the session and with it any advisory lock a failed run
    // left behind; a failure to close cleanly is of no consequence then.
    let _ = conn.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_is_the_newest_migration() {
        let migrator = sqlx::migrate!("./migrations");
        let newest = migrator.iter().map(|m| m.version).max();
        assert_eq!(newest, Some(SCHEMA_VERSION));
    }
}

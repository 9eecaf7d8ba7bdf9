//! [`PgOptions`]: how [`crate::PgStore::connect`] sizes its pool and where
//! it puts its tables.

use drover_store::{StoreError, StoreResult};
use std::time::Duration;

/// The longest schema name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_SCHEMA_LEN: usize = 63;

/// Settings of [`crate::PgStore::connect`]; start from `Default` and change
/// fields or use the builder methods.
///
/// The defaults suit one `drover serve` with its workers on a PostgreSQL
/// that allows the stock 100 connections: 10 per process leaves room for
/// several servers, and a claim, a finish batch and a few reads at once
/// need no more, since no transaction is held while a job runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// Most connections the pool opens (at least 1). Default 10.
    pub max_connections: u32,
    /// Connections the pool keeps open even when idle. Default 0: an idle
    /// server holds nothing but the connections it used recently.
    pub min_connections: u32,
    /// How long a caller waits for a free connection, and how long
    /// [`crate::PgStore::connect`] waits to reach the server, before
    /// failing with [`StoreError::Unavailable`]. Default 5 s: long enough
    /// to ride out a burst, short enough that `/readyz` and enqueues report
    /// a lost database promptly (503) instead of hanging.
    pub acquire_timeout: Duration,
    /// An idle connection above `min_connections` is closed after this.
    /// Default 10 minutes.
    pub idle_timeout: Option<Duration>,
    /// Every connection is replaced after this, so server-side memory and
    /// a failed-over server's DNS are picked up. Default 30 minutes.
    pub max_lifetime: Option<Duration>,
    /// The schema holding Drover's tables (and its migrations table),
    /// created at connect if missing; `None` uses the server's default
    /// `search_path` (usually `public`). Lowercase letters, digits and `_`,
    /// not starting with a digit, at most 63 bytes.
    pub schema: Option<String>,
    /// Shown in `pg_stat_activity`, so an operator can tell Drover's
    /// connections apart. Default `drover`.
    pub application_name: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1_800)),
            schema: None,
            application_name: "drover".to_owned(),
        }
    }
}

impl PgOptions {
    /// The same options with another pool size.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// The same options with another acquire (and connect) timeout.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The same options with Drover's tables in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The same options with another application name.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Checks the options; [`StoreError::Invalid`] names the bad field.
    pub fn validate(&self) -> StoreResult<()> {
        if self.max_connections == 0 {
            return Err(StoreError::invalid("max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(StoreError::invalid("min_connections", "must not exceed max_connections"));
        }
        if self.acquire_timeout.is_zero() {
            return Err(StoreError::invalid("acquire_timeout", "must be positive"));
        }
        if let Some(schema) = &self.schema {
            validate_schema(schema)?;
        }
        if self.application_name.len() > MAX_SCHEMA_LEN || self.application_name.chars().any(|c| c.is_control()) {
            return Err(StoreError::invalid("application_name", "must be at most 63 bytes, no control characters"));
        }
        Ok(())
    }
}

/// A schema name is spliced into `CREATE SCHEMA` and `search_path`
/// unquoted, so only plain lowercase identifiers are accepted.
fn validate_schema(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || schema.len() > MAX_SCHEMA_LEN || schema.starts_with("pg_") {
        return Err(StoreError::invalid(
            "schema",
            "must be 1 to 63 lowercase letters, digits or '_', not starting with a digit or 'pg_'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PgOptions::default().validate().unwrap();
    }

    #[test]
    fn refuses_bad_options() {
        let field = |o: PgOptions| match o.validate() {
            Err(StoreError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(field(PgOptions::default().max_connections(0)), "max_connections");
        assert_eq!(field(PgOptions { min_connections: 11, ..PgOptions::default() }), "min_connections");
        assert_eq!(field(PgOptions::default().acquire_timeout(Duration::ZERO)), "acquire_timeout");
        for bad in ["", "1abc", "Drover", "a-b", "a;drop", "pg_temp", &"a".repeat(64)] {
            assert_eq!(field(PgOptions::default().schema(bad)), "schema", "{bad:?}");
        }
        assert_eq!(field(PgOptions::default().application_name("a\nb")), "application_name");
    }

    #[test]
    fn accepts_plain_schema_names() {
        for good in ["drover", "_x", "drover_test_01", &"a".repeat(63)] {
            PgOptions::default().schema(good).validate().unwrap();
        }
    }
}

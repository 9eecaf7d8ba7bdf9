//! Opening a store from a `--database` URL.

use anyhow::{Context, bail};
use drover_postgres::{PgOptions, PgStore};
use drover_sqlite::{SqliteOptions, Synchronous};
use drover_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// A store URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` (a relative or absolute file path).
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, as libpq and sqlx take it.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` or `postgres://...`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("`{url}`: sqlite:// needs a file path, e.g. sqlite://drover.db");
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        bail!("`{url}` is not a store URL; expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")
    }

    /// The URL to show in logs: a PostgreSQL password is masked.
    pub fn display(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => mask_password(url),
        }
    }

    /// Drops the PostgreSQL schema `schema` with everything in it (the
    /// bench's scratch schema); nothing to do on SQLite.
    pub async fn drop_scratch_schema(&self, schema: &str) -> anyhow::Result<()> {
        let DatabaseUrl::Postgres(url) = self else { return Ok(()) };
        let store = PgStore::connect(url, PgOptions::default().schema(schema)).await?;
        store.drop_schema_and_close().await.with_context(|| format!("dropping the scratch schema {schema}"))
    }

    /// Opens the store (`synchronous` applies to SQLite; PostgreSQL commits
    /// durably by its own settings). `pg_schema` puts a PostgreSQL store's
    /// tables in that schema instead of the server's default.
    pub async fn open(&self, synchronous: Synchronous, pg_schema: Option<String>) -> anyhow::Result<Arc<dyn Store>> {
        match self {
            DatabaseUrl::Postgres(url) => {
                let options = PgOptions { schema: pg_schema, ..PgOptions::default() };
                let store = PgStore::connect(url, options)
                    .await
                    .with_context(|| format!("connecting to {}", mask_password(url)))?;
                Ok(Arc::new(store))
            }
            DatabaseUrl::Sqlite(path) => {
                let options = SqliteOptions { synchronous, ..SqliteOptions::default() };
                let store = drover::client::open_sqlite_store(path, options)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// `url` with its password (if any) replaced by `***`, for logs and the
/// start-up line.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_once('/').map_or((rest, None), |(a, t)| (a, Some(t)));
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    match tail {
        Some(tail) => format!("{scheme}://{user}@{host}/{tail}"),
        None => format!("{scheme}://{user}@{host}"),
    }
}

/// Parses `full` / `normal`.
pub fn parse_synchronous(s: &str) -> anyhow::Result<Synchronous> {
    match s {
        "full" => Ok(Synchronous::Full),
        "normal" => Ok(Synchronous::Normal),
        other => bail!("--synchronous must be `full` or `normal`, not `{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(DatabaseUrl::parse("sqlite://x.db").unwrap(), DatabaseUrl::Sqlite("x.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(), DatabaseUrl::Sqlite("/tmp/x.db".into()));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert_eq!(DatabaseUrl::parse("postgres://u@h/db").unwrap(), DatabaseUrl::Postgres("postgres://u@h/db".into()));
        assert!(matches!(DatabaseUrl::parse("postgresql://h/db").unwrap(), DatabaseUrl::Postgres(_)));
    }

    #[test]
    fn passwords_are_masked() {
        let shown = |url: &str| DatabaseUrl::parse(url).unwrap().display();
        assert_eq!(
            shown("postgres://drover:s3cret@db:5432/jobs?sslmode=require"),
            "postgres://drover:***@db:5432/jobs?sslmode=require"
        );
        assert_eq!(shown("postgres://drover@db/jobs"), "postgres://drover@db/jobs");
        assert_eq!(shown("postgres://db/jobs"), "postgres://db/jobs");
        assert_eq!(shown("postgres://a:b@c"), "postgres://a:***@c");
        assert_eq!(shown("sqlite://x.db"), "sqlite://x.db");
    }
}

//! Opening a store from a `--database` URL.

use anyhow::{Context, bail};
use drover_sqlite::{SqliteOptions, Synchronous};
use drover_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// A store URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` (a relative or absolute file path).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`; PostgreSQL arrives with its own store.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("`{url}`: sqlite:// needs a file path, e.g. sqlite://drover.db");
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            bail!("PostgreSQL is not supported yet by this build; use sqlite://PATH");
        }
        bail!("`{url}` is not a store URL; expected sqlite://PATH")
    }

    /// Opens the store.
    pub async fn open(&self, synchronous: Synchronous) -> anyhow::Result<Arc<dyn Store>> {
        match self {
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
    }
}

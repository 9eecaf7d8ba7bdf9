//! The one place where sqlx's errors become [`StoreError`]s.

use drover_store::StoreError;

/// Maps an sqlx error: anything a later retry may fix (the server is down,
/// restarting or out of connections, the pool is exhausted, a
/// serialization failure or deadlock) is [`StoreError::Unavailable`]; a
/// closed pool is [`StoreError::Closed`]; everything else is a backend
/// failure.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolClosed => StoreError::Closed,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|code| is_transient_sqlstate(&code)) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Maps a migration failure; a failure to reach the database stays
/// [`StoreError::Unavailable`].
pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => match store_error(inner) {
            StoreError::Backend(message) => StoreError::Backend(format!("migration failed: {message}")),
            other => other,
        },
        other => StoreError::Backend(format!("migration failed: {other}")),
    }
}

/// SQLSTATEs worth a retry: connection exceptions (class 08), insufficient
/// resources (53), operator intervention such as a shutdown or restart
/// (57P01-57P03), serialization failures (40001) and deadlocks (40P01).
pub(crate) fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

/// `?` on sqlx results inside functions returning `StoreResult`.
pub(crate) trait SqlResultExt<T> {
    /// Converts the error with [`store_error`].
    fn db(self) -> Result<T, StoreError>;
}

impl<T> SqlResultExt<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates() {
        for code in ["08006", "08001", "53300", "57P01", "57P03", "40001", "40P01"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "57014"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn pool_errors() {
        assert_eq!(store_error(sqlx::Error::PoolClosed), StoreError::Closed);
        assert!(store_error(sqlx::Error::PoolTimedOut).is_transient());
        assert!(matches!(store_error(sqlx::Error::RowNotFound), StoreError::Backend(_)));
    }
}

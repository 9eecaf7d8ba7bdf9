//! The one place where SQLite's errors become [`StoreError`]s.

use drover_store::StoreError;
use rusqlite::ErrorCode;

/// Maps a rusqlite error: contention (`SQLITE_BUSY`, `SQLITE_LOCKED`) is
/// transient and worth a retry, everything else is a backend failure.
pub(crate) fn store_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// `?` on rusqlite results inside functions returning `StoreResult`.
pub(crate) trait SqlResultExt<T> {
    /// Converts the error with [`store_error`].
    fn db(self) -> Result<T, StoreError>;
}

impl<T> SqlResultExt<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(store_error)
    }
}

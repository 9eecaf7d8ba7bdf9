//! [`Error`]: what the client and the context return.

use drover_store::StoreError;

/// Shorthand for results of Drover's library calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a library call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused or failed the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A payload or result did not (de)serialize.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// Input refused before it reached the store.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
}

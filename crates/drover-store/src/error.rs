//! [`StoreError`]: the one error type of the storage seam.

use drover_core::JobState;

/// Shorthand for results of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store operation did not happen. Callers (HTTP error mapping, worker
/// runtime) match on the variant; the message is for humans.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No job (or other object) with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The lease token does not match the job's current lease, or the job is
    /// no longer active: the caller must stop working on it.
    #[error("lease lost: job {0} is not active under this lease")]
    LeaseLost(String),
    /// The job is in a state that does not allow the operation.
    #[error("job is {state}: {message}")]
    InvalidState {
        /// The state the job is in.
        state: JobState,
        /// What was refused.
        message: String,
    },
    /// The input is malformed; `field` names the culprit.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field at fault, as named on the wire.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The backend cannot be reached right now; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store was closed.
    #[error("store closed")]
    Closed,
    /// The backend failed in a way the caller cannot fix.
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// An [`StoreError::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<drover_core::ScheduleError> for StoreError {
    fn from(e: drover_core::ScheduleError) -> Self {
        StoreError::Invalid { field: e.field, message: e.message }
    }
}

impl From<drover_core::SpecError> for StoreError {
    fn from(e: drover_core::SpecError) -> Self {
        StoreError::Invalid { field: e.field.to_owned(), message: e.message }
    }
}

//! Job ids and lease tokens.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest job id accepted, in bytes.
pub const MAX_JOB_ID_LEN: usize = 255;

/// A job's id: supplied by the caller for idempotent enqueue (e.g.
/// `search42:biz7`), or generated as a UUID v7 so that ids sort by creation
/// time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Wraps a caller-supplied id after checking it is usable: not empty, at
    /// most [`MAX_JOB_ID_LEN`] bytes, and free of control characters (ids end
    /// up in URLs, logs and terminal tables).
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidJobId> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(InvalidJobId("must not be empty"));
        }
        if raw.len() > MAX_JOB_ID_LEN {
            return Err(InvalidJobId("must be at most 255 bytes"));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidJobId("must not contain control characters"));
        }
        Ok(Self(raw))
    }

    /// Wraps an id read back from a store, where it was validated on the way in.
    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a caller-supplied job id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id: {0}")]
pub struct InvalidJobId(&'static str);

/// Proof that a worker holds a job's current lease. Every claim mints a new
/// token, so a worker whose lease expired and whose job was handed to someone
/// else is refused (fencing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub i64);

impl LeaseToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        // Positive, so it survives a round trip through any integer column.
        Self(fastrand::i64(1..i64::MAX))
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_sort_by_creation() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn parse_refuses_bad_ids() {
        assert!(JobId::parse("").is_err());
        assert!(JobId::parse("a\nb").is_err());
        assert!(JobId::parse("x".repeat(256)).is_err());
        assert_eq!(JobId::parse("search42:biz7").unwrap().as_str(), "search42:biz7");
    }
}

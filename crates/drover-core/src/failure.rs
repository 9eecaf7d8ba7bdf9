//! What a failed, timed-out or stalled attempt leads to (DESIGN.md §2).
//!
//! These are the rules every backend applies; stores call them inside their
//! transactions so that SQLite and PostgreSQL decide alike.

use crate::{Backoff, JobError, Timestamp};
use std::time::Duration;

/// A handler's (or the runtime's) account of a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureReport {
    /// What went wrong.
    pub error: JobError,
    /// False for errors that no retry can fix (bad payload, ...).
    pub retryable: bool,
    /// Retry no sooner than this, overriding the backoff policy.
    pub retry_after: Option<Duration>,
    /// The handler hit a rate limit: the attempt is handed back, not spent.
    pub rate_limited: bool,
}

impl FailureReport {
    /// A retryable failure with the backoff policy's delay.
    pub fn retryable(error: JobError) -> Self {
        Self { error, retryable: true, retry_after: None, rate_limited: false }
    }

    /// A failure no retry can fix.
    pub fn fatal(error: JobError) -> Self {
        Self { error, retryable: false, retry_after: None, rate_limited: false }
    }

    /// A rate-limit deferral: retry after `after`, without spending an attempt.
    pub fn rate_limited(error: JobError, after: Duration) -> Self {
        Self { error, retryable: true, retry_after: Some(after), rate_limited: true }
    }
}

/// Where a failed attempt sends the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureDecision {
    /// Back off and run again at `run_at` (state `delayed`).
    Retry {
        /// When the next attempt may start.
        run_at: Timestamp,
    },
    /// Rate limited: run again at `run_at`, the attempt handed back.
    Defer {
        /// When the next attempt may start.
        run_at: Timestamp,
    },
    /// No attempts left, or not retryable: state `failed`.
    Dead,
}

/// Decides the fate of a job whose attempt number `attempts_made` (1-based,
/// the attempt that just failed) ended with `report`. `unit` is a random
/// number in `0.0..1.0` for the backoff jitter.
pub fn decide_failure(
    report: &FailureReport,
    attempts_made: u32,
    max_attempts: u32,
    backoff: &Backoff,
    now: Timestamp,
    unit: f64,
) -> FailureDecision {
    if report.rate_limited {
        let after = report.retry_after.unwrap_or_else(|| backoff.delay(1, unit));
        return FailureDecision::Defer { run_at: now.plus(after) };
    }
    if !report.retryable || attempts_made >= max_attempts {
        return FailureDecision::Dead;
    }
    let after = report.retry_after.unwrap_or_else(|| backoff.delay(attempts_made, unit));
    FailureDecision::Retry { run_at: now.plus(after) }
}

/// Where a job whose lease expired goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallDecision {
    /// Back to `waiting`; the stalled attempt is handed back.
    Requeue,
    /// Too many stalls: `failed` with code `stalled`.
    Dead,
    /// A cancel had been requested: `cancelled`.
    Cancel,
}

/// Decides the fate of a stalled job that has now stalled `stalls` times in
/// all (this stall included).
pub fn decide_stall(stalls: u32, max_stalls: u32, cancel_requested: bool) -> StallDecision {
    if cancel_requested {
        StallDecision::Cancel
    } else if stalls > max_stalls {
        StallDecision::Dead
    } else {
        StallDecision::Requeue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    #[test]
    fn retries_until_attempts_run_out() {
        let backoff = Backoff::exponential(100);
        let report = FailureReport::retryable(JobError::new("boom"));
        assert_eq!(
            decide_failure(&report, 1, 3, &backoff, NOW, 0.5),
            FailureDecision::Retry { run_at: NOW.plus_ms(100) }
        );
        assert_eq!(
            decide_failure(&report, 2, 3, &backoff, NOW, 0.5),
            FailureDecision::Retry { run_at: NOW.plus_ms(200) }
        );
        assert_eq!(decide_failure(&report, 3, 3, &backoff, NOW, 0.5), FailureDecision::Dead);
    }

    #[test]
    fn fatal_errors_do_not_retry() {
        let report = FailureReport::fatal(JobError::new("bad payload"));
        assert_eq!(decide_failure(&report, 1, 10, &Backoff::default(), NOW, 0.5), FailureDecision::Dead);
    }

    #[test]
    fn retry_after_overrides_backoff() {
        let mut report = FailureReport::retryable(JobError::new("503"));
        report.retry_after = Some(Duration::from_secs(30));
        assert_eq!(
            decide_failure(&report, 1, 3, &Backoff::fixed(1), NOW, 0.5),
            FailureDecision::Retry { run_at: NOW.plus_ms(30_000) }
        );
    }

    #[test]
    fn rate_limits_defer_even_on_last_attempt() {
        let report = FailureReport::rate_limited(JobError::new("429"), Duration::from_secs(5));
        assert_eq!(
            decide_failure(&report, 3, 3, &Backoff::default(), NOW, 0.5),
            FailureDecision::Defer { run_at: NOW.plus_ms(5_000) }
        );
    }

    #[test]
    fn stalls() {
        assert_eq!(decide_stall(1, 1, false), StallDecision::Requeue);
        assert_eq!(decide_stall(2, 1, false), StallDecision::Dead);
        assert_eq!(decide_stall(1, 0, false), StallDecision::Dead);
        assert_eq!(decide_stall(1, 5, true), StallDecision::Cancel);
    }
}

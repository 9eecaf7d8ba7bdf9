//! How long a job waits before its next attempt.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The shape of the delay curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// The same delay before every retry.
    Fixed,
    /// `delay_ms * 2^(attempt - 1)`, capped at `max_delay_ms`.
    Exponential,
}

/// A retry delay policy, as in the HTTP API:
/// `{"type": "exponential", "delay_ms": 2000, "max_delay_ms": 3600000, "jitter": 0.2}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Fixed or exponential.
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// The base delay, in milliseconds.
    pub delay_ms: u64,
    /// The cap on any single delay, in milliseconds.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Spread applied to each delay, as a fraction in `0.0..=1.0`: 0.2 makes
    /// a 10 s delay anything from 8 s to 12 s, so that jobs failing together
    /// do not retry together.
    #[serde(default)]
    pub jitter: f64,
}

fn default_max_delay_ms() -> u64 {
    Backoff::DEFAULT_MAX_DELAY_MS
}

impl Default for Backoff {
    /// Exponential from 1 s, capped at 1 h, with 10% jitter.
    fn default() -> Self {
        Self { kind: BackoffKind::Exponential, delay_ms: 1_000, max_delay_ms: Self::DEFAULT_MAX_DELAY_MS, jitter: 0.1 }
    }
}

impl Backoff {
    /// The default cap on a single delay: one hour.
    pub const DEFAULT_MAX_DELAY_MS: u64 = 3_600_000;

    /// The same delay before every retry, no jitter.
    pub fn fixed(delay_ms: u64) -> Self {
        Self { kind: BackoffKind::Fixed, delay_ms, max_delay_ms: delay_ms.max(Self::DEFAULT_MAX_DELAY_MS), jitter: 0.0 }
    }

    /// Doubling delays from `delay_ms`, capped at one hour, no jitter.
    pub fn exponential(delay_ms: u64) -> Self {
        Self { kind: BackoffKind::Exponential, delay_ms, max_delay_ms: Self::DEFAULT_MAX_DELAY_MS, jitter: 0.0 }
    }

    /// The same policy with another cap.
    pub fn max_delay_ms(mut self, max_delay_ms: u64) -> Self {
        self.max_delay_ms = max_delay_ms;
        self
    }

    /// The same policy with another jitter fraction.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the numbers make sense; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.jitter) || self.jitter.is_nan() {
            return Err("backoff.jitter must be between 0 and 1".into());
        }
        if self.max_delay_ms < self.delay_ms {
            return Err("backoff.max_delay_ms must be at least backoff.delay_ms".into());
        }
        Ok(())
    }

    /// The delay before retrying after failed attempt number `attempt`
    /// (1-based). `unit` is a random number in `0.0..1.0` that spreads the
    /// delay by the jitter fraction; pass 0.5 for no spread.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay_ms as f64,
            BackoffKind::Exponential => {
                let exponent = attempt.saturating_sub(1).min(62);
                self.delay_ms as f64 * 2f64.powi(exponent as i32)
            }
        };
        let capped = base.min(self.max_delay_ms as f64);
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let jittered = (capped * spread).min(self.max_delay_ms as f64).max(0.0);
        Duration::from_millis(jittered.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_is_flat() {
        let b = Backoff::fixed(500);
        for attempt in 1..10 {
            assert_eq!(b.delay(attempt, 0.9), Duration::from_millis(500));
        }
    }

    #[test]
    fn exponential_doubles_then_caps() {
        let b = Backoff::exponential(1_000).max_delay_ms(5_000);
        let delays: Vec<u64> = (1..=5).map(|a| b.delay(a, 0.5).as_millis() as u64).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
        // Huge attempt numbers do not overflow.
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_millis(5_000));
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let b = Backoff::fixed(10_000).jitter(0.2);
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(8_000));
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(10_000));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(12_000));
    }

    #[test]
    fn jitter_never_exceeds_cap() {
        let b = Backoff::exponential(1_000).max_delay_ms(1_000).jitter(0.5);
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(1_000));
    }

    #[test]
    fn validation() {
        assert!(Backoff::fixed(1).jitter(1.5).validate().is_err());
        assert!(Backoff::exponential(10).max_delay_ms(5).validate().is_err());
        assert!(Backoff::default().validate().is_ok());
    }

    #[test]
    fn wire_format() {
        let b: Backoff =
            serde_json::from_str(r#"{"type":"exponential","delay_ms":2000,"max_delay_ms":3600000,"jitter":0.2}"#)
                .unwrap();
        assert_eq!(b, Backoff::exponential(2_000).jitter(0.2));
        assert!(serde_json::from_str::<Backoff>(r#"{"type":"linear","delay_ms":1}"#).is_err());
    }
}

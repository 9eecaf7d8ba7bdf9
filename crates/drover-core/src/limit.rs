//! Flow control by rate-limit key: the limits configured for a key or a key
//! prefix, and [`StartWindow`], the sliding window of job starts that both
//! queue and key rate limits are enforced with.
//!
//! A rate limit `{max, per_ms}` promises that no window of `per_ms`
//! milliseconds ever holds more than `max` starts. A token bucket that
//! refills continuously would break that promise right after a burst, so
//! each start is a token that comes back exactly `per_ms` after it was spent:
//! the window remembers the starts of the last `per_ms` (grouped by instant,
//! since one claim starts many jobs at once) and allows `max` minus their sum.

use crate::{RateLimit, Timestamp};
use serde::{Deserialize, Serialize};

/// The longest rate-limit key pattern accepted, in bytes (as for the key).
pub const MAX_KEY_LEN: usize = 255;

/// Limits shared by every job whose `rate_limit_key` matches a pattern
/// (`PUT /api/rate-limits/{key}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimit {
    /// Most jobs with the key active at once, across all workers and queues.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Most starts of jobs with the key per window.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

impl KeyLimit {
    /// Checks the numbers: a cap of 0 would stop the key for good (pause the
    /// queue instead), and a rate limit must allow something.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.concurrency == Some(0) {
            return Err(("concurrency", "must be at least 1".into()));
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate().map_err(|m| ("rate_limit", m))?;
        }
        Ok(())
    }
}

/// Checks a key pattern: a key as jobs carry it (1 to 255 bytes), or a
/// prefix followed by one `*` at the very end (`"tenant:*"`), which applies
/// the limits to *each* key that starts with the prefix, separately.
pub fn validate_key_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_KEY_LEN {
        return Err(format!("must be 1 to {MAX_KEY_LEN} bytes"));
    }
    if pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**") {
        return Err("may hold one `*`, only at the end (a prefix)".into());
    }
    Ok(())
}

/// The rule that applies to `key` among `(pattern, limit)` rules: the
/// pattern equal to the key, else the longest prefix pattern that matches.
pub fn rule_for<'r>(rules: &'r [(String, KeyLimit)], key: &str) -> Option<&'r (String, KeyLimit)> {
    rules.iter().find(|(pattern, _)| pattern == key).or_else(|| {
        rules
            .iter()
            .filter(|(pattern, _)| pattern.strip_suffix('*').is_some_and(|prefix| key.starts_with(prefix)))
            .max_by_key(|(pattern, _)| pattern.len())
    })
}

/// The job starts of one queue or key in the current window, oldest first,
/// as `(instant in ms, how many)`. Stored as JSON by the stores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StartWindow(pub Vec<(i64, u32)>);

impl StartWindow {
    /// Forgets the starts that left the window (at or before `now - per_ms`).
    pub fn prune(&mut self, limit: &RateLimit, now: Timestamp) {
        let horizon = now.0.saturating_sub(per_ms(limit));
        self.0.retain(|&(at, _)| at > horizon);
    }

    /// Starts still allowed at `now` (call [`prune`](Self::prune) first).
    pub fn remaining(&self, limit: &RateLimit) -> u32 {
        limit.max.saturating_sub(self.used())
    }

    /// Starts in the window.
    pub fn used(&self) -> u32 {
        self.0.iter().fold(0u32, |sum, &(_, n)| sum.saturating_add(n))
    }

    /// Records `n` starts at `now`.
    pub fn record(&mut self, now: Timestamp, n: u32) {
        if n == 0 {
            return;
        }
        match self.0.last_mut() {
            Some((at, count)) if *at == now.0 => *count = count.saturating_add(n),
            _ => self.0.push((now.0, n)),
        }
    }

    /// When at least one more start is allowed: `None` while there is room
    /// now, else the instant the oldest starts that must go leave the window.
    pub fn frees_at(&self, limit: &RateLimit) -> Option<Timestamp> {
        let mut used = self.used();
        if used < limit.max {
            return None;
        }
        for &(at, n) in &self.0 {
            used = used.saturating_sub(n);
            if used < limit.max {
                return Some(Timestamp(at.saturating_add(per_ms(limit))));
            }
        }
        // Unreachable for a validated limit (max >= 1).
        self.0.last().map(|&(at, _)| Timestamp(at.saturating_add(per_ms(limit))))
    }

    /// The next instant the window changes (its oldest start leaves it), if
    /// it holds any start: when a fetcher held back by it should look again.
    pub fn next_change(&self, limit: &RateLimit) -> Option<Timestamp> {
        self.0.first().map(|&(at, _)| Timestamp(at.saturating_add(per_ms(limit))))
    }
}

/// How many more jobs a queue or key may start now, as a claim's flow
/// control sees it (see [`room`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// Starts left; `None` when nothing limits the scope.
    pub left: Option<u32>,
    /// A concurrency cap binds at least as tightly as any hold (the rate
    /// window is not weighed): a finish there must wake fetchers.
    pub capped: bool,
    /// Starts left the rate window when it was pruned: the stored window
    /// must be rewritten even if nothing starts.
    pub pruned: bool,
}

/// The room of a scope with concurrency cap `cap` (and `active` jobs), rate
/// limit `rate` over the starts in `window` (pruned here), and a hold
/// (`held`: a handler's rate-limit deferral, which allows nothing).
pub fn room(
    cap: Option<u32>,
    active: u64,
    rate: Option<&RateLimit>,
    held: bool,
    window: &mut StartWindow,
    now: Timestamp,
) -> Room {
    let mut left: Option<u32> = held.then_some(0);
    let mut capped = false;
    if let Some(cap) = cap {
        let free = u32::try_from(u64::from(cap).saturating_sub(active)).unwrap_or(u32::MAX);
        capped = free == 0 || left.is_none_or(|l| free <= l);
        left = Some(left.map_or(free, |l| l.min(free)));
    }
    let mut pruned = false;
    if let Some(limit) = rate {
        let before = window.0.len();
        window.prune(limit, now);
        pruned = window.0.len() != before;
        let room = window.remaining(limit);
        left = Some(left.map_or(room, |l| l.min(room)));
    }
    Room { left, capped, pruned }
}

/// Until when a queue or key starts nothing: its hold (`held_until`, set
/// by a handler's rate-limit deferral) or its rate limit used up by the
/// starts in `window`. `None` when a job could start at `now`.
pub fn throttled_until(
    held_until: Option<i64>,
    window: &StartWindow,
    rate: Option<&RateLimit>,
    now: Timestamp,
) -> Option<Timestamp> {
    let hold = held_until.filter(|&until| until > now.0).map(Timestamp);
    let full = rate.and_then(|limit| {
        let mut starts = window.clone();
        starts.prune(limit, now);
        starts.frees_at(limit)
    });
    hold.max(full)
}

fn per_ms(limit: &RateLimit) -> i64 {
    i64::try_from(limit.per_ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32, per_ms: u64) -> RateLimit {
        RateLimit { max, per_ms }
    }

    #[test]
    fn room_takes_the_tightest_of_hold_cap_and_window() {
        let now = Timestamp(10_000);
        let mut empty = StartWindow::default();
        assert_eq!(room(None, 0, None, false, &mut empty, now), Room { left: None, capped: false, pruned: false });
        let held = room(Some(5), 0, None, true, &mut empty, now);
        assert_eq!(held.left, Some(0));
        assert!(!held.capped, "the hold, not the cap, stops it");
        let capped = room(Some(3), 1, Some(&limit(10, 1_000)), false, &mut empty, now);
        assert_eq!((capped.left, capped.capped), (Some(2), true));
        // One start left the window, two remain of a limit of 3.
        let mut window = StartWindow(vec![(8_000, 1), (9_500, 2)]);
        let rated = room(Some(10), 0, Some(&limit(3, 1_000)), false, &mut window, now);
        assert_eq!(
            rated,
            Room { left: Some(1), capped: true, pruned: true },
            "a cap counts as binding beside a window"
        );
        assert_eq!(window.0, vec![(9_500, 2)]);
    }

    #[test]
    fn patterns() {
        assert!(validate_key_pattern("places").is_ok());
        assert!(validate_key_pattern("tenant:*").is_ok());
        assert!(validate_key_pattern("*").is_ok());
        for bad in ["", "a*b", "a**", "*a"] {
            assert!(validate_key_pattern(bad).is_err(), "{bad}");
        }
        assert!(validate_key_pattern(&"k".repeat(256)).is_err());
    }

    #[test]
    fn exact_rule_beats_prefixes_and_longest_prefix_wins() {
        let rule = |c| KeyLimit { concurrency: Some(c), rate_limit: None };
        let rules =
            vec![("t:*".to_owned(), rule(1)), ("t:acme:*".to_owned(), rule(2)), ("t:acme:eu".to_owned(), rule(3))];
        assert_eq!(rule_for(&rules, "t:acme:eu").unwrap().1.concurrency, Some(3));
        assert_eq!(rule_for(&rules, "t:acme:us").unwrap().1.concurrency, Some(2));
        assert_eq!(rule_for(&rules, "t:other").unwrap().1.concurrency, Some(1));
        assert!(rule_for(&rules, "places").is_none());
    }

    #[test]
    fn key_limits_validate() {
        assert!(KeyLimit { concurrency: Some(0), rate_limit: None }.validate().is_err());
        assert!(KeyLimit { concurrency: None, rate_limit: Some(limit(0, 10)) }.validate().is_err());
        assert!(KeyLimit { concurrency: Some(4), rate_limit: Some(limit(10, 60_000)) }.validate().is_ok());
    }

    /// Greedy claims every millisecond for 10 s never put more than `max`
    /// starts in any window of `per_ms`, and use the whole allowance.
    #[test]
    fn window_never_exceeds_max() {
        let l = limit(3, 2_000);
        let mut w = StartWindow::default();
        let mut starts = Vec::new();
        for t in 0..10_000 {
            let now = Timestamp(t);
            w.prune(&l, now);
            let n = w.remaining(&l).min(2);
            w.record(now, n);
            starts.extend(std::iter::repeat_n(t, n as usize));
        }
        for (i, &t) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().take_while(|&&s| s < t + 2_000).count();
            assert!(in_window <= 3, "{in_window} starts in the window from {t}");
        }
        assert_eq!(starts.len(), 15, "3 starts per 2 s over 10 s");
    }

    #[test]
    fn frees_at_is_when_enough_starts_age_out() {
        let l = limit(3, 1_000);
        let mut w = StartWindow::default();
        w.record(Timestamp(0), 2);
        assert_eq!(w.frees_at(&l), None);
        w.record(Timestamp(100), 1);
        assert_eq!(w.frees_at(&l), Some(Timestamp(1_000)));
        assert_eq!(w.next_change(&l), Some(Timestamp(1_000)));
        w.prune(&l, Timestamp(1_000));
        assert_eq!(w.remaining(&l), 2);
    }
}

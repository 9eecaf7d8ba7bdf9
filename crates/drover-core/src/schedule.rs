//! Schedules: a job template enqueued on a cron expression or a fixed
//! interval, and the pure rule "the next tick after `t`".
//!
//! Cron expressions are parsed and walked by the `croner` crate (5 fields, or
//! 6 with seconds first), in an IANA time zone resolved by `jiff`; this
//! module only adapts one to the other and checks what a caller sends.
//!
//! ```
//! use drover_core::{JobSpec, ScheduleSpec, Timestamp};
//!
//! // 02:00 every day in Berlin.
//! let spec = ScheduleSpec::cron("nightly-cleanup", "0 2 * * *", JobSpec::new("maintenance", "cleanup"))
//!     .timezone("Europe/Berlin");
//! let rule = spec.validate().unwrap();
//! // 2026-01-01T00:00:00Z is 01:00 in Berlin; the next 02:00 there is one hour later.
//! let next = rule.next_after(Timestamp(1_767_225_600_000), None).unwrap();
//! assert_eq!(next, Timestamp(1_767_225_600_000 + 3_600_000));
//! ```

use crate::{JobId, JobSpec, Timestamp};
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::time::{CivilDate, CivilDateTime, CivilTime, CronDateTime, Resolution, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, ZonedDateTime};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// The longest schedule id accepted, in bytes.
pub const MAX_SCHEDULE_ID_LEN: usize = 128;

/// The time zone of a cron schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// What a caller asks for: a job template and when to enqueue it. Exactly
/// one of `cron` and `every_ms` is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The schedule's name, chosen by the caller: 1–128 bytes of letters,
    /// digits and `_ - .` (it appears in URLs and in the ids of its jobs).
    pub id: String,
    /// A cron expression: 5 fields (minute first), or 6 with seconds first.
    #[serde(default)]
    pub cron: Option<String>,
    /// A fixed interval in milliseconds; the first tick is one interval after
    /// the schedule is created.
    #[serde(default)]
    pub every_ms: Option<u64>,
    /// The IANA time zone a cron expression is read in; default `UTC`. Only
    /// for `cron`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The job each tick enqueues. Its `id`, `run_at`, `expires_at` and
    /// `parent_id` must be unset: the schedule names each job itself and
    /// absolute times would be stale after the first tick.
    pub job: JobSpec,
}

/// A schedule as stored, with its bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// What was asked for.
    pub spec: ScheduleSpec,
    /// The next tick: the schedule fires once this is at or before now.
    pub next_run_at: Timestamp,
    /// The tick that fired last, if any.
    pub last_run_at: Option<Timestamp>,
    /// The job that tick enqueued (or found already enqueued).
    pub last_job_id: Option<JobId>,
    /// True while the schedule fires nothing.
    pub paused: bool,
    /// When the schedule was first created.
    pub created_at: Timestamp,
    /// When it was last created or replaced.
    pub updated_at: Timestamp,
}

/// Why a [`ScheduleSpec`] was refused; `field` names the input at fault, as
/// on the wire (`cron`, `timezone`, `job.queue`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    /// The field at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ScheduleError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl ScheduleSpec {
    /// A schedule enqueuing `job` on a cron expression (in UTC unless
    /// [`ScheduleSpec::timezone`] says otherwise).
    pub fn cron(id: impl Into<String>, cron: impl Into<String>, job: JobSpec) -> Self {
        Self { id: id.into(), cron: Some(cron.into()), every_ms: None, timezone: None, job }
    }

    /// A schedule enqueuing `job` every `every_ms` milliseconds.
    pub fn every_ms(id: impl Into<String>, every_ms: u64, job: JobSpec) -> Self {
        Self { id: id.into(), cron: None, every_ms: Some(every_ms), timezone: None, job }
    }

    /// Sets the time zone a cron expression is read in.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// Checks every field and parses the cadence; the first fault found is
    /// returned.
    pub fn validate(&self) -> Result<ScheduleRule, ScheduleError> {
        validate_schedule_id(&self.id)?;
        let rule = match (&self.cron, self.every_ms) {
            (Some(_), Some(_)) => return Err(ScheduleError::new("cron", "give cron or every_ms, not both")),
            (None, None) => return Err(ScheduleError::new("cron", "give cron or every_ms")),
            (None, Some(every_ms)) => {
                if self.timezone.is_some() {
                    return Err(ScheduleError::new("timezone", "applies to cron schedules only"));
                }
                // An upper bound keeps tick arithmetic far from overflow.
                if every_ms == 0 || every_ms > MAX_EVERY_MS {
                    return Err(ScheduleError::new("every_ms", format!("must be between 1 and {MAX_EVERY_MS}")));
                }
                ScheduleRule::Every { every_ms: every_ms as i64 }
            }
            (Some(expr), None) => {
                let timezone = self.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
                let tz = TimeZone::get(timezone).map_err(|_| {
                    ScheduleError::new("timezone", format!("`{timezone}` is not a known IANA time zone"))
                })?;
                let cron = parse_cron(expr)?;
                ScheduleRule::Cron { cron: Box::new(cron), tz }
            }
        };
        self.job.validate().map_err(|e| ScheduleError::new(format!("job.{}", e.field), e.message))?;
        for (field, set) in [
            ("job.id", self.job.id.is_some()),
            ("job.run_at", self.job.run_at.is_some()),
            ("job.expires_at", self.job.expires_at.is_some()),
            ("job.parent_id", self.job.parent_id.is_some()),
        ] {
            if set {
                return Err(ScheduleError::new(field, "must not be set on a schedule's job"));
            }
        }
        // A cron expression that never matches (e.g. 30 February) is refused
        // now rather than found out at its first tick.
        if let ScheduleRule::Cron { .. } = rule {
            rule.next_after(Timestamp(0), None).map_err(|e| ScheduleError::new("cron", e.message))?;
        }
        Ok(rule)
    }

    /// The id of the job the tick at `tick` enqueues:
    /// `sched:{schedule id}:{tick in ms}`. Every scheduler derives the same
    /// id for the same tick, so a tick raced by two of them inserts one job.
    pub fn job_id_for_tick(&self, tick: Timestamp) -> JobId {
        JobId::from_trusted(format!("sched:{}:{}", self.id, tick.as_millis()))
    }

    /// The job the tick at `tick` enqueues.
    pub fn job_for_tick(&self, tick: Timestamp) -> JobSpec {
        let mut job = self.job.clone();
        job.id = Some(self.job_id_for_tick(tick));
        job
    }
}

/// The longest interval accepted: about 100 years.
pub const MAX_EVERY_MS: u64 = 100 * 366 * 24 * 3_600 * 1_000;

/// Checks a schedule id on its own (for routes that take one in the path).
pub fn validate_schedule_id(id: &str) -> Result<(), ScheduleError> {
    if id.is_empty() || id.len() > MAX_SCHEDULE_ID_LEN {
        return Err(ScheduleError::new("id", format!("must be 1 to {MAX_SCHEDULE_ID_LEN} bytes")));
    }
    // No `:` (the job id puts one after it) and no `/` (it is a URL segment).
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return Err(ScheduleError::new("id", "may contain only letters, digits and _ - ."));
    }
    Ok(())
}

/// Parses 5 fields (seconds default to 0) or 6 (seconds first); no year
/// field, so that a 6-field expression is never read two ways.
fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) && !expr.trim_start().starts_with('@') {
        return Err(ScheduleError::new(
            "cron",
            format!("`{expr}` has {fields} fields; give 5 (minute hour day month weekday) or 6 (seconds first)"),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| ScheduleError::new("cron", format!("`{expr}` is not a valid cron expression: {e}")))
}

/// A validated cadence: when a schedule ticks.
#[derive(Clone, Debug)]
pub enum ScheduleRule {
    /// A cron expression read in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The zone its wall-clock fields are read in.
        tz: TimeZone,
    },
    /// Every so many milliseconds.
    Every {
        /// The interval, positive.
        every_ms: i64,
    },
}

impl ScheduleRule {
    /// The first tick strictly after `t`.
    ///
    /// An interval's ticks lie on the grid of `anchor` (a past tick) plus
    /// whole intervals, so a late scheduler does not drift the schedule;
    /// without an anchor the first tick is `t + every_ms`. A cron tick is
    /// found by `croner` on whole seconds in the rule's time zone: a wall
    /// time skipped by a daylight-saving jump runs at the first instant
    /// after the gap, one repeated by a fall back runs once (the earlier).
    ///
    /// Errors: a cron expression with no match in the years `jiff` can
    /// represent (field `cron`).
    pub fn next_after(&self, t: Timestamp, anchor: Option<Timestamp>) -> Result<Timestamp, ScheduleError> {
        match self {
            ScheduleRule::Every { every_ms } => Ok(match anchor {
                Some(anchor) if anchor <= t => {
                    let steps = (t.0 - anchor.0) / every_ms + 1;
                    Timestamp(anchor.0.saturating_add(steps.saturating_mul(*every_ms)))
                }
                Some(anchor) => anchor,
                None => t.plus_ms(*every_ms),
            }),
            ScheduleRule::Cron { cron, tz } => {
                let start = jiff::Timestamp::from_second(t.0.div_euclid(1_000))
                    .map_err(|e| ScheduleError::new("cron", format!("time out of range: {e}")))?;
                let start = Zoned(ZonedDateTime::new(start, tz.clone()));
                let next = cron
                    .find_next_occurrence(&start, false)
                    .map_err(|e| ScheduleError::new("cron", format!("no next time matches: {e}")))?;
                Ok(Timestamp(next.0.timestamp().as_millisecond()))
            }
        }
    }
}

/// A `jiff` zoned time that `croner` can walk. (croner's own `jiff` support
/// is for an older `jiff` than the workspace's; this adapter avoids linking
/// two `jiff`s or pulling `chrono` in for time zones.)
#[derive(Clone, Debug)]
struct Zoned(ZonedDateTime);

fn to_civil(dt: jiff::civil::DateTime) -> CivilDateTime {
    // jiff keeps every part in range, so the unchecked constructors hold.
    CivilDateTime::new(
        CivilDate::from_parts_unchecked(i32::from(dt.year()), dt.month() as u32, dt.day() as u32),
        CivilTime::from_parts_unchecked(dt.hour() as u32, dt.minute() as u32, dt.second() as u32),
    )
}

impl CronDateTime for Zoned {
    fn to_civil(&self) -> CivilDateTime {
        to_civil(self.0.datetime())
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(self.0.weekday().to_sunday_zero_offset() as u32)
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let year = i16::try_from(civil.year()).map_err(|_| CronError::InvalidDate)?;
        let dt = jiff::civil::DateTime::new(
            year,
            civil.month() as i8,
            civil.day() as i8,
            civil.hour() as i8,
            civil.minute() as i8,
            civil.second() as i8,
            0,
        )
        .map_err(|_| CronError::InvalidDate)?;
        let ambiguous = self.0.time_zone().to_ambiguous_zoned_datetime(dt);
        Ok(match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } => {
                Resolution::Single(Zoned(ambiguous.unambiguous().map_err(|_| CronError::InvalidTime)?))
            }
            AmbiguousOffset::Fold { .. } => Resolution::Ambiguous(
                Zoned(ambiguous.clone().earlier().map_err(|_| CronError::InvalidTime)?),
                Zoned(ambiguous.later().map_err(|_| CronError::InvalidTime)?),
            ),
            AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0.checked_add(SignedDuration::from_secs(seconds)).ok().map(Zoned)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobSpec {
        JobSpec::new("q", "n")
    }

    /// Milliseconds of an RFC 3339 instant.
    fn at(text: &str) -> Timestamp {
        Timestamp(text.parse::<jiff::Timestamp>().unwrap().as_millisecond())
    }

    fn next(spec: &ScheduleSpec, from: &str) -> Timestamp {
        spec.validate().unwrap().next_after(at(from), None).unwrap()
    }

    #[test]
    fn cron_five_fields_in_utc() {
        let spec = ScheduleSpec::cron("s", "0 2 * * *", job());
        assert_eq!(next(&spec, "2026-03-01T01:59:59.999Z"), at("2026-03-01T02:00:00Z"));
        // Strictly after: a tick at exactly t is not "next".
        assert_eq!(next(&spec, "2026-03-01T02:00:00Z"), at("2026-03-02T02:00:00Z"));
    }

    #[test]
    fn cron_with_seconds() {
        let spec = ScheduleSpec::cron("s", "*/10 * * * * *", job());
        assert_eq!(next(&spec, "2026-03-01T00:00:00.500Z"), at("2026-03-01T00:00:10Z"));
        assert_eq!(next(&spec, "2026-03-01T00:00:10Z"), at("2026-03-01T00:00:20Z"));
    }

    #[test]
    fn cron_in_a_time_zone() {
        let spec = ScheduleSpec::cron("s", "0 9 * * MON-FRI", job()).timezone("America/New_York");
        // Friday 2026-01-02 14:00Z is 09:00 in New York (EST, -5).
        assert_eq!(next(&spec, "2026-01-02T00:00:00Z"), at("2026-01-02T14:00:00Z"));
        // After it, the next weekday is Monday the 5th.
        assert_eq!(next(&spec, "2026-01-02T14:00:00Z"), at("2026-01-05T14:00:00Z"));
    }

    #[test]
    fn dst_spring_forward_runs_after_the_gap() {
        // Berlin skips 02:00–03:00 on 2026-03-29; a 02:30 job runs once that
        // day, at the first instant after the gap (03:00 CEST = 01:00Z).
        let spec = ScheduleSpec::cron("s", "30 2 * * *", job()).timezone("Europe/Berlin");
        let first = next(&spec, "2026-03-28T12:00:00Z");
        assert_eq!(first, at("2026-03-29T01:00:00Z"));
        let rule = spec.validate().unwrap();
        // The day after, 02:30 CEST exists again (00:30Z).
        assert_eq!(rule.next_after(first, None).unwrap(), at("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn dst_fall_back_runs_once() {
        // Berlin repeats 02:00–03:00 on 2026-10-25; a 02:30 job runs once,
        // at the first 02:30 (CEST, 00:30Z), not again at 01:30Z.
        let spec = ScheduleSpec::cron("s", "30 2 * * *", job()).timezone("Europe/Berlin");
        let first = next(&spec, "2026-10-24T12:00:00Z");
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        let rule = spec.validate().unwrap();
        assert_eq!(rule.next_after(first, None).unwrap(), at("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn interval_ticks_stay_on_their_grid() {
        let rule = ScheduleSpec::every_ms("s", 1_000, job()).validate().unwrap();
        assert_eq!(rule.next_after(Timestamp(5_500), None).unwrap(), Timestamp(6_500));
        // Anchored at a tick of 5_000: from 5_000 the next is 6_000; after a
        // long gap it lands on the grid, strictly after t.
        assert_eq!(rule.next_after(Timestamp(5_000), Some(Timestamp(5_000))).unwrap(), Timestamp(6_000));
        assert_eq!(rule.next_after(Timestamp(9_999), Some(Timestamp(5_000))).unwrap(), Timestamp(10_000));
        assert_eq!(rule.next_after(Timestamp(10_000), Some(Timestamp(5_000))).unwrap(), Timestamp(11_000));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |spec: ScheduleSpec| spec.validate().unwrap_err().field;
        assert_eq!(bad(ScheduleSpec::every_ms("", 1, job())), "id");
        assert_eq!(bad(ScheduleSpec::every_ms("a/b", 1, job())), "id");
        assert_eq!(bad(ScheduleSpec::every_ms("a:b", 1, job())), "id");
        assert_eq!(bad(ScheduleSpec::every_ms("s", 0, job())), "every_ms");
        assert_eq!(bad(ScheduleSpec::every_ms("s", 1_000, job()).timezone("UTC")), "timezone");
        assert_eq!(bad(ScheduleSpec::cron("s", "not cron", job())), "cron");
        assert_eq!(bad(ScheduleSpec::cron("s", "61 * * * *", job())), "cron");
        assert_eq!(bad(ScheduleSpec::cron("s", "* * * * * * *", job())), "cron");
        assert_eq!(bad(ScheduleSpec::cron("s", "0 0 30 2 *", job())), "cron");
        assert_eq!(bad(ScheduleSpec::cron("s", "* * * * *", job()).timezone("Mars/Olympus")), "timezone");
        let mut both = ScheduleSpec::cron("s", "* * * * *", job());
        both.every_ms = Some(1_000);
        assert_eq!(bad(both), "cron");
        let mut neither = ScheduleSpec::every_ms("s", 1_000, job());
        neither.every_ms = None;
        assert_eq!(bad(neither), "cron");
        assert_eq!(bad(ScheduleSpec::every_ms("s", 1_000, JobSpec::new("", "n"))), "job.queue");
        assert_eq!(bad(ScheduleSpec::every_ms("s", 1_000, job().id(JobId::generate()))), "job.id");
        assert_eq!(bad(ScheduleSpec::every_ms("s", 1_000, job().run_at(Timestamp(1)))), "job.run_at");
    }

    #[test]
    fn job_ids_are_deterministic_per_tick() {
        let spec = ScheduleSpec::every_ms("digest", 1_000, job());
        assert_eq!(spec.job_for_tick(Timestamp(42_000)).id.unwrap().as_str(), "sched:digest:42000");
        assert_eq!(spec.job_id_for_tick(Timestamp(42_000)), spec.job_id_for_tick(Timestamp(42_000)));
    }

    #[test]
    fn wire_shape() {
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "id": "nightly-cleanup", "cron": "0 2 * * *", "timezone": "UTC",
            "job": {"queue": "q", "name": "n"}
        }))
        .unwrap();
        assert_eq!(spec, ScheduleSpec::cron("nightly-cleanup", "0 2 * * *", job()).timezone("UTC"));
        spec.validate().unwrap();
    }
}

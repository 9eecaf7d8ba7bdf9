//! Flow control: concurrency caps and rate limits per queue and per
//! rate-limit key, and the holds that a handler's "rate limited, retry
//! after T" puts on them (migration 0007).
//!
//! A claim opens a [`Gate`] that knows, per queue and per key it meets, how
//! many more jobs may start now; the claim asks it before taking a job and
//! tells it what it took, and the gate writes the rate-limit windows back.
//! Everything runs in the writer's transaction, so parallel claimers are
//! serialised and no cap or window can be overrun.

use crate::error::SqlResultExt;
use crate::rows;
use crate::writer::Ctx;
use drover_core::limit::rule_for;
use drover_core::limit::{Room, room};
use drover_core::{KeyLimit, QueueConfig, RateLimit, StartWindow, Timestamp};
use drover_store::{PendingEvent, RateLimitRule, RateLimitState, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;

/// The `throttles` row of a queue.
fn queue_scope(queue: &str) -> String {
    format!("q:{queue}")
}

/// The `throttles` row of a rate-limit key.
fn key_scope(key: &str) -> String {
    format!("k:{key}")
}

/// One `throttles` row: a scope's window of starts and its hold.
#[derive(Debug, Default)]
struct Throttle {
    starts: StartWindow,
    held_until: Option<i64>,
    /// When the window next changes (its oldest start leaves it), as last
    /// written; kept when a hold rewrites the row without the rate limit.
    window_change: Option<i64>,
}

impl Throttle {
    fn read(conn: &Connection, scope: &str) -> StoreResult<Self> {
        let row: Option<(Option<StartWindow>, Option<i64>, Option<i64>)> = conn
            .prepare_cached("SELECT starts, held_until, next_change_at FROM throttles WHERE scope = ?1")
            .db()?
            .query_row([scope], |r| Ok((rows::opt_json(r, 0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .db()?;
        let (starts, held_until, window_change) = row.unwrap_or_default();
        Ok(Self { starts: starts.unwrap_or_default(), held_until, window_change })
    }

    /// True while a hold keeps the scope from starting anything.
    fn held(&self, now: Timestamp) -> bool {
        self.held_until.is_some_and(|until| until > now.0)
    }

    /// Until when the scope starts nothing: its hold, or its rate limit used
    /// up. `None` when a job could start now.
    fn throttled_until(&self, rate: Option<&RateLimit>, now: Timestamp) -> Option<Timestamp> {
        drover_core::limit::throttled_until(self.held_until, &self.starts, rate, now)
    }

    /// Writes the row back (the window's next change recomputed when the
    /// rate limit is known), or deletes it when it holds nothing any more.
    fn write(&mut self, conn: &Connection, scope: &str, rate: Option<&RateLimit>, now: Timestamp) -> StoreResult<()> {
        let hold = self.held_until.filter(|&until| until > now.0);
        if hold.is_none() && self.starts.0.is_empty() {
            conn.prepare_cached("DELETE FROM throttles WHERE scope = ?1").db()?.execute([scope]).db()?;
            return Ok(());
        }
        if let Some(limit) = rate {
            self.window_change = self.starts.next_change(limit).map(|t| t.0);
        }
        let starts = (!self.starts.0.is_empty()).then(|| rows::to_json(&self.starts));
        conn.prepare_cached(
            "INSERT INTO throttles (scope, starts, held_until, next_change_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (scope) DO UPDATE SET starts = excluded.starts, held_until = excluded.held_until, \
             next_change_at = excluded.next_change_at",
        )
        .db()?
        .execute(params![scope, starts, hold, self.window_change])
        .db()?;
        Ok(())
    }
}

/// Every key rule, in no particular order.
fn rules(conn: &Connection) -> StoreResult<Vec<(String, KeyLimit)>> {
    conn.prepare_cached("SELECT key, config FROM rate_limit_rules")
        .db()?
        .query_map([], |r| Ok((r.get(0)?, rows::json(r, 1)?)))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()
}

/// Active jobs with rate-limit key `key` (through `jobs_active_key`).
fn active_with_key(conn: &Connection, key: &str) -> StoreResult<u64> {
    conn.prepare_cached("SELECT count(*) FROM jobs WHERE rate_limit_key = ?1 AND state = 'active'")
        .db()?
        .query_row([key], |r| r.get::<_, i64>(0))
        .db()
        .map(|n| n as u64)
}

/// How many more jobs one scope may start in this claim, and the window it
/// must record them in.
#[derive(Debug)]
struct Allowance {
    /// `None`: no limit applies.
    left: Option<u32>,
    /// Present when the scope has a rate limit: its window, read at the
    /// start of the claim, and the limit.
    window: Option<(RateLimit, Throttle)>,
    /// Starts taken in this claim.
    taken: u32,
    /// A concurrency cap is what stops it (so a finish must wake fetchers).
    capped: bool,
    /// Starts left the window when it was read: the row must be rewritten
    /// even if the claim takes nothing.
    pruned: bool,
}

impl Allowance {
    /// Combines a concurrency cap (with `active` jobs now), a rate limit and
    /// the scope's throttle row.
    fn new(cap: Option<u32>, active: u64, rate: Option<RateLimit>, mut throttle: Throttle, now: Timestamp) -> Self {
        let held = throttle.held(now);
        let Room { left, capped, pruned } = room(cap, active, rate.as_ref(), held, &mut throttle.starts, now);
        let window = rate.map(|limit| (limit, throttle));
        Self { left, window, taken: 0, capped, pruned }
    }

    fn unlimited() -> Self {
        Self { left: None, window: None, taken: 0, capped: false, pruned: false }
    }

    fn allows(&self) -> bool {
        self.left.is_none_or(|left| left > self.taken)
    }

    /// Room left, `u32::MAX` when unlimited.
    fn room(&self) -> u32 {
        self.left.map_or(u32::MAX, |left| left - self.taken.min(left))
    }
}

/// Flow control for one claim. See the module doc.
pub(crate) struct Gate {
    now: Timestamp,
    rules: Vec<(String, KeyLimit)>,
    /// Whether any job key may be limited: a rule exists or a key is held.
    /// When not, the claim takes jobs in order without looking at keys.
    keyed: bool,
    /// Whether the `throttles` table holds any row (a window or a hold).
    any_throttles: bool,
    keys: HashMap<String, Allowance>,
    queues: HashMap<String, Allowance>,
}

impl Gate {
    /// Reads the key rules and whether any key is held.
    pub fn open(conn: &Connection, now: Timestamp) -> StoreResult<Self> {
        // One probe for the common case, no flow control in use at all: then
        // neither the rules nor any throttle row is read again in this claim.
        let (any_rules, any_throttles): (bool, bool) = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM rate_limit_rules), EXISTS (SELECT 1 FROM throttles)")
            .db()?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        let rules = if any_rules { rules(conn)? } else { Vec::new() };
        let keyed = any_rules
            || (any_throttles
                && conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM throttles WHERE scope >= 'k:' AND scope < 'k;' AND held_until > ?1)",
                    )
                    .db()?
                    .query_row([now.0], |r| r.get::<_, bool>(0))
                    .db()?);
        Ok(Self { now, rules, keyed, any_throttles, keys: HashMap::new(), queues: HashMap::new() })
    }

    /// True when jobs must be checked key by key ([`Gate::take_key`]).
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// How many jobs `queue` may start in this claim (`u32::MAX`: no limit),
    /// given its config and its `active` jobs now.
    pub fn queue_room(
        &mut self,
        conn: &Connection,
        queue: &str,
        config: Option<&QueueConfig>,
        active: u64,
    ) -> StoreResult<u32> {
        let throttle =
            if self.any_throttles { Throttle::read(conn, &queue_scope(queue))? } else { Throttle::default() };
        let (cap, rate) = config.map_or((None, None), |c| (c.concurrency, c.rate_limit));
        let allowance = Allowance::new(cap, active, rate, throttle, self.now);
        let room = allowance.room();
        self.queues.insert(queue.to_owned(), allowance);
        Ok(room)
    }

    /// Takes one start of a job with rate-limit `key` if the key allows it.
    pub fn take_key(&mut self, conn: &Connection, key: &str) -> StoreResult<bool> {
        if !self.keys.contains_key(key) {
            let allowance = self.key_allowance(conn, key)?;
            self.keys.insert(key.to_owned(), allowance);
        }
        let Some(allowance) = self.keys.get_mut(key) else { return Ok(false) };
        if !allowance.allows() {
            return Ok(false);
        }
        allowance.taken += 1;
        Ok(true)
    }

    fn key_allowance(&self, conn: &Connection, key: &str) -> StoreResult<Allowance> {
        let throttle = if self.any_throttles { Throttle::read(conn, &key_scope(key))? } else { Throttle::default() };
        let Some((_, rule)) = rule_for(&self.rules, key) else {
            return Ok(if throttle.held(self.now) {
                Allowance::new(None, 0, None, throttle, self.now)
            } else {
                Allowance::unlimited()
            });
        };
        let active = match rule.concurrency {
            Some(_) => active_with_key(conn, key)?,
            None => 0,
        };
        Ok(Allowance::new(rule.concurrency, active, rule.rate_limit, throttle, self.now))
    }

    /// Gives back starts taken for jobs that the claim dropped in the end
    /// (a multi-queue claim keeps only the first `max` in claim order).
    pub fn untake_key(&mut self, key: &str) {
        if let Some(allowance) = self.keys.get_mut(key) {
            allowance.taken = allowance.taken.saturating_sub(1);
        }
    }

    /// Records what the claim took from `queue` (and, through
    /// [`Gate::take_key`], from keys), writes the rate-limit windows, and
    /// says whether a concurrency cap held anything back.
    pub fn close(self, ctx: &mut Ctx<'_>, taken_per_queue: &HashMap<&str, u32>) -> StoreResult<bool> {
        let now = self.now;
        let mut capped = false;
        for (queue, mut allowance) in self.queues {
            allowance.taken = taken_per_queue.get(queue.as_str()).copied().unwrap_or(0);
            capped |= allowance.capped && !allowance.allows();
            if let Some((limit, mut throttle)) = allowance.window.take()
                && (allowance.taken > 0 || allowance.pruned)
            {
                let had_room = throttle.starts.remaining(&limit) > 0;
                throttle.starts.record(now, allowance.taken);
                throttle.write(ctx.conn, &queue_scope(&queue), Some(&limit), now)?;
                if had_room && let Some(until) = throttle.starts.frees_at(&limit) {
                    ctx.event(|| PendingEvent::throttled(&queue, until, None, now));
                }
            }
        }
        for (key, mut allowance) in self.keys {
            capped |= allowance.capped && !allowance.allows();
            if let Some((limit, mut throttle)) = allowance.window.take()
                && (allowance.taken > 0 || allowance.pruned)
            {
                throttle.starts.record(now, allowance.taken);
                throttle.write(ctx.conn, &key_scope(&key), Some(&limit), now)?;
            }
        }
        Ok(capped)
    }
}

/// A handler's "rate limited, retry after T": holds `key` (or, without
/// one, `queue`) back until `until`, and announces it.
pub(crate) fn hold(ctx: &mut Ctx<'_>, queue: &str, key: Option<&str>, until: Timestamp) -> StoreResult<()> {
    let now = ctx.now();
    let scope = key.map_or_else(|| queue_scope(queue), key_scope);
    let mut throttle = Throttle::read(ctx.conn, &scope)?;
    let held_until = throttle.held_until.map_or(until.0, |held| held.max(until.0));
    throttle.held_until = Some(held_until);
    throttle.write(ctx.conn, &scope, None, now)?;
    ctx.event(|| PendingEvent::throttled(queue, Timestamp(held_until), key, now));
    Ok(())
}

/// The next future instant a window or hold may let a held-back job go.
pub(crate) fn next_change(conn: &Connection, now: Timestamp) -> StoreResult<Option<Timestamp>> {
    conn.prepare_cached(
        "SELECT min(at) FROM (SELECT held_until AS at FROM throttles WHERE held_until > ?1 \
         UNION ALL SELECT next_change_at FROM throttles WHERE next_change_at > ?1)",
    )
    .db()?
    .query_row([now.0], |r| r.get::<_, Option<i64>>(0))
    .db()
    .map(|at| at.map(Timestamp))
}

/// Until when `queue` starts nothing (see [`drover_store::QueueInfo`]).
pub(crate) fn queue_throttled_until(
    conn: &Connection,
    queue: &str,
    config: &QueueConfig,
    now: Timestamp,
) -> StoreResult<Option<Timestamp>> {
    Ok(Throttle::read(conn, &queue_scope(queue))?.throttled_until(config.rate_limit.as_ref(), now))
}

/// [`drover_store::Store::rate_limit_set`]; the pattern and limit were checked.
pub(crate) fn rule_set(ctx: &mut Ctx<'_>, key: &str, limit: &KeyLimit) -> StoreResult<RateLimitRule> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO rate_limit_rules (key, config) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET config = excluded.config",
        )
        .db()?
        .execute(params![key, rows::to_json(limit)])
        .db()?;
    // Looser limits may let held-back jobs go now.
    ctx.ready = true;
    Ok(RateLimitRule { key: key.to_owned(), limit: *limit })
}

/// [`drover_store::Store::rate_limit_delete`].
pub(crate) fn rule_delete(ctx: &mut Ctx<'_>, key: &str) -> StoreResult<bool> {
    let n = ctx.conn.prepare_cached("DELETE FROM rate_limit_rules WHERE key = ?1").db()?.execute([key]).db()?;
    ctx.ready |= n > 0;
    Ok(n > 0)
}

/// [`drover_store::Store::rate_limit_list`].
pub(crate) fn rule_list(conn: &Connection) -> StoreResult<Vec<RateLimitRule>> {
    let mut rules = rules(conn)?;
    rules.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(rules.into_iter().map(|(key, limit)| RateLimitRule { key, limit }).collect())
}

/// [`drover_store::Store::rate_limit_get`].
pub(crate) fn key_state(conn: &Connection, key: &str, now: Timestamp) -> StoreResult<RateLimitState> {
    let rules = rules(conn)?;
    let rule = rule_for(&rules, key).map(|(pattern, limit)| RateLimitRule { key: pattern.clone(), limit: *limit });
    let rate = rule.as_ref().and_then(|r| r.limit.rate_limit);
    let mut throttle = Throttle::read(conn, &key_scope(key))?;
    let throttled_until = throttle.throttled_until(rate.as_ref(), now);
    let started_in_window = rate.map_or(0, |limit| {
        throttle.starts.prune(&limit, now);
        throttle.starts.used()
    });
    Ok(RateLimitState {
        key: key.to_owned(),
        rule,
        active: active_with_key(conn, key)?,
        started_in_window,
        throttled_until,
    })
}

//! Concurrency caps and rate limits of queues and `rate_limit_key`s
//! (ADR 0008), enforced across servers under transaction-scoped advisory
//! locks (ADR 0009); and the rules' store methods.
//!
//! A claim opens a [`Gate`] that knows, per queue and per key it meets, how
//! many more jobs may start now. As SQLite's, but where SQLite's single
//! writer serialises every claim, here a claim serialises only on the
//! scopes it hands limited jobs out of:
//! - a limited queue (`q:name`) is locked with `pg_advisory_xact_lock`, all
//!   of a claim's in sorted order, before its active jobs are counted and
//!   its window is read;
//! - a limited key (`k:key`) is met while walking the ready index, in no
//!   useful order, so it takes `pg_try_advisory_xact_lock`: a key another
//!   claimer is serving right now is skipped by this claim, as `SKIP
//!   LOCKED` skips a row, and nobody waits out of order.
//!
//! Windows (`throttles.starts`) are written only under their scope's lock,
//! so they are read and written back without row locks; holds
//! (`held_until`, a handler's "rate limited") come from finishes, which
//! take no scope lock, so a claim never writes `held_until` and a hold is
//! never lost. Without any rule, cap or hold (the common case) a claim
//! takes no lock and reads nothing more than its queues' settings.

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows;
use drover_core::limit::{Room, room};
use drover_core::limit::{rule_for, validate_key_pattern};
use drover_core::{KeyLimit, QueueConfig, RateLimit, StartWindow, Timestamp};
use drover_store::{PendingEvent, RateLimitRule, RateLimitState, StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use std::collections::{BTreeMap, HashMap};

/// The `throttles` row (and advisory lock scope) of a queue.
pub(crate) fn queue_scope(queue: &str) -> String {
    format!("q:{queue}")
}

/// The `throttles` row (and advisory lock scope) of a rate-limit key.
pub(crate) fn key_scope(key: &str) -> String {
    format!("k:{key}")
}

/// One `throttles` row: a scope's window of starts and its hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct Throttle {
    starts: StartWindow,
    held_until: Option<i64>,
}

impl Throttle {
    /// Decodes `starts, held_until` at columns `idx` and `idx + 1` (NULLs
    /// when the row is missing, from an outer join).
    pub(crate) fn from_row(row: &PgRow, idx: usize) -> StoreResult<Self> {
        let starts: Option<StartWindow> = rows::opt_json(row, idx)?;
        Ok(Throttle { starts: starts.unwrap_or_default(), held_until: row.try_get(idx + 1).db()? })
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
}

/// How many more jobs one scope may start in this claim, and the window it
/// must record them in.
#[derive(Debug)]
struct Allowance {
    /// `None`: no limit applies.
    left: Option<u32>,
    /// Present when the scope has a rate limit: its window, read under the
    /// scope's lock, and the limit.
    window: Option<(RateLimit, Throttle)>,
    /// Starts taken in this claim.
    taken: u32,
    /// Starts left the window when it was read: the row must be rewritten
    /// even if the claim takes nothing.
    pruned: bool,
}

impl Allowance {
    /// Combines a concurrency cap (with `active` jobs now), a rate limit and
    /// the scope's throttle row.
    fn new(cap: Option<u32>, active: u64, rate: Option<RateLimit>, mut throttle: Throttle, now: Timestamp) -> Self {
        let held = throttle.held(now);
        // `capped` matters to SQLite's wake flag only: across servers every
        // freed slot under a cap wakes (`wake_if_capped`).
        let Room { left, pruned, .. } = room(cap, active, rate.as_ref(), held, &mut throttle.starts, now);
        let window = rate.map(|limit| (limit, throttle));
        Allowance { left, window, taken: 0, pruned }
    }

    fn unlimited() -> Self {
        Allowance { left: None, window: None, taken: 0, pruned: false }
    }

    /// A scope this claim may not serve at all (another claimer holds it).
    fn closed() -> Self {
        Allowance { left: Some(0), window: None, taken: 0, pruned: false }
    }

    fn allows(&self) -> bool {
        self.left.is_none_or(|left| left > self.taken)
    }

    /// Room left, `u32::MAX` when unlimited.
    fn room(&self) -> u32 {
        self.left.map_or(u32::MAX, |left| left - self.taken.min(left))
    }
}

/// Whether a queue's settings ask the claim to serialise on it.
pub(crate) fn queue_is_limited(config: Option<&QueueConfig>) -> bool {
    config.is_some_and(|c| c.concurrency.is_some() || c.rate_limit.is_some())
}

/// Whether a key rule asks the claim to serialise on the keys it matches.
fn key_is_limited(limit: &KeyLimit) -> bool {
    limit.concurrency.is_some() || limit.rate_limit.is_some()
}

/// Flow control for one claim. See the module doc.
pub(crate) struct Gate {
    now: Timestamp,
    rules: Vec<(String, KeyLimit)>,
    /// Whether any job key may be limited: a rule exists or a key is held.
    /// When not, the claim takes jobs in order without looking at keys.
    keyed: bool,
    keys: HashMap<String, Allowance>,
    queues: BTreeMap<String, Allowance>,
}

impl Gate {
    /// A gate with the key rules and whether keys must be looked at (a rule
    /// exists or a key is held now), both read by the claim with its
    /// queues' settings.
    /// The instant the claim decides at (see [`Gate::lock_queues`]).
    pub(crate) fn now(&self) -> Timestamp {
        self.now
    }

    pub(crate) fn new(now: Timestamp, rules: Vec<(String, KeyLimit)>, keyed: bool) -> Self {
        let keyed = keyed || !rules.is_empty();
        Gate { now, rules, keyed, keys: HashMap::new(), queues: BTreeMap::new() }
    }

    /// True when jobs must be checked key by key ([`Gate::take_key`]).
    pub(crate) fn keyed(&self) -> bool {
        self.keyed
    }

    /// Locks the scopes of the limited queues among `queues` (sorted, so two
    /// claims cannot wait on each other), then counts their active jobs and
    /// reads their windows, and records what each may start. Two round
    /// trips, none when no queue is limited: the lock must be taken by an
    /// earlier statement than the count, which sees what committed before
    /// it started (ADR 0009).
    pub(crate) async fn lock_queues(
        &mut self,
        conn: &mut PgConnection,
        queues: &[(&str, &QueueConfig)],
        clock: &dyn drover_core::Clock,
    ) -> StoreResult<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = queues.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        let scopes: Vec<String> = names.iter().map(|name| queue_scope(name)).collect();
        // A function scan yields the array in order, one lock per row.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(s, 0)) FROM unnest($1::text[]) AS s")
            .bind(&scopes)
            .execute(&mut *conn)
            .await
            .db()?;
        let found = sqlx::query(
            "SELECT q.name, (SELECT count(*) FROM jobs WHERE state = 'active' AND queue = q.name), \
             t.starts, t.held_until FROM unnest($1::text[]) AS q(name) \
             LEFT JOIN throttles t ON t.scope = 'q:' || q.name",
        )
        .bind(&names)
        .fetch_all(&mut *conn)
        .await
        .db()?;
        // The claim's instant is read again now that it holds the locks
        // and has counted: every finish it counted out committed before
        // this, so the `started_at` it records is never earlier than their
        // `finished_at` (read when those transactions began). Without it,
        // a claim that waited for the lock would date its starts before
        // the finishes that made room for them.
        self.now = self.now.max(clock.now());
        for row in &found {
            let name: String = row.try_get(0).db()?;
            let active: i64 = row.try_get(1).db()?;
            let throttle = Throttle::from_row(row, 2)?;
            let Some((_, config)) = queues.iter().find(|(q, _)| *q == name) else { continue };
            let allowance =
                Allowance::new(config.concurrency, active.max(0) as u64, config.rate_limit, throttle, self.now);
            self.queues.insert(name, allowance);
        }
        Ok(())
    }

    /// How many jobs `queue` may start in this claim (`u32::MAX`: no
    /// limit). A queue [`Gate::lock_queues`] did not see is limited by its
    /// hold alone (`throttle`, read without a lock: holds only grow).
    pub(crate) fn queue_room(&mut self, queue: &str, throttle: &Throttle) -> u32 {
        let now = self.now;
        self.queues
            .entry(queue.to_owned())
            .or_insert_with(|| {
                if throttle.held(now) {
                    Allowance::new(None, 0, None, throttle.clone(), now)
                } else {
                    Allowance::unlimited()
                }
            })
            .room()
    }

    /// Learns the keys among `keys` not met yet in this claim, all at once:
    /// try-locks those with a limiting rule (a key another claimer holds is
    /// closed to this claim), then counts the locked keys' active jobs and
    /// reads every new key's throttle row (a hold applies to a key with no
    /// rule too). At most two round trips, none when every key is known.
    pub(crate) async fn meet_keys<'k>(
        &mut self,
        conn: &mut PgConnection,
        keys: impl Iterator<Item = &'k str>,
    ) -> StoreResult<()> {
        let mut new: Vec<&str> = keys.filter(|key| !self.keys.contains_key(*key)).collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let limit_of = |key: &str| rule_for(&self.rules, key).map(|(_, limit)| *limit).filter(key_is_limited);
        let limited: Vec<&str> = new.iter().copied().filter(|key| limit_of(key).is_some()).collect();
        let mut busy: Vec<String> = Vec::new();
        if !limited.is_empty() {
            let locked = sqlx::query(
                "SELECT k, pg_try_advisory_xact_lock(hashtextextended('k:' || k, 0)) FROM unnest($1::text[]) AS k",
            )
            .bind(&limited)
            .fetch_all(&mut *conn)
            .await
            .db()?;
            for row in &locked {
                if !row.try_get::<bool, _>(1).db()? {
                    busy.push(row.try_get(0).db()?);
                }
            }
        }
        let (read, counted): (Vec<&str>, Vec<bool>) = new
            .iter()
            .filter(|key| !busy.iter().any(|b| b == *key))
            .map(|key| (*key, limit_of(key).is_some_and(|l| l.concurrency.is_some())))
            .unzip();
        let found = if read.is_empty() {
            Vec::new()
        } else {
            // The count repeats `jobs_active_key`'s terms.
            sqlx::query(
                "SELECT k.key, CASE WHEN k.counted THEN (SELECT count(*) FROM jobs WHERE state = 'active' \
                 AND rate_limit_key IS NOT NULL AND rate_limit_key = k.key) ELSE 0 END, t.starts, t.held_until \
                 FROM unnest($1::text[], $2::bool[]) AS k(key, counted) LEFT JOIN throttles t ON t.scope = 'k:' || k.key",
            )
            .bind(&read)
            .bind(&counted)
            .fetch_all(&mut *conn)
            .await
            .db()?
        };
        for key in busy {
            self.keys.insert(key, Allowance::closed());
        }
        for row in &found {
            let key: String = row.try_get(0).db()?;
            let active: i64 = row.try_get(1).db()?;
            let throttle = Throttle::from_row(row, 2)?;
            let allowance = match limit_of(&key) {
                Some(limit) => {
                    Allowance::new(limit.concurrency, active.max(0) as u64, limit.rate_limit, throttle, self.now)
                }
                None if throttle.held(self.now) => Allowance::new(None, 0, None, throttle, self.now),
                None => Allowance::unlimited(),
            };
            self.keys.insert(key, allowance);
        }
        Ok(())
    }

    /// Takes one start of a job with rate-limit `key` if the key allows it
    /// (the key must have been met, see [`Gate::meet_keys`]; an unknown key
    /// is refused).
    pub(crate) fn take_key(&mut self, key: &str) -> bool {
        let Some(allowance) = self.keys.get_mut(key) else { return false };
        if !allowance.allows() {
            return false;
        }
        allowance.taken += 1;
        true
    }

    /// Gives back a start taken for a job that the claim dropped in the end
    /// (another claimer locked its row first, or a multi-queue claim kept
    /// only the first `max` in claim order).
    pub(crate) fn untake_key(&mut self, key: &str) {
        if let Some(allowance) = self.keys.get_mut(key) {
            allowance.taken = allowance.taken.saturating_sub(1);
        }
    }

    /// Records what the claim took from each queue (and, through
    /// [`Gate::take_key`], from keys), writes the rate-limit windows back
    /// (one upsert for the windows holding starts, one delete for those
    /// left empty), and records `queue:throttled` for each queue whose
    /// rate limit this claim used up.
    pub(crate) async fn close(
        self,
        conn: &mut PgConnection,
        fx: &mut Effects,
        taken_per_queue: &HashMap<&str, u32>,
    ) -> StoreResult<()> {
        let now = self.now;
        let mut writes: Vec<(String, StartWindow, Option<i64>)> = Vec::new();
        for (queue, mut allowance) in self.queues {
            allowance.taken = taken_per_queue.get(queue.as_str()).copied().unwrap_or(0);
            if let Some((limit, mut throttle)) = allowance.window.take()
                && (allowance.taken > 0 || allowance.pruned)
            {
                let had_room = throttle.starts.remaining(&limit) > 0;
                throttle.starts.record(now, allowance.taken);
                if had_room && let Some(until) = throttle.starts.frees_at(&limit) {
                    fx.event(PendingEvent::throttled(&queue, until, None, now));
                }
                let next_change = throttle.starts.next_change(&limit).map(|t| t.0);
                writes.push((queue_scope(&queue), throttle.starts, next_change));
            }
        }
        for (key, mut allowance) in self.keys {
            if let Some((limit, mut throttle)) = allowance.window.take()
                && (allowance.taken > 0 || allowance.pruned)
            {
                throttle.starts.record(now, allowance.taken);
                let next_change = throttle.starts.next_change(&limit).map(|t| t.0);
                writes.push((key_scope(&key), throttle.starts, next_change));
            }
        }
        write_windows(conn, writes, now).await
    }
}

/// Writes windows back: rows holding starts are upserted (in scope order),
/// rows left with none are deleted unless a hold keeps them. `held_until`
/// is never written here: a finish may have set a hold meanwhile.
async fn write_windows(
    conn: &mut PgConnection,
    mut writes: Vec<(String, StartWindow, Option<i64>)>,
    now: Timestamp,
) -> StoreResult<()> {
    writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let (empty, kept): (Vec<_>, Vec<_>) = writes.into_iter().partition(|(_, starts, _)| starts.0.is_empty());
    if !kept.is_empty() {
        let mut scopes = Vec::with_capacity(kept.len());
        let mut starts = Vec::with_capacity(kept.len());
        let mut changes = Vec::with_capacity(kept.len());
        for (scope, window, change) in kept {
            scopes.push(scope);
            starts.push(serde_json::to_string(&window).map_err(|e| StoreError::Backend(e.to_string()))?);
            changes.push(change);
        }
        sqlx::query(
            "INSERT INTO throttles (scope, starts, next_change_at) \
             SELECT s, w::jsonb, c FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(s, w, c) ORDER BY s \
             ON CONFLICT (scope) DO UPDATE SET starts = excluded.starts, next_change_at = excluded.next_change_at",
        )
        .bind(&scopes)
        .bind(&starts)
        .bind(&changes)
        .execute(&mut *conn)
        .await
        .db()?;
    }
    if !empty.is_empty() {
        // A row a hold keeps keeps its old starts too: all of them have left
        // the window, so every reader prunes them again.
        let scopes: Vec<String> = empty.into_iter().map(|(scope, _, _)| scope).collect();
        sqlx::query("DELETE FROM throttles WHERE scope = ANY($1) AND (held_until IS NULL OR held_until <= $2)")
            .bind(&scopes)
            .bind(now.0)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    Ok(())
}

/// Whether any queue or key rule had a concurrency cap when this store
/// last looked, so finishes need not ask while none exists (the common
/// case: one query per finish saved). A cap set through this store is seen
/// at once ([`CapsSeen::forget`]); one set through another server within
/// [`CapsSeen::FRESH`] may miss a wake-up, which is only a hint: fetchers
/// still look again at their fallback poll, and claims always enforce it.
#[derive(Debug, Default)]
pub(crate) struct CapsSeen(std::sync::Mutex<Option<std::time::Instant>>);

impl CapsSeen {
    /// How long "no cap anywhere" is trusted.
    pub(crate) const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

    /// True when no cap existed at a look less than [`Self::FRESH`] ago.
    fn none_lately(&self) -> bool {
        let seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.is_some_and(|at| at.elapsed() < Self::FRESH)
    }

    /// Records a look: `any` cap existed or not.
    fn saw(&self, any: bool) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (!any).then(std::time::Instant::now);
    }

    /// Forgets the last look: this store just changed a cap or rule.
    pub(crate) fn forget(&self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Before commit: when a job left `active` on a scope with a concurrency
/// cap (its queue's, or its key's rule), sets `fx.ready` so fetchers on
/// every server held back by it look again (SQLite wakes only when a claim
/// was held back; across servers there is no such flag, so every slot
/// freed under a cap wakes). No query when no job left `active`, the
/// transaction wakes fetchers anyway, or no cap existed anywhere when this
/// store last looked, less than [`CapsSeen::FRESH`] ago; else one, on the
/// small `queues` and `rate_limit_rules` tables.
pub(crate) async fn wake_if_capped(conn: &mut PgConnection, fx: &mut Effects, caps: &CapsSeen) -> StoreResult<()> {
    if fx.ready || fx.left_active.is_empty() || caps.none_lately() {
        return Ok(());
    }
    let mut queues: Vec<&str> = fx.left_active.iter().map(|(queue, _)| queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let mut keys: Vec<&str> = fx.left_active.iter().filter_map(|(_, key)| key.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    // The queues' caps, and the rules that may apply to the keys (exact or
    // prefix; `rule_for` picks among them).
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ANY($1) AND config->>'concurrency' IS NOT NULL), \
         (SELECT jsonb_agg(jsonb_build_array(r.key, r.config)) FROM rate_limit_rules r \
          WHERE cardinality($2::text[]) > 0 AND (r.key = ANY($2) OR right(r.key, 1) = '*')), \
         EXISTS (SELECT 1 FROM queues WHERE config->>'concurrency' IS NOT NULL) \
         OR EXISTS (SELECT 1 FROM rate_limit_rules WHERE config->>'concurrency' IS NOT NULL)",
    )
    .bind(&queues)
    .bind(&keys)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    caps.saw(row.try_get(2).db()?);
    let queue_capped: bool = row.try_get(0).db()?;
    let rules: Vec<(String, KeyLimit)> = rows::opt_json(&row, 1)?.unwrap_or_default();
    let key_capped = keys.iter().any(|key| rule_for(&rules, key).is_some_and(|(_, limit)| limit.concurrency.is_some()));
    fx.ready |= queue_capped || key_capped;
    Ok(())
}

/// Every key rule, in no particular order.
async fn rules(conn: &mut PgConnection) -> StoreResult<Vec<(String, KeyLimit)>> {
    let found = sqlx::query("SELECT key, config FROM rate_limit_rules").fetch_all(&mut *conn).await.db()?;
    found.iter().map(|row| Ok((row.try_get(0).db()?, rows::json(row, 1)?))).collect()
}

/// `Store::rate_limit_set`: creates or replaces the rule of a key or a key
/// prefix (`tenant:*`). Invalid for a bad pattern or limit (field `key`,
/// `concurrency` or `rate_limit`). Wakes fetchers: a looser limit may let
/// held-back jobs go now.
pub(crate) async fn rate_limit_set(store: &PgStore, key: &str, limit: KeyLimit) -> StoreResult<RateLimitRule> {
    validate_key_pattern(key).map_err(|m| StoreError::invalid("key", m))?;
    limit.validate().map_err(|(field, m)| StoreError::invalid(field, m))?;
    let mut w = store.begin().await?;
    let result = sqlx::query(
        "INSERT INTO rate_limit_rules (key, config) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET config = excluded.config",
    )
    .bind(key)
    .bind(Json(&limit))
    .execute(&mut *w.tx)
    .await
    .db()
    .map(|_| RateLimitRule { key: key.to_owned(), limit });
    w.fx.ready = true;
    let rule = store.commit(w, result).await?;
    store.shared.caps.forget();
    Ok(rule)
}

/// `Store::rate_limit_delete`: true when a rule was deleted (which wakes
/// fetchers, as SQLite).
pub(crate) async fn rate_limit_delete(store: &PgStore, key: &str) -> StoreResult<bool> {
    let mut w = store.begin().await?;
    let result = sqlx::query("DELETE FROM rate_limit_rules WHERE key = $1")
        .bind(key)
        .execute(&mut *w.tx)
        .await
        .db()
        .map(|done| done.rows_affected() > 0);
    w.fx.ready = matches!(result, Ok(true));
    store.commit(w, result).await
}

/// `Store::rate_limit_list`: every rule, by key in byte order.
pub(crate) async fn rate_limit_list(store: &PgStore) -> StoreResult<Vec<RateLimitRule>> {
    let mut conn = store.pool().acquire().await.db()?;
    let mut rules = rules(&mut conn).await?;
    rules.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(rules.into_iter().map(|(key, limit)| RateLimitRule { key, limit }).collect())
}

/// `Store::rate_limit_get`: a key's rule (its own or the longest matching
/// prefix), active jobs, starts in the window and until when it is held
/// back. Invalid for a bad key (field `key`).
pub(crate) async fn rate_limit_get(store: &PgStore, key: &str) -> StoreResult<RateLimitState> {
    validate_key_pattern(key).map_err(|m| StoreError::invalid("key", m))?;
    let now = store.now();
    let mut conn = store.pool().acquire().await.db()?;
    // One statement, so the count, the window and the rules agree.
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM jobs WHERE state = 'active' AND rate_limit_key IS NOT NULL \
                 AND rate_limit_key = $1), \
         t.starts, t.held_until, \
         (SELECT jsonb_agg(jsonb_build_array(r.key, r.config)) FROM rate_limit_rules r) \
         FROM (SELECT 1) AS one LEFT JOIN throttles t ON t.scope = 'k:' || $1",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    let active: i64 = row.try_get(0).db()?;
    let mut throttle = Throttle::from_row(&row, 1)?;
    let rules: Vec<(String, KeyLimit)> = rows::opt_json(&row, 3)?.unwrap_or_default();
    let rule = rule_for(&rules, key).map(|(pattern, limit)| RateLimitRule { key: pattern.clone(), limit: *limit });
    let rate = rule.as_ref().and_then(|r| r.limit.rate_limit);
    let throttled_until = throttle.throttled_until(rate.as_ref(), now);
    let started_in_window = rate.map_or(0, |limit| {
        throttle.starts.prune(&limit, now);
        throttle.starts.used()
    });
    Ok(RateLimitState { key: key.to_owned(), rule, active: active.max(0) as u64, started_in_window, throttled_until })
}

/// Until when `queue` starts nothing (see [`drover_store::QueueInfo`]),
/// from its throttle row.
pub(crate) fn queue_throttled_until(throttle: &Throttle, config: &QueueConfig, now: Timestamp) -> Option<Timestamp> {
    throttle.throttled_until(config.rate_limit.as_ref(), now)
}

/// The next future instant a window or hold may let a held-back job go,
/// as SQL over `throttles` (`$1`: now), for `job_next_due`.
pub(crate) const NEXT_CHANGE: &str = "SELECT min(at) FROM (SELECT held_until AS at FROM throttles WHERE held_until > $1 \
     UNION ALL SELECT next_change_at FROM throttles WHERE next_change_at > $1) AS c";

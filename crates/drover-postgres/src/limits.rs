//! Concurrency caps and rate limits of queues and `rate_limit_key`s
//! (ADR 0008), enforced across servers under transaction-scoped advisory
//! locks (ADR 0009); and the rules' store methods.

use crate::PgStore;
use crate::fx::Effects;
use drover_core::KeyLimit;
use drover_store::{RateLimitRule, RateLimitState, StoreResult};
use sqlx::PgConnection;

/// Before commit: when a job left `active` on a scope with a cap, sets
/// `fx.ready` so fetchers on every server held back by it look again.
pub(crate) async fn wake_if_capped(conn: &mut PgConnection, fx: &mut Effects) -> StoreResult<()> {
    // TODO(limits helper): check the scopes in fx.left_active.
    let _ = (conn, fx);
    Ok(())
}

/// `Store::rate_limit_set`.
pub(crate) async fn rate_limit_set(store: &PgStore, key: &str, limit: KeyLimit) -> StoreResult<RateLimitRule> {
    let _ = (key, limit);
    todo!("issue 5: rate_limit_set")
}

/// `Store::rate_limit_delete`.
pub(crate) async fn rate_limit_delete(store: &PgStore, key: &str) -> StoreResult<bool> {
    let _ = (key,);
    todo!("issue 5: rate_limit_delete")
}

/// `Store::rate_limit_list`.
pub(crate) async fn rate_limit_list(store: &PgStore) -> StoreResult<Vec<RateLimitRule>> {
    todo!("issue 5: rate_limit_list")
}

/// `Store::rate_limit_get`.
pub(crate) async fn rate_limit_get(store: &PgStore, key: &str) -> StoreResult<RateLimitState> {
    let _ = (key,);
    todo!("issue 5: rate_limit_get")
}

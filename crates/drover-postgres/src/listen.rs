//! The listener: one connection per store that `LISTEN`s on Drover's
//! channels and turns what other servers commit into this process's
//! wake-ups and events (ADR 0009).
//!
//! Notifications are hints. After the connection is (re)established every
//! signal is bumped, since something may have been missed while it was
//! down, and fetchers and schedulers keep their fallback polls.

use crate::Shared;
use crate::notify;
use sqlx::postgres::{PgListener, PgPool};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How long the listener waits before it reconnects after an error.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the listener task. It ends when `stop`'s sender is dropped (with
/// the store's shared state, so a store dropped without `close` does not
/// leave a connection behind) or the pool is closed.
pub(crate) fn spawn(pool: PgPool, shared: &Arc<Shared>, mut stop: watch::Receiver<()>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.changed() => {}
            () = run(pool, weak) => {}
        }
    });
}

async fn run(pool: PgPool, shared: Weak<Shared>) {
    loop {
        if pool.is_closed() || shared.strong_count() == 0 {
            return;
        }
        match listen(&pool, &shared).await {
            Ok(()) => return,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "postgres listener lost its connection; reconnecting");
                missed_something(&shared);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Listens until the store goes away (`Ok`) or the connection fails.
async fn listen(pool: &PgPool, shared: &Weak<Shared>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    let channels = match shared.upgrade() {
        Some(shared) => shared.channels.clone(),
        None => return Ok(()),
    };
    listener.listen_all([channels.ready.as_str(), channels.schedules.as_str(), channels.events.as_str()]).await?;
    missed_something(shared);
    loop {
        let Some(notification) = listener.try_recv().await? else {
            // The connection dropped and was re-established (sqlx listens
            // again by itself); whatever was sent meanwhile is gone.
            missed_something(shared);
            continue;
        };
        let Some(shared) = shared.upgrade() else { return Ok(()) };
        let channel = notification.channel();
        if channel == channels.ready {
            shared.ready.notify();
        } else if channel == channels.schedules {
            shared.schedules.notify();
        } else if channel == channels.events {
            match notify::decode(notification.payload(), shared.origin) {
                Some(events) if !events.is_empty() => shared.bus.publish(events),
                Some(_) => {}
                None => tracing::warn!(payload = notification.payload(), "unreadable drover events payload"),
            }
        }
    }
}

/// Wakes everyone who may have missed a notification.
fn missed_something(shared: &Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        shared.ready.notify();
        shared.schedules.notify();
    }
}

//! Queues: their counts, settings and pause flag.

use crate::PgStore;
use drover_core::QueueConfig;
use drover_store::{QueueInfo, StoreResult};

/// `Store::queue_list`.
pub(crate) async fn queue_list(store: &PgStore) -> StoreResult<Vec<QueueInfo>> {
    todo!("issue 5: queue_list")
}

/// `Store::queue_get`.
pub(crate) async fn queue_get(store: &PgStore, name: &str) -> StoreResult<QueueInfo> {
    let _ = (name,);
    todo!("issue 5: queue_get")
}

/// `Store::queue_config_set`.
pub(crate) async fn queue_config_set(store: &PgStore, name: &str, config: QueueConfig) -> StoreResult<QueueInfo> {
    let _ = (name, config);
    todo!("issue 5: queue_config_set")
}

/// `Store::queue_pause_set`.
pub(crate) async fn queue_pause_set(store: &PgStore, name: &str, paused: bool) -> StoreResult<QueueInfo> {
    let _ = (name, paused);
    todo!("issue 5: queue_pause_set")
}

//! The cases of the conformance suite, one public async fn each.

use super::{Factory, fresh, spec};
use crate::StoreError;
use drover_core::JobState;

/// An inserted job reads back with every field as given and state `waiting`.
pub async fn insert_then_get(make: Factory) {
    let t = fresh(make).await;
    let inserted = t.store.job_insert_many(vec![spec("a")]).await.unwrap();
    assert_eq!(inserted.len(), 1);
    assert!(!inserted[0].duplicate);
    let job = t.store.job_get(&inserted[0].job.id).await.unwrap().expect("job exists");
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.created_at, t.clock_now());
    let missing = drover_core::JobId::parse("nope").unwrap();
    assert_eq!(t.store.job_get(&missing).await.unwrap(), None);
    let _ = StoreError::Closed;
}

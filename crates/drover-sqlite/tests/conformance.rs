//! The store conformance suite, run against [`SqliteStore`] on a fresh file.

use drover_sqlite::{SqliteOptions, SqliteStore};
use drover_store::testsuite::TestStore;

async fn make_store(clock: drover_core::ManualClock) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::default().clock(clock.clone());
    let store = SqliteStore::open(dir.path().join("drover.db"), options).unwrap();
    TestStore::new(store, clock, dir)
}

drover_store::conformance_suite!(crate::make_store);

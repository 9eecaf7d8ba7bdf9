//! The store conformance suite, run against `PgStore` on a fresh schema
//! per case (`drover_postgres::testing`). Without
//! `DROVER_TEST_POSTGRES_URL` every case skips; with
//! `DROVER_REQUIRE_POSTGRES=1` (CI) that is a failure instead.

use drover_store::testsuite::TestStore;

async fn make_store(clock: drover_core::ManualClock) -> TestStore {
    let (store, db) = drover_postgres::testing::store_for_test(clock.clone()).await;
    TestStore::new(store, clock, db)
}

drover_store::conformance_suite!(crate::make_store, available = drover_postgres::testing::available);

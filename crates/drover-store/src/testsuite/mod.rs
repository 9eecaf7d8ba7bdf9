//! The store conformance suite: one behaviour per case, run against every
//! backend so that a behaviour only one backend has is caught as a bug.
//!
//! A backend's test file defines a factory and calls the macro once:
//!
//! ```ignore
//! async fn make_store(clock: drover_core::ManualClock) -> drover_store::testsuite::TestStore {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = MyStore::open(dir.path(), clock.clone()).await.unwrap();
//!     TestStore::new(store, clock, dir)
//! }
//! drover_store::conformance_suite!(crate::make_store);
//! ```
//!
//! The macro expands to a module named `conformance` with one
//! `#[tokio::test]` per case, so `cargo test conformance` runs exactly the
//! suite and `cargo test conformance::claim_order_priority` runs one case.
//! Cases move time with the [`ManualClock`] handed to the factory; none sleeps.

pub mod cases;

use crate::Store;
use drover_core::{JobSpec, ManualClock, Timestamp};
use futures::future::BoxFuture;
use std::any::Any;
use std::sync::Arc;

/// A store under test, the clock it reads, and whatever must live as long as
/// it (a temporary directory, a database schema guard).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its clock; cases advance it.
    pub clock: ManualClock,
    _guard: Box<dyn Any + Send + Sync>,
}

impl TestStore {
    /// Bundles a store with its clock and a guard dropped after the store.
    pub fn new(store: impl Store, clock: ManualClock, guard: impl Any + Send + Sync) -> Self {
        Self { store: Arc::new(store), clock, _guard: Box::new(guard) }
    }
}

/// A factory as the cases take it.
pub type Factory = fn(ManualClock) -> BoxFuture<'static, TestStore>;

/// The instant every case starts at: 2026-01-01T00:00:00Z.
pub const START: Timestamp = Timestamp(1_767_225_600_000);

/// The availability check of backends that can always be tested.
pub async fn always_available() -> bool {
    true
}

/// A fresh store on a clock standing at [`START`].
pub async fn fresh(make: Factory) -> TestStore {
    make(ManualClock::new(START)).await
}

/// A minimal spec on queue `q`.
pub fn spec(name: &str) -> JobSpec {
    JobSpec::new("q", name)
}

/// Expands to the module `conformance`, one `#[tokio::test]` per case, for
/// the factory at `$make` (a full path, e.g. `crate::make_store`, of an
/// `async fn(ManualClock) -> TestStore`).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!($make, available = $crate::testsuite::always_available);
    };
    // `$available` (an `async fn() -> bool`) says whether the backend can
    // be tested here; each case returns at once (passing) when it cannot,
    // e.g. PostgreSQL on a developer machine without a server.
    ($make:path, available = $available:path) => {
        mod conformance {
            $crate::conformance_cases!($make, $available;
                // insert.rs
                insert_then_get,
                insert_delayed_when_run_at_in_future,
                insert_many_is_all_or_nothing,
                insert_idempotent_by_id,
                insert_duplicate_emits_nothing,
                // list.rs
                list_filters,
                list_pages_newest_first,
                list_refuses_garbage_cursor,
                // claim.rs
                claim_sets_lease_and_attempt,
                claim_order_priority,
                claim_order_run_at,
                claim_order_fifo,
                claim_respects_max_and_queues,
                delayed_not_claimed_early,
                promote_due_moves_due_jobs,
                next_due_reports_earliest,
                paused_queue_hands_nothing_out,
                no_double_claim_parallel,
                // lease.rs
                lease_fencing_refuses_stale_token,
                heartbeat_extends_lease,
                heartbeat_many_per_item,
                progress_and_logs,
                custom_event_emit,
                lease_calls_on_missing_job_not_found,
                // finish.rs
                complete_records_result_and_attempt,
                finish_twice_refused,
                finish_many_per_item,
                retry_with_backoff_then_dead_letter,
                retry_after_overrides_backoff,
                non_retryable_failure,
                rate_limited_failure_keeps_attempt,
                release_hands_job_back,
                release_of_cancel_requested_job_cancels,
                // stall.rs
                stalled_lease_rescue,
                stalled_beyond_max_stalls_fails,
                // cancel.rs
                cancel_waiting_and_delayed,
                cancel_active,
                cancel_active_then_fail_ends_cancelled,
                cancel_active_then_lease_expires,
                cancel_finished_refused,
                // retry.rs
                manual_retry_keeps_attempt_history,
                manual_retry_gives_fresh_budget,
                manual_retry_clears_stalls,
                manual_retry_of_cancelled_job,
                retry_refused_unless_failed_or_cancelled,
                // queue.rs
                queue_config_and_counts,
                queue_config_refuses_bad_name,
                queue_counts_per_state,
                queue_list_sorted_with_counts,
                // expire.rs
                expired_job_not_claimed,
                expires_at_spares_started_jobs,
                expire_due_fails_waiting_and_delayed,
                manual_retry_of_expired_job_runs_it,
                // retention.rs
                retention_count_rule,
                retention_age_rule,
                retention_defaults_by_age,
                retention_removes_attempts_and_logs,
                retention_keeps_unfinished_jobs,
                retention_per_queue_config,
                retention_cancelled_follows_failed_rule,
                retention_sweep_respects_limit,
                // unique.rs
                unique_key_while_unfinished,
                unique_key_is_per_queue,
                unique_for_window,
                unique_key_within_bulk,
                unique_for_ms_needs_key,
                // limits.rs
                queue_concurrency_cap_parallel,
                key_concurrency_cap_parallel,
                queue_rate_limit_window,
                queue_rate_limit_throttles,
                key_rate_limit_by_prefix,
                rate_limited_failure_holds_key,
                rate_limited_failure_holds_queue,
                cap_release_wakes_fetchers,
                rate_limit_rules_crud,
                hold_end_survives_window_change,
                // schedule.rs
                schedule_interval_fires_each_tick,
                schedule_raced_by_two_schedulers_enqueues_each_tick_once,
                schedule_missed_ticks_collapse_to_one,
                schedule_cron_with_seconds,
                schedule_cron_in_time_zone,
                schedule_delete_stops_firing,
                schedule_upsert_replaces,
                schedule_validation_errors,
                schedule_list_pages_and_next_due,
                schedule_pause_and_resume,
                schedule_unique_key_skips_while_unfinished,
                schedule_refused_job_does_not_stop_others,
                // flow.rs
                flow_three_levels_finish_in_order,
                flow_child_failure_fails_parent,
                flow_child_failure_ignored,
                flow_cancel_waiting_children_parent,
                flow_child_added_to_waiting_parent,
                flow_children_results,
                flow_running_parent_waits_for_its_children,
                flow_running_parent_fails_after_child_failed,
                flow_running_parent_runs_again_when_children_finished_first,
                flow_every_ending_path_reaches_parent_and_batch,
                flow_failure_climbs_the_tree,
                flow_retrying_parent_waits_for_its_children,
                flow_parent_of_duplicate_children_is_released,
                flow_retried_child_counts_for_running_parent,
                flow_retried_parent_waits_for_running_children,
                flow_running_parent_fails_on_any_ending_after_child_failed,
                flow_cancelled_fanned_out_parent_retried_completes,
                // batch.rs
                batch_of_1000_counts_every_step,
                batch_on_complete_once,
                batch_counts_survive_retention,
                batch_edge_cases,
                batch_of_duplicates_completes_at_once,
                batch_on_complete_refuses_parent_and_batch,
                batch_on_complete_duplicate_records_existing_job,
                // signal.rs
                ready_signal_wakes_on_insert,
                ready_signal_wakes_on_requeue,
                events_follow_lifecycle,
                events_follow_failure_path,
            );
        }
    };
}

/// Expands each named case of [`cases`] into a `#[tokio::test]`.
#[macro_export]
#[doc(hidden)]
macro_rules! conformance_cases {
    ($make:path, $available:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if !$available().await {
                    return;
                }
                $crate::testsuite::cases::$case(|clock| ::std::boxed::Box::pin($make(clock))).await;
            }
        )*
    };
}

impl TestStore {
    /// The clock's current time.
    pub fn clock_now(&self) -> Timestamp {
        use drover_core::Clock;
        self.clock.now()
    }
}

//! Cases about schedules: each tick enqueues exactly one job, with the id
//! `sched:{schedule}:{tick}`, however many schedulers fire it; missed ticks
//! collapse into one run; replacing and deleting take effect at once.

use super::support::*;
use crate::testsuite::{Factory, START, TestStore, fresh, spec};
use crate::{ScheduleFired, ScheduleListParams};
use drover_core::{EventKind, JobSpec, JobState, ScheduleSpec, Timestamp};
use serde_json::json;
use std::collections::BTreeSet;

/// An interval schedule `id` enqueuing `tick` jobs on queue `q`.
fn every(id: &str, ms: u64) -> ScheduleSpec {
    ScheduleSpec::every_ms(id, ms, spec("tick").payload(json!({"from": id})))
}

/// Fires what is due and returns the ticks that inserted a job.
async fn fire(t: &TestStore) -> Vec<ScheduleFired> {
    t.store.schedule_fire_due().await.unwrap()
}

/// The ids of every job on queue `q`, sorted.
async fn job_ids(t: &TestStore) -> Vec<String> {
    let page = t
        .store
        .job_list(crate::JobListParams { queue: Some("q".into()), limit: 1_000, ..Default::default() })
        .await
        .unwrap();
    let mut ids: Vec<String> = page.items.into_iter().map(|j| j.id.as_str().to_owned()).collect();
    ids.sort();
    ids
}

/// An interval schedule's first tick is one interval after its creation;
/// each tick enqueues one `waiting` job from the template, named after the
/// tick, with the usual `job:waiting` event; nothing fires before a tick.
pub async fn schedule_interval_fires_each_tick(make: Factory) {
    let t = fresh(make).await;
    let upserted = t.store.schedule_upsert(every("digest", 1_000)).await.unwrap();
    assert!(upserted.created);
    assert_eq!(upserted.schedule.next_run_at, START.plus_ms(1_000));
    assert!(fire(&t).await.is_empty(), "nothing is due at creation");
    let mut events = t.store.events();
    advance_ms(&t, 1_000);
    let fired = fire(&t).await;
    assert_eq!(fired.len(), 1);
    let tick = START.plus_ms(1_000);
    let id = jid(&format!("sched:digest:{}", tick.as_millis()));
    assert_eq!((fired[0].tick, &fired[0].job_id, fired[0].duplicate), (tick, &id, false));
    assert_eq!(fired[0].next_run_at, START.plus_ms(2_000));
    let job = get(&t, &id).await;
    assert_eq!((job.queue.as_str(), job.name.as_str(), job.state), ("q", "tick", JobState::Waiting));
    assert_eq!(job.payload, json!({"from": "digest"}));
    assert_eq!(wait_event(&mut events, EventKind::Waiting, Some(&id)).await.job_id, Some(id.clone()));
    assert!(fire(&t).await.is_empty(), "the tick fired once");
    let schedule = t.store.schedule_get("digest").await.unwrap().unwrap();
    assert_eq!((schedule.last_run_at, schedule.last_job_id), (Some(tick), Some(id)));
    assert_eq!(schedule.next_run_at, START.plus_ms(2_000));
    advance_ms(&t, 1_000);
    assert_eq!(fire(&t).await.len(), 1);
    assert_eq!(counts(&t, "q").await.waiting, 2);
}

/// A schedule raced by two schedulers enqueues each tick once: two
/// `schedule_fire_due` calls at the same time, tick after tick; then a
/// scheduler whose view is stale (its clock lagged, so it re-created the
/// schedule with a tick that already fired) finds the tick's job by its id
/// and inserts nothing.
pub async fn schedule_raced_by_two_schedulers_enqueues_each_tick_once(make: Factory) {
    let t = fresh(make).await;
    t.store.schedule_upsert(every("race", 1_000)).await.unwrap();
    let mut expected = BTreeSet::new();
    for i in 1..=5 {
        advance_ms(&t, 1_000);
        let (a, b) = (t.store.clone(), t.store.clone());
        let (a, b) = tokio::join!(
            tokio::spawn(async move { a.schedule_fire_due().await }),
            tokio::spawn(async move { b.schedule_fire_due().await })
        );
        let fired: Vec<ScheduleFired> = a.unwrap().unwrap().into_iter().chain(b.unwrap().unwrap()).collect();
        let inserted: Vec<_> = fired.iter().filter(|f| !f.duplicate).collect();
        assert_eq!(inserted.len(), 1, "tick {i}: exactly one scheduler inserted, got {fired:?}");
        expected.insert(format!("sched:race:{}", START.plus_ms(1_000 * i).as_millis()));
    }
    assert_eq!(job_ids(&t).await, expected.iter().cloned().collect::<Vec<_>>());

    // A lagging scheduler: back at the time before the last tick, it
    // re-creates the schedule, which puts the fired tick due again.
    let last_tick = START.plus_ms(5_000);
    t.clock.set(Timestamp(last_tick.0 - 1_000));
    assert!(t.store.schedule_delete("race").await.unwrap());
    let again = t.store.schedule_upsert(every("race", 1_000)).await.unwrap();
    assert_eq!(again.schedule.next_run_at, last_tick);
    t.clock.set(last_tick);
    let fired = fire(&t).await;
    assert_eq!(fired.len(), 1);
    assert!(fired[0].duplicate, "the tick's job exists: nothing inserted");
    assert_eq!(fired[0].job_id.as_str(), format!("sched:race:{}", last_tick.as_millis()));
    assert_eq!(job_ids(&t).await.len(), 5, "still one job per tick");
}

/// Ticks missed while no scheduler ran collapse into one run, for the
/// first missed tick; the next tick is the first after now, on the grid.
pub async fn schedule_missed_ticks_collapse_to_one(make: Factory) {
    let t = fresh(make).await;
    t.store.schedule_upsert(every("hourly", 1_000)).await.unwrap();
    advance_ms(&t, 10_500);
    let fired = fire(&t).await;
    assert_eq!(fired.len(), 1, "ten missed ticks, one run");
    assert_eq!(fired[0].tick, START.plus_ms(1_000));
    assert_eq!(fired[0].next_run_at, START.plus_ms(11_000));
    assert!(fire(&t).await.is_empty());
    assert_eq!(counts(&t, "q").await.waiting, 1);
    assert_eq!(t.store.schedule_next_due().await.unwrap(), Some(START.plus_ms(11_000)));
}

/// A 6-field cron expression ticks on seconds.
pub async fn schedule_cron_with_seconds(make: Factory) {
    let t = fresh(make).await;
    let s = ScheduleSpec::cron("ten-seconds", "*/10 * * * * *", spec("tick"));
    let upserted = t.store.schedule_upsert(s).await.unwrap();
    assert_eq!(upserted.schedule.next_run_at, START.plus_ms(10_000));
    assert_eq!(upserted.schedule.spec.timezone.as_deref(), Some("UTC"), "the zone that applies is stored");
    advance_ms(&t, 9_999);
    assert!(fire(&t).await.is_empty());
    advance_ms(&t, 1);
    let fired = fire(&t).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].job_id.as_str(), format!("sched:ten-seconds:{}", START.plus_ms(10_000).as_millis()));
    assert_eq!(fired[0].next_run_at, START.plus_ms(20_000));
}

/// A cron expression is read in its time zone: 02:00 in New York is 07:00
/// UTC in January.
pub async fn schedule_cron_in_time_zone(make: Factory) {
    let t = fresh(make).await;
    let s = ScheduleSpec::cron("nightly", "0 2 * * *", spec("cleanup")).timezone("America/New_York");
    let upserted = t.store.schedule_upsert(s).await.unwrap();
    // START is 2026-01-01T00:00Z, 19:00 on 31 December in New York.
    assert_eq!(upserted.schedule.next_run_at, START.plus_ms(7 * 3_600_000));
    advance_ms(&t, 7 * 3_600_000);
    assert_eq!(fire(&t).await.len(), 1);
    let next = t.store.schedule_get("nightly").await.unwrap().unwrap().next_run_at;
    assert_eq!(next, START.plus_ms(31 * 3_600_000), "the next 02:00 in New York");
}

/// A deleted schedule fires no more; its jobs stay; deleting again says it
/// did not exist.
pub async fn schedule_delete_stops_firing(make: Factory) {
    let t = fresh(make).await;
    t.store.schedule_upsert(every("gone", 1_000)).await.unwrap();
    advance_ms(&t, 1_000);
    assert_eq!(fire(&t).await.len(), 1);
    assert!(t.store.schedule_delete("gone").await.unwrap());
    assert!(!t.store.schedule_delete("gone").await.unwrap());
    assert!(t.store.schedule_get("gone").await.unwrap().is_none());
    advance_ms(&t, 5_000);
    assert!(fire(&t).await.is_empty());
    assert_eq!(t.store.schedule_next_due().await.unwrap(), None);
    assert_eq!(counts(&t, "q").await.waiting, 1, "the job it enqueued stays");
}

/// Upserting an existing id replaces its cadence and template and keeps its
/// creation time and history; the next tick is kept when the cadence is
/// the same, computed afresh from now when it changed. The schedule signal
/// changes on every create, replace and delete.
pub async fn schedule_upsert_replaces(make: Factory) {
    let t = fresh(make).await;
    let mut signal = t.store.schedule_signal();
    signal.mark_unchanged();
    t.store.schedule_upsert(every("s", 1_000)).await.unwrap();
    assert!(signal.has_changed().unwrap(), "create wakes schedulers");
    signal.mark_unchanged();
    advance_ms(&t, 1_000);
    assert_eq!(fire(&t).await.len(), 1);
    advance_ms(&t, 500);
    let same = t.store.schedule_upsert(ScheduleSpec::every_ms("s", 1_000, spec("templated"))).await.unwrap();
    assert_eq!(same.schedule.next_run_at, START.plus_ms(2_000), "same cadence: the next tick is kept");
    assert_eq!(same.schedule.spec.job.name, "templated", "the new template is stored");
    let replaced =
        t.store.schedule_upsert(ScheduleSpec::every_ms("s", 60_000, JobSpec::new("other", "renamed"))).await.unwrap();
    assert!(signal.has_changed().unwrap(), "replace wakes schedulers");
    assert!(!replaced.created);
    let s = replaced.schedule;
    assert_eq!((s.spec.every_ms, s.spec.job.queue.as_str()), (Some(60_000), "other"));
    assert_eq!(s.next_run_at, START.plus_ms(61_500));
    assert_eq!((s.created_at, s.updated_at), (START, START.plus_ms(1_500)));
    assert_eq!(s.last_run_at, Some(START.plus_ms(1_000)), "history kept");
    let page = t.store.schedule_list(ScheduleListParams::default()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    signal.mark_unchanged();
    t.store.schedule_delete("s").await.unwrap();
    assert!(signal.has_changed().unwrap(), "delete wakes schedulers");
}

/// Bad input is refused with the field named, and nothing is stored.
pub async fn schedule_validation_errors(make: Factory) {
    let t = fresh(make).await;
    let cases = [
        (every("bad/id", 1_000), "id"),
        (every("s", 0), "every_ms"),
        (ScheduleSpec::cron("s", "61 * * * *", spec("n")), "cron"),
        (ScheduleSpec::cron("s", "* * *", spec("n")), "cron"),
        (ScheduleSpec::cron("s", "* * * * *", spec("n")).timezone("Nowhere/Special"), "timezone"),
        (every("s", 1_000).timezone("UTC"), "timezone"),
        (ScheduleSpec::every_ms("s", 1_000, JobSpec::new("q", "")), "job.name"),
        (ScheduleSpec::every_ms("s", 1_000, spec("n").id(jid("fixed"))), "job.id"),
    ];
    for (s, field) in cases {
        assert_invalid(t.store.schedule_upsert(s).await, Some(field));
    }
    let mut both = every("s", 1_000);
    both.cron = Some("* * * * *".into());
    assert_invalid(t.store.schedule_upsert(both).await, Some("cron"));
    assert!(t.store.schedule_list(ScheduleListParams::default()).await.unwrap().items.is_empty());
    assert_eq!(t.store.schedule_next_due().await.unwrap(), None);
}

/// Lists are sorted by id and paged by cursor; the next due time is the
/// earliest tick of all.
pub async fn schedule_list_pages_and_next_due(make: Factory) {
    let t = fresh(make).await;
    for (id, ms) in [("c", 3_000), ("a", 5_000), ("b", 2_000)] {
        t.store.schedule_upsert(every(id, ms)).await.unwrap();
    }
    assert_eq!(t.store.schedule_next_due().await.unwrap(), Some(START.plus_ms(2_000)));
    let first = t.store.schedule_list(ScheduleListParams { limit: 2, cursor: None }).await.unwrap();
    let ids: Vec<_> = first.items.iter().map(|s| s.spec.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let cursor = first.next_cursor.expect("a second page");
    let second = t.store.schedule_list(ScheduleListParams { limit: 2, cursor: Some(cursor) }).await.unwrap();
    let ids: Vec<_> = second.items.iter().map(|s| s.spec.id.as_str()).collect();
    assert_eq!((ids, second.next_cursor), (vec!["c"], None));
    assert_invalid(
        t.store.schedule_list(ScheduleListParams { limit: 2, cursor: Some("not a/cursor".into()) }).await,
        Some("cursor"),
    );
}

/// A paused schedule fires nothing and is not due; resuming starts from
/// the first tick after now (ticks passed while paused never run);
/// replacing keeps the flag; an unknown id is not found.
pub async fn schedule_pause_and_resume(make: Factory) {
    let t = fresh(make).await;
    t.store.schedule_upsert(every("p", 1_000)).await.unwrap();
    let mut signal = t.store.schedule_signal();
    signal.mark_unchanged();
    let paused = t.store.schedule_pause_set("p", true).await.unwrap();
    assert!(signal.has_changed().unwrap(), "pausing wakes schedulers");
    assert!(paused.paused);
    assert_eq!(paused.next_run_at, START.plus_ms(1_000), "the next tick is kept, for display");
    assert_eq!(t.store.schedule_next_due().await.unwrap(), None, "a paused schedule is never due");
    advance_ms(&t, 5_500);
    assert!(fire(&t).await.is_empty());
    let replaced = t.store.schedule_upsert(every("p", 1_000)).await.unwrap();
    assert!(replaced.schedule.paused, "replacing keeps the flag");
    let resumed = t.store.schedule_pause_set("p", false).await.unwrap();
    assert!(!resumed.paused);
    assert!(resumed.next_run_at > START.plus_ms(5_500), "no tick of the pause runs");
    assert!(fire(&t).await.is_empty());
    t.clock.set(resumed.next_run_at);
    assert_eq!(fire(&t).await.len(), 1);
    assert_eq!(counts(&t, "q").await.total(), 1, "only the tick after resuming ran");
    assert_not_found(t.store.schedule_pause_set("nope", true).await);
}

/// A template with a `unique_key` enqueues nothing while the previous
/// tick's job is unfinished (no pile-up behind a slow job): the tick
/// reports that job as a duplicate, and the schedule moves on.
pub async fn schedule_unique_key_skips_while_unfinished(make: Factory) {
    let t = fresh(make).await;
    let s = ScheduleSpec::every_ms("sync", 1_000, spec("sync").unique_key("only-one"));
    t.store.schedule_upsert(s).await.unwrap();
    advance_ms(&t, 1_000);
    let first = fire(&t).await.pop().unwrap();
    assert!(!first.duplicate);
    advance_ms(&t, 1_000);
    let second = fire(&t).await.pop().unwrap();
    assert!(second.duplicate, "the first job still waits");
    assert_eq!(second.job_id, first.job_id);
    assert_eq!(second.next_run_at, START.plus_ms(3_000));
    let schedule = t.store.schedule_get("sync").await.unwrap().unwrap();
    assert_eq!((schedule.last_run_at, schedule.last_job_id), (Some(START.plus_ms(2_000)), Some(first.job_id)));
    assert_eq!(counts(&t, "q").await.total(), 1);
}

/// A schedule whose job is refused (its template joins a batch that has
/// completed) is pushed back and fires nothing, while the other schedules
/// due at the same time fire as usual: one bad schedule never stops the
/// others.
pub async fn schedule_refused_job_does_not_stop_others(make: Factory) {
    let t = fresh(make).await;
    let done = t.store.batch_insert(drover_core::BatchSpec { jobs: Vec::new(), on_complete: None }).await.unwrap();
    let bad = ScheduleSpec::every_ms("bad", 1_000, spec("tick").batch_id(done.id.clone()));
    t.store.schedule_upsert(bad).await.unwrap();
    t.store.schedule_upsert(every("good", 1_000)).await.unwrap();
    advance_ms(&t, 1_000);
    let fired = fire(&t).await;
    assert_eq!(fired.iter().map(|f| f.schedule_id.as_str()).collect::<Vec<_>>(), ["good"]);
    assert_eq!(job_ids(&t).await, [format!("sched:good:{}", START.0 + 1_000)]);
    let bad = t.store.schedule_get("bad").await.unwrap().unwrap();
    assert!(bad.next_run_at > t.clock_now().plus_ms(60_000), "pushed back: {:?}", bad.next_run_at);
    assert_eq!(counts(&t, "q").await.total(), 1, "the refused job left nothing behind");
}

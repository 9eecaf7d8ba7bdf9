//! Cases about leases: fencing of stale tokens, heartbeats, and the
//! lease-holding calls (progress, logs, custom events).

use super::support::*;
use crate::testsuite::{Factory, TestStore, fresh, spec};
use crate::{ClaimedJob, FinishOutcome, JobEventEmit, JobHeartbeat, JobLogAppend, StoreResult};
use drover_core::{EventKind, JobId, JobState, LeaseToken, LogLevel, Progress};
use serde_json::{Value, json};

fn beat(id: &JobId, lease_token: LeaseToken, lease_ms: u64, progress: Option<Progress>) -> JobHeartbeat {
    JobHeartbeat { id: id.clone(), lease_token, lease_ms, progress }
}

async fn heartbeat(t: &TestStore, b: JobHeartbeat) -> StoreResult<crate::HeartbeatReply> {
    let mut replies = t.store.job_heartbeat_many(vec![b]).await.unwrap();
    assert_eq!(replies.len(), 1, "one reply per beat");
    replies.pop().unwrap()
}

fn log_line(id: &JobId, lease_token: LeaseToken, level: LogLevel, message: &str) -> JobLogAppend {
    JobLogAppend { id: id.clone(), lease_token, level, message: message.into(), metadata: json!({"line": message}) }
}

fn emit(id: &JobId, lease_token: LeaseToken, kind: &str) -> JobEventEmit {
    JobEventEmit { id: id.clone(), lease_token, kind: kind.into(), data: json!({"lead": 1}) }
}

/// Every lease-holding call with `token`, in the order a worker would make
/// them; returns each call's outcome as `Ok(())` or the error.
async fn every_lease_call(t: &TestStore, id: &JobId, token: LeaseToken) -> Vec<(&'static str, StoreResult<()>)> {
    vec![
        ("heartbeat", heartbeat(t, beat(id, token, 60_000, None)).await.map(drop)),
        ("progress", t.store.job_progress(id, token, Progress::Percent(10.0)).await),
        ("log", t.store.job_log_append(log_line(id, token, LogLevel::Info, "hi")).await),
        ("emit", t.store.job_event_emit(emit(id, token, "lead:add")).await),
    ]
}

/// After the lease expired and the job was rescued and claimed again, the
/// old token is refused with `LeaseLost` by heartbeat, progress, log, emit
/// and finish (as is a made-up token) and changes nothing; the new token
/// works.
pub async fn lease_fencing_refuses_stale_token(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("fenced")).await;
    let old = claim_as(&t, &["q"], 1, "slow-worker", 1_000).await.pop().unwrap();
    advance_ms(&t, 1_001);
    assert_eq!(t.store.job_rescue_expired().await.unwrap().requeued, std::slice::from_ref(&job.id));
    let new = claim_as(&t, &["q"], 1, "fast-worker", 60_000).await.pop().unwrap();
    assert_eq!(new.job.id, job.id);
    assert_ne!(new.lease_token, old.lease_token, "a re-claim mints a new token");

    let made_up = LeaseToken(987_654_321);
    assert!(made_up != old.lease_token && made_up != new.lease_token);
    for token in [old.lease_token, made_up] {
        for (what, res) in every_lease_call(&t, &job.id, token).await {
            assert_lease_lost(res, what);
        }
        let res = finish(&t, &job.id, token, FinishOutcome::Complete(json!("stale"))).await;
        assert_lease_lost(res, "finish");
    }
    let after = get(&t, &job.id).await;
    assert_eq!(after.state, JobState::Active, "stale calls change nothing");
    assert_eq!(after.worker_id.as_deref(), Some("fast-worker"));
    assert_eq!(after.progress, Progress::default());
    assert_eq!(after.result, None);
    assert!(t.store.job_log_list(&job.id, 0, 100).await.unwrap().is_empty());

    for (what, res) in every_lease_call(&t, &job.id, new.lease_token).await {
        res.unwrap_or_else(|e| panic!("{what} with the current token: {e}"));
    }
    assert_eq!(finish_ok(&t, &new, json!("fresh")).await.state, JobState::Completed);
    // Once finished, even the last token is stale.
    assert_lease_lost(heartbeat(&t, beat(&job.id, new.lease_token, 1_000, None)).await, "heartbeat after finish");
    assert_eq!(get(&t, &job.id).await.result, Some(json!("fresh")));
}

/// A heartbeat moves the lease to now + `lease_ms`: the job is not rescued
/// after its original expiry, only after the extended one.
pub async fn heartbeat_extends_lease(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("long")).await;
    let start = t.clock_now();
    let c = claim_as(&t, &["q"], 1, WORKER, 1_000).await.pop().unwrap();
    advance_ms(&t, 800);
    let reply = heartbeat(&t, beat(&job.id, c.lease_token, 1_000, None)).await.unwrap();
    assert_eq!(reply.lease_expires_at, start.plus_ms(1_800));
    assert!(!reply.cancel_requested);
    assert_eq!(get(&t, &job.id).await.lease_expires_at, Some(start.plus_ms(1_800)));

    advance_ms(&t, 500); // past the original expiry, before the new one
    assert_eq!(t.store.job_rescue_expired().await.unwrap().total(), 0);
    assert_eq!(get(&t, &job.id).await.state, JobState::Active);

    advance_ms(&t, 501); // past the extended expiry
    assert_eq!(t.store.job_rescue_expired().await.unwrap().requeued, std::slice::from_ref(&job.id));
}

/// One heartbeat call answers each beat on its own: a stale beat is refused
/// while the others extend their leases and record their progress, with
/// `job:progress` for accepted beats that carry progress only.
pub async fn heartbeat_many_per_item(make: Factory) {
    let t = fresh(make).await;
    insert_all(&t, vec![spec("a"), spec("b")]).await;
    let [a, b]: [ClaimedJob; 2] = claim(&t, &["q"], 2).await.try_into().unwrap();
    advance_ms(&t, 100);
    let now = t.clock_now();
    let mut events = t.store.events();
    let progress = Progress::Detailed { total: Some(1_000), processed: 250, failed: 3, message: Some("rows".into()) };
    let replies = t
        .store
        .job_heartbeat_many(vec![
            beat(&a.job.id, a.lease_token, 5_000, Some(progress.clone())),
            beat(&b.job.id, LeaseToken(b.lease_token.0 ^ 0x7777), 5_000, Some(Progress::Percent(99.0))),
            beat(&b.job.id, b.lease_token, 7_000, None),
        ])
        .await
        .unwrap();
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0].as_ref().unwrap().lease_expires_at, now.plus_ms(5_000));
    assert_lease_lost(replies[1].clone(), "stale beat");
    assert_eq!(replies[2].as_ref().unwrap().lease_expires_at, now.plus_ms(7_000));
    assert_eq!(get(&t, &a.job.id).await.progress, progress);
    assert_eq!(get(&t, &b.job.id).await.progress, Progress::default(), "the stale beat's progress is dropped");
    // Only the accepted beat that carries progress publishes `job:progress`.
    let event = wait_event(&mut events, EventKind::Progress, Some(&a.job.id)).await;
    assert_eq!(event.at, now);
    t.store.job_event_emit(emit(&b.job.id, b.lease_token, "test:marker")).await.unwrap();
    let next = next_event(&mut events).await;
    assert_eq!(next.kind, EventKind::Custom("test:marker".into()), "no other event before the marker: {next:?}");
}

/// Progress and log lines of an active job are stored: progress replaces
/// the last value, logs list oldest first with `after`/`limit` paging and
/// stay readable after the job finished; a finished job takes no more.
pub async fn progress_and_logs(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("import")).await;
    let c = claim_one(&t, "q").await;
    let token = c.lease_token;

    t.store.job_progress(&job.id, token, Progress::Percent(40.0)).await.unwrap();
    assert_eq!(get(&t, &job.id).await.progress, Progress::Percent(40.0));
    let detailed = Progress::Detailed { total: Some(1_000), processed: 250, failed: 0, message: None };
    t.store.job_progress(&job.id, token, detailed.clone()).await.unwrap();
    assert_eq!(get(&t, &job.id).await.progress, detailed);

    let first_at = t.clock_now();
    t.store.job_log_append(log_line(&job.id, token, LogLevel::Info, "one")).await.unwrap();
    advance_ms(&t, 5);
    t.store.job_log_append(log_line(&job.id, token, LogLevel::Warn, "two")).await.unwrap();
    advance_ms(&t, 5);
    t.store.job_log_append(log_line(&job.id, token, LogLevel::Error, "three")).await.unwrap();

    let all = t.store.job_log_list(&job.id, 0, 100).await.unwrap();
    let lines: Vec<(LogLevel, &str)> = all.iter().map(|l| (l.level, l.message.as_str())).collect();
    assert_eq!(lines, [(LogLevel::Info, "one"), (LogLevel::Warn, "two"), (LogLevel::Error, "three")]);
    assert_eq!(all[0].at, first_at);
    assert_eq!(all[2].at, first_at.plus_ms(10));
    assert_eq!(all[1].metadata, json!({"line": "two"}));
    let middle = t.store.job_log_list(&job.id, 1, 1).await.unwrap();
    assert_eq!(middle.len(), 1);
    assert_eq!(middle[0].message, "two");
    assert!(t.store.job_log_list(&job.id, 3, 10).await.unwrap().is_empty());

    finish_ok(&t, &c, Value::Null).await;
    assert_eq!(get(&t, &job.id).await.progress, detailed, "progress survives completion");
    assert_eq!(t.store.job_log_list(&job.id, 0, 100).await.unwrap().len(), 3, "logs outlive the lease");
    assert_lease_lost(
        t.store.job_log_append(log_line(&job.id, token, LogLevel::Info, "late")).await,
        "log after finish",
    );
    assert_lease_lost(t.store.job_progress(&job.id, token, Progress::Percent(100.0)).await, "progress after finish");
}

/// A handler-defined event is published with its type, job, queue and data;
/// reserved (`job:`, `queue:`, `batch:`) and malformed types are refused
/// with `Invalid` and publish nothing.
pub async fn custom_event_emit(make: Factory) {
    let t = fresh(make).await;
    let job = insert_one(&t, spec("leads").batch_id("b-1")).await;
    let c = claim_one(&t, "q").await;
    let mut events = t.store.events();
    for bad in ["job:completed", "queue:paused", "batch:done", "nocolon", "a b:c", ":x"] {
        assert_invalid(t.store.job_event_emit(emit(&job.id, c.lease_token, bad)).await, None);
    }
    let at = t.clock_now();
    t.store.job_event_emit(emit(&job.id, c.lease_token, "lead:add")).await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.kind, EventKind::Custom("lead:add".into()), "the refused types published nothing");
    assert_eq!(event.job_id.as_ref(), Some(&job.id));
    assert_eq!(event.queue.as_deref(), Some("q"));
    assert_eq!(event.batch_id.as_deref(), Some("b-1"));
    assert_eq!(event.at, at);
    assert_eq!(event.data, json!({"lead": 1}));
}

/// Progress, log and emit calls about a job that does not exist are
/// refused with `NotFound`, and so is reading its log.
pub async fn lease_calls_on_missing_job_not_found(make: Factory) {
    let t = fresh(make).await;
    let ghost = jid("ghost");
    let token = LeaseToken(42);
    assert_not_found(t.store.job_progress(&ghost, token, Progress::Percent(1.0)).await);
    assert_not_found(t.store.job_log_append(log_line(&ghost, token, LogLevel::Info, "x")).await);
    assert_not_found(t.store.job_event_emit(emit(&ghost, token, "lead:add")).await);
    assert_not_found(t.store.job_log_list(&ghost, 0, 10).await);
}

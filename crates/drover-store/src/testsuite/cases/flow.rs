//! Cases about flows: parents wait for their children (`waiting-children`),
//! run when the last one finishes, read their results, and fail (or not)
//! when a child fails, by the child's policy (ADR 0007).

use super::support::*;
use crate::testsuite::{Factory, fresh, spec};
use crate::{CancelOutcome, StoreError};
use drover_core::{ChildFailure, EventKind, FailureReport, FlowSpec, JobError, JobId, JobSpec, JobState};
use serde_json::json;

/// Inserts a flow and returns the ids in pre-order.
async fn insert_flow(t: &crate::testsuite::TestStore, flow: FlowSpec) -> Vec<JobId> {
    let inserted = t.store.flow_insert(flow).await.unwrap();
    inserted.into_iter().map(|i| i.job.id).collect()
}

/// Asserts the state of a job.
async fn assert_state(t: &crate::testsuite::TestStore, id: &JobId, state: JobState) {
    assert_eq!(get(t, id).await.state, state, "state of {id}");
}

/// A 3-level flow (root → mid → two leaves) runs bottom-up: only leaves are
/// claimable at first; the mid job becomes `waiting` (with `job:waiting`)
/// when its last child completes, then the root when the mid completes.
pub async fn flow_three_levels_finish_in_order(make: Factory) {
    let t = fresh(make).await;
    let flow = FlowSpec::new(spec("root").id(jid("root"))).child(
        FlowSpec::new(spec("mid").id(jid("mid")))
            .child(spec("leaf").id(jid("leaf-1")))
            .child(spec("leaf").id(jid("leaf-2"))),
    );
    let ids = insert_flow(&t, flow).await;
    assert_eq!(ids, [jid("root"), jid("mid"), jid("leaf-1"), jid("leaf-2")]);
    assert_state(&t, &jid("root"), JobState::WaitingChildren).await;
    assert_state(&t, &jid("mid"), JobState::WaitingChildren).await;
    assert_eq!(get(&t, &jid("mid")).await.parent_id, Some(jid("root")));
    assert_eq!(counts(&t, "q").await.waiting_children, 2);
    assert_eq!(counts(&t, "q").await.waiting, 2);
    let mut events = t.store.events();

    let leaves = claim(&t, &["q"], 10).await;
    let mut got = ids_of(&leaves);
    got.sort();
    assert_eq!(got, [jid("leaf-1"), jid("leaf-2")], "only the leaves are claimable");
    finish_ok(&t, &leaves[0], json!(1)).await;
    assert_state(&t, &jid("mid"), JobState::WaitingChildren).await;
    finish_ok(&t, &leaves[1], json!(2)).await;
    assert_state(&t, &jid("mid"), JobState::Waiting).await;
    wait_event(&mut events, EventKind::Waiting, Some(&jid("mid"))).await;
    assert_state(&t, &jid("root"), JobState::WaitingChildren).await;

    let mid = claim_one(&t, "q").await;
    assert_eq!(mid.job.id, jid("mid"));
    finish_ok(&t, &mid, json!("mid done")).await;
    assert_state(&t, &jid("root"), JobState::Waiting).await;
    wait_event(&mut events, EventKind::Waiting, Some(&jid("root"))).await;

    let root = claim_one(&t, "q").await;
    assert_eq!(root.job.id, jid("root"));
    assert_eq!(finish_ok(&t, &root, json!("root done")).await.state, JobState::Completed);
    let c = counts(&t, "q").await;
    assert_eq!((c.completed, c.waiting_children, c.waiting), (4, 0, 0));
}

/// A child that fails for good under the default policy fails its waiting
/// parent at once, with error code `child_failed` naming the child; the
/// other children run on and leave the parent failed.
pub async fn flow_child_failure_fails_parent(make: Factory) {
    let t = fresh(make).await;
    let flow = FlowSpec::new(spec("parent").id(jid("p")))
        .child(spec("a").id(jid("a")).attempts(1))
        .child(spec("b").id(jid("b")));
    insert_flow(&t, flow).await;
    let mut events = t.store.events();
    let claimed = claim(&t, &["q"], 10).await;
    let a = claimed.iter().find(|c| c.job.id == jid("a")).unwrap();
    let b = claimed.iter().find(|c| c.job.id == jid("b")).unwrap();
    finish_fail(&t, a, FailureReport::fatal(JobError::new("no data"))).await;
    let parent = get(&t, &jid("p")).await;
    assert_eq!(parent.state, JobState::Failed);
    let error = parent.error.expect("the parent records why it failed");
    assert_eq!(error.code.as_deref(), Some("child_failed"));
    assert_eq!(error.details["child_id"], json!("a"));
    assert!(parent.finished_at.is_some());
    wait_event(&mut events, EventKind::Failed, Some(&jid("p"))).await;
    finish_ok(&t, b, json!(null)).await;
    assert_state(&t, &jid("p"), JobState::Failed).await;
    claim_none(&t, "q").await;
    let c = counts(&t, "q").await;
    assert_eq!((c.failed, c.completed, c.waiting_children), (2, 1, 0));
}

/// A child with `on_failure: ignore` that fails leaves its parent waiting
/// for the others; the parent then runs and sees the failure among its
/// children.
pub async fn flow_child_failure_ignored(make: Factory) {
    let t = fresh(make).await;
    let flow = FlowSpec::new(spec("parent").id(jid("p")))
        .child(spec("a").id(jid("a")).attempts(1).on_failure(ChildFailure::Ignore))
        .child(spec("b").id(jid("b")));
    insert_flow(&t, flow).await;
    let claimed = claim(&t, &["q"], 10).await;
    let a = claimed.iter().find(|c| c.job.id == jid("a")).unwrap();
    let b = claimed.iter().find(|c| c.job.id == jid("b")).unwrap();
    finish_fail(&t, a, FailureReport::fatal(JobError::new("no data"))).await;
    assert_state(&t, &jid("p"), JobState::WaitingChildren).await;
    finish_ok(&t, b, json!("b")).await;
    assert_state(&t, &jid("p"), JobState::Waiting).await;
    let children = t.store.job_children(&jid("p")).await.unwrap();
    let states: Vec<_> = children.iter().map(|c| (c.id.as_str().to_owned(), c.state)).collect();
    assert_eq!(states, [("a".to_owned(), JobState::Failed), ("b".to_owned(), JobState::Completed)]);
    assert_eq!((children[0].on_failure, children[1].on_failure), (ChildFailure::Ignore, ChildFailure::FailParent));
    let parent = claim_one(&t, "q").await;
    assert_eq!(parent.job.id, jid("p"));
}

/// Cancelling a `waiting-children` parent ends it at once; its children
/// are not cancelled with it and finishing them leaves it cancelled.
/// Cancelling a child under the default policy fails its parent.
pub async fn flow_cancel_waiting_children_parent(make: Factory) {
    let t = fresh(make).await;
    insert_flow(&t, FlowSpec::new(spec("parent").id(jid("p"))).child(spec("a").id(jid("a")))).await;
    match t.store.job_cancel(&jid("p")).await.unwrap() {
        CancelOutcome::Cancelled(job) => assert_eq!(job.state, JobState::Cancelled),
        other => panic!("a waiting-children parent is cancelled at once, got {other:?}"),
    }
    let child = claim_one(&t, "q").await;
    finish_ok(&t, &child, json!(null)).await;
    assert_state(&t, &jid("p"), JobState::Cancelled).await;
    let c = counts(&t, "q").await;
    assert_eq!((c.cancelled, c.completed, c.waiting_children), (1, 1, 0));

    insert_flow(&t, FlowSpec::new(spec("parent").id(jid("p2"))).child(spec("b").id(jid("b")))).await;
    t.store.job_cancel(&jid("b")).await.unwrap();
    let parent = get(&t, &jid("p2")).await;
    assert_eq!(parent.state, JobState::Failed, "a cancelled child fails its parent by default");
    assert_eq!(parent.error.unwrap().details["child_id"], json!("b"));
}

/// A job inserted with the `parent_id` of a `waiting` (or `delayed`) job
/// moves that parent to `waiting-children` until the child finishes; an
/// unknown parent is refused on `parent_id`, a finished one as an invalid
/// state.
pub async fn flow_child_added_to_waiting_parent(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("parent").id(jid("p"))).await;
    insert_one(&t, JobSpec::new("children", "child").id(jid("c")).parent_id(jid("p"))).await;
    assert_state(&t, &jid("p"), JobState::WaitingChildren).await;
    assert_eq!(counts(&t, "q").await.waiting_children, 1);
    claim_none(&t, "q").await;
    let child = claim_one(&t, "children").await;
    finish_ok(&t, &child, json!(7)).await;
    assert_state(&t, &jid("p"), JobState::Waiting).await;

    insert_one(&t, spec("later").id(jid("d")).delay_ms(60_000)).await;
    insert_one(&t, JobSpec::new("children", "child").parent_id(jid("d"))).await;
    assert_state(&t, &jid("d"), JobState::WaitingChildren).await;
    let child = claim_one(&t, "children").await;
    finish_ok(&t, &child, json!(null)).await;
    assert_state(&t, &jid("d"), JobState::Delayed).await;

    let unknown = t.store.job_insert_many(vec![spec("orphan").parent_id(jid("nobody"))]).await;
    assert_invalid(unknown, Some("parent_id"));
    let done = completed_job(&t, JobSpec::new("other", "done").id(jid("done"))).await;
    let late = t.store.job_insert_many(vec![spec("late").parent_id(done.id.clone())]).await;
    assert_invalid_state(late, JobState::Completed);
    // Refused calls insert nothing: the orphans are not stored.
    assert_eq!(t.store.job_children(&done.id).await.unwrap().len(), 0);
    assert!(matches!(t.store.job_children(&jid("nobody")).await, Err(StoreError::NotFound(_))));
}

/// `job_children` lists a parent's children in enqueue order, with their
/// states and results.
pub async fn flow_children_results(make: Factory) {
    let t = fresh(make).await;
    let flow = FlowSpec::new(spec("finalize").id(jid("p")))
        .child(spec("score").id(jid("s1")).payload(json!(1)))
        .child(spec("score").id(jid("s2")).payload(json!(2)));
    insert_flow(&t, flow).await;
    for c in claim(&t, &["q"], 10).await {
        let n = c.job.payload.as_i64().unwrap();
        finish_ok(&t, &c, json!({ "score": n * 10 })).await;
    }
    let children = t.store.job_children(&jid("p")).await.unwrap();
    let results: Vec<_> = children.iter().map(|c| (c.id.as_str().to_owned(), c.result.clone())).collect();
    assert_eq!(results, [("s1".to_owned(), Some(json!({"score": 10}))), ("s2".to_owned(), Some(json!({"score": 20})))]);
    assert!(children.iter().all(|c| c.parent_id == Some(jid("p"))));
}

/// A running job that enqueues children and then completes goes to
/// `waiting-children` (its attempt recorded as completed), runs again as
/// `waiting` when they finish, and completes for good on that second run.
pub async fn flow_running_parent_waits_for_its_children(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("search").id(jid("p"))).await;
    let first = claim_one(&t, "q").await;
    insert_one(&t, JobSpec::new("fetch", "fetch").id(jid("c")).parent_id(jid("p"))).await;
    assert_state(&t, &jid("p"), JobState::Active).await;
    let done = finish_ok(&t, &first, json!("fanned out")).await;
    assert_eq!(done.state, JobState::WaitingChildren);
    assert_eq!(counts(&t, "q").await.waiting_children, 1);
    claim_none(&t, "q").await;
    let child = claim_one(&t, "fetch").await;
    finish_ok(&t, &child, json!("page")).await;
    assert_state(&t, &jid("p"), JobState::Waiting).await;
    let second = claim_one(&t, "q").await;
    assert_eq!(second.attempt, 2);
    assert_eq!(finish_ok(&t, &second, json!("final")).await.state, JobState::Completed);
    let parent = get(&t, &jid("p")).await;
    assert_eq!(parent.result, Some(json!("final")));
    assert_eq!(parent.attempts.len(), 2);
}

/// A child that fails while its parent runs fails the parent when the
/// parent's handler returns, even successfully.
pub async fn flow_running_parent_fails_after_child_failed(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("search").id(jid("p"))).await;
    let parent = claim_one(&t, "q").await;
    insert_one(&t, JobSpec::new("fetch", "fetch").id(jid("c")).parent_id(jid("p")).attempts(1)).await;
    let child = claim_one(&t, "fetch").await;
    finish_fail(&t, &child, FailureReport::fatal(JobError::new("404"))).await;
    assert_state(&t, &jid("p"), JobState::Active).await;
    assert_eq!(finish_ok(&t, &parent, json!(null)).await.state, JobState::Failed);
    let read = get(&t, &jid("p")).await;
    assert_eq!(read.error.unwrap().details["child_id"], json!("c"));
}

/// A running job whose children all finish before its handler returns
/// still runs again: on completion it goes straight to `waiting`.
pub async fn flow_running_parent_runs_again_when_children_finished_first(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("search").id(jid("p"))).await;
    let first = claim_one(&t, "q").await;
    insert_one(&t, JobSpec::new("fetch", "fetch").parent_id(jid("p"))).await;
    let child = claim_one(&t, "fetch").await;
    finish_ok(&t, &child, json!("page")).await;
    assert_state(&t, &jid("p"), JobState::Active).await;
    assert_eq!(finish_ok(&t, &first, json!("fanned out")).await.state, JobState::Waiting);
    let second = claim_one(&t, "q").await;
    assert_eq!(finish_ok(&t, &second, json!("final")).await.state, JobState::Completed);
}

/// Every path that ends a job tells its parent and its batch, not only
/// finishes: a child that expires, one that stalls past `max_stalls`, and
/// a cancel-requested one handed back by its worker each fail their
/// parent and count as finished in their batch.
pub async fn flow_every_ending_path_reaches_parent_and_batch(make: Factory) {
    let t = fresh(make).await;
    for p in ["p-expire", "p-stall", "p-release"] {
        insert_one(&t, spec("parent").id(jid(p))).await;
    }
    let soon = t.clock_now().plus_ms(1_000);
    let jobs = vec![
        JobSpec::new("kids", "c").id(jid("c-expire")).parent_id(jid("p-expire")).expires_at(soon).delay_ms(5_000),
        JobSpec::new("kids", "c").id(jid("c-stall")).parent_id(jid("p-stall")).max_stalls(0),
        JobSpec::new("kids", "c").id(jid("c-release")).parent_id(jid("p-release")),
    ];
    let batch = t.store.batch_insert(drover_core::BatchSpec { jobs, on_complete: None }).await.unwrap();

    advance_ms(&t, 2_000);
    assert_eq!(t.store.job_expire_due().await.unwrap(), 1);
    assert_state(&t, &jid("p-expire"), JobState::Failed).await;

    let claimed = claim_as(&t, &["kids"], 2, "doomed", 1_000).await;
    assert_eq!(claimed.len(), 2);
    let release = claimed.iter().find(|c| c.job.id == jid("c-release")).unwrap();
    t.store.job_cancel(&release.job.id).await.unwrap();
    let item = crate::JobFinish {
        id: release.job.id.clone(),
        lease_token: release.lease_token,
        outcome: crate::FinishOutcome::Release,
    };
    let released = t.store.job_finish_many(vec![item]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(released.state, JobState::Cancelled);
    assert_state(&t, &jid("p-release"), JobState::Failed).await;

    advance_ms(&t, 1_001);
    let report = t.store.job_rescue_expired().await.unwrap();
    assert_eq!(report.failed, [jid("c-stall")]);
    assert_state(&t, &jid("p-stall"), JobState::Failed).await;

    let b = t.store.batch_get(&batch.id).await.unwrap().unwrap();
    assert_eq!((b.total, b.failed, b.cancelled, b.state), (3, 2, 1, crate::BatchState::Completed));
    let c = counts(&t, "q").await;
    assert_eq!((c.failed, c.waiting, c.waiting_children), (3, 0, 0));
}

/// A failure climbs the tree: a leaf failing for good fails its parent,
/// which fails the grandparent, each with `child_failed` naming its child.
pub async fn flow_failure_climbs_the_tree(make: Factory) {
    let t = fresh(make).await;
    let flow = FlowSpec::new(spec("root").id(jid("root")))
        .child(FlowSpec::new(spec("mid").id(jid("mid"))).child(spec("leaf").id(jid("leaf")).attempts(1)));
    insert_flow(&t, flow).await;
    let leaf = claim_one(&t, "q").await;
    finish_fail(&t, &leaf, FailureReport::fatal(JobError::new("gone"))).await;
    for (parent, child) in [("mid", "leaf"), ("root", "mid")] {
        let read = get(&t, &jid(parent)).await;
        assert_eq!(read.state, JobState::Failed, "{parent}");
        assert_eq!(read.error.unwrap().details["child_id"], json!(child));
    }
    assert_eq!(counts(&t, "q").await.failed, 3);
}

/// A parent that fails with a retry left while children it enqueued still
/// run does not run beside them: it waits in `waiting-children` and is
/// released when they finish (as `delayed` until its retry time).
pub async fn flow_retrying_parent_waits_for_its_children(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("search").id(jid("p")).backoff(drover_core::Backoff::fixed(1_000))).await;
    let first = claim_one(&t, "q").await;
    insert_one(&t, JobSpec::new("fetch", "fetch").parent_id(jid("p"))).await;
    let failed = finish_fail(&t, &first, boom("upstream hiccup")).await;
    assert_eq!(failed.state, JobState::WaitingChildren);
    advance_ms(&t, 2_000);
    claim_none(&t, "q").await;
    let child = claim_one(&t, "fetch").await;
    finish_ok(&t, &child, json!("page")).await;
    assert_state(&t, &jid("p"), JobState::Waiting).await;
    let second = claim_one(&t, "q").await;
    assert_eq!(finish_ok(&t, &second, json!("final")).await.state, JobState::Completed, "ran once more, not twice");
}

/// A new parent whose children are all duplicates (an existing id, or a
/// unique key matching an unfinished job) has nothing to wait for: it
/// starts `waiting`, with `job:waiting`, instead of `waiting-children`
/// forever. A parent with one new child among duplicates waits for it.
pub async fn flow_parent_of_duplicate_children_is_released(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, JobSpec::new("kids", "c").id(jid("old"))).await;
    insert_one(&t, JobSpec::new("kids", "c").unique_key("k")).await;
    let mut events = t.store.events();
    let flow = FlowSpec::new(spec("parent").id(jid("p")))
        .child(JobSpec::new("kids", "c").id(jid("old")))
        .child(JobSpec::new("kids", "c").id(jid("new-key")).unique_key("k"));
    let inserted = t.store.flow_insert(flow).await.unwrap();
    assert_eq!(inserted.iter().map(|i| i.duplicate).collect::<Vec<_>>(), [false, true, true]);
    assert_eq!(inserted[0].job.state, JobState::Waiting, "the insert reports the state it left");
    assert_state(&t, &jid("p"), JobState::Waiting).await;
    wait_event(&mut events, EventKind::Waiting, Some(&jid("p"))).await;
    let c = counts(&t, "q").await;
    assert_eq!((c.waiting, c.waiting_children), (1, 0));
    assert_eq!(claim_one(&t, "q").await.job.id, jid("p"));

    let flow = FlowSpec::new(spec("parent").id(jid("p2")))
        .child(JobSpec::new("kids", "c").id(jid("old")))
        .child(JobSpec::new("kids", "c").id(jid("fresh")));
    insert_flow(&t, flow).await;
    assert_state(&t, &jid("p2"), JobState::WaitingChildren).await;
}

/// A manual retry of a finished child counts it in again on any unfinished
/// parent: a running parent then waits for it after its handler returns,
/// instead of running again beside it.
pub async fn flow_retried_child_counts_for_running_parent(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("search").id(jid("p"))).await;
    let parent = claim_one(&t, "q").await;
    let kid = JobSpec::new("kids", "c").id(jid("c2")).parent_id(jid("p")).attempts(1);
    insert_one(&t, kid.on_failure(ChildFailure::Ignore)).await;
    let c2 = claim_one(&t, "kids").await;
    finish_fail(&t, &c2, FailureReport::fatal(JobError::new("flaky"))).await;
    t.store.job_retry(&jid("c2")).await.unwrap();
    assert_eq!(finish_ok(&t, &parent, json!("fanned out")).await.state, JobState::WaitingChildren);
    claim_none(&t, "q").await;
    let again = claim_one(&t, "kids").await;
    assert_eq!(again.job.id, jid("c2"));
    finish_ok(&t, &again, json!(null)).await;
    assert_state(&t, &jid("p"), JobState::Waiting).await;
}

/// A manual retry of a parent failed by a child while other children
/// still run puts it in `waiting-children`, not `waiting`: it runs after
/// them.
pub async fn flow_retried_parent_waits_for_running_children(make: Factory) {
    let t = fresh(make).await;
    let flow = FlowSpec::new(spec("parent").id(jid("p")))
        .child(JobSpec::new("kids", "a").id(jid("a")).attempts(1))
        .child(JobSpec::new("kids", "b").id(jid("b")));
    insert_flow(&t, flow).await;
    let claimed = claim(&t, &["kids"], 10).await;
    let a = claimed.iter().find(|c| c.job.id == jid("a")).unwrap();
    let b = claimed.iter().find(|c| c.job.id == jid("b")).unwrap();
    finish_fail(&t, a, FailureReport::fatal(JobError::new("no data"))).await;
    assert_state(&t, &jid("p"), JobState::Failed).await;
    let retried = t.store.job_retry(&jid("p")).await.unwrap();
    assert_eq!(retried.state, JobState::WaitingChildren);
    assert_eq!(counts(&t, "q").await.waiting_children, 1);
    claim_none(&t, "q").await;
    finish_ok(&t, b, json!(null)).await;
    assert_state(&t, &jid("p"), JobState::Waiting).await;
}

/// A parent whose child failed under `fail_parent` while it ran fails with
/// `child_failed` however its run ends: a failure with retries left, a
/// release, and a stall that would requeue it all end it `failed`,
/// counted as failed in its batch, instead of running it again.
pub async fn flow_running_parent_fails_on_any_ending_after_child_failed(make: Factory) {
    let t = fresh(make).await;
    let parents = ["p-fail", "p-release", "p-stall"].map(|p| spec("parent").id(jid(p)));
    let batch = t.store.batch_insert(drover_core::BatchSpec { jobs: parents.into(), on_complete: None }).await.unwrap();
    let running = claim_as(&t, &["q"], 10, "w", 1_000).await;
    assert_eq!(running.len(), 3);
    for p in ["p-fail", "p-release", "p-stall"] {
        let child = JobSpec::new("kids", "c").id(jid(&format!("{p}-c"))).parent_id(jid(p)).attempts(1);
        insert_one(&t, child).await;
    }
    for c in claim(&t, &["kids"], 10).await {
        finish_fail(&t, &c, FailureReport::fatal(JobError::new("404"))).await;
    }
    let lease = |p: &str| running.iter().find(|c| c.job.id == jid(p)).unwrap();
    assert_eq!(finish_fail(&t, lease("p-fail"), boom("hiccup")).await.state, JobState::Failed);
    let released = finish(&t, &jid("p-release"), lease("p-release").lease_token, crate::FinishOutcome::Release).await;
    assert_eq!(released.unwrap().state, JobState::Failed);
    advance_ms(&t, 1_001);
    let report = t.store.job_rescue_expired().await.unwrap();
    assert_eq!((report.failed, report.requeued), (vec![jid("p-stall")], vec![]));
    for p in ["p-fail", "p-release", "p-stall"] {
        let read = get(&t, &jid(p)).await;
        assert_eq!(read.state, JobState::Failed, "{p}");
        let error = read.error.unwrap_or_else(|| panic!("{p} records why it failed"));
        assert_eq!(
            (error.code.as_deref(), &error.details["child_id"]),
            (Some("child_failed"), &json!(format!("{p}-c")))
        );
    }
    claim_none(&t, "q").await;
    let b = t.store.batch_get(&batch.id).await.unwrap().unwrap();
    assert_eq!((b.failed, b.state), (3, crate::BatchState::Completed));
    let c = counts(&t, "q").await;
    assert_eq!((c.failed, c.active, c.waiting), (3, 0, 0));
}

/// A fanned-out parent cancelled while it ran, then retried by hand, runs
/// once and completes: the fan-out belonged to the cancelled run.
pub async fn flow_cancelled_fanned_out_parent_retried_completes(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("search").id(jid("p"))).await;
    let first = claim_one(&t, "q").await;
    insert_one(&t, JobSpec::new("kids", "c").parent_id(jid("p"))).await;
    t.store.job_cancel(&jid("p")).await.unwrap();
    let child = claim_one(&t, "kids").await;
    finish_ok(&t, &child, json!(null)).await;
    assert_eq!(finish_ok(&t, &first, json!(null)).await.state, JobState::Cancelled);
    assert_eq!(t.store.job_retry(&jid("p")).await.unwrap().state, JobState::Waiting);
    let second = claim_one(&t, "q").await;
    assert_eq!(finish_ok(&t, &second, json!("done")).await.state, JobState::Completed);
}

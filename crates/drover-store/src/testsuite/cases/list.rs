//! Cases about `job_list`: filters, newest-first pagination, cursors.

use super::support::*;
use crate::testsuite::{Factory, fresh, spec};
use crate::{JobListParams, JobPage};
use drover_core::{JobId, JobSpec, JobState};
use std::collections::HashSet;

async fn list(t: &crate::testsuite::TestStore, params: JobListParams) -> JobPage {
    t.store.job_list(params).await.unwrap()
}

fn id_set(page: &JobPage) -> HashSet<JobId> {
    page.items.iter().map(|j| j.id.clone()).collect()
}

fn set(ids: &[&JobId]) -> HashSet<JobId> {
    ids.iter().map(|id| (*id).clone()).collect()
}

/// Each filter (queue, state, name, batch id, parent id) returns exactly the
/// matching jobs, filters combine with AND, and list items carry no
/// attempt history.
pub async fn list_filters(make: Factory) {
    let t = fresh(make).await;
    let parent = insert_one(&t, JobSpec::new("a", "parent")).await;
    let [a_x, a_y, b_x, b_batch, child, a_delayed] = insert_all(
        &t,
        vec![
            JobSpec::new("a", "x"),
            JobSpec::new("a", "y"),
            JobSpec::new("b", "x"),
            JobSpec::new("b", "y").batch_id("batch-1"),
            JobSpec::new("b", "child").parent_id(parent.id.clone()).batch_id("batch-1"),
            JobSpec::new("a", "x").delay_ms(60_000),
        ],
    )
    .await
    .try_into()
    .unwrap();
    // `b_x` becomes active and gets an attempt: lists must still not carry it.
    let claimed = claim(&t, &["b"], 1).await;
    assert_eq!(ids_of(&claimed), std::slice::from_ref(&b_x.id));

    let by = |f: fn(&mut JobListParams)| {
        let mut p = JobListParams::default();
        f(&mut p);
        p
    };
    let cases: Vec<(JobListParams, HashSet<JobId>)> = vec![
        (
            JobListParams::default(),
            set(&[&parent.id, &a_x.id, &a_y.id, &b_x.id, &b_batch.id, &child.id, &a_delayed.id]),
        ),
        (by(|p| p.queue = Some("a".into())), set(&[&parent.id, &a_x.id, &a_y.id, &a_delayed.id])),
        (by(|p| p.state = Some(JobState::Delayed)), set(&[&a_delayed.id])),
        (by(|p| p.state = Some(JobState::Active)), set(&[&b_x.id])),
        (by(|p| p.state = Some(JobState::Failed)), set(&[])),
        (by(|p| p.name = Some("x".into())), set(&[&a_x.id, &b_x.id, &a_delayed.id])),
        (by(|p| p.batch_id = Some("batch-1".into())), set(&[&b_batch.id, &child.id])),
        (by(|p| p.queue = Some("nowhere".into())), set(&[])),
        (
            by(|p| {
                p.queue = Some("a".into());
                p.name = Some("x".into());
                p.state = Some(JobState::Waiting);
            }),
            set(&[&a_x.id]),
        ),
    ];
    for (params, expected) in cases {
        let page = list(&t, params.clone()).await;
        assert_eq!(id_set(&page), expected, "filter {params:?}");
        assert_eq!(page.items.len(), expected.len(), "no job twice for {params:?}");
        assert_eq!(page.next_cursor, None, "one page is enough for {params:?}");
        assert!(page.items.iter().all(|j| j.attempts.is_empty()), "lists carry no attempt history");
    }
    let children = list(&t, JobListParams { parent_id: Some(parent.id.clone()), ..Default::default() }).await;
    assert_eq!(id_set(&children), set(&[&child.id]));
    let active = list(&t, JobListParams { state: Some(JobState::Active), ..Default::default() }).await;
    assert_eq!(active.items[0].state, JobState::Active);
}

/// 120 jobs listed 50 at a time come back newest first across three pages,
/// each once, none missing; the last page has no cursor, and limit 0 means 50.
pub async fn list_pages_newest_first(make: Factory) {
    let t = fresh(make).await;
    let mut inserted = Vec::new();
    for i in 0..120 {
        // One millisecond apart, so "newest" is not a tie.
        advance_ms(&t, 1);
        inserted.push(insert_one(&t, spec(&format!("job-{i}"))).await.id);
    }
    // Jobs of another queue must not leak into a filtered walk.
    insert_one(&t, JobSpec::new("elsewhere", "noise")).await;

    let mut walked = Vec::new();
    let mut cursor = None;
    let mut pages = Vec::new();
    loop {
        let page =
            list(&t, JobListParams { queue: Some("q".into()), limit: 50, cursor: cursor.take(), ..Default::default() })
                .await;
        pages.push(page.items.len());
        walked.extend(page.items.iter().map(|j| j.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages.len() <= 3, "120 jobs at 50 a page take 3 pages, got more: {pages:?}");
    }
    assert_eq!(pages, [50, 50, 20]);
    let expected: Vec<JobId> = inserted.iter().rev().cloned().collect();
    assert_eq!(walked, expected, "newest first, no duplicate, none missing");

    let default_limit = list(&t, JobListParams { queue: Some("q".into()), ..Default::default() }).await;
    assert_eq!(default_limit.items.len(), 50, "limit 0 means 50");
    assert!(default_limit.next_cursor.is_some());
}

/// A cursor the store did not issue is refused with `Invalid`.
pub async fn list_refuses_garbage_cursor(make: Factory) {
    let t = fresh(make).await;
    insert_one(&t, spec("a")).await;
    for garbage in ["garbage", "", "%%%not-a-cursor%%%"] {
        let res = t.store.job_list(JobListParams { cursor: Some(garbage.into()), ..Default::default() }).await;
        assert_invalid(res, None);
    }
}

//! Flows and batches as callers describe them: [`FlowSpec`] (a job and its
//! children, to any depth), [`ChildFailure`] (what a child's failure does to
//! its parent) and [`BatchSpec`] (a group of jobs with an optional
//! completion job). The rules that move parents and batches along live in
//! the stores; see `docs/decisions/0007-flows-and-batches.md`.

use crate::{JobError, JobId, JobSpec, JobState, SpecError};
use serde::{Deserialize, Serialize};

/// The error code of a parent failed by a child (`details.child_id`).
pub const CHILD_FAILED: &str = "child_failed";

/// The error a parent fails with because of `child_id`. `child_state` is
/// `None` when it is no longer known (the parent was running and learns of
/// it when its handler returns). Both stores use it, so the message is the
/// same on either.
pub fn child_failed_error(child_id: &str, child_state: Option<JobState>) -> JobError {
    let how = child_state.map_or_else(|| "failed or was cancelled".to_owned(), |s| format!("ended {s}"));
    JobError {
        message: format!("child job {child_id} {how}"),
        code: Some(CHILD_FAILED.to_owned()),
        details: serde_json::json!({ "child_id": child_id }),
    }
}

/// The most jobs one flow or one batch may hold.
pub const MAX_FLOW_JOBS: usize = 10_000;

/// The deepest a flow given whole may nest (the root is level 1); deeper
/// trees are built by adding children with `parent_id`.
pub const MAX_FLOW_DEPTH: usize = 64;

/// What a child's failure (or cancel) does to its parent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildFailure {
    /// The parent fails at once with error code `child_failed` (if it is
    /// running, when its handler returns). The default: a pipeline step
    /// whose input failed should not run on partial data unless it says so.
    #[default]
    FailParent,
    /// The parent goes on as if the child had finished; its handler sees
    /// the failure among the children.
    Ignore,
}

impl ChildFailure {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildFailure::FailParent => "fail_parent",
            ChildFailure::Ignore => "ignore",
        }
    }
}

/// A job and the children it waits for, each of which may have children.
/// Created in one transaction: every job with children starts
/// `waiting-children` and runs once they have all finished.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpec {
    /// The job itself; its `parent_id`, if any, attaches the whole flow to
    /// an existing job.
    pub job: JobSpec,
    /// Its children; their `parent_id` is set to this job's id.
    pub children: Vec<FlowSpec>,
}

impl FlowSpec {
    /// A job without children yet.
    pub fn new(job: JobSpec) -> Self {
        Self { job, children: Vec::new() }
    }

    /// Adds a child (itself a flow).
    pub fn child(mut self, child: impl Into<FlowSpec>) -> Self {
        self.children.push(child.into());
        self
    }

    /// The tree in pre-order (each parent before its children), with ids
    /// generated where missing and every child's `parent_id` set, and for
    /// each job the number of its direct children.
    ///
    /// Errors: a child that names another parent, more than
    /// [`MAX_FLOW_JOBS`] jobs, or more than [`MAX_FLOW_DEPTH`] levels.
    pub fn flatten(self) -> Result<Vec<(JobSpec, usize)>, SpecError> {
        let mut out = Vec::new();
        flatten_into(self, None, 1, &mut out)?;
        Ok(out)
    }
}

impl From<JobSpec> for FlowSpec {
    fn from(job: JobSpec) -> Self {
        Self::new(job)
    }
}

fn flatten_into(
    flow: FlowSpec,
    parent: Option<&JobId>,
    depth: usize,
    out: &mut Vec<(JobSpec, usize)>,
) -> Result<(), SpecError> {
    if depth > MAX_FLOW_DEPTH {
        return Err(SpecError { field: "children", message: format!("a flow nests at most {MAX_FLOW_DEPTH} levels") });
    }
    let FlowSpec { mut job, children } = flow;
    if let Some(parent) = parent {
        if job.parent_id.as_ref().is_some_and(|p| p != parent) {
            return Err(SpecError {
                field: "parent_id",
                message: "a child in a flow takes its parent from the tree".into(),
            });
        }
        job.parent_id = Some(parent.clone());
    }
    let id = job.id.clone().unwrap_or_else(JobId::generate);
    job.id = Some(id.clone());
    out.push((job, children.len()));
    if out.len() > MAX_FLOW_JOBS {
        return Err(SpecError { field: "children", message: format!("a flow holds at most {MAX_FLOW_JOBS} jobs") });
    }
    for child in children {
        flatten_into(child, Some(&id), depth + 1, out)?;
    }
    Ok(())
}

/// A group of jobs with aggregate counts and an optional job enqueued once
/// when every one of them has finished.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSpec {
    /// The jobs; their `batch_id` is set to the batch's.
    pub jobs: Vec<JobSpec>,
    /// Enqueued exactly once, when the last job of the batch finishes
    /// (whatever their outcomes). It is not itself part of the batch.
    pub on_complete: Option<JobSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_is_pre_order_with_parents_set() {
        let flow = FlowSpec::new(JobSpec::new("q", "root"))
            .child(FlowSpec::new(JobSpec::new("q", "mid")).child(JobSpec::new("q", "leaf")))
            .child(JobSpec::new("q", "sibling"));
        let flat = flow.flatten().unwrap();
        let names: Vec<_> = flat.iter().map(|(s, n)| (s.name.as_str(), *n)).collect();
        assert_eq!(names, [("root", 2), ("mid", 1), ("leaf", 0), ("sibling", 0)]);
        assert_eq!(flat[1].0.parent_id, flat[0].0.id);
        assert_eq!(flat[2].0.parent_id, flat[1].0.id);
        assert_eq!(flat[3].0.parent_id, flat[0].0.id);
        assert_eq!(flat[0].0.parent_id, None);
    }

    #[test]
    fn flatten_refuses_too_deep_a_tree() {
        let mut flow = FlowSpec::new(JobSpec::new("q", "leaf"));
        for _ in 0..MAX_FLOW_DEPTH {
            flow = FlowSpec::new(JobSpec::new("q", "n")).child(flow);
        }
        assert_eq!(flow.flatten().unwrap_err().field, "children");
    }

    #[test]
    fn policy_names() {
        let p: ChildFailure = serde_json::from_str("\"ignore\"").unwrap();
        assert_eq!(p, ChildFailure::Ignore);
        assert_eq!(ChildFailure::default().as_str(), "fail_parent");
    }
}

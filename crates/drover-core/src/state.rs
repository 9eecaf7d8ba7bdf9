//! The job state machine of DESIGN.md §2.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Ready to be claimed (or held by a paused queue).
    Waiting,
    /// Runs later: `run_at` is in the future, or it is backing off before a retry.
    Delayed,
    /// A parent waiting for its children to finish.
    WaitingChildren,
    /// Claimed by a worker holding a lease.
    Active,
    /// Finished successfully.
    Completed,
    /// Attempts exhausted or failed for good: the dead-letter set.
    Failed,
    /// Cancelled before or while it ran.
    Cancelled,
}

impl JobState {
    /// Every state, in the order dashboards list them.
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::WaitingChildren,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The state's wire name (`waiting-children`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::WaitingChildren => "waiting-children",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True once the job will never run again without a manual retry.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }

    /// True for the states a cancel ends at once (no handler to tell).
    pub fn is_cancellable_at_once(self) -> bool {
        matches!(self, JobState::Waiting | JobState::Delayed | JobState::WaitingChildren)
    }

    /// True for the states a manual retry accepts.
    pub fn is_retryable_by_hand(self) -> bool {
        matches!(self, JobState::Failed | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state `{0}` (expected one of waiting, delayed, waiting-children, active, completed, failed, cancelled)"
)]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("running".parse::<JobState>().is_err());
    }

    #[test]
    fn finished_states() {
        let finished: Vec<_> = JobState::ALL.into_iter().filter(|s| s.is_finished()).collect();
        assert_eq!(finished, [JobState::Completed, JobState::Failed, JobState::Cancelled]);
    }
}

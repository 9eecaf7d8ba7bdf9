//! The cases of the conformance suite, one public async fn each, grouped by
//! topic. Every case is re-exported here so that
//! `$crate::testsuite::cases::NAME` resolves for [`crate::conformance_suite`].
//!
//! A case starts from [`super::fresh`], moves time only through the
//! [`drover_core::ManualClock`], and waits on signals and events with a
//! deadline, never a sleep.

pub mod support;

mod batch;
mod cancel;
mod claim;
mod expire;
mod finish;
mod flow;
mod insert;
mod lease;
mod limits;
mod list;
mod queue;
mod retention;
mod retry;
mod schedule;
mod signal;
mod stall;
mod unique;

pub use batch::*;
pub use cancel::*;
pub use claim::*;
pub use expire::*;
pub use finish::*;
pub use flow::*;
pub use insert::*;
pub use lease::*;
pub use limits::*;
pub use list::*;
pub use queue::*;
pub use retention::*;
pub use retry::*;
pub use schedule::*;
pub use signal::*;
pub use stall::*;
pub use unique::*;

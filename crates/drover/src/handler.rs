//! Handlers: the typed [`Job`] trait, closures, and [`HandlerError`], which
//! says whether a failure should be retried.

use crate::context::JobContext;
use drover_core::{FailureReport, JobError, JobSpec};
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A typed job: its payload is the struct itself, (de)serialized with serde.
///
/// ```
/// use drover::{HandlerError, Job, JobContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image_id: u64, width: u32 }
///
/// impl Job for Resize {
///     const NAME: &'static str = "resize";
///     const QUEUE: &'static str = "images";
///     type Output = String;
///
///     async fn run(self, ctx: JobContext) -> Result<String, HandlerError> {
///         if self.width == 0 {
///             return Err(HandlerError::fatal("width must be positive"));
///         }
///         ctx.progress(100.0).await?;
///         Ok(format!("{}@{}", self.image_id, self.width))
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The job type name, matched against enqueued jobs' `name`.
    const NAME: &'static str;
    /// The queue it is enqueued to by default.
    const QUEUE: &'static str = "default";
    /// What the handler returns; stored as the job's result.
    type Output: Serialize + Send;

    /// Runs the job.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<Self::Output, HandlerError>> + Send;

    /// The spec enqueued for this job: its queue, name and payload, with
    /// every other option at its default. Adjust it before enqueueing, e.g.
    /// `client.enqueue(job.spec()?.priority(-1))`.
    fn spec(&self) -> Result<JobSpec, serde_json::Error> {
        Ok(JobSpec::new(Self::QUEUE, Self::NAME).payload(serde_json::to_value(self)?))
    }
}

/// What kind of failure a [`HandlerError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerErrorKind {
    /// Try again after the job's backoff delay (while attempts remain).
    Retryable,
    /// Try again no sooner than this (while attempts remain).
    RetryAfter(Duration),
    /// An upstream rate limit: run again after this, without spending an
    /// attempt, and hold the job's rate-limit key back.
    RateLimited(Duration),
    /// No retry can fix it: fail for good now.
    Fatal,
}

/// A handler's failure, saying whether to retry. Any `std::error::Error`
/// converts into a retryable one, so `?` works in handlers.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerError {
    /// Retry policy for this failure.
    pub kind: HandlerErrorKind,
    /// What is recorded on the job.
    pub error: JobError,
}

impl HandlerError {
    /// A failure that the job's backoff policy retries.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { kind: HandlerErrorKind::Retryable, error: JobError::new(message) }
    }

    /// A failure no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { kind: HandlerErrorKind::Fatal, error: JobError::new(message) }
    }

    /// A failure to retry no sooner than `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Self { kind: HandlerErrorKind::RetryAfter(after), error: JobError::new(message) }
    }

    /// An upstream rate limit: retry after `after` without spending an attempt.
    pub fn rate_limited(after: Duration) -> Self {
        Self {
            kind: HandlerErrorKind::RateLimited(after),
            error: JobError::with_code("rate_limited", format!("rate limited; retry after {} ms", after.as_millis())),
        }
    }

    /// Attaches structured details to the recorded error.
    pub fn details(mut self, details: Value) -> Self {
        self.error.details = details;
        self
    }

    /// The report the store records.
    pub(crate) fn into_report(self) -> FailureReport {
        match self.kind {
            HandlerErrorKind::Retryable => FailureReport::retryable(self.error),
            HandlerErrorKind::Fatal => FailureReport::fatal(self.error),
            HandlerErrorKind::RetryAfter(after) => {
                FailureReport { retry_after: Some(after), ..FailureReport::retryable(self.error) }
            }
            HandlerErrorKind::RateLimited(after) => FailureReport::rate_limited(self.error, after),
        }
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retryable(e.to_string())
    }
}

/// Turns any error result into a [`HandlerError`] of a chosen kind:
/// `parse(x).fatal()?`, `call().retry_after(Duration::from_secs(5))?`.
pub trait ResultExt<T> {
    /// Fail for good on error.
    fn fatal(self) -> Result<T, HandlerError>;
    /// Retry no sooner than `after` on error.
    fn retry_after(self, after: Duration) -> Result<T, HandlerError>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for Result<T, E> {
    fn fatal(self) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::fatal(e.to_string()))
    }

    fn retry_after(self, after: Duration) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::retry_after(e.to_string(), after))
    }
}

/// A handler with its types erased, as the worker stores it.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<Value, HandlerError>> + Send + Sync>;

/// Erases a closure handler.
pub(crate) fn erase_closure<F, Fut, R>(f: F) -> ErasedHandler
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: Serialize + Send + 'static,
{
    Arc::new(move |ctx| {
        let fut = f(ctx);
        Box::pin(async move { to_result_value(fut.await?) })
    })
}

/// Erases a typed job: decodes the payload (a mismatch is fatal: retrying
/// cannot change the payload), runs it, encodes the output.
pub(crate) fn erase_job<J: Job>() -> ErasedHandler {
    Arc::new(|ctx: JobContext| {
        Box::pin(async move {
            let job: J = serde_json::from_value(ctx.payload().clone())
                .map_err(|e| HandlerError::fatal(format!("payload does not match job type `{}`: {e}", J::NAME)))?;
            to_result_value(job.run(ctx).await?)
        })
    })
}

fn to_result_value<R: Serialize>(output: R) -> Result<Value, HandlerError> {
    serde_json::to_value(output).map_err(|e| HandlerError::fatal(format!("result does not serialize: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_reports() {
        assert!(!HandlerError::fatal("x").into_report().retryable);
        let r = HandlerError::rate_limited(Duration::from_secs(3)).into_report();
        assert!(r.rate_limited && r.retry_after == Some(Duration::from_secs(3)));
        let r = HandlerError::retry_after("x", Duration::from_secs(1)).into_report();
        assert!(r.retryable && !r.rate_limited && r.retry_after == Some(Duration::from_secs(1)));
        let io: HandlerError = std::io::Error::other("disk").into();
        assert_eq!(io.kind, HandlerErrorKind::Retryable);
        let parsed: Result<u8, _> = "x".parse::<u8>();
        assert_eq!(parsed.fatal().unwrap_err().kind, HandlerErrorKind::Fatal);
    }
}

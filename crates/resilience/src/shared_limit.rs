//! The port for rate limits shared by many instances (implemented over Redis in `store-redis`):
//! the same GCRA decision as [`KeyedLimiter`](crate::KeyedLimiter), taken by a store every
//! instance consults, with time from the store's own clock.

use async_trait::async_trait;

use crate::rate_limit::{Decision, Quota};

/// The shared store could not answer (down, timed out, refused the script).
#[derive(Debug, thiserror::Error)]
#[error("shared rate limiter unavailable: {0}")]
pub struct SharedLimitError(pub String);

/// What to do when the shared store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Let requests through (availability first); the outage is logged and reported.
    Open,
    /// Refuse requests (protection first).
    Closed,
}

/// A GCRA limiter whose state lives outside the process.
#[async_trait]
pub trait SharedLimiter: Send + Sync + 'static {
    /// Takes one unit of `quota` for `key` in `scope`.
    async fn check(&self, scope: &str, key: &str, quota: Quota) -> Result<Decision, SharedLimitError>;
    /// A round trip to the store, for readiness.
    async fn ping(&self) -> Result<(), SharedLimitError>;
    /// The store's name for logs and status (`redis`).
    fn backend(&self) -> &'static str;
}

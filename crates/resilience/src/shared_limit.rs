//! The port for limits shared by many instances (implemented over Redis in `redis-limits`): the
//! same GCRA decision as [`KeyedLimiter`](crate::KeyedLimiter), and a failure counter that locks
//! a key after too many failures (login lockout), both kept by a store every instance consults,
//! with time from the store's own clock.

use std::time::Duration;

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

impl FailureMode {
    /// `open` or `closed`, for status pages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// "`limit` failures within `window` lock the key for `lock_for`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutRule {
    pub limit: u32,
    pub window: Duration,
    pub lock_for: Duration,
}

/// Limits whose state lives outside the process.
#[async_trait]
pub trait SharedLimiter: Send + Sync + 'static {
    /// Takes one unit of `quota` for `key` in `scope`.
    async fn check(&self, scope: &str, key: &str, quota: Quota) -> Result<Decision, SharedLimitError>;
    /// Counts one failure of `key`; when it makes `rule.limit` within `rule.window`, the key is
    /// locked for `rule.lock_for` and its failures are forgotten. Returns the lock's duration
    /// when this failure locked the key.
    async fn record_failure(
        &self,
        scope: &str,
        key: &str,
        rule: LockoutRule,
    ) -> Result<Option<Duration>, SharedLimitError>;
    /// The time left on the key's lock, if it is locked.
    async fn locked_for(&self, scope: &str, key: &str) -> Result<Option<Duration>, SharedLimitError>;
    /// Forgets the key's failures (after a success); a lock in force stays.
    async fn clear_failures(&self, scope: &str, key: &str) -> Result<(), SharedLimitError>;
    /// A round trip to the store, for readiness.
    async fn ping(&self) -> Result<(), SharedLimitError>;
    /// The store's name for logs and status (`redis`).
    fn backend(&self) -> &'static str;
}

//! The per-account sign-in lockout as the domain uses it: a sign-in to a locked account is
//! refused before its password is checked, every finished attempt is counted, and the owner of
//! an account that just got locked is told by mail. How failures are counted (per process, or
//! shared across instances) is the adapter's business, behind [`LoginThrottle`].

use std::time::Duration;

use async_trait::async_trait;

/// An account refused sign-ins after too many failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLock {
    /// How long the lock still lasts.
    pub retry_after: Duration,
    /// The rule: `limit` failures within `window` lock the account.
    pub limit: u32,
    pub window: Duration,
}

/// Counts failed sign-ins per account and locks an account that has too many. The account is
/// the address as typed, whether or not an account has it, so a lock reveals nothing about
/// which addresses are registered.
#[async_trait]
pub trait LoginThrottle: Send + Sync {
    /// The lock on the account of `email`, if it is locked.
    async fn lock(&self, email: &str) -> Option<AccountLock>;

    /// Records a finished sign-in attempt; how long the account is locked when this very
    /// failure locked it (so its owner is told once).
    async fn record(&self, email: &str, succeeded: bool) -> Option<Duration>;
}

/// No lockout: for processes that sign nobody in (the CLI, a worker) and when rate limits are
/// off.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLoginThrottle;

#[async_trait]
impl LoginThrottle for NoLoginThrottle {
    async fn lock(&self, _email: &str) -> Option<AccountLock> {
        None
    }

    async fn record(&self, _email: &str, _succeeded: bool) -> Option<Duration> {
        None
    }
}

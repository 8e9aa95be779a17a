//! The per-account sign-in lockout behind the domain's `LoginThrottle` port: failures counted
//! in a sliding window per account (in Redis when shared, else in this process, which also
//! answers while Redis does not), a lock after too many, and the global failed-login gauge
//! that alerts on credential stuffing across accounts.

use std::time::Duration;

use async_trait::async_trait;
use resilience::LockoutRule;
use shop::accounts::{AccountLock, LoginThrottle};

use super::{LOCKOUT_SCOPE, RateLimiters, account_key, shared_key};

#[async_trait]
impl LoginThrottle for RateLimiters {
    /// The account's lock, from the shared store when there is one (without an answer from
    /// it, this instance's own lock still applies).
    async fn lock(&self, email: &str) -> Option<AccountLock> {
        if !self.settings.enabled {
            return None;
        }
        let key = account_key(email);
        let shared_lock = match &self.shared {
            None => None,
            Some(shared) => match shared.call(shared.limiter.locked_for(LOCKOUT_SCOPE, &shared_key(&key))).await {
                Ok(lock) => Some(lock),
                Err(error) => {
                    self.shared_failed(shared, &error);
                    None
                }
            },
        };
        let left = shared_lock.unwrap_or_else(|| self.local_lock(&key))?;
        metrics::counter!("http_requests_rate_limited_total", "scope" => "account_lock").increment(1);
        Some(AccountLock {
            retry_after: left,
            limit: self.settings.lockout_failures,
            window: self.settings.lockout_window,
        })
    }

    /// Failures count towards the account lock and the global alert. The account key is the
    /// email as typed (normalised), whether or not an account exists.
    async fn record(&self, email: &str, succeeded: bool) -> Option<Duration> {
        if !self.settings.enabled {
            return None;
        }
        let key = account_key(email);
        let shared = match &self.shared {
            None => None,
            Some(shared) => {
                let hashed = shared_key(&key);
                let result = if succeeded {
                    shared.call(shared.limiter.clear_failures(LOCKOUT_SCOPE, &hashed)).await.map(|()| None)
                } else {
                    shared.call(shared.limiter.record_failure(LOCKOUT_SCOPE, &hashed, self.lockout_rule())).await
                };
                result.inspect_err(|error| self.shared_failed(shared, error)).ok()
            }
        };
        let locked_now = match shared {
            Some(locked) => locked,
            // No shared store, or it did not answer: count here.
            None => self.record_locally(&key, succeeded).then_some(self.settings.lockout_duration),
        };
        if locked_now.is_some() {
            metrics::counter!("accounts_lockouts_total").increment(1);
            tracing::warn!(
                lockoutSecs = self.settings.lockout_duration.as_secs(),
                "account locked after repeated failed logins"
            );
        }
        if succeeded {
            return None;
        }
        let global = self.failed_logins.record(&());
        let alarming = global >= f64::from(self.settings.failed_login_alert_per_minute);
        metrics::gauge!("accounts_failed_logins_per_minute").set(global);
        metrics::gauge!("accounts_failed_login_alert").set(if alarming { 1.0 } else { 0.0 });
        if alarming {
            tracing::warn!(
                failedLoginsPerMinute = global,
                "failed logins across all accounts above the alert threshold"
            );
        }
        locked_now
    }
}

impl RateLimiters {
    fn lockout_rule(&self) -> LockoutRule {
        LockoutRule {
            limit: self.settings.lockout_failures,
            window: self.settings.lockout_window,
            lock_for: self.settings.lockout_duration,
        }
    }

    fn local_lock(&self, key: &str) -> Option<Duration> {
        let now = self.clock.now();
        let locked = self.locked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locked.get(key).filter(|until| **until > now).map(|until| until.saturating_duration_since(now))
    }

    /// This instance's lockout bookkeeping; returns whether this failure locked the account.
    fn record_locally(&self, key: &str, succeeded: bool) -> bool {
        let key = key.to_owned();
        if succeeded {
            self.login_failures.clear(&key);
            return false;
        }
        self.login_failures.record(&key);
        if !self.login_failures.is_over(&key) {
            return false;
        }
        let until = self.clock.now() + self.settings.lockout_duration;
        self.locked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key.clone(), until);
        self.login_failures.clear(&key);
        true
    }
}

//! Redis adapters: the limits every instance shares — a GCRA rate limiter and a failure counter
//! with lockout — each decided atomically by a Lua script that reads Redis's own clock (`TIME`),
//! so instances with skewed clocks agree.

#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use resilience::{Decision, LockoutRule, Quota, SharedLimitError, SharedLimiter};

/// GCRA in one atomic step. KEYS[1]: the key. ARGV[1]: emission interval (µs per unit);
/// ARGV[2]: burst. Returns {allowed (0/1), retry_after_µs, remaining}.
const GCRA: &str = r#"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now, 0}
end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], new_tat, 'PX', ttl_ms)
local remaining = math.floor((interval * burst - (new_tat - now)) / interval)
return {1, 0, remaining}
"#;

/// One failure in a sliding window, exact (a sorted set of failure times). KEYS[1]: the failures;
/// KEYS[2]: the lock. ARGV[1]: window (µs); ARGV[2]: limit; ARGV[3]: lock (ms); ARGV[4]: a
/// random tag keeping same-microsecond failures apart. Returns the lock in ms, or -1 if unlocked.
const RECORD_FAILURE: &str = r#"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local lock_ms = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= limit then
  redis.call('SET', KEYS[2], '1', 'PX', lock_ms)
  redis.call('DEL', KEYS[1])
  return lock_ms
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1)
return -1
"#;

/// Settings of the Redis connection.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db` (`rediss://` is not supported in this build).
    pub url: String,
    /// Every command must answer within this, or the limiter's failure mode applies.
    pub timeout: Duration,
    /// Prefix of every key, so several shops can share one Redis.
    pub key_prefix: String,
}

/// The shared GCRA limiter.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    record_failure: redis::Script,
    timeout: Duration,
    prefix: String,
}

impl RedisRateLimiter {
    /// Prepares the connection without requiring Redis to be up yet: it connects on first use
    /// and reconnects after failures, so an outage at startup is handled like any other.
    pub fn new(settings: &RedisSettings) -> Result<Self, SharedLimitError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|error| SharedLimitError(error.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| SharedLimitError(error.to_string()))?;
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA),
            record_failure: redis::Script::new(RECORD_FAILURE),
            timeout: settings.timeout,
            prefix: settings.key_prefix.clone(),
        })
    }

    /// The failure and lock keys of a lockout key; the hash tag keeps both in one cluster slot.
    fn lockout_keys(&self, scope: &str, key: &str) -> (String, String) {
        let base = format!("{}:lk:{{{scope}:{key}}}", self.prefix);
        (format!("{base}:failures"), format!("{base}:lock"))
    }

    async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SharedLimitError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(SharedLimitError(error.to_string())),
            Err(_) => Err(SharedLimitError(format!("no answer within {:?}", self.timeout))),
        }
    }
}

#[async_trait]
impl SharedLimiter for RedisRateLimiter {
    async fn check(&self, scope: &str, key: &str, quota: Quota) -> Result<Decision, SharedLimitError> {
        let interval = u64::try_from(quota.replenish_interval().as_micros()).unwrap_or(u64::MAX).max(1);
        let redis_key = format!("{}:rl:{scope}:{}:{}:{key}", self.prefix, quota.count, quota.period.as_secs());
        let mut connection = self.connection.clone();
        let (allowed, retry_after_micros, remaining): (i64, i64, i64) = self
            .bounded(self.script.key(redis_key).arg(interval).arg(quota.count).invoke_async(&mut connection))
            .await?;
        let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
        if allowed == 1 {
            let remaining = u32::try_from(remaining).unwrap_or(0);
            let missing = quota.count.saturating_sub(remaining);
            Ok(Decision::Allowed {
                limit: quota.count,
                remaining,
                reset: quota.replenish_interval().saturating_mul(missing),
            })
        } else {
            Ok(Decision::Limited { limit: quota.count, retry_after: micros(retry_after_micros) })
        }
    }

    async fn record_failure(
        &self,
        scope: &str,
        key: &str,
        rule: LockoutRule,
    ) -> Result<Option<Duration>, SharedLimitError> {
        let (failures, lock) = self.lockout_keys(scope, key);
        let window = u64::try_from(rule.window.as_micros()).unwrap_or(u64::MAX).max(1);
        let lock_ms = u64::try_from(rule.lock_for.as_millis()).unwrap_or(u64::MAX).max(1);
        let tag: u64 = rand::rng().random();
        let mut connection = self.connection.clone();
        let locked: i64 = self
            .bounded(
                self.record_failure
                    .key(failures)
                    .key(lock)
                    .arg(window)
                    .arg(rule.limit.max(1))
                    .arg(lock_ms)
                    .arg(tag)
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(u64::try_from(locked).ok().map(Duration::from_millis))
    }

    async fn locked_for(&self, scope: &str, key: &str) -> Result<Option<Duration>, SharedLimitError> {
        let (_, lock) = self.lockout_keys(scope, key);
        let mut connection = self.connection.clone();
        // PTTL: -2 when the key is absent, -1 without expiry (never set by us).
        let left: i64 = self.bounded(redis::cmd("PTTL").arg(lock).query_async(&mut connection)).await?;
        Ok(u64::try_from(left).ok().filter(|ms| *ms > 0).map(Duration::from_millis))
    }

    async fn clear_failures(&self, scope: &str, key: &str) -> Result<(), SharedLimitError> {
        let (failures, _) = self.lockout_keys(scope, key);
        let mut connection = self.connection.clone();
        let _: i64 = self.bounded(redis::cmd("DEL").arg(failures).query_async(&mut connection)).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), SharedLimitError> {
        let mut connection = self.connection.clone();
        let pong: String = self.bounded(redis::cmd("PING").query_async(&mut connection)).await?;
        if pong == "PONG" { Ok(()) } else { Err(SharedLimitError(format!("unexpected answer {pong:?}"))) }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

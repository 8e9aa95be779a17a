//! The shared GCRA against a real Redis (`SHOPKEEP_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`); these tests fail, not skip, when Redis is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redis_limits::{RedisRateLimiter, RedisSettings};
use resilience::{Decision, Quota, SharedLimiter};

fn settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        timeout: Duration::from_millis(500),
        // A fresh prefix per test: no flushing, no interference between tests.
        key_prefix: format!("shopkeep-test-{}", uuid::Uuid::new_v4().simple()),
    }
}

fn redis_url() -> String {
    std::env::var("SHOPKEEP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn admits_the_burst_then_limits_and_two_instances_share_one_limit() {
    let settings = settings(&redis_url());
    let first = RedisRateLimiter::new(&settings).unwrap();
    let second = RedisRateLimiter::new(&settings).unwrap();
    first.ping().await.expect("Redis must be reachable for these tests");
    let quota = Quota::new(4, Duration::from_secs(60));
    let mut admitted = 0;
    for index in 0..8 {
        let limiter = if index % 2 == 0 { &first } else { &second };
        match limiter.check("ip", "203.0.113.1", quota).await.unwrap() {
            Decision::Allowed { remaining, limit, .. } => {
                admitted += 1;
                assert_eq!(limit, 4);
                assert_eq!(remaining, 4 - admitted);
            }
            Decision::Limited { retry_after, limit } => {
                assert_eq!(limit, 4);
                assert!(
                    retry_after <= Duration::from_secs(15) && retry_after > Duration::from_secs(13),
                    "{retry_after:?}"
                );
            }
        }
    }
    assert_eq!(admitted, 4, "two instances together admit one burst");
    assert!(first.check("ip", "203.0.113.2", quota).await.unwrap().is_allowed(), "keys are independent");
    assert!(first.check("login", "203.0.113.1", quota).await.unwrap().is_allowed(), "scopes are independent");
}

#[tokio::test]
async fn units_come_back_at_the_quota_rate() {
    let limiter = RedisRateLimiter::new(&settings(&redis_url())).unwrap();
    let quota = Quota::new(2, Duration::from_millis(400));
    assert!(limiter.check("ip", "k", quota).await.unwrap().is_allowed());
    assert!(limiter.check("ip", "k", quota).await.unwrap().is_allowed());
    let Decision::Limited { retry_after, .. } = limiter.check("ip", "k", quota).await.unwrap() else {
        panic!("the burst is spent");
    };
    // Waiting on Redis's clock, which the test cannot pause: the wait the limiter asked for.
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert!(limiter.check("ip", "k", quota).await.unwrap().is_allowed());
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_within_the_timeout() {
    // Nothing listens on port 1.
    let limiter = RedisRateLimiter::new(&settings("redis://127.0.0.1:1")).unwrap();
    let started = std::time::Instant::now();
    assert!(limiter.check("ip", "k", Quota::new(1, Duration::from_secs(1))).await.is_err());
    assert!(limiter.ping().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn failures_lock_a_key_shared_by_two_instances_and_success_clears_them() {
    let settings = settings(&redis_url());
    let first = RedisRateLimiter::new(&settings).unwrap();
    let second = RedisRateLimiter::new(&settings).unwrap();
    let rule = resilience::LockoutRule { limit: 3, window: Duration::from_secs(60), lock_for: Duration::from_secs(30) };
    assert_eq!(first.locked_for("login", "alice").await.unwrap(), None);
    assert_eq!(first.record_failure("login", "alice", rule).await.unwrap(), None);
    assert_eq!(second.record_failure("login", "alice", rule).await.unwrap(), None);
    // A success clears the count: two more failures do not lock yet.
    first.clear_failures("login", "alice").await.unwrap();
    assert_eq!(second.record_failure("login", "alice", rule).await.unwrap(), None);
    assert_eq!(first.record_failure("login", "alice", rule).await.unwrap(), None);
    assert_eq!(second.record_failure("login", "alice", rule).await.unwrap(), Some(Duration::from_secs(30)));
    for limiter in [&first, &second] {
        let left = limiter.locked_for("login", "alice").await.unwrap().expect("locked on both instances");
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30), "{left:?}");
    }
    assert_eq!(first.locked_for("login", "bob").await.unwrap(), None, "keys are independent");
    first.clear_failures("login", "alice").await.unwrap();
    assert!(first.locked_for("login", "alice").await.unwrap().is_some(), "clearing failures keeps the lock");
}

#[tokio::test]
async fn failures_older_than_the_window_do_not_count() {
    let limiter = RedisRateLimiter::new(&settings(&redis_url())).unwrap();
    let rule =
        resilience::LockoutRule { limit: 2, window: Duration::from_millis(300), lock_for: Duration::from_millis(200) };
    assert_eq!(limiter.record_failure("login", "carol", rule).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(limiter.record_failure("login", "carol", rule).await.unwrap(), None, "the first one slid out");
    assert!(limiter.record_failure("login", "carol", rule).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(limiter.locked_for("login", "carol").await.unwrap(), None, "locks expire");
}

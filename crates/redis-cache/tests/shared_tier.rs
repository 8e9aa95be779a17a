//! The shared tier against real Redis servers: the shared one of the test machine
//! (`SHOPKEEP_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; these tests fail, not skip,
//! when it is down) and private ones the tests kill and restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use redis_cache::{RedisCache, RedisCacheSettings};
use resilience::{CircuitBreaker, CircuitBreakerConfig, MonotonicClock};
use shop::cache::{Announcement, Family, SharedTier, TierEvent};
use tokio::sync::mpsc::Receiver;

fn redis_url() -> String {
    std::env::var("SHOPKEEP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn breaker() -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(CircuitBreakerConfig::new("redis"), Arc::new(MonotonicClock)))
}

/// An instance of the tier; instances made with the same `prefix` share keys and announcements.
fn tier(url: &str, prefix: &str) -> RedisCache {
    let settings =
        RedisCacheSettings { url: url.to_owned(), timeout: Duration::from_millis(300), key_prefix: prefix.to_owned() };
    RedisCache::new(&settings, breaker()).unwrap()
}

fn fresh_prefix() -> String {
    format!("shopkeep-test-{}", uuid::Uuid::new_v4().simple())
}

async fn next(events: &mut Receiver<TierEvent>) -> TierEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event in time").expect("subscribed")
}

async fn wait_healthy(what: &str, tiers: &[&RedisCache]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut healthy = true;
        for tier in tiers {
            healthy &= tier.check().await.is_ok();
        }
        if healthy {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn values_live_for_their_ttl_and_leases_go_to_one_instance() {
    let prefix = fresh_prefix();
    let (a, b) = (tier(&redis_url(), &prefix), tier(&redis_url(), &prefix));
    assert_eq!(a.get("products:1:slug:mug").await.unwrap(), None);
    a.put("products:1:slug:mug", b"{\"name\":\"Mug\"}".to_vec(), Duration::from_millis(300)).await.unwrap();
    assert_eq!(b.get("products:1:slug:mug").await.unwrap().as_deref(), Some(&b"{\"name\":\"Mug\"}"[..]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.get("products:1:slug:mug").await.unwrap(), None, "gone after its TTL");

    assert!(a.lease("products:1:slug:mug:lease", Duration::from_secs(5)).await.unwrap());
    assert!(!b.lease("products:1:slug:mug:lease", Duration::from_secs(5)).await.unwrap(), "held by A");
    b.release("products:1:slug:mug:lease").await.unwrap();
    assert!(!b.lease("products:1:slug:mug:lease", Duration::from_secs(5)).await.unwrap(), "only A can release it");
    a.release("products:1:slug:mug:lease").await.unwrap();
    assert!(b.lease("products:1:slug:mug:lease", Duration::from_millis(200)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.lease("products:1:slug:mug:lease", Duration::from_secs(5)).await.unwrap(), "an unreleased lease expires");
}

#[tokio::test]
async fn announcements_reach_the_other_instances_but_not_their_sender() {
    let prefix = fresh_prefix();
    let (a, b, other_shop) =
        (tier(&redis_url(), &prefix), tier(&redis_url(), &prefix), tier(&redis_url(), &fresh_prefix()));
    let (_stop_a, stop) = tokio::sync::oneshot::channel::<()>();
    let mut a_events = a.subscribe(async move { drop(stop.await) });
    let (_stop_b, stop) = tokio::sync::oneshot::channel::<()>();
    let mut b_events = b.subscribe(async move { drop(stop.await) });
    let (_stop_o, stop) = tokio::sync::oneshot::channel::<()>();
    let mut other_events = other_shop.subscribe(async move { drop(stop.await) });
    for events in [&mut a_events, &mut b_events, &mut other_events] {
        assert_eq!(next(events).await, TierEvent::Subscribed);
    }
    wait_healthy("all three healthy", &[&a, &b, &other_shop]).await;

    a.announce(Announcement { family: Family::Catalog, stored: Some(42) }).await.unwrap();
    a.announce(Announcement { family: Family::Accounts, stored: None }).await.unwrap();
    assert_eq!(
        next(&mut b_events).await,
        TierEvent::Announced(Announcement { family: Family::Catalog, stored: Some(42) })
    );
    assert_eq!(
        next(&mut b_events).await,
        TierEvent::Announced(Announcement { family: Family::Accounts, stored: None })
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a_events.try_recv().is_err(), "its own announcements are not news to A");
    assert!(other_events.try_recv().is_err(), "another shop's prefix hears nothing");
}

#[tokio::test]
async fn redis_dying_fails_commands_fast_and_drops_the_subscription_until_it_returns() {
    let mut server = harness::RedisServer::start().await.unwrap();
    let tier = tier(&server.url(), &fresh_prefix());
    let (_stop, stop) = tokio::sync::oneshot::channel::<()>();
    let mut events = tier.subscribe(async move { drop(stop.await) });
    assert_eq!(next(&mut events).await, TierEvent::Subscribed);
    tier.put("k", b"v".to_vec(), Duration::from_secs(60)).await.unwrap();
    wait_healthy("healthy", &[&tier]).await;

    server.kill();
    assert_eq!(next(&mut events).await, TierEvent::Lost);
    assert!(tier.check().await.is_err());
    let started = std::time::Instant::now();
    assert!(tier.get("k").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the timeout: {:?}", started.elapsed());

    server.restart().await.unwrap();
    assert_eq!(next(&mut events).await, TierEvent::Subscribed, "resubscribed by itself");
    wait_healthy("healthy again", &[&tier]).await;
    assert_eq!(tier.get("k").await.unwrap(), None, "the restarted Redis is empty");
}

//! Keyed rate limiters: GCRA (via governor) for request rates, and a sliding-window counter for
//! "N events in a period" rules such as failed logins. Both take time from the injected
//! [`Clock`] and purge idle keys on demand, so memory stays bounded by the active keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;

use crate::clock::Clock;

/// "`count` per `period`", with bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u32,
    pub period: Duration,
}

impl Quota {
    pub fn new(count: u32, period: Duration) -> Self {
        Self { count: count.max(1), period: period.max(Duration::from_millis(1)) }
    }

    /// Time to earn back one unit.
    pub fn replenish_interval(&self) -> Duration {
        (self.period / self.count).max(Duration::from_nanos(1))
    }

    /// The `RateLimit-Policy` header value (draft-ietf-httpapi-ratelimit-headers): `10;w=60`.
    pub fn policy_header(&self) -> String {
        format!("{};w={}", self.count, self.period.as_secs().max(1))
    }
}

/// The answer of a limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        limit: u32,
        remaining: u32,
        /// Until the quota is whole again.
        reset: Duration,
    },
    Limited {
        limit: u32,
        /// Until one more request would be allowed.
        retry_after: Duration,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// Adapts our clock to governor's.
#[derive(Clone)]
struct GovernorClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        self.0.now()
    }
}

type Governor<K> = governor::RateLimiter<K, DashMapStateStore<K>, GovernorClock, StateInformationMiddleware>;

/// A GCRA limiter per key (client IP, user id, token id…).
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    quota: Quota,
    clock: Arc<dyn Clock>,
    limiter: Governor<K>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(quota: Quota, clock: Arc<dyn Clock>) -> Self {
        let burst = NonZeroU32::new(quota.count).unwrap_or(NonZeroU32::MIN);
        let governor_quota = governor::Quota::with_period(quota.replenish_interval())
            .unwrap_or_else(|| governor::Quota::per_second(burst))
            .allow_burst(burst);
        let limiter = governor::RateLimiter::dashmap_with_clock(governor_quota, GovernorClock(Arc::clone(&clock)))
            .with_middleware::<StateInformationMiddleware>();
        Self { quota, clock, limiter }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one unit for `key` if there is one.
    pub fn check(&self, key: &K) -> Decision {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = self.quota.count.saturating_sub(remaining);
                Decision::Allowed {
                    limit: self.quota.count,
                    remaining,
                    reset: self.quota.replenish_interval().saturating_mul(missing),
                }
            }
            Err(not_until) => {
                Decision::Limited { limit: self.quota.count, retry_after: not_until.wait_time_from(self.clock.now()) }
            }
        }
    }

    /// Forgets keys whose state is indistinguishable from a fresh one; returns the keys left.
    pub fn purge_idle(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// Counts events per key over a sliding window (the weighted two-window approximation):
/// `allowed` is false once `limit` events fall within the last `window`.
pub struct SlidingWindowCounter<K: Hash + Eq + Clone> {
    limit: u32,
    window: Duration,
    clock: Arc<dyn Clock>,
    origin: Instant,
    counts: Mutex<HashMap<K, WindowCounts>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct WindowCounts {
    /// Index of the fixed window `current` counts.
    index: u64,
    current: u32,
    previous: u32,
}

impl<K: Hash + Eq + Clone> SlidingWindowCounter<K> {
    pub fn new(limit: u32, window: Duration, clock: Arc<dyn Clock>) -> Self {
        let origin = clock.now();
        Self {
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
            clock,
            origin,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, WindowCounts>> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current window index and how far into it `now` is (0.0–1.0).
    fn position(&self) -> (u64, f64) {
        let elapsed = self.clock.now().saturating_duration_since(self.origin).as_nanos();
        let window = self.window.as_nanos().max(1);
        let index = u64::try_from(elapsed / window).unwrap_or(u64::MAX);
        (index, (elapsed % window) as f64 / window as f64)
    }

    fn roll(entry: &mut WindowCounts, index: u64) {
        if entry.index == index {
            return;
        }
        entry.previous = if entry.index + 1 == index { entry.current } else { 0 };
        entry.current = 0;
        entry.index = index;
    }

    fn estimate(entry: &WindowCounts, progress: f64) -> f64 {
        f64::from(entry.previous) * (1.0 - progress) + f64::from(entry.current)
    }

    /// Records one event for `key`; returns the estimated count in the last window, including it.
    pub fn record(&self, key: &K) -> f64 {
        let (index, progress) = self.position();
        let mut counts = self.lock();
        let entry = counts.entry(key.clone()).or_default();
        Self::roll(entry, index);
        entry.current = entry.current.saturating_add(1);
        Self::estimate(entry, progress)
    }

    /// Whether `key` has reached the limit within the last window.
    pub fn is_over(&self, key: &K) -> bool {
        let (index, progress) = self.position();
        let mut counts = self.lock();
        let Some(entry) = counts.get_mut(key) else { return false };
        Self::roll(entry, index);
        Self::estimate(entry, progress) >= f64::from(self.limit)
    }

    /// Forgets `key` (e.g. after a successful login).
    pub fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Forgets keys with no event in the last two windows; returns the keys left.
    pub fn purge_idle(&self) -> usize {
        let (index, _) = self.position();
        let mut counts = self.lock();
        counts.retain(|_, entry| entry.index + 1 >= index && (entry.current > 0 || entry.previous > 0));
        counts.shrink_to_fit();
        counts.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;

    fn limiter(count: u32, period: Duration) -> (Arc<ManualClock>, KeyedLimiter<String>) {
        let clock = Arc::new(ManualClock::default());
        let limiter = KeyedLimiter::new(Quota::new(count, period), clock.clone());
        (clock, limiter)
    }

    #[test]
    fn allows_the_burst_then_limits_with_the_wait() {
        let (clock, limiter) = limiter(10, Duration::from_secs(60));
        let key = "203.0.113.7".to_owned();
        for expected_remaining in (0..10).rev() {
            match limiter.check(&key) {
                Decision::Allowed { remaining, limit, .. } => {
                    assert_eq!((remaining, limit), (expected_remaining, 10));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(limiter.check(&key), Decision::Limited { limit: 10, retry_after: Duration::from_secs(6) });
        assert!(limiter.check(&"198.51.100.1".to_owned()).is_allowed(), "keys are independent");
        clock.advance(Duration::from_secs(6));
        assert!(limiter.check(&key).is_allowed(), "one unit earned back after 60 s / 10");
        assert!(!limiter.check(&key).is_allowed());
    }

    #[test]
    fn idle_keys_are_purged() {
        let (clock, limiter) = limiter(5, Duration::from_secs(10));
        for index in 0..1_000 {
            assert!(limiter.check(&format!("client-{index}")).is_allowed());
        }
        assert_eq!(limiter.len(), 1_000);
        clock.advance(Duration::from_secs(1));
        limiter.check(&"busy".to_owned());
        assert!(limiter.purge_idle() > 1, "recently used keys stay");
        clock.advance(Duration::from_secs(11));
        assert_eq!(limiter.purge_idle(), 0, "keys back at a full quota are forgotten");
    }

    proptest! {
        #[test]
        fn never_admits_more_than_burst_plus_rate_times_elapsed(
            count in 1u32..50,
            period_ms in 100u64..10_000,
            steps in proptest::collection::vec(0u64..500, 1..300),
        ) {
            let (clock, limiter) = limiter(count, Duration::from_millis(period_ms));
            let key = "k".to_owned();
            let interval = Quota::new(count, Duration::from_millis(period_ms)).replenish_interval();
            let mut elapsed = Duration::ZERO;
            let mut admitted = 0u64;
            for step in steps {
                clock.advance(Duration::from_millis(step));
                elapsed += Duration::from_millis(step);
                if limiter.check(&key).is_allowed() {
                    admitted += 1;
                }
                let bound = u64::from(count) + (elapsed.as_nanos() / interval.as_nanos()) as u64;
                prop_assert!(admitted <= bound, "admitted {admitted} > bound {bound} after {elapsed:?}");
            }
        }
    }

    fn counter(limit: u32, window: Duration) -> (Arc<ManualClock>, SlidingWindowCounter<&'static str>) {
        let clock = Arc::new(ManualClock::default());
        let counter = SlidingWindowCounter::new(limit, window, clock.clone());
        (clock, counter)
    }

    #[test]
    fn the_sliding_window_counts_recent_events_only() {
        let window = Duration::from_secs(900);
        let (clock, counter) = counter(5, window);
        for _ in 0..4 {
            counter.record(&"ada");
        }
        assert!(!counter.is_over(&"ada"));
        counter.record(&"ada");
        assert!(counter.is_over(&"ada"), "5 failures in 15 minutes");
        assert!(!counter.is_over(&"bob"));
        clock.advance(Duration::from_secs(900 + 450));
        assert!(!counter.is_over(&"ada"), "half of the previous window weighs 2.5 < 5");
        clock.advance(Duration::from_secs(900));
        assert!(!counter.is_over(&"ada"));
        counter.clear(&"ada");
        assert!(counter.is_empty());
    }

    #[test]
    fn sliding_window_purge_bounds_memory() {
        let (clock, counter) = counter(5, Duration::from_secs(60));
        let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
        let counter_owned: SlidingWindowCounter<String> =
            SlidingWindowCounter::new(5, Duration::from_secs(60), clock.clone());
        for key in &keys {
            counter_owned.record(key);
        }
        counter.record(&"x");
        assert_eq!(counter_owned.purge_idle(), 500);
        clock.advance(Duration::from_secs(121));
        assert_eq!(counter_owned.purge_idle(), 0);
        assert_eq!(counter.purge_idle(), 0);
    }
}

//! The upstream pool: its backends (changed at run time without locks on the request path),
//! which of them may take a request now, and passive outlier ejection with Envoy's semantics —
//! consecutive 5xx or gateway failures eject a backend for the base time × the times it has
//! been ejected, never more than `max_ejection_percent` of the pool (a governor: at least one,
//! never all), and below the panic threshold every routable backend gets traffic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use resilience::Clock;

use crate::backend::{Backend, Health, lock_outlier};
use crate::balance::{Balancer, PickContext};
use crate::config::{GatewayConfig, OutlierConfig, millis};

/// What one forwarded request's outcome says about its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Anything below 500.
    Success,
    /// A 5xx answer other than 502, 503 and 504.
    ServerError,
    /// No answer (refused, reset, timed out) or 502, 503, 504.
    GatewayFailure,
}

/// The policies of a pool that do not belong to its backends.
#[derive(Debug, Clone)]
pub struct PoolPolicy {
    pub outlier: OutlierConfig,
    pub slow_start: Duration,
    pub ewma_decay: Duration,
    pub max_in_flight_per_backend: usize,
}

impl PoolPolicy {
    pub fn from_config(config: &GatewayConfig) -> Self {
        Self {
            outlier: config.outlier.clone(),
            slow_start: millis(config.slow_start_ms),
            ewma_decay: millis(config.ewma_decay_ms),
            max_in_flight_per_backend: config.limits.max_in_flight_per_backend,
        }
    }
}

/// Why a backend cannot be added or changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("a backend named {0:?} exists")]
    Exists(String),
    #[error("no backend named {0:?}")]
    NotFound(String),
}

pub struct Pool {
    backends: ArcSwap<Vec<Arc<Backend>>>,
    balancer: Balancer,
    policy: PoolPolicy,
    clock: Arc<dyn Clock>,
    /// Taken to count the ejected and eject one more, so two failures at once cannot both pass
    /// the governor.
    ejection: Mutex<()>,
    metrics: PoolMetrics,
}

struct PoolMetrics {
    panic_routing: metrics::Counter,
    ejections_refused: metrics::Counter,
}

impl Pool {
    pub fn new(balancer: Balancer, policy: PoolPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            backends: ArcSwap::from_pointee(Vec::new()),
            balancer,
            policy,
            clock,
            ejection: Mutex::new(()),
            metrics: PoolMetrics {
                panic_routing: metrics::counter!("gateway_panic_routing_total"),
                ejections_refused: metrics::counter!("gateway_ejections_refused_total"),
            },
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn policy(&self) -> &PoolPolicy {
        &self.policy
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The backends now, in the order they were added.
    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.load_full()
    }

    pub fn find(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends.load().iter().find(|backend| backend.name() == name).cloned()
    }

    /// Adds a backend; it takes traffic once its first health check passes.
    pub fn add(&self, backend: Arc<Backend>) -> Result<(), PoolError> {
        let mut refused = None;
        self.backends.rcu(|current| {
            if current.iter().any(|existing| existing.name() == backend.name()) {
                refused = Some(PoolError::Exists(backend.name().to_owned()));
                return Arc::clone(current);
            }
            refused = None;
            let mut next = Vec::clone(current);
            next.push(Arc::clone(&backend));
            Arc::new(next)
        });
        match refused {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Removes a backend at once (drain it first to let its requests finish) and stops its
    /// health checker.
    pub fn remove(&self, name: &str) -> Result<Arc<Backend>, PoolError> {
        let mut removed = None;
        self.backends.rcu(|current| {
            removed = current.iter().find(|backend| backend.name() == name).cloned();
            Arc::new(current.iter().filter(|backend| backend.name() != name).cloned().collect::<Vec<_>>())
        });
        let backend = removed.ok_or_else(|| PoolError::NotFound(name.to_owned()))?;
        backend.retired.cancel();
        Ok(backend)
    }

    /// Removes exactly this backend, if it is still in the pool (a backend of the same name
    /// added since is left alone); says whether it did.
    pub fn remove_exact(&self, backend: &Arc<Backend>) -> bool {
        let mut removed = false;
        self.backends.rcu(|current| {
            removed = current.iter().any(|existing| Arc::ptr_eq(existing, backend));
            Arc::new(current.iter().filter(|existing| !Arc::ptr_eq(existing, backend)).cloned().collect::<Vec<_>>())
        });
        if removed {
            backend.retired.cancel();
        }
        removed
    }

    /// The backend for a request, leaving out those in `tried`; `None` if no backend can take it.
    pub fn pick(&self, key: Option<&[u8]>, tried: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let now = self.clock.now();
        let backends = self.backends.load();
        // A weight on its way to 0 (`--over`) still takes its shrinking share until it gets there.
        let members: Vec<Arc<Backend>> = backends
            .iter()
            .filter(|backend| !backend.is_draining() && backend.effective_weight(now) > 0.0)
            .cloned()
            .collect();
        if members.is_empty() {
            return None;
        }
        let mut candidates: Vec<Arc<Backend>> = members
            .iter()
            .filter(|backend| backend.health() == Health::Healthy && !backend.is_ejected(now))
            .cloned()
            .collect();
        let panic_threshold = self.policy.outlier.panic_threshold_percent as usize;
        if candidates.len() * 100 < panic_threshold * members.len() {
            // Too few healthy to carry the load: spread it over all that have been checked
            // rather than crush the few (a backend never checked yet still gets nothing).
            self.metrics.panic_routing.increment(1);
            candidates = members.iter().filter(|backend| backend.health() != Health::Unchecked).cloned().collect();
        }
        let limit = self.policy.max_in_flight_per_backend;
        candidates
            .retain(|backend| backend.in_flight() < limit && !tried.iter().any(|tried| Arc::ptr_eq(tried, backend)));
        let context = PickContext { now, key, members: &members, ewma_decay: self.policy.ewma_decay };
        let index = self.balancer.pick(&candidates, context)?;
        candidates.into_iter().nth(index)
    }

    /// Feeds one request's outcome to outlier detection; returns whether it ejected the backend.
    pub fn record(&self, backend: &Backend, outcome: Outcome) -> bool {
        let policy = &self.policy.outlier;
        let over = {
            let mut state = lock_outlier(backend);
            match outcome {
                Outcome::Success => {
                    state.consecutive_5xx = 0;
                    state.consecutive_gateway_failures = 0;
                    return false;
                }
                Outcome::ServerError => {
                    state.consecutive_5xx = state.consecutive_5xx.saturating_add(1);
                    state.consecutive_gateway_failures = 0;
                }
                Outcome::GatewayFailure => {
                    state.consecutive_5xx = state.consecutive_5xx.saturating_add(1);
                    state.consecutive_gateway_failures = state.consecutive_gateway_failures.saturating_add(1);
                }
            }
            let over_5xx = policy.consecutive_5xx > 0 && state.consecutive_5xx >= policy.consecutive_5xx;
            let over_gateway = policy.consecutive_gateway_failures > 0
                && state.consecutive_gateway_failures >= policy.consecutive_gateway_failures;
            if over_gateway {
                Some("consecutive_gateway_failures")
            } else if over_5xx {
                Some("consecutive_5xx")
            } else {
                None
            }
        };
        match over {
            Some(reason) => self.eject(backend, reason),
            None => false,
        }
    }

    /// Ejects `backend` unless the governor says too many are out already.
    fn eject(&self, backend: &Backend, reason: &'static str) -> bool {
        let _one_at_a_time = self.ejection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = self.clock.now();
        if backend.is_ejected(now) {
            return false;
        }
        let backends = self.backends.load();
        let pool_size = backends.len();
        let ejected = backends.iter().filter(|backend| backend.is_ejected(now)).count();
        // Backends that could take a request if this one left: never eject the last of them,
        // whatever the percentage says (the others may be draining, unhealthy or weighed out).
        let others_available = backends
            .iter()
            .filter(|other| !std::ptr::eq(Arc::as_ptr(other), backend))
            .filter(|other| {
                !other.is_draining()
                    && other.effective_weight(now) > 0.0
                    && other.health() == Health::Healthy
                    && !other.is_ejected(now)
            })
            .count();
        if ejected >= max_ejected(pool_size, self.policy.outlier.max_ejection_percent) || others_available == 0 {
            self.metrics.ejections_refused.increment(1);
            tracing::warn!(
                backend = backend.name(),
                reason,
                ejected,
                others_available,
                pool_size,
                "ejection refused: too many out already"
            );
            return false;
        }
        let policy = &self.policy.outlier;
        let mut state = lock_outlier(backend);
        // The multiplier decays: one step for each base ejection time spent back in the pool.
        if let Some(until) = state.ejected_until {
            let quiet = now.saturating_duration_since(until);
            let steps = (quiet.as_millis() / u128::from(policy.base_ejection_ms.max(1))) as u32;
            state.times_ejected = state.times_ejected.saturating_sub(steps);
        }
        state.times_ejected = state.times_ejected.saturating_add(1);
        let length = millis(policy.base_ejection_ms.saturating_mul(u64::from(state.times_ejected)))
            .min(millis(policy.max_ejection_ms));
        state.ejected_until = Some(now + length);
        state.consecutive_5xx = 0;
        state.consecutive_gateway_failures = 0;
        let times = state.times_ejected;
        drop(state);
        backend.metrics.ejected.set(1.0);
        metrics::counter!("gateway_ejections_total", "backend" => backend.name().to_owned(), "reason" => reason)
            .increment(1);
        tracing::warn!(backend = backend.name(), reason, times, seconds = length.as_secs_f64(), "backend ejected");
        true
    }

    /// Clears the ejected gauge of backends whose ejection has ended (called by the health loop).
    pub fn refresh_ejections(&self) {
        let now = self.clock.now();
        for backend in self.backends.load().iter() {
            if backend.ejected_until().is_some_and(|until| until <= now) && !backend.is_ejected(now) {
                backend.metrics.ejected.set(0.0);
            }
        }
    }
}

/// How many of `pool_size` backends may be ejected at once: the percentage, at least one, and
/// never all (a pool of one is never ejected).
pub fn max_ejected(pool_size: usize, percent: u32) -> usize {
    if pool_size <= 1 {
        return 0;
    }
    (pool_size * percent as usize / 100).max(1).min(pool_size - 1)
}

#[cfg(test)]
mod tests {
    use resilience::ManualClock;

    use super::*;
    use crate::balance::Algorithm;

    fn pool(clock: &Arc<ManualClock>, outlier: OutlierConfig, count: usize) -> Pool {
        let policy = PoolPolicy {
            outlier,
            slow_start: Duration::ZERO,
            ewma_decay: Duration::from_secs(10),
            max_in_flight_per_backend: 100,
        };
        let pool = Pool::new(Balancer::new(Algorithm::RoundRobin), policy, Arc::clone(clock) as Arc<dyn Clock>);
        for index in 0..count {
            let backend = Backend::new(&format!("b{index}"), "127.0.0.1:1".parse().unwrap(), 1, clock.now());
            backend.record_check(true, 1, 1, Duration::ZERO, clock.now());
            pool.add(Arc::new(backend)).unwrap();
        }
        pool
    }

    fn outlier() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_gateway_failures: 2,
            base_ejection_ms: 10_000,
            max_ejection_ms: 25_000,
            max_ejection_percent: 50,
            panic_threshold_percent: 0,
        }
    }

    fn names_picked(pool: &Pool, rounds: usize) -> std::collections::BTreeSet<String> {
        (0..rounds).filter_map(|_| pool.pick(None, &[])).map(|backend| backend.name().to_owned()).collect()
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 3);
        let b0 = pool.find("b0").unwrap();
        assert!(!pool.record(&b0, Outcome::ServerError));
        assert!(!pool.record(&b0, Outcome::ServerError));
        assert!(!pool.record(&b0, Outcome::Success));
        assert!(!pool.record(&b0, Outcome::ServerError));
        assert!(!pool.record(&b0, Outcome::ServerError));
        assert!(pool.record(&b0, Outcome::ServerError), "the third in a row ejects");
        assert_eq!(names_picked(&pool, 30), ["b1", "b2"].map(String::from).into());
    }

    #[test]
    fn gateway_failures_have_their_own_lower_threshold() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 3);
        let b1 = pool.find("b1").unwrap();
        assert!(!pool.record(&b1, Outcome::GatewayFailure));
        assert!(pool.record(&b1, Outcome::GatewayFailure));
    }

    #[test]
    fn ejection_lasts_base_times_count_capped_and_the_count_decays() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 3);
        let b0 = pool.find("b0").unwrap();
        let eject = || {
            pool.record(&b0, Outcome::GatewayFailure);
            pool.record(&b0, Outcome::GatewayFailure)
        };
        assert!(eject());
        clock.advance(Duration::from_millis(9_999));
        assert!(b0.is_ejected(clock.now()));
        clock.advance(Duration::from_millis(1));
        assert!(!b0.is_ejected(clock.now()), "back after 10 s");
        assert!(eject());
        clock.advance(Duration::from_millis(19_999));
        assert!(b0.is_ejected(clock.now()), "second ejection: 20 s");
        clock.advance(Duration::from_millis(1));
        assert!(eject());
        assert_eq!(b0.times_ejected(), 3);
        clock.advance(Duration::from_millis(24_999));
        assert!(b0.is_ejected(clock.now()), "third: 30 s capped at 25 s");
        clock.advance(Duration::from_millis(1));
        assert!(!b0.is_ejected(clock.now()));
        // Thirty quiet seconds (three base times) bring the multiplier back down to one.
        clock.advance(Duration::from_secs(30));
        assert!(eject());
        assert_eq!(b0.times_ejected(), 1);
    }

    #[test]
    fn the_governor_never_ejects_more_than_the_percentage_nor_the_last_backend() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 4);
        let all = pool.backends();
        let ejected: Vec<bool> = all
            .iter()
            .map(|backend| {
                pool.record(backend, Outcome::GatewayFailure);
                pool.record(backend, Outcome::GatewayFailure)
            })
            .collect();
        assert_eq!(ejected, [true, true, false, false], "50% of four");
        assert_eq!(max_ejected(1, 100), 0);
        assert_eq!(max_ejected(2, 100), 1);
        assert_eq!(max_ejected(3, 10), 1, "at least one");
        assert_eq!(max_ejected(10, 30), 3);
    }

    #[test]
    fn the_last_backend_able_to_take_requests_is_never_ejected() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, OutlierConfig { max_ejection_percent: 100, ..outlier() }, 3);
        pool.find("b0").unwrap().set_draining(true);
        pool.find("b1").unwrap().record_check(false, 1, 1, Duration::ZERO, clock.now());
        let b2 = pool.find("b2").unwrap();
        pool.record(&b2, Outcome::GatewayFailure);
        assert!(!pool.record(&b2, Outcome::GatewayFailure), "b2 is the only one left to serve");
        assert!(!b2.is_ejected(clock.now()));
    }

    #[test]
    fn a_weight_shifting_to_zero_keeps_a_shrinking_share_until_it_gets_there() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 2);
        pool.find("b0").unwrap().shift_weight(0, Duration::from_secs(10), clock.now());
        clock.advance(Duration::from_secs(5));
        assert_eq!(names_picked(&pool, 30).len(), 2, "half way: still in the pool");
        clock.advance(Duration::from_secs(5));
        assert_eq!(names_picked(&pool, 30), ["b1"].map(String::from).into());
    }

    #[test]
    fn panic_routing_never_sends_to_a_backend_not_checked_yet() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, OutlierConfig { panic_threshold_percent: 100, ..outlier() }, 1);
        pool.find("b0").unwrap().record_check(false, 1, 1, Duration::ZERO, clock.now());
        pool.add(Arc::new(Backend::new("new", "127.0.0.1:1".parse().unwrap(), 1, clock.now()))).unwrap();
        assert_eq!(names_picked(&pool, 10), ["b0"].map(String::from).into());
    }

    #[test]
    fn below_the_panic_threshold_every_routable_backend_gets_traffic() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, OutlierConfig { panic_threshold_percent: 50, ..outlier() }, 3);
        let now = clock.now();
        for name in ["b0", "b1"] {
            let backend = pool.find(name).unwrap();
            backend.record_check(false, 1, 1, Duration::ZERO, now);
        }
        // One of three healthy (33% < 50%): panic routing spreads over all three.
        assert_eq!(names_picked(&pool, 30).len(), 3);
        pool.find("b0").unwrap().record_check(true, 1, 1, Duration::ZERO, now);
        // Two of three (67%): only the healthy ones.
        assert_eq!(names_picked(&pool, 30), ["b0", "b2"].map(String::from).into());
    }

    #[test]
    fn draining_unchecked_zero_weight_and_tried_backends_are_skipped() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 4);
        pool.find("b0").unwrap().set_draining(true);
        pool.find("b1").unwrap().shift_weight(0, Duration::ZERO, clock.now());
        pool.add(Arc::new(Backend::new("new", "127.0.0.1:1".parse().unwrap(), 1, clock.now()))).unwrap();
        assert_eq!(names_picked(&pool, 30), ["b2", "b3"].map(String::from).into());
        let b2 = pool.find("b2").unwrap();
        assert!((0..30).all(|_| pool.pick(None, std::slice::from_ref(&b2)).unwrap().name() == "b3"));
    }

    #[test]
    fn names_are_unique_and_removal_stops_the_backend() {
        let clock = Arc::new(ManualClock::default());
        let pool = pool(&clock, outlier(), 2);
        let again = Arc::new(Backend::new("b0", "127.0.0.1:2".parse().unwrap(), 1, clock.now()));
        assert_eq!(pool.add(again), Err(PoolError::Exists("b0".into())));
        let removed = pool.remove("b0").unwrap();
        assert!(removed.retired.is_cancelled());
        assert_eq!(pool.remove("b0").unwrap_err(), PoolError::NotFound("b0".into()));
        assert_eq!(pool.backends().len(), 1);
    }
}

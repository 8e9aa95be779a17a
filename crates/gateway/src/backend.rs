//! One backend as the gateway sees it: its address and weight (with slow start and gradual
//! shifts), requests in flight, active-health state, outlier-ejection state and peak-EWMA
//! latency — and the metric handles of each, made once rather than looked up per request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio_util::sync::CancellationToken;

/// A backend's active-health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: no traffic until a first check passes.
    Unchecked,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A weight moving linearly from `from` to `to` over `over`, starting at `started`.
#[derive(Debug, Clone, Copy)]
struct WeightPlan {
    from: f64,
    to: u32,
    started: Instant,
    over: Duration,
}

impl WeightPlan {
    fn at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.started);
        if self.over.is_zero() || elapsed >= self.over {
            return f64::from(self.to);
        }
        let done = elapsed.as_secs_f64() / self.over.as_secs_f64();
        self.from + (f64::from(self.to) - self.from) * done
    }
}

/// Health-check counters.
#[derive(Debug)]
struct HealthState {
    health: Health,
    passes: u32,
    failures: u32,
}

/// Outlier-ejection counters (see `pool::Pool::record`).
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failures: u32,
    pub ejected_until: Option<Instant>,
    pub times_ejected: u32,
}

/// Peak-EWMA latency (Finagle, linkerd): a slower sample is taken at once, a faster one is
/// blended in; the estimate decays towards zero while the backend is idle.
#[derive(Debug)]
struct PeakEwma {
    nanos: f64,
    stamp: Instant,
}

/// A latency estimate a backend starts with: small, so a new backend is tried soon.
const INITIAL_RTT: Duration = Duration::from_millis(1);

/// One backend. Shared by the pool, the proxy and the health checker.
pub struct Backend {
    name: Arc<str>,
    authority: Authority,
    /// `https` for a backend reached over TLS, else `http`.
    scheme: &'static str,
    weight: Mutex<WeightPlan>,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    health: Mutex<HealthState>,
    pub(crate) outlier: Mutex<OutlierState>,
    latency: Mutex<PeakEwma>,
    /// Stops this backend's health checker when it leaves the pool.
    pub(crate) retired: CancellationToken,
    pub(crate) metrics: BackendMetrics,
}

/// Metric handles of one backend.
pub(crate) struct BackendMetrics {
    pub responses: [metrics::Counter; 5],
    pub failures: metrics::Counter,
    pub duration: metrics::Histogram,
    pub in_flight: metrics::Gauge,
    pub healthy: metrics::Gauge,
    pub ejected: metrics::Gauge,
}

impl BackendMetrics {
    fn new(name: &Arc<str>) -> Self {
        let backend = name.to_string();
        let class = |class: &'static str| metrics::counter!("gateway_responses_total", "backend" => backend.clone(), "class" => class);
        Self {
            responses: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            failures: metrics::counter!("gateway_upstream_failures_total", "backend" => backend.clone()),
            duration: metrics::histogram!("gateway_upstream_duration_seconds", "backend" => backend.clone()),
            in_flight: metrics::gauge!("gateway_backend_in_flight", "backend" => backend.clone()),
            healthy: metrics::gauge!("gateway_backend_healthy", "backend" => backend.clone()),
            ejected: metrics::gauge!("gateway_backend_ejected", "backend" => backend),
        }
    }
}

impl Backend {
    /// A backend that takes no traffic until its first health check passes; then it ramps up
    /// to `weight` over `slow_start`.
    pub fn new(name: &str, authority: Authority, weight: u32, now: Instant) -> Self {
        Self::with_scheme(name, authority, weight, false, now)
    }

    /// Like [`Backend::new`], over TLS when `tls`.
    pub fn with_scheme(name: &str, authority: Authority, weight: u32, tls: bool, now: Instant) -> Self {
        let name: Arc<str> = Arc::from(name);
        let metrics = BackendMetrics::new(&name);
        Self {
            weight: Mutex::new(WeightPlan { from: f64::from(weight), to: weight, started: now, over: Duration::ZERO }),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            health: Mutex::new(HealthState { health: Health::Unchecked, passes: 0, failures: 0 }),
            outlier: Mutex::new(OutlierState::default()),
            latency: Mutex::new(PeakEwma { nanos: INITIAL_RTT.as_nanos() as f64, stamp: now }),
            retired: CancellationToken::new(),
            metrics,
            name,
            authority,
            scheme: Self::scheme_for(tls),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The scheme a backend with (or without) TLS is reached by.
    pub fn scheme_for(tls: bool) -> &'static str {
        if tls { "https" } else { "http" }
    }

    /// `https` when reached over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The weight it is heading for.
    pub fn target_weight(&self) -> u32 {
        lock(&self.weight).to
    }

    /// The weight now, part-way through a slow start or a gradual shift.
    pub fn effective_weight(&self, now: Instant) -> f64 {
        lock(&self.weight).at(now)
    }

    /// Moves the weight to `to` linearly over `over` from wherever it is now.
    pub fn shift_weight(&self, to: u32, over: Duration, now: Instant) {
        let mut plan = lock(&self.weight);
        let from = plan.at(now);
        *plan = WeightPlan { from, to, started: now, over };
    }

    fn slow_start(&self, over: Duration, now: Instant) {
        let mut plan = lock(&self.weight);
        let to = plan.to;
        *plan = WeightPlan { from: f64::from(to) / 10.0, to, started: now, over };
    }

    /// Counts one answer by its status class.
    pub fn count_response(&self, status: http::StatusCode) {
        self.metrics.responses[usize::from(status.as_u16() / 100).clamp(1, 5) - 1].increment(1);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request until the guard drops (with the response body, not its headers).
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.increment(1.0);
        InFlight { backend: Arc::clone(self) }
    }

    /// Waits (polling) until no request is in flight, `wait` runs out, `stop` is cancelled or
    /// `keep_waiting` says no more; says whether it is idle.
    pub async fn wait_until_idle(
        &self,
        wait: Duration,
        stop: &CancellationToken,
        keep_waiting: impl Fn() -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline && !stop.is_cancelled() && keep_waiting() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight() == 0
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn health(&self) -> Health {
        lock(&self.health).health
    }

    /// Records one health-check result; returns the new verdict if it changed. A backend that
    /// becomes healthy slow-starts.
    pub fn record_check(
        &self,
        passed: bool,
        rise: u32,
        fall: u32,
        slow_start: Duration,
        now: Instant,
    ) -> Option<Health> {
        let mut state = lock(&self.health);
        if passed {
            state.passes = state.passes.saturating_add(1);
            state.failures = 0;
        } else {
            state.failures = state.failures.saturating_add(1);
            state.passes = 0;
        }
        let next = match state.health {
            Health::Unchecked => Some(if passed { Health::Healthy } else { Health::Unhealthy }),
            Health::Healthy if state.failures >= fall => Some(Health::Unhealthy),
            Health::Unhealthy if state.passes >= rise => Some(Health::Healthy),
            _ => None,
        };
        if let Some(health) = next {
            state.health = health;
            drop(state);
            self.metrics.healthy.set(if health == Health::Healthy { 1.0 } else { 0.0 });
            if health == Health::Healthy {
                self.slow_start(slow_start, now);
            }
        }
        next
    }

    /// Whether outlier detection has it ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.outlier).ejected_until.is_some_and(|until| until > now)
    }

    pub fn ejected_until(&self) -> Option<Instant> {
        lock(&self.outlier).ejected_until
    }

    pub fn times_ejected(&self) -> u32 {
        lock(&self.outlier).times_ejected
    }

    /// The latency estimate at `now`, decayed since the last sample.
    pub fn latency(&self, now: Instant, decay: Duration) -> f64 {
        let estimate = lock(&self.latency);
        decayed(estimate.nanos, now.saturating_duration_since(estimate.stamp), decay)
    }

    /// Takes one latency sample: at once if slower than the estimate, blended in if faster.
    pub fn observe_latency(&self, sample: Duration, now: Instant, decay: Duration) {
        let mut estimate = lock(&self.latency);
        let sample = sample.as_nanos() as f64;
        let elapsed = now.saturating_duration_since(estimate.stamp);
        let current = decayed(estimate.nanos, elapsed, decay);
        estimate.nanos = if sample > current {
            sample
        } else {
            let keep = (-elapsed.as_secs_f64() / decay.as_secs_f64().max(f64::MIN_POSITIVE)).exp();
            current * keep + sample * (1.0 - keep)
        };
        estimate.stamp = now;
    }

    /// Peak-EWMA load: latency × (requests in flight + 1) ÷ weight. Lower is better.
    pub fn load(&self, now: Instant, decay: Duration) -> f64 {
        let weight = self.effective_weight(now).max(0.01);
        self.latency(now, decay) * (self.in_flight() as f64 + 1.0) / weight
    }
}

fn decayed(nanos: f64, elapsed: Duration, decay: Duration) -> f64 {
    nanos * (-elapsed.as_secs_f64() / decay.as_secs_f64().max(f64::MIN_POSITIVE)).exp()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn lock_outlier(backend: &Backend) -> MutexGuard<'_, OutlierState> {
    lock(&backend.outlier)
}

/// A request in flight to a backend; dropping it ends the count.
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.backend.metrics.in_flight.decrement(1.0);
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).field("authority", &self.authority).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(now: Instant) -> Backend {
        Backend::new("a", "127.0.0.1:1".parse().unwrap(), 10, now)
    }

    #[test]
    fn health_needs_rise_passes_to_return_and_fall_failures_to_leave() {
        let now = Instant::now();
        let backend = backend(now);
        assert_eq!(backend.health(), Health::Unchecked);
        assert_eq!(backend.record_check(true, 2, 3, Duration::ZERO, now), Some(Health::Healthy));
        assert_eq!(backend.record_check(false, 2, 3, Duration::ZERO, now), None);
        assert_eq!(backend.record_check(false, 2, 3, Duration::ZERO, now), None);
        assert_eq!(backend.record_check(false, 2, 3, Duration::ZERO, now), Some(Health::Unhealthy));
        assert_eq!(backend.record_check(true, 2, 3, Duration::ZERO, now), None);
        assert_eq!(backend.record_check(true, 2, 3, Duration::ZERO, now), Some(Health::Healthy));
    }

    #[test]
    fn a_backend_that_becomes_healthy_slow_starts_from_a_tenth_of_its_weight() {
        let now = Instant::now();
        let backend = backend(now);
        backend.record_check(true, 1, 1, Duration::from_secs(10), now);
        assert!((backend.effective_weight(now) - 1.0).abs() < 1e-9);
        assert!((backend.effective_weight(now + Duration::from_secs(5)) - 5.5).abs() < 1e-9);
        assert!((backend.effective_weight(now + Duration::from_secs(11)) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_weight_shift_moves_linearly_from_where_it_is() {
        let now = Instant::now();
        let backend = backend(now);
        backend.shift_weight(0, Duration::from_secs(4), now);
        assert!((backend.effective_weight(now + Duration::from_secs(1)) - 7.5).abs() < 1e-9);
        assert!(backend.effective_weight(now + Duration::from_secs(4)).abs() < 1e-9);
        assert_eq!(backend.target_weight(), 0);
    }

    #[test]
    fn peak_ewma_takes_a_slow_sample_at_once_and_forgets_it_over_time() {
        let now = Instant::now();
        let decay = Duration::from_secs(10);
        let backend = backend(now);
        backend.observe_latency(Duration::from_millis(500), now, decay);
        assert!((backend.latency(now, decay) - 5e8).abs() < 1.0);
        backend.observe_latency(Duration::from_millis(1), now, decay);
        assert!(backend.latency(now, decay) > 4.9e8, "a fast sample at the same instant barely moves it");
        let later = now + Duration::from_secs(30);
        assert!(backend.latency(later, decay) < 5e8 * 0.06, "it decays while idle");
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let backend = Arc::new(backend(Instant::now()));
        let first = backend.start_request();
        let second = backend.start_request();
        assert_eq!(backend.in_flight(), 2);
        drop(first);
        drop(second);
        assert_eq!(backend.in_flight(), 0);
    }
}

//! Circuit breaker (Release It! ch. 5), to resilience4j's standard: a count- or time-based
//! sliding window, failure-rate and slow-call-rate thresholds over a minimum number of calls,
//! a fixed or exponential wait while open, a limited number of half-open probes, forced-open
//! and disabled states, and manual reset. Every state change is logged (opening at ERROR) and
//! exported as metrics (`circuit_breaker_state`, `circuit_breaker_transitions_total`,
//! `circuit_breaker_calls_total`).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// The window over which failure and slow-call rates are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls.
    Count(u32),
    /// The calls of the last period (kept in ten buckets).
    Time(Duration),
}

/// How long the breaker stays open before letting probes through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenWait {
    Fixed(Duration),
    /// `initial × multiplier^(n-1)` for the n-th consecutive opening, capped at `max`.
    Exponential {
        initial: Duration,
        multiplier: f64,
        max: Duration,
    },
}

impl OpenWait {
    fn for_opening(&self, consecutive: u32) -> Duration {
        match *self {
            Self::Fixed(wait) => wait,
            Self::Exponential { initial, multiplier, max } => {
                let exponent = i32::try_from(consecutive.saturating_sub(1)).unwrap_or(i32::MAX);
                let factor = multiplier.max(1.0).powi(exponent);
                Duration::try_from_secs_f64(initial.as_secs_f64() * factor).unwrap_or(max).min(max)
            }
        }
    }
}

/// Settings of one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfig {
    /// The dependency's name, in logs and metric labels.
    pub name: String,
    pub window: SlidingWindow,
    /// No decision is taken on fewer calls than this.
    pub minimum_calls: u32,
    /// Percentage of failed calls (0–100) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Percentage of slow calls (0–100) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow.
    pub slow_call_duration: Duration,
    pub open_wait: OpenWait,
    /// Probe calls let through while half-open; their outcome closes or reopens the breaker.
    pub half_open_calls: u32,
}

impl CircuitBreakerConfig {
    /// Sensible defaults for an HTTP dependency named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            window: SlidingWindow::Count(20),
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(5),
            open_wait: OpenWait::Exponential {
                initial: Duration::from_secs(5),
                multiplier: 2.0,
                max: Duration::from_secs(300),
            },
            half_open_calls: 3,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
    /// Opened by an operator; only a reset closes it.
    ForcedOpen,
    /// Lets everything through and records nothing.
    Disabled,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
        }
    }

    /// The value of the `circuit_breaker_state` gauge.
    pub fn metric_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
            Self::ForcedOpen => 3.0,
            Self::Disabled => 4.0,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended, as the caller's classifier judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    /// Counts against the dependency (timeouts, 5xx, connection errors).
    Failure,
    /// Says nothing about the dependency's health (e.g. a 4xx caused by our own request).
    Ignored,
}

/// A call refused because the breaker is open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {name} is {state}; calls are refused")]
pub struct Rejected {
    pub name: String,
    pub state: BreakerState,
    /// Time until the next probe is let through; `None` while forced open.
    pub retry_after: Option<Duration>,
}

/// A snapshot for status pages.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    pub calls_in_window: u32,
    pub failure_rate: Option<f64>,
    pub slow_call_rate: Option<f64>,
    /// While open: time until the next probe.
    pub retry_after: Option<Duration>,
}

/// A circuit breaker. Share it with `Arc`; all methods take `&self`.
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BreakerState,
    /// Bumped at every transition; results of calls admitted under an older generation are dropped.
    generation: u64,
    window: Window,
    open_until: Option<Instant>,
    consecutive_openings: u32,
    half_open: HalfOpen,
}

#[derive(Default)]
struct HalfOpen {
    admitted: u32,
    counts: Counts,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Counts {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failure);
        self.slow += u32::from(slow);
    }

    fn remove(&mut self, failure: bool, slow: bool) {
        self.calls -= 1;
        self.failures -= u32::from(failure);
        self.slow -= u32::from(slow);
    }

    fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.failures) * 100.0 / f64::from(self.calls))
    }

    fn slow_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.slow) * 100.0 / f64::from(self.calls))
    }
}

/// The sliding window: either the last N outcomes, or ten time buckets.
enum Window {
    Count { size: usize, outcomes: VecDeque<(bool, bool)>, counts: Counts },
    Time { bucket: Duration, origin: Instant, buckets: Box<[(u64, Counts); 10]> },
}

impl Window {
    fn new(kind: SlidingWindow, origin: Instant) -> Self {
        match kind {
            SlidingWindow::Count(size) => {
                let size = size.max(1) as usize;
                Self::Count { size, outcomes: VecDeque::with_capacity(size), counts: Counts::default() }
            }
            SlidingWindow::Time(period) => Self::Time {
                bucket: (period / 10).max(Duration::from_millis(1)),
                origin,
                buckets: Box::new([(0, Counts::default()); 10]),
            },
        }
    }

    fn record(&mut self, now: Instant, failure: bool, slow: bool) {
        match self {
            Self::Count { size, outcomes, counts } => {
                if outcomes.len() == *size
                    && let Some((old_failure, old_slow)) = outcomes.pop_front()
                {
                    counts.remove(old_failure, old_slow);
                }
                outcomes.push_back((failure, slow));
                counts.add(failure, slow);
            }
            Self::Time { bucket, origin, buckets } => {
                let tick = tick_of(now, *origin, *bucket);
                let slot = &mut buckets[(tick % 10) as usize];
                if slot.0 != tick {
                    *slot = (tick, Counts::default());
                }
                slot.1.add(failure, slow);
            }
        }
    }

    fn counts(&self, now: Instant) -> Counts {
        match self {
            Self::Count { counts, .. } => *counts,
            Self::Time { bucket, origin, buckets } => {
                let tick = tick_of(now, *origin, *bucket);
                let oldest = tick.saturating_sub(9);
                buckets.iter().filter(|(at, _)| *at >= oldest && *at <= tick).fold(
                    Counts::default(),
                    |mut sum, (_, c)| {
                        sum.calls += c.calls;
                        sum.failures += c.failures;
                        sum.slow += c.slow;
                        sum
                    },
                )
            }
        }
    }
}

fn tick_of(now: Instant, origin: Instant, bucket: Duration) -> u64 {
    // Bucket 0 is reserved for "never written", so ticks start at 1.
    let elapsed = now.saturating_duration_since(origin).as_nanos();
    u64::try_from(elapsed / bucket.as_nanos().max(1)).unwrap_or(u64::MAX - 1) + 1
}

impl CircuitBreaker {
    pub fn new(config: CircuitBreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let inner = Inner {
            state: BreakerState::Closed,
            generation: 0,
            window: Window::new(config.window, now),
            open_until: None,
            consecutive_openings: 0,
            half_open: HalfOpen::default(),
        };
        metrics::gauge!("circuit_breaker_state", "name" => config.name.clone())
            .set(BreakerState::Closed.metric_value());
        Self { config, clock, inner: Mutex::new(inner) }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks to make a call. The permit must be given the call's outcome with
    /// [`Permit::record`]; dropping it unrecorded releases a half-open probe slot without a verdict.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let (generation, started) = self.admit()?;
        Ok(Permit { breaker: self, generation, started, done: false })
    }

    /// Admits a call or refuses it; returns the generation and start time to record against.
    fn admit(&self) -> Result<(u64, Instant), Rejected> {
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Disabled => {}
            BreakerState::Closed => {}
            BreakerState::ForcedOpen => return Err(self.rejected(&inner, now)),
            BreakerState::Open => {
                if inner.open_until.is_some_and(|until| now < until) {
                    return Err(self.rejected(&inner, now));
                }
                self.transition(&mut inner, BreakerState::HalfOpen, now);
                inner.half_open.admitted = 1;
            }
            BreakerState::HalfOpen => {
                if inner.half_open.admitted >= self.config.half_open_calls.max(1) {
                    return Err(self.rejected(&inner, now));
                }
                inner.half_open.admitted += 1;
            }
        }
        Ok((inner.generation, now))
    }

    fn rejected(&self, inner: &Inner, now: Instant) -> Rejected {
        metrics::counter!("circuit_breaker_calls_total", "name" => self.config.name.clone(), "outcome" => "rejected")
            .increment(1);
        let retry_after = match inner.state {
            BreakerState::ForcedOpen => None,
            // Half-open with every probe slot taken: ask again once the probes are likely done.
            BreakerState::HalfOpen => Some(self.config.slow_call_duration.min(Duration::from_secs(1))),
            _ => Some(inner.open_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now))),
        };
        Rejected { name: self.config.name.clone(), state: inner.state, retry_after }
    }

    fn record(&self, generation: u64, started: Instant, outcome: Option<CallOutcome>) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let label = match outcome {
            Some(CallOutcome::Success) => "success",
            Some(CallOutcome::Failure) => "failure",
            Some(CallOutcome::Ignored) | None => "ignored",
        };
        metrics::counter!("circuit_breaker_calls_total", "name" => self.config.name.clone(), "outcome" => label)
            .increment(1);
        let failure = match outcome {
            Some(CallOutcome::Failure) => true,
            Some(CallOutcome::Success) => false,
            Some(CallOutcome::Ignored) | None => {
                if inner.state == BreakerState::HalfOpen {
                    // The probe said nothing: free its slot for another.
                    inner.half_open.admitted = inner.half_open.admitted.saturating_sub(1);
                }
                return;
            }
        };
        let slow = now.saturating_duration_since(started) >= self.config.slow_call_duration;
        match inner.state {
            BreakerState::Closed => {
                inner.window.record(now, failure, slow);
                let counts = inner.window.counts(now);
                if counts.calls >= self.config.minimum_calls.max(1) && self.trips(counts) {
                    self.open(&mut inner, now);
                }
            }
            BreakerState::HalfOpen => {
                inner.half_open.counts.add(failure, slow);
                let counts = inner.half_open.counts;
                if counts.calls >= self.config.half_open_calls.max(1) {
                    if self.trips(counts) {
                        self.open(&mut inner, now);
                    } else {
                        inner.consecutive_openings = 0;
                        self.transition(&mut inner, BreakerState::Closed, now);
                    }
                }
            }
            BreakerState::Open | BreakerState::ForcedOpen | BreakerState::Disabled => {}
        }
    }

    fn trips(&self, counts: Counts) -> bool {
        counts.failure_rate().is_some_and(|rate| rate >= self.config.failure_rate_threshold)
            || counts.slow_rate().is_some_and(|rate| rate >= self.config.slow_call_rate_threshold)
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.consecutive_openings = inner.consecutive_openings.saturating_add(1);
        let wait = self.config.open_wait.for_opening(inner.consecutive_openings);
        inner.open_until = Some(now + wait);
        self.transition(inner, BreakerState::Open, now);
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        let from = inner.state;
        let counts = match from {
            BreakerState::HalfOpen => inner.half_open.counts,
            _ => inner.window.counts(now),
        };
        inner.state = to;
        inner.generation += 1;
        inner.half_open = HalfOpen::default();
        if matches!(to, BreakerState::Closed | BreakerState::Disabled) {
            inner.window = Window::new(self.config.window, now);
            inner.open_until = None;
        }
        let name = self.config.name.as_str();
        let failure_rate = counts.failure_rate().unwrap_or(0.0);
        let slow_rate = counts.slow_rate().unwrap_or(0.0);
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => tracing::error!(
                breaker = name, from = %from, to = %to, failureRate = failure_rate, slowCallRate = slow_rate,
                calls = counts.calls, waitMs = inner.open_until.map(|u| u.saturating_duration_since(now).as_millis() as u64),
                "circuit breaker opened"
            ),
            _ => tracing::warn!(breaker = name, from = %from, to = %to, "circuit breaker changed state"),
        }
        metrics::gauge!("circuit_breaker_state", "name" => name.to_owned()).set(to.metric_value());
        metrics::counter!("circuit_breaker_transitions_total", "name" => name.to_owned(), "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
    }

    /// The current state (an open breaker whose wait is over still reads open until a call arrives).
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now();
        let inner = self.lock();
        let counts = inner.window.counts(now);
        BreakerSnapshot {
            name: self.config.name.clone(),
            state: inner.state,
            calls_in_window: counts.calls,
            failure_rate: counts.failure_rate(),
            slow_call_rate: counts.slow_rate(),
            retry_after: match inner.state {
                BreakerState::Open => inner.open_until.map(|until| until.saturating_duration_since(now)),
                _ => None,
            },
        }
    }

    /// Back to closed with an empty window (an operator's manual reset).
    pub fn reset(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.consecutive_openings = 0;
        self.transition(&mut inner, BreakerState::Closed, now);
    }

    /// Refuses every call until [`CircuitBreaker::reset`].
    pub fn force_open(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.open_until = None;
        self.transition(&mut inner, BreakerState::ForcedOpen, now);
    }

    /// Lets every call through and records nothing, until [`CircuitBreaker::reset`].
    pub fn disable(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.transition(&mut inner, BreakerState::Disabled, now);
    }

    /// Runs `operation` through the breaker; `classify` judges its result.
    pub async fn call<T, E, F, Fut>(
        &self,
        operation: F,
        classify: impl Fn(&Result<T, E>) -> CallOutcome,
    ) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        let result = operation().await;
        permit.record(classify(&result));
        result.map_err(CallError::Inner)
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("name", &self.config.name).field("state", &self.state()).finish()
    }
}

/// Permission for one call; give it the outcome with [`Permit::record`].
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    started: Instant,
    done: bool,
}

impl Permit<'_> {
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.breaker.record(self.generation, self.started, Some(outcome));
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(self.generation, self.started, None);
        }
    }
}

/// A call through a breaker failed: refused, or the operation's own error.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    #[error(transparent)]
    Rejected(Rejected),
    #[error(transparent)]
    Inner(E),
}

#[cfg(test)]
mod tests;

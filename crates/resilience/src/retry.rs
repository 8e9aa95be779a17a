//! Retry (Release It! ch. 5, with AWS's "full jitter"): only for operations declared idempotent;
//! exponential backoff with full jitter; capped attempts and total time; a retry budget that
//! keeps retries to a fraction of calls, so a struggling dependency is not hit harder; and a
//! server's `Retry-After` is honoured. Metrics: `retry_attempts_total{name,outcome}`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::clock::Clock;

/// Whether repeating an operation is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it has the same effect as doing it once (GET, PUT, a charge with an idempotency key).
    Idempotent,
    /// Never retried, whatever the failure.
    NotIdempotent,
}

/// What the caller's classifier says about one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: success, or a failure that another attempt would not fix.
    Done,
    /// A transient failure; `after` carries the server's `Retry-After`, if any.
    Retry { after: Option<Duration> },
}

/// Settings of one retry policy.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub name: String,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry; it doubles with each further retry.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No retry starts if its wait would end after this much time since the first attempt.
    pub max_total: Duration,
    /// Retries may be at most this fraction of calls in the budget window (e.g. 0.2).
    pub budget_ratio: f64,
    /// Retries always allowed per budget window, so a quiet client can still retry.
    pub budget_minimum: u32,
    pub budget_window: Duration,
}

impl RetryConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_total: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_minimum: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// The upper bound of the wait before retry number `retry` (1-based): `initial × 2^(retry-1)`,
/// capped at `max`. Full jitter picks uniformly below it.
pub fn backoff_ceiling(initial: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 2_u32.saturating_pow(retry.saturating_sub(1).min(31));
    initial.saturating_mul(factor).min(max)
}

/// Full jitter: `unit` (in `[0, 1)`) scales the ceiling.
pub fn full_jitter(ceiling: Duration, unit: f64) -> Duration {
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// A retry policy with its budget. Share it with `Arc`.
pub struct Retry {
    config: RetryConfig,
    clock: Arc<dyn Clock>,
    budget: Mutex<Budget>,
}

/// Calls and retries in the current budget window.
struct Budget {
    window_started: Instant,
    calls: u32,
    retries: u32,
}

impl Retry {
    pub fn new(config: RetryConfig, clock: Arc<dyn Clock>) -> Self {
        let budget = Budget { window_started: clock.now(), calls: 0, retries: 0 };
        Self { config, clock, budget: Mutex::new(budget) }
    }

    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn roll_window(&self, budget: &mut Budget) {
        let now = self.clock.now();
        if now.saturating_duration_since(budget.window_started) >= self.config.budget_window {
            *budget = Budget { window_started: now, calls: 0, retries: 0 };
        }
    }

    /// Counts one call in the budget window (`run` does it; callers with their own retry loop,
    /// like the gateway's retry-to-another-backend, call it once per request).
    pub fn record_call(&self) {
        let mut budget = self.budget();
        self.roll_window(&mut budget);
        budget.calls = budget.calls.saturating_add(1);
    }

    /// Takes one retry from the budget, if any is left.
    pub fn allow_retry(&self) -> bool {
        let mut budget = self.budget();
        self.roll_window(&mut budget);
        let allowed = (f64::from(budget.calls) * self.config.budget_ratio).floor() as u32;
        if budget.retries < allowed.max(self.config.budget_minimum) {
            budget.retries += 1;
            true
        } else {
            false
        }
    }

    /// Runs `operation` until `classify` says done, the attempts or total time run out, or the
    /// budget refuses a retry; returns the last result. Non-idempotent operations run once.
    pub async fn run<T, E, F, Fut>(
        &self,
        idempotency: Idempotency,
        mut operation: F,
        classify: impl Fn(&Result<T, E>) -> Verdict,
    ) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.record_call();
        let started = tokio::time::Instant::now();
        let mut attempt = 1;
        loop {
            let result = operation(attempt).await;
            let verdict = classify(&result);
            let name = self.config.name.clone();
            let Verdict::Retry { after } = verdict else {
                let outcome = if result.is_ok() { "success" } else { "failure" };
                metrics::counter!("retry_attempts_total", "name" => name, "outcome" => outcome).increment(1);
                return result;
            };
            let stop = |reason: &'static str| {
                metrics::counter!("retry_attempts_total", "name" => self.config.name.clone(), "outcome" => reason)
                    .increment(1);
                tracing::debug!(retry = self.config.name.as_str(), attempt, reason, "not retrying");
            };
            if idempotency == Idempotency::NotIdempotent {
                stop("not_idempotent");
                return result;
            }
            if attempt >= self.config.max_attempts {
                stop("attempts_exhausted");
                return result;
            }
            let ceiling = backoff_ceiling(self.config.initial_backoff, self.config.max_backoff, attempt);
            let jittered = full_jitter(ceiling, rand::rng().random::<f64>());
            let wait = after.map_or(jittered, |server_says| server_says.max(jittered));
            if started.elapsed() + wait > self.config.max_total {
                stop("time_exhausted");
                return result;
            }
            if !self.allow_retry() {
                stop("budget_exhausted");
                return result;
            }
            metrics::counter!("retry_attempts_total", "name" => name, "outcome" => "retried").increment(1);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("config", &self.config).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;

    fn retry(config: RetryConfig) -> (Arc<ManualClock>, Retry) {
        let clock = Arc::new(ManualClock::default());
        let retry = Retry::new(config, clock.clone());
        (clock, retry)
    }

    fn generous() -> RetryConfig {
        RetryConfig { max_attempts: 4, budget_minimum: 100, ..RetryConfig::new("inventory") }
    }

    fn transient(result: &Result<u32, &'static str>) -> Verdict {
        match result {
            Err("transient") => Verdict::Retry { after: None },
            _ => Verdict::Done,
        }
    }

    async fn failing_calls(retry: &Retry, idempotency: Idempotency) -> (Result<u32, &'static str>, u32) {
        let attempts = AtomicU32::new(0);
        let result = retry
            .run(
                idempotency,
                |_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async { Err::<u32, _>("transient") }
                },
                transient,
            )
            .await;
        (result, attempts.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_idempotent_operations_up_to_the_attempt_cap() {
        let (_, retry) = retry(generous());
        let (result, attempts) = failing_calls(&retry, Idempotency::Idempotent).await;
        assert_eq!(result, Err("transient"));
        assert_eq!(attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_what_is_not_idempotent() {
        let (_, retry) = retry(generous());
        let (_, attempts) = failing_calls(&retry, Idempotency::NotIdempotent).await;
        assert_eq!(attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_success_and_at_permanent_failures() {
        let (_, retry) = retry(generous());
        let result = retry
            .run(
                Idempotency::Idempotent,
                |attempt| async move { if attempt < 3 { Err("transient") } else { Ok(attempt) } },
                transient,
            )
            .await;
        assert_eq!(result, Ok(3));
        let attempts = AtomicU32::new(0);
        let permanent = retry
            .run(
                Idempotency::Idempotent,
                |_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async { Err::<u32, _>("bad request") }
                },
                transient,
            )
            .await;
        assert_eq!(permanent, Err("bad request"));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let (_, retry) = retry(generous());
        let started = tokio::time::Instant::now();
        let result = retry
            .run(
                Idempotency::Idempotent,
                |attempt| async move { if attempt == 1 { Err("busy") } else { Ok(attempt) } },
                |result: &Result<u32, &str>| match result {
                    Err(_) => Verdict::Retry { after: Some(Duration::from_secs(3)) },
                    Ok(_) => Verdict::Done,
                },
            )
            .await;
        assert_eq!(result, Ok(2));
        assert!(started.elapsed() >= Duration::from_secs(3), "waited {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_wait_would_pass_the_total_time() {
        let (_, retry) = retry(RetryConfig { max_total: Duration::from_secs(2), ..generous() });
        let attempts = AtomicU32::new(0);
        let result = retry
            .run(
                Idempotency::Idempotent,
                |_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async { Err::<u32, _>("busy") }
                },
                |_: &Result<u32, &str>| Verdict::Retry { after: Some(Duration::from_secs(5)) },
            )
            .await;
        assert_eq!(result, Err("busy"));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "a 5 s Retry-After does not fit in 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_keeps_retries_to_a_fraction_of_calls() {
        let config = RetryConfig { max_attempts: 2, budget_ratio: 0.1, budget_minimum: 0, ..RetryConfig::new("x") };
        let (clock, retry) = retry(config);
        let mut total_attempts = 0;
        for _ in 0..20 {
            total_attempts += failing_calls(&retry, Idempotency::Idempotent).await.1;
        }
        // 20 calls at 10 % allow 2 retries in the window.
        assert_eq!(total_attempts, 22);
        clock.advance(Duration::from_secs(10));
        assert_eq!(failing_calls(&retry, Idempotency::Idempotent).await.1, 1, "a new window starts empty");
    }

    proptest! {
        #[test]
        fn jitter_stays_within_the_exponential_ceiling(retry in 1u32..40, unit in 0.0f64..1.0) {
            let initial = Duration::from_millis(100);
            let max = Duration::from_secs(5);
            let ceiling = backoff_ceiling(initial, max, retry);
            prop_assert!(ceiling <= max);
            prop_assert!(ceiling >= initial.min(max));
            let wait = full_jitter(ceiling, unit);
            prop_assert!(wait <= ceiling);
            if retry > 1 {
                prop_assert!(ceiling >= backoff_ceiling(initial, max, retry - 1), "never shrinks");
            }
        }
    }
}

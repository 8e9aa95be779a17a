//! Tests of the circuit breaker: transitions, windows, thresholds, waits and probes.

use super::*;
use crate::clock::ManualClock;

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        name: "payments".into(),
        window: SlidingWindow::Count(10),
        minimum_calls: 5,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: Duration::from_secs(2),
        open_wait: OpenWait::Fixed(Duration::from_secs(30)),
        half_open_calls: 2,
    }
}

fn breaker(config: CircuitBreakerConfig) -> (Arc<ManualClock>, CircuitBreaker) {
    let clock = Arc::new(ManualClock::default());
    let breaker = CircuitBreaker::new(config, clock.clone());
    (clock, breaker)
}

fn call(breaker: &CircuitBreaker, outcome: CallOutcome) -> Result<(), Rejected> {
    breaker.try_acquire().map(|permit| permit.record(outcome))
}

#[test]
fn opens_at_the_failure_threshold_once_enough_calls_were_seen() {
    let (clock, breaker) = breaker(config());
    for _ in 0..4 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed, "fewer calls than the minimum decide nothing");
    call(&breaker, CallOutcome::Failure).unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    let rejected = breaker.try_acquire().err().unwrap();
    assert_eq!(rejected.state, BreakerState::Open);
    assert_eq!(rejected.retry_after, Some(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(10));
    assert_eq!(breaker.try_acquire().err().unwrap().retry_after, Some(Duration::from_secs(20)));
}

#[test]
fn stays_closed_below_the_threshold() {
    let (_, breaker) = breaker(config());
    for index in 0..20 {
        let outcome = if index % 3 == 0 { CallOutcome::Failure } else { CallOutcome::Success };
        call(&breaker, outcome).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.calls_in_window, 10, "the window holds the last 10 calls");
    assert!(snapshot.failure_rate.unwrap() < 50.0);
}

#[test]
fn ignored_outcomes_do_not_count() {
    let (_, breaker) = breaker(config());
    for _ in 0..10 {
        call(&breaker, CallOutcome::Ignored).unwrap();
    }
    assert_eq!(breaker.snapshot().calls_in_window, 0);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn slow_calls_open_the_breaker() {
    let (clock, breaker) = breaker(CircuitBreakerConfig { slow_call_rate_threshold: 60.0, ..config() });
    for _ in 0..5 {
        let permit = breaker.try_acquire().unwrap();
        clock.advance(Duration::from_secs(3));
        permit.record(CallOutcome::Success);
    }
    assert_eq!(breaker.state(), BreakerState::Open, "successful but slow calls still trip it");
}

#[test]
fn half_open_probes_close_the_breaker_when_they_succeed() {
    let (clock, breaker) = breaker(config());
    for _ in 0..5 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    clock.advance(Duration::from_secs(30));
    let first = breaker.try_acquire().unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let second = breaker.try_acquire().unwrap();
    let third = breaker.try_acquire().err().unwrap();
    assert_eq!(third.state, BreakerState::HalfOpen, "only the permitted number of probes");
    first.record(CallOutcome::Success);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    second.record(CallOutcome::Success);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().calls_in_window, 0, "closing starts a fresh window");
}

#[test]
fn a_failing_probe_reopens_with_a_longer_wait() {
    let exponential =
        OpenWait::Exponential { initial: Duration::from_secs(10), multiplier: 2.0, max: Duration::from_secs(25) };
    let (clock, breaker) = breaker(CircuitBreakerConfig { open_wait: exponential, ..config() });
    for _ in 0..5 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    assert_eq!(breaker.try_acquire().err().unwrap().retry_after, Some(Duration::from_secs(10)));
    for expected_wait in [20, 25, 25] {
        clock.advance(breaker.snapshot().retry_after.unwrap());
        call(&breaker, CallOutcome::Failure).unwrap();
        call(&breaker, CallOutcome::Success).unwrap();
        assert_eq!(breaker.state(), BreakerState::Open, "one failed probe in two is 50 %");
        assert_eq!(breaker.snapshot().retry_after, Some(Duration::from_secs(expected_wait)));
    }
    clock.advance(Duration::from_secs(25));
    call(&breaker, CallOutcome::Success).unwrap();
    call(&breaker, CallOutcome::Success).unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    for _ in 0..5 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    assert_eq!(breaker.snapshot().retry_after, Some(Duration::from_secs(10)), "closing resets the backoff");
}

#[test]
fn an_abandoned_probe_frees_its_slot() {
    let (clock, breaker) = breaker(config());
    for _ in 0..5 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    clock.advance(Duration::from_secs(30));
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    drop(first);
    let replacement = breaker.try_acquire().unwrap();
    second.record(CallOutcome::Success);
    replacement.record(CallOutcome::Success);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn results_from_an_earlier_state_are_dropped() {
    let (_, breaker) = breaker(config());
    let slow_starter = breaker.try_acquire().unwrap();
    for _ in 0..5 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    breaker.reset();
    slow_starter.record(CallOutcome::Failure);
    assert_eq!(breaker.snapshot().calls_in_window, 0);
}

#[test]
fn forced_open_disabled_and_reset() {
    let (clock, breaker) = breaker(config());
    breaker.force_open();
    let rejected = breaker.try_acquire().err().unwrap();
    assert_eq!(rejected.state, BreakerState::ForcedOpen);
    assert_eq!(rejected.retry_after, None);
    clock.advance(Duration::from_secs(3_600));
    assert!(breaker.try_acquire().is_err(), "forced open does not time out");
    breaker.reset();
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.disable();
    for _ in 0..50 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Disabled, "disabled never opens");
    breaker.reset();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn a_time_window_forgets_old_failures() {
    let (clock, breaker) =
        breaker(CircuitBreakerConfig { window: SlidingWindow::Time(Duration::from_secs(10)), ..config() });
    for _ in 0..4 {
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    clock.advance(Duration::from_secs(11));
    assert_eq!(breaker.snapshot().calls_in_window, 0);
    call(&breaker, CallOutcome::Failure).unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed, "the old failures left the window");
    for _ in 0..4 {
        clock.advance(Duration::from_secs(1));
        call(&breaker, CallOutcome::Failure).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test]
async fn call_runs_the_operation_through_the_breaker() {
    let (_, breaker) = breaker(config());
    let ok: Result<u8, CallError<&str>> = breaker
        .call(|| async { Ok::<u8, &str>(7) }, |r| if r.is_ok() { CallOutcome::Success } else { CallOutcome::Failure })
        .await;
    assert_eq!(ok.unwrap(), 7);
    breaker.force_open();
    let refused = breaker.call(|| async { Ok::<u8, &str>(7) }, |_| CallOutcome::Success).await;
    assert!(matches!(refused, Err(CallError::Rejected(_))));
}

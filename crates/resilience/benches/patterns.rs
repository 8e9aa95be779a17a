//! Cost of the in-process patterns per decision: `cargo bench -p resilience`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::{
    ActionGovernor, ActionGovernorConfig, CallOutcome, CircuitBreaker, CircuitBreakerConfig, ConcurrencyLimit,
    KeyedLimiter, LoadShedder, MonotonicClock, Quota, SlidingWindowCounter,
};

fn limiters(c: &mut Criterion) {
    let clock = Arc::new(MonotonicClock);
    let limiter = KeyedLimiter::<u64>::new(Quota::new(u32::MAX, Duration::from_secs(1)), clock.clone());
    c.bench_function("gcra check, one hot key", |b| b.iter(|| black_box(limiter.check(black_box(&7)))));
    let mut key = 0u64;
    c.bench_function("gcra check, 100k rotating keys", |b| {
        b.iter(|| {
            key = (key + 1) % 100_000;
            black_box(limiter.check(black_box(&key)))
        })
    });
    let counter = SlidingWindowCounter::<u64>::new(5, Duration::from_secs(900), clock.clone());
    c.bench_function("sliding window record", |b| b.iter(|| black_box(counter.record(black_box(&7)))));
}

fn breaker_and_shedder(c: &mut Criterion) {
    let clock = Arc::new(MonotonicClock);
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::new("bench"), clock.clone());
    c.bench_function("breaker acquire + record", |b| {
        b.iter(|| {
            if let Ok(permit) = breaker.try_acquire() {
                permit.record(CallOutcome::Success);
            }
        })
    });
    let shedder = LoadShedder::new(ConcurrencyLimit::Fixed(1_000), clock.clone());
    c.bench_function("load shed acquire + release (fixed)", |b| b.iter(|| drop(black_box(shedder.try_acquire()))));
    let adaptive = LoadShedder::new(ConcurrencyLimit::Adaptive { initial: 100, min: 10, max: 1_000 }, clock);
    c.bench_function("load shed acquire + release (adaptive)", |b| b.iter(|| drop(black_box(adaptive.try_acquire()))));
}

fn action_governor(c: &mut Criterion) {
    let clock = Arc::new(MonotonicClock);
    let config = ActionGovernorConfig { name: "bench".into(), max_actions: 1_000, period: Duration::from_secs(3600) };
    let open = ActionGovernor::new(config.clone(), clock.clone());
    c.bench_function("action governor request + release", |b| {
        b.iter(|| {
            let grant = open.request(black_box(1));
            open.release(grant.granted);
        })
    });
    // A spent allowance with a full log: the refusal path, which logs and counts every time.
    let spent = ActionGovernor::new(config, clock);
    for _ in 0..1_000 {
        spent.request(1);
    }
    c.bench_function("action governor refusal, 1000 actions in the log", |b| {
        b.iter(|| black_box(spent.request(black_box(1))))
    });
}

criterion_group!(benches, limiters, breaker_and_shedder, action_governor);
criterion_main!(benches);

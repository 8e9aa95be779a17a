//! Cost of the in-process patterns per decision: `cargo bench -p resilience`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::{
    CallOutcome, CircuitBreaker, CircuitBreakerConfig, ConcurrencyLimit, KeyedLimiter, LoadShedder, MonotonicClock,
    Quota, SlidingWindowCounter,
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

criterion_group!(benches, limiters, breaker_and_shedder);
criterion_main!(benches);

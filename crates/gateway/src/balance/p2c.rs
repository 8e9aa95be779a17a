//! The power of two choices over peak-EWMA load (Mitzenmacher; Finagle and linkerd's default):
//! pick two distinct candidates at random and send to the one with the lower
//! latency × (in flight + 1) ÷ weight. It needs no global view, avoids the herd that "least
//! loaded" causes, and a backend that fails fast is charged a penalty latency by the proxy so
//! that it does not look fast.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::backend::Backend;

#[derive(Debug, Default)]
pub struct PowerOfTwoChoices;

impl PowerOfTwoChoices {
    pub fn pick(&self, candidates: &[Arc<Backend>], now: Instant, decay: Duration) -> Option<usize> {
        let count = candidates.len();
        if count < 2 {
            return if count == 1 { Some(0) } else { None };
        }
        let mut rng = rand::rng();
        let first = rng.random_range(0..count);
        let second = (first + rng.random_range(1..count)) % count;
        let load = |index: usize| candidates[index].load(now, decay);
        Some(if load(second) < load(first) { second } else { first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::backends;

    const DECAY: Duration = Duration::from_secs(10);

    fn shares(backends: &[Arc<Backend>], now: Instant) -> Vec<usize> {
        let balancer = PowerOfTwoChoices;
        let mut counts = vec![0; backends.len()];
        for _ in 0..3_000 {
            counts[balancer.pick(backends, now, DECAY).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn the_faster_backend_gets_most_of_the_traffic() {
        let now = Instant::now();
        let backends = backends(&[1, 1, 1], now);
        backends[0].observe_latency(Duration::from_millis(100), now, DECAY);
        backends[1].observe_latency(Duration::from_millis(5), now, DECAY);
        backends[2].observe_latency(Duration::from_millis(5), now, DECAY);
        let counts = shares(&backends, now);
        // The slow one wins only when both choices fall on it, which they never do (distinct).
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1_000 && counts[2] > 1_000, "{counts:?}");
    }

    #[test]
    fn a_backend_that_fails_fast_is_avoided_once_penalised() {
        let now = Instant::now();
        let backends = backends(&[1, 1], now);
        backends[0].observe_latency(Duration::from_millis(20), now, DECAY);
        // Backend 1 answers 503 in 1 ms; the proxy charges it the failure penalty instead.
        backends[1].observe_latency(Duration::from_secs(1), now, DECAY);
        assert_eq!(shares(&backends, now), vec![3_000, 0]);
    }

    #[test]
    fn requests_in_flight_count_against_a_backend() {
        let now = Instant::now();
        let backends = backends(&[1, 1], now);
        backends[0].observe_latency(Duration::from_millis(10), now, DECAY);
        backends[1].observe_latency(Duration::from_millis(10), now, DECAY);
        let _busy: Vec<_> = (0..4).map(|_| backends[0].start_request()).collect();
        assert_eq!(shares(&backends, now), vec![0, 3_000]);
    }

    #[test]
    fn weight_divides_the_load() {
        let now = Instant::now();
        let backends = backends(&[1, 4], now);
        backends[0].observe_latency(Duration::from_millis(10), now, DECAY);
        backends[1].observe_latency(Duration::from_millis(20), now, DECAY);
        assert_eq!(shares(&backends, now), vec![0, 3_000], "20 ms ÷ 4 beats 10 ms ÷ 1");
    }
}

//! Least connections: the candidate with the fewest requests in flight per unit of weight; ties
//! go round-robin so that an idle pool still spreads its traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::backend::Backend;

#[derive(Debug, Default)]
pub struct LeastConnections {
    offset: AtomicUsize,
}

impl LeastConnections {
    pub fn pick(&self, candidates: &[Arc<Backend>], now: Instant) -> Option<usize> {
        let count = candidates.len();
        let start = self.offset.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, f64)> = None;
        for step in 0..count {
            let index = (start + step) % count;
            let backend = &candidates[index];
            let weight = backend.effective_weight(now);
            if weight <= 0.0 {
                continue;
            }
            let load = backend.in_flight() as f64 / weight;
            if best.is_none_or(|(_, best_load)| load < best_load) {
                best = Some((index, load));
            }
        }
        best.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::backends;

    #[test]
    fn the_least_loaded_backend_is_picked_relative_to_its_weight() {
        let now = Instant::now();
        let backends = backends(&[1, 1, 4], now);
        let balancer = LeastConnections::default();
        let _busy: Vec<_> = (0..3).map(|_| backends[0].start_request()).collect();
        let _one = backends[1].start_request();
        let _four: Vec<_> = (0..3).map(|_| backends[2].start_request()).collect();
        // Loads: 3/1, 1/1, 3/4.
        assert_eq!(balancer.pick(&backends, now), Some(2));
    }

    #[test]
    fn ties_rotate() {
        let now = Instant::now();
        let backends = backends(&[1, 1, 1], now);
        let balancer = LeastConnections::default();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[balancer.pick(&backends, now).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }
}

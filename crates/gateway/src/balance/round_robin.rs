//! Round-robin: each candidate in turn, weights ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::Backend;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick(&self, candidates: &[Arc<Backend>]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % candidates.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::balance::test_support::backends;

    #[test]
    fn every_candidate_gets_the_same_share() {
        let backends = backends(&[1, 5, 1], Instant::now());
        let balancer = RoundRobin::default();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[balancer.pick(&backends).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }
}

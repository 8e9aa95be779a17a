//! Smooth weighted round-robin (nginx's): every pick adds each candidate's weight to its
//! running score, takes the highest and subtracts the total from it. Shares follow the weights
//! exactly over a cycle, and a heavy backend's turns are spread out rather than bunched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::Backend;

#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Running scores by backend name; a backend gone from the candidates loses its score.
    scores: Mutex<HashMap<Arc<str>, f64>>,
}

impl WeightedRoundRobin {
    pub fn pick(&self, candidates: &[Arc<Backend>], now: Instant) -> Option<usize> {
        let mut scores = self.scores.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if scores.len() > candidates.len() * 2 {
            scores.retain(|name, _| candidates.iter().any(|backend| backend.shared_name() == name));
        }
        let mut total = 0.0;
        let mut best: Option<(usize, f64)> = None;
        for (index, backend) in candidates.iter().enumerate() {
            let weight = backend.effective_weight(now);
            total += weight;
            let score = scores.entry(Arc::clone(backend.shared_name())).or_insert(0.0);
            *score += weight;
            if best.is_none_or(|(_, best_score)| *score > best_score) {
                best = Some((index, *score));
            }
        }
        let (index, _) = best?;
        if let Some(score) = scores.get_mut(candidates[index].shared_name()) {
            *score -= total;
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::backends;

    #[test]
    fn shares_follow_the_weights_exactly_over_a_cycle() {
        let now = Instant::now();
        let backends = backends(&[5, 1, 1], now);
        let balancer = WeightedRoundRobin::default();
        let picks: Vec<usize> = (0..7).map(|_| balancer.pick(&backends, now).unwrap()).collect();
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..7_000 {
            counts[balancer.pick(&backends, now).unwrap()] += 1;
        }
        assert_eq!(counts, [5_000, 1_000, 1_000]);
    }

    #[test]
    fn a_zero_weight_backend_gets_nothing() {
        let now = Instant::now();
        let backends = backends(&[3, 0], now);
        let balancer = WeightedRoundRobin::default();
        assert!((0..100).all(|_| balancer.pick(&backends, now) == Some(0)));
    }
}

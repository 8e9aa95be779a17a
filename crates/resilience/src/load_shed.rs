//! Load shedding (Release It! ch. 5 "Shed Load"): a global limit on work in progress, fixed or
//! adaptive. The adaptive limit follows the gradient idea of Netflix's concurrency-limits: while
//! measured latency stays near the best seen, the limit grows; when latency rises (a queue is
//! forming somewhere), it shrinks, so excess requests are refused at once instead of waiting
//! until they time out. Metrics: `load_shed_limit`, `load_shed_rejected_total`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// How the concurrency limit is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConcurrencyLimit {
    Fixed(usize),
    /// Starts at `initial` and moves between `min` and `max` with measured latency.
    Adaptive {
        initial: usize,
        min: usize,
        max: usize,
    },
}

/// A request refused because the limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded: {in_flight} requests in progress, limit {limit}")]
pub struct Overloaded {
    pub in_flight: usize,
    pub limit: usize,
}

/// The shedder; clones share one limit.
#[derive(Clone)]
pub struct LoadShedder {
    shared: Arc<Shared>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    adaptive: Option<Mutex<Gradient>>,
}

/// State of the adaptive limit.
struct Gradient {
    min: usize,
    max: usize,
    /// The limit as a float, smoothed.
    estimate: f64,
    /// The lowest latency seen recently (the no-queue baseline), forgotten now and then so the
    /// baseline can follow a slower but healthy system.
    min_latency: Option<Duration>,
    samples_since_reset: u32,
    /// Exponentially weighted average of recent latencies, in seconds.
    recent: Option<f64>,
}

/// After this many samples the baseline is forgotten and measured anew.
const BASELINE_RESET_SAMPLES: u32 = 1_000;

impl Gradient {
    fn record(&mut self, latency: Duration) -> usize {
        self.samples_since_reset += 1;
        if self.samples_since_reset >= BASELINE_RESET_SAMPLES {
            self.samples_since_reset = 0;
            self.min_latency = None;
        }
        let seconds = latency.as_secs_f64().max(1e-6);
        self.min_latency = Some(self.min_latency.map_or(latency, |min| min.min(latency)));
        let recent = self.recent.map_or(seconds, |average| average * 0.9 + seconds * 0.1);
        self.recent = Some(recent);
        let baseline = self.min_latency.map_or(seconds, |min| min.as_secs_f64().max(1e-6));
        // 1.0 while latency is at its baseline; below 1 as it grows (at most halving per step).
        let gradient = (baseline / recent).clamp(0.5, 1.0);
        // Headroom lets the limit probe upwards while latency holds.
        let headroom = self.estimate.sqrt();
        let target = self.estimate * gradient + headroom;
        self.estimate = (self.estimate * 0.8 + target * 0.2).clamp(self.min as f64, self.max as f64);
        self.estimate.round() as usize
    }
}

/// Permission for one request; dropping it ends the request (and, when adaptive, records its
/// latency).
pub struct ShedPermit {
    shared: Arc<Shared>,
    started: Instant,
}

impl Drop for ShedPermit {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(adaptive) = &self.shared.adaptive {
            let latency = self.shared.clock.now().saturating_duration_since(self.started);
            let limit = adaptive.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).record(latency);
            self.shared.limit.store(limit, Ordering::SeqCst);
            metrics::gauge!("load_shed_limit").set(limit as f64);
        }
    }
}

impl LoadShedder {
    pub fn new(limit: ConcurrencyLimit, clock: Arc<dyn Clock>) -> Self {
        let (initial, adaptive) = match limit {
            ConcurrencyLimit::Fixed(limit) => (limit.max(1), None),
            ConcurrencyLimit::Adaptive { initial, min, max } => {
                let min = min.max(1);
                let max = max.max(min);
                let initial = initial.clamp(min, max);
                let gradient = Gradient {
                    min,
                    max,
                    estimate: initial as f64,
                    min_latency: None,
                    samples_since_reset: 0,
                    recent: None,
                };
                (initial, Some(Mutex::new(gradient)))
            }
        };
        metrics::gauge!("load_shed_limit").set(initial as f64);
        let shared = Shared { clock, in_flight: AtomicUsize::new(0), limit: AtomicUsize::new(initial), adaptive };
        Self { shared: Arc::new(shared) }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Admits a request if fewer than the limit are in progress.
    pub fn try_acquire(&self) -> Result<ShedPermit, Overloaded> {
        let limit = self.limit();
        let admitted = self
            .shared
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| (current < limit).then_some(current + 1));
        match admitted {
            Ok(_) => Ok(ShedPermit { shared: Arc::clone(&self.shared), started: self.shared.clock.now() }),
            Err(in_flight) => {
                metrics::counter!("load_shed_rejected_total").increment(1);
                Err(Overloaded { in_flight, limit })
            }
        }
    }
}

impl std::fmt::Debug for LoadShedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedder").field("limit", &self.limit()).field("in_flight", &self.in_flight()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_fixed_limit_refuses_beyond_it_and_frees_on_drop() {
        let shedder = LoadShedder::new(ConcurrencyLimit::Fixed(2), Arc::new(ManualClock::default()));
        let first = shedder.try_acquire().unwrap();
        let _second = shedder.try_acquire().unwrap();
        assert_eq!(shedder.try_acquire().err(), Some(Overloaded { in_flight: 2, limit: 2 }));
        drop(first);
        assert!(shedder.try_acquire().is_ok());
        assert_eq!(shedder.limit(), 2, "a fixed limit never moves");
    }

    fn run(shedder: &LoadShedder, clock: &ManualClock, latency: Duration, requests: usize) {
        for _ in 0..requests {
            let permit = shedder.try_acquire().unwrap();
            clock.advance(latency);
            drop(permit);
        }
    }

    #[test]
    fn the_adaptive_limit_grows_while_latency_holds_and_shrinks_when_it_rises() {
        let clock = Arc::new(ManualClock::default());
        let shedder = LoadShedder::new(ConcurrencyLimit::Adaptive { initial: 20, min: 5, max: 200 }, clock.clone());
        run(&shedder, &clock, Duration::from_millis(10), 200);
        let grown = shedder.limit();
        assert!(grown > 20, "steady latency lets the limit probe upwards: {grown}");
        run(&shedder, &clock, Duration::from_millis(80), 200);
        let shrunk = shedder.limit();
        assert!(shrunk < grown, "rising latency pulls the limit down: {grown} → {shrunk}");
        run(&shedder, &clock, Duration::from_secs(5), 500);
        assert_eq!(shedder.limit(), 5, "never below the minimum");
        let fast = LoadShedder::new(ConcurrencyLimit::Adaptive { initial: 20, min: 5, max: 30 }, clock.clone());
        run(&fast, &clock, Duration::from_millis(1), 500);
        assert_eq!(fast.limit(), 30, "never above the maximum");
    }
}

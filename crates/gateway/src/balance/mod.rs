//! Load-balancing algorithms: each picks one of the candidate backends (the pool has already
//! left out the unhealthy, ejected, draining and full ones). Round-robin, smooth weighted
//! round-robin (nginx), least connections, consistent hashing (ketama) and, by default, the
//! power of two choices over peak-EWMA load (Finagle, linkerd).

mod consistent_hash;
mod least_connections;
mod p2c;
mod round_robin;
mod weighted_round_robin;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::Backend;

pub use consistent_hash::ConsistentHash;
pub use least_connections::LeastConnections;
pub use p2c::PowerOfTwoChoices;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

/// Which algorithm a pool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    ConsistentHash,
    P2cPeakEwma,
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// A request header (lowercase name); requests without it hash the client IP.
    Header(http::HeaderName),
    /// A cookie; requests without it hash the client IP.
    Cookie(String),
}

impl HashKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "client_ip" {
            return Ok(HashKey::ClientIp);
        }
        if let Some(name) = raw.strip_prefix("header:") {
            return http::HeaderName::try_from(name.trim())
                .map(HashKey::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        if let Some(name) = raw.strip_prefix("cookie:") {
            let name = name.trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && !"=;,".contains(c)) {
                return Ok(HashKey::Cookie(name.to_owned()));
            }
            return Err(format!("{name:?} is not a cookie name"));
        }
        Err(format!("{raw:?} must be client_ip, header:<name> or cookie:<name>"))
    }
}

/// What an algorithm may look at besides the candidates.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    pub now: Instant,
    /// The request's hash key (consistent hashing only).
    pub key: Option<&'a [u8]>,
    /// Every routable backend, for consistent hashing's ring (so that a backend leaving the
    /// candidates moves only its own keys).
    pub members: &'a [Arc<Backend>],
    pub ewma_decay: Duration,
}

/// A pool's balancer with its state.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    WeightedRoundRobin(WeightedRoundRobin),
    LeastConnections(LeastConnections),
    ConsistentHash(ConsistentHash),
    P2c(PowerOfTwoChoices),
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
            Algorithm::WeightedRoundRobin => Balancer::WeightedRoundRobin(WeightedRoundRobin::default()),
            Algorithm::LeastConnections => Balancer::LeastConnections(LeastConnections::default()),
            Algorithm::ConsistentHash => Balancer::ConsistentHash(ConsistentHash::default()),
            Algorithm::P2cPeakEwma => Balancer::P2c(PowerOfTwoChoices),
        }
    }

    /// The index in `candidates` of the backend to use; `None` only if there are none.
    pub fn pick(&self, candidates: &[Arc<Backend>], context: PickContext<'_>) -> Option<usize> {
        if candidates.len() <= 1 {
            return if candidates.is_empty() { None } else { Some(0) };
        }
        match self {
            Balancer::RoundRobin(balancer) => balancer.pick(candidates),
            Balancer::WeightedRoundRobin(balancer) => balancer.pick(candidates, context.now),
            Balancer::LeastConnections(balancer) => balancer.pick(candidates, context.now),
            Balancer::ConsistentHash(balancer) => balancer.pick(candidates, context),
            Balancer::P2c(balancer) => balancer.pick(candidates, context.now, context.ewma_decay),
        }
    }

    /// Whether the algorithm needs a hash key from the request.
    pub fn wants_key(&self) -> bool {
        matches!(self, Balancer::ConsistentHash(_))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::backend::Backend;

    /// Healthy backends `b0`, `b1`, … with these weights, at full weight at `now`.
    pub fn backends(weights: &[u32], now: Instant) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(index, weight)| {
                let backend = Backend::new(&format!("b{index}"), "127.0.0.1:1".parse().unwrap(), *weight, now);
                backend.record_check(true, 1, 1, Duration::ZERO, now);
                Arc::new(backend)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse_and_bad_ones_are_refused() {
        assert_eq!(HashKey::parse("client_ip").unwrap(), HashKey::ClientIp);
        assert_eq!(
            HashKey::parse("header:X-Cart-Id").unwrap(),
            HashKey::Header(http::HeaderName::from_static("x-cart-id"))
        );
        assert_eq!(HashKey::parse("cookie:session").unwrap(), HashKey::Cookie("session".into()));
        for bad in ["ip", "header:", "header:bad name", "cookie:", "cookie:a=b"] {
            assert!(HashKey::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn one_candidate_is_always_picked_and_none_gives_none() {
        let now = Instant::now();
        let backends = test_support::backends(&[1], now);
        let context = PickContext { now, key: None, members: &backends, ewma_decay: Duration::from_secs(10) };
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections,
            Algorithm::ConsistentHash,
            Algorithm::P2cPeakEwma,
        ] {
            let balancer = Balancer::new(algorithm);
            assert_eq!(balancer.pick(&backends, context), Some(0));
            assert_eq!(balancer.pick(&[], context), None);
        }
    }
}

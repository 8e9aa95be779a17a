//! The breakers of one process by name, so operators can see and reset them (the admin status
//! page and `POST /admin/v1/breakers/{name}/reset` read this registry).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::circuit_breaker::{BreakerSnapshot, CircuitBreaker};

/// Named breakers; clones share one registry.
#[derive(Clone, Default)]
pub struct BreakerRegistry {
    breakers: Arc<RwLock<BTreeMap<String, Arc<CircuitBreaker>>>>,
}

/// A breaker of that name is already registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a circuit breaker named {0} is already registered")]
pub struct DuplicateBreaker(pub String);

impl BreakerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a breaker under its configured name; names are unique.
    pub fn register(&self, breaker: Arc<CircuitBreaker>) -> Result<(), DuplicateBreaker> {
        let mut breakers = self.breakers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let name = breaker.name().to_owned();
        if breakers.contains_key(&name) {
            return Err(DuplicateBreaker(name));
        }
        breakers.insert(name, breaker);
        Ok(())
    }

    /// Adds a breaker under its configured name, replacing any breaker of that name (a client
    /// rebuilt for a changed endpoint).
    pub fn replace(&self, breaker: Arc<CircuitBreaker>) {
        let mut breakers = self.breakers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        breakers.insert(breaker.name().to_owned(), breaker);
    }

    /// Forgets a breaker (its dependency is gone); `false` when there was none of that name.
    pub fn remove(&self, name: &str) -> bool {
        let mut breakers = self.breakers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        breakers.remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<CircuitBreaker>> {
        self.breakers.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned()
    }

    /// Snapshots of every breaker, by name.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        let breakers = self.breakers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        breakers.values().map(|breaker| breaker.snapshot()).collect()
    }
}

impl std::fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let breakers = self.breakers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        f.debug_struct("BreakerRegistry").field("names", &breakers.keys().collect::<Vec<_>>()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::{BreakerState, CircuitBreakerConfig};
    use crate::clock::ManualClock;

    fn breaker(name: &str) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig::new(name), Arc::new(ManualClock::default())))
    }

    #[test]
    fn finds_breakers_by_name_and_refuses_duplicates() {
        let registry = BreakerRegistry::new();
        registry.register(breaker("payments")).unwrap();
        registry.register(breaker("redis")).unwrap();
        assert_eq!(registry.register(breaker("redis")), Err(DuplicateBreaker("redis".into())));
        let payments = registry.get("payments").unwrap();
        payments.force_open();
        let snapshots = registry.snapshots();
        let names = snapshots.iter().map(|s| (s.name.as_str(), s.state)).collect::<Vec<_>>();
        assert_eq!(names, [("payments", BreakerState::ForcedOpen), ("redis", BreakerState::Closed)]);
        assert!(registry.get("smtp").is_none());
    }

    #[test]
    fn breakers_are_replaced_and_removed_by_name() {
        let registry = BreakerRegistry::new();
        registry.register(breaker("webhook-1")).unwrap();
        registry.get("webhook-1").unwrap().force_open();
        registry.replace(breaker("webhook-1"));
        assert_eq!(registry.get("webhook-1").unwrap().snapshot().state, BreakerState::Closed);
        assert!(registry.remove("webhook-1"));
        assert!(!registry.remove("webhook-1"));
        assert!(registry.snapshots().is_empty());
    }
}

//! Stability patterns from *Release It!*, knowing nothing about the shop: each is a plain type
//! its callers use directly (no tower layers: the `integration` client and `shop-api`'s
//! middleware each need their own typed errors and responses). Time comes from an injected
//! [`Clock`], so every state change is testable without sleeping.
//!
//! There is no timeout type here on purpose: a per-call or per-attempt timeout is tower's
//! `TimeoutLayer` or `tokio::time::timeout` around one future, as the `integration` crate does
//! for its attempts and total time.

#![forbid(unsafe_code)]

pub mod action_governor;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod clock;
pub mod load_shed;
pub mod rate_limit;
pub mod registry;
pub mod retry;
pub mod shared_limit;

pub use action_governor::{ActionGovernor, ActionGovernorConfig, Grant};
pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadFull};
pub use circuit_breaker::{
    BreakerSnapshot, BreakerState, CallOutcome, CircuitBreaker, CircuitBreakerConfig, OpenWait, Rejected, SlidingWindow,
};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use load_shed::{ConcurrencyLimit, LoadShedder, Overloaded, ShedPermit};
pub use rate_limit::{Decision, KeyedLimiter, Quota, SlidingWindowCounter};
pub use registry::{BreakerRegistry, DuplicateBreaker};
pub use retry::{Idempotency, Retry, RetryConfig, Verdict};
pub use shared_limit::{FailureMode, LockoutRule, SharedLimitError, SharedLimiter};

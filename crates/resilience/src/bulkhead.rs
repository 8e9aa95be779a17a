//! Bulkhead (Release It! ch. 5): bounded concurrency per dependency, so one slow dependency can
//! hold at most its own share of tasks. A call waits at most `max_wait` for a slot, then is
//! refused. Metrics: `bulkhead_in_use{name}`, `bulkhead_rejected_total{name}`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Settings of one bulkhead.
#[derive(Debug, Clone)]
pub struct BulkheadConfig {
    pub name: String,
    /// Calls in progress at once.
    pub max_concurrent: usize,
    /// How long a call may wait for a free slot; zero refuses at once when full.
    pub max_wait: Duration,
}

/// A full bulkhead refused the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead {name} is full ({max_concurrent} calls in progress)")]
pub struct BulkheadFull {
    pub name: String,
    pub max_concurrent: usize,
}

/// Bounded concurrency for one dependency. Share it with `Arc`.
#[derive(Debug)]
pub struct Bulkhead {
    config: BulkheadConfig,
    permits: Arc<Semaphore>,
}

/// A slot in the bulkhead, released on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
    name: String,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        metrics::gauge!("bulkhead_in_use", "name" => self.name.clone()).decrement(1.0);
    }
}

impl Bulkhead {
    pub fn new(config: BulkheadConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS)));
        Self { config, permits }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Free slots right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// A slot, waiting at most `max_wait`.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if self.config.max_wait.is_zero() => None,
            Err(_) => tokio::time::timeout(self.config.max_wait, Arc::clone(&self.permits).acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        match permit {
            Some(permit) => {
                metrics::gauge!("bulkhead_in_use", "name" => self.config.name.clone()).increment(1.0);
                Ok(BulkheadPermit { _permit: permit, name: self.config.name.clone() })
            }
            None => {
                metrics::counter!("bulkhead_rejected_total", "name" => self.config.name.clone()).increment(1);
                Err(BulkheadFull { name: self.config.name.clone(), max_concurrent: self.config.max_concurrent })
            }
        }
    }

    /// Runs `operation` in a slot.
    pub async fn run<T, Fut: Future<Output = T>>(&self, operation: impl FnOnce() -> Fut) -> Result<T, BulkheadFull> {
        let _permit = self.acquire().await?;
        Ok(operation().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulkhead(max_concurrent: usize, max_wait: Duration) -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(BulkheadConfig { name: "smtp".into(), max_concurrent, max_wait }))
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_after_the_bounded_wait() {
        let bulkhead = bulkhead(2, Duration::from_millis(500));
        let _first = bulkhead.acquire().await.unwrap();
        let _second = bulkhead.acquire().await.unwrap();
        assert_eq!(bulkhead.available(), 0);
        let started = tokio::time::Instant::now();
        let refused = bulkhead.acquire().await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(500), "waited exactly max_wait");
        assert_eq!(refused, BulkheadFull { name: "smtp".into(), max_concurrent: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_gets_a_slot_released_in_time() {
        let bulkhead = bulkhead(1, Duration::from_secs(1));
        let held = bulkhead.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let bulkhead = Arc::clone(&bulkhead);
            async move { bulkhead.acquire().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(bulkhead.available(), 1, "slots come back when permits drop");
    }

    #[tokio::test]
    async fn zero_wait_refuses_at_once() {
        let bulkhead = bulkhead(1, Duration::ZERO);
        let _held = bulkhead.acquire().await.unwrap();
        assert!(bulkhead.acquire().await.is_err());
        assert!(bulkhead.run(|| async { 1 }).await.is_err());
    }
}

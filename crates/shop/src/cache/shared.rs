//! The shared tier behind the in-process one (Redis when configured): the port an adapter
//! implements, the read-through with a fill lease, and the task that keeps this process's
//! generations in step with every other instance's writes.
//!
//! A local miss looks in the shared tier under the trusted stored generation (see
//! [`super::generations`]); a shared miss takes a short lease so that one instance loads the
//! key from the database while the others wait for its value (at most the lease, then they
//! load too). Every failure of the tier — refused by its breaker, timed out, a value that does
//! not decode — falls back to the database: the shared tier can make reads cheaper, never
//! fail them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sha2::Digest as _;

use super::{CacheHandle, CacheSettings, Family, Generations, jittered};
use crate::error::StoreError;
use crate::ports::CacheVersions;

/// A failure of the shared tier (unreachable, timed out, refused by its breaker).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TierError(pub String);

/// A write announced to every instance: the family and, when the database keeps a generation
/// of it, that generation as read after the write committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    pub family: Family,
    pub stored: Option<u64>,
}

/// What the subscription to other instances' announcements reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierEvent {
    /// Subscribed (first or again): announcements sent before may have been missed.
    Subscribed,
    /// The subscription dropped: announcements are being missed until [`TierEvent::Subscribed`].
    Lost,
    /// Another instance wrote.
    Announced(Announcement),
}

/// The port of a shared cache tier. Keys arrive complete (prefixing is the adapter's); values
/// are opaque bytes.
#[async_trait]
pub trait SharedTier: Send + Sync {
    /// `redis`, for logs, metrics and readiness.
    fn backend(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TierError>;
    async fn put(&self, key: &str, value: Vec<u8>, ttl: std::time::Duration) -> Result<(), TierError>;
    /// Takes the fill lease `key` for `ttl`: false while another instance holds it.
    async fn lease(&self, key: &str, ttl: std::time::Duration) -> Result<bool, TierError>;
    async fn release(&self, key: &str) -> Result<(), TierError>;
    /// Tells every other instance about a write.
    async fn announce(&self, announcement: Announcement) -> Result<(), TierError>;
    /// Probes the tier: subscribed to the announcements, and a command answered.
    async fn check(&self) -> Result<(), TierError>;
}

/// How long a waiter sleeps between looks for the value another instance's lease fills.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Keys longer than this are stored under their SHA-256.
const MAX_PLAIN_KEY: usize = 160;

/// A cache's use of the shared tier: the tier and how its keys and values become bytes.
pub(super) struct SharedFill<K, V> {
    pub(super) tier: Arc<dyn SharedTier>,
    pub(super) key: fn(&K) -> &str,
    pub(super) encode: fn(&V) -> Result<Vec<u8>, serde_json::Error>,
    pub(super) decode: fn(&[u8]) -> Result<V, serde_json::Error>,
}

impl<K, V> Clone for SharedFill<K, V> {
    fn clone(&self) -> Self {
        Self { tier: Arc::clone(&self.tier), key: self.key, encode: self.encode, decode: self.decode }
    }
}

/// What one cache did with the shared tier.
#[derive(Debug, Default)]
pub(super) struct SharedCounts {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    errors: AtomicU64,
}

impl SharedCounts {
    pub(super) fn stats(&self) -> SharedStats {
        SharedStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A cache's shared-tier figures since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Local misses answered by the shared tier (after waiting for another's lease included).
    pub hits: u64,
    pub misses: u64,
    /// Values this instance stored in the tier.
    pub fills: u64,
    /// Lookups, leases and stores that failed (the database answered instead).
    pub errors: u64,
}

impl SharedStats {
    /// Hits over lookups that got an answer; `None` before the first.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

enum Lookup<V> {
    Hit(V),
    Miss,
    Unavailable,
}

impl<K, V> SharedFill<K, V> {
    /// The tier's key of `key` in cache `cache` at stored generation `generation`.
    pub(super) fn key_of(&self, cache: &str, generation: u64, key: &K) -> String {
        let key = (self.key)(key);
        if key.len() <= MAX_PLAIN_KEY {
            format!("{cache}:{generation}:{key}")
        } else {
            format!("{cache}:{generation}:#{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
        }
    }

    /// The value of `key` from the tier, else loaded (by this instance or, while it holds the
    /// fill lease, by another one) and stored there.
    pub(super) async fn read_through<F, Fut>(
        &self,
        cache: &'static str,
        key: &str,
        settings: &CacheSettings,
        counts: &SharedCounts,
        negative: fn(&V) -> bool,
        load: F,
    ) -> Result<V, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        match self.lookup(cache, key, counts).await {
            Lookup::Hit(value) => return Ok(value),
            Lookup::Unavailable => return load().await,
            Lookup::Miss => {}
        }
        let lease_key = format!("{key}:lease");
        let lease = std::time::Duration::try_from(settings.lease).unwrap_or(std::time::Duration::from_millis(200));
        match self.tier.lease(&lease_key, lease).await {
            Ok(true) => {
                let loaded = load().await;
                if let Ok(value) = &loaded {
                    let ttl = if negative(value) { settings.negative_ttl } else { settings.ttl };
                    self.store(cache, key, value, jittered(ttl, settings.jitter), counts).await;
                }
                if let Err(error) = self.tier.release(&lease_key).await {
                    tracing::debug!(%error, cache, "could not release a fill lease; it expires by itself");
                }
                loaded
            }
            Ok(false) => {
                // Another instance is loading this key: its value is one look away, soon.
                let deadline = tokio::time::Instant::now() + lease;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(LEASE_POLL).await;
                    match self.lookup_quietly(key).await {
                        Lookup::Hit(value) => {
                            count(cache, "lease_wait_hit");
                            counts.hits.fetch_add(1, Ordering::Relaxed);
                            return Ok(value);
                        }
                        Lookup::Unavailable => break,
                        Lookup::Miss => {}
                    }
                }
                count(cache, "lease_timeout");
                load().await
            }
            Err(error) => {
                self.failed(cache, "lease", &error, counts);
                load().await
            }
        }
    }

    async fn lookup(&self, cache: &'static str, key: &str, counts: &SharedCounts) -> Lookup<V> {
        let found = self.lookup_quietly(key).await;
        let (outcome, counter) = match &found {
            Lookup::Hit(_) => ("hit", &counts.hits),
            Lookup::Miss => ("miss", &counts.misses),
            Lookup::Unavailable => ("error", &counts.errors),
        };
        count(cache, outcome);
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    async fn lookup_quietly(&self, key: &str) -> Lookup<V> {
        match self.tier.get(key).await {
            Ok(Some(bytes)) => match (self.decode)(&bytes) {
                Ok(value) => Lookup::Hit(value),
                Err(error) => {
                    // Written by another version of the shop, or not by the shop at all: the
                    // database answers, and the fill replaces it.
                    tracing::warn!(%error, "a shared cache value does not decode; reading the database");
                    Lookup::Miss
                }
            },
            Ok(None) => Lookup::Miss,
            Err(error) => {
                tracing::debug!(%error, "shared cache lookup failed; reading the database");
                Lookup::Unavailable
            }
        }
    }

    async fn store(&self, cache: &'static str, key: &str, value: &V, ttl: time::Duration, counts: &SharedCounts) {
        let bytes = match (self.encode)(value) {
            Ok(bytes) => bytes,
            Err(error) => return self.failed(cache, "encode", &TierError(error.to_string()), counts),
        };
        let ttl = std::time::Duration::try_from(ttl).unwrap_or(std::time::Duration::from_secs(1));
        match self.tier.put(key, bytes, ttl).await {
            Ok(()) => {
                counts.fills.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("cache_fills_total", "cache" => cache, "tier" => "shared").increment(1);
            }
            Err(error) => self.failed(cache, "put", &error, counts),
        }
    }

    fn failed(&self, cache: &'static str, step: &'static str, error: &TierError, counts: &SharedCounts) {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%error, cache, step, "shared cache step failed");
        metrics::counter!("cache_fill_errors_total", "cache" => cache, "tier" => "shared").increment(1);
    }
}

fn count(cache: &'static str, outcome: &'static str) {
    metrics::counter!("cache_requests_total", "cache" => cache, "tier" => "shared", "outcome" => outcome).increment(1);
}

/// Keeps this process in step with the others through the shared tier until `stop`:
/// after each local write it reads the database's generation (trusting the shared tier again)
/// and announces the write; announcements of others make their family's local entries
/// unreachable; a subscription that drops or comes back flushes every local entry, since
/// announcements sent meanwhile are lost. The generation poll ([`super::follow_stored_generations`])
/// runs beside it and bounds staleness when the tier is down.
pub async fn follow_shared_tier(
    versions: Arc<dyn CacheVersions>,
    tier: Arc<dyn SharedTier>,
    mut events: tokio::sync::mpsc::Receiver<TierEvent>,
    caches: Vec<Arc<dyn CacheHandle>>,
    retry_every: std::time::Duration,
    stop: impl Future<Output = ()>,
) {
    let generations = versions.generations();
    let mut retry = tokio::time::interval(retry_every);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut subscribed = true;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = generations.wait_pending() => observe(versions.as_ref(), tier.as_ref(), &generations).await,
            _ = retry.tick() => {
                if Family::STORED.iter().any(|family| generations.shared(*family).is_none())
                    || generations.unannounced(Family::Accounts)
                {
                    observe(versions.as_ref(), tier.as_ref(), &generations).await;
                }
            }
            event = events.recv(), if subscribed => match event {
                Some(TierEvent::Announced(announcement)) => {
                    generations.announced(announcement.family, announcement.stored);
                    drop_unreachable(&caches, Some(announcement.family));
                }
                Some(TierEvent::Subscribed | TierEvent::Lost) => {
                    generations.flush();
                    drop_unreachable(&caches, None);
                }
                None => {
                    tracing::warn!("the shared cache subscription ended; relying on the generation poll");
                    generations.flush();
                    drop_unreachable(&caches, None);
                    subscribed = false;
                }
            },
        }
    }
}

/// Reads each stored generation, trusts it when it covers this process's writes, and announces
/// local writes waiting for it.
async fn observe(versions: &dyn CacheVersions, tier: &dyn SharedTier, generations: &Generations) {
    for family in Family::STORED {
        let before = generations.current(family);
        match versions.stored_generation(family).await {
            Ok(stored) => {
                let observed = generations.observe(family, before, stored);
                if observed.announce {
                    announce(tier, Announcement { family, stored: Some(observed.known) }).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, family = family.as_str(), "cannot read the stored cache generation; the shared tier waits");
            }
        }
    }
    if generations.take_unannounced(Family::Accounts) {
        announce(tier, Announcement { family: Family::Accounts, stored: None }).await;
    }
}

async fn announce(tier: &dyn SharedTier, announcement: Announcement) {
    match tier.announce(announcement).await {
        Ok(()) => metrics::counter!("cache_announcements_total", "family" => announcement.family.as_str(), "outcome" => "sent").increment(1),
        Err(error) => {
            // The others learn it from the generation poll (catalog) or their short TTL (accounts).
            tracing::warn!(%error, family = announcement.family.as_str(), "could not announce a write to the other instances");
            metrics::counter!("cache_announcements_total", "family" => announcement.family.as_str(), "outcome" => "failed")
                .increment(1);
        }
    }
}

fn drop_unreachable(caches: &[Arc<dyn CacheHandle>], family: Option<Family>) {
    for cache in caches.iter().filter(|cache| family.is_none_or(|family| cache.family() == family)) {
        cache.drop_unreachable();
    }
}

#[cfg(test)]
mod tests {
    //! The read-through against an in-memory tier; the Redis adapter runs the same paths
    //! against a real Redis in its own tests and in the API's two-instance tests.

    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use time::OffsetDateTime;

    use super::*;
    use crate::cache::ReadCache;
    use crate::clock::ManualClock;

    #[derive(Default)]
    struct MemoryTier {
        values: Mutex<HashMap<String, Vec<u8>>>,
        leases: Mutex<HashSet<String>>,
        down: AtomicBool,
    }

    impl MemoryTier {
        fn check(&self) -> Result<(), TierError> {
            if self.down.load(Ordering::SeqCst) { Err(TierError("down".into())) } else { Ok(()) }
        }

        fn keys(&self) -> Vec<String> {
            let mut keys: Vec<String> = self.values.lock().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        }
    }

    #[async_trait]
    impl SharedTier for MemoryTier {
        fn backend(&self) -> &'static str {
            "memory"
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TierError> {
            self.check()?;
            Ok(self.values.lock().unwrap().get(key).cloned())
        }
        async fn put(&self, key: &str, value: Vec<u8>, _ttl: std::time::Duration) -> Result<(), TierError> {
            self.check()?;
            self.values.lock().unwrap().insert(key.to_owned(), value);
            Ok(())
        }
        async fn lease(&self, key: &str, _ttl: std::time::Duration) -> Result<bool, TierError> {
            self.check()?;
            Ok(self.leases.lock().unwrap().insert(key.to_owned()))
        }
        async fn release(&self, key: &str) -> Result<(), TierError> {
            self.check()?;
            self.leases.lock().unwrap().remove(key);
            Ok(())
        }
        async fn announce(&self, _announcement: Announcement) -> Result<(), TierError> {
            self.check()
        }
        async fn check(&self) -> Result<(), TierError> {
            self.check()
        }
    }

    /// One instance: its generations (trusting stored generation `stored`) and its local cache.
    fn instance(tier: &Arc<MemoryTier>, stored: u64) -> (ReadCache<String, Option<String>>, Arc<Generations>) {
        let generations = Arc::new(Generations::default());
        let before = generations.current(Family::Catalog);
        generations.observe(Family::Catalog, before, stored);
        let clock = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let settings = CacheSettings { jitter: 0.0, ..CacheSettings::default() };
        let cache = ReadCache::new("test", Family::Catalog, Arc::clone(&generations), clock, &settings)
            .with_shared(Arc::clone(tier) as Arc<dyn SharedTier>);
        (cache, generations)
    }

    async fn read(cache: &ReadCache<String, Option<String>>, loads: &AtomicUsize, value: &str) -> Option<String> {
        cache
            .get_or_load("key".to_owned(), Option::is_none, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(Some(value.to_owned()))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn what_one_instance_loaded_another_reads_from_the_tier() {
        let tier = Arc::new(MemoryTier::default());
        let (a, _) = instance(&tier, 1);
        let (b, _) = instance(&tier, 1);
        let loads = AtomicUsize::new(0);
        assert_eq!(read(&a, &loads, "from the database").await.as_deref(), Some("from the database"));
        assert_eq!(read(&b, &loads, "loaded again").await.as_deref(), Some("from the database"));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for both instances");
        assert_eq!(tier.keys(), ["test:1:key"]);
        assert_eq!(a.stats().shared, Some(SharedStats { hits: 0, misses: 1, fills: 1, errors: 0 }));
        assert_eq!(b.stats().shared, Some(SharedStats { hits: 1, misses: 0, fills: 0, errors: 0 }));
        assert!(tier.leases.lock().unwrap().is_empty(), "the fill lease is released");
    }

    #[tokio::test]
    async fn after_a_local_write_the_tier_waits_until_the_stored_generation_is_read_again() {
        let tier = Arc::new(MemoryTier::default());
        let (a, generations) = instance(&tier, 1);
        let (b, b_generations) = instance(&tier, 1);
        let loads = AtomicUsize::new(0);
        read(&a, &loads, "old").await;
        generations.bump(Family::Catalog);
        // The write is not covered by generation 1: the database answers, the tier is untouched.
        assert_eq!(read(&a, &loads, "new").await.as_deref(), Some("new"));
        assert_eq!(tier.keys(), ["test:1:key"]);
        // Observed again (the trigger made it 2): fills go under 2.
        let now = generations.current(Family::Catalog);
        assert!(generations.observe(Family::Catalog, now, 2).announce);
        generations.bump(Family::Catalog);
        let now = generations.current(Family::Catalog);
        generations.observe(Family::Catalog, now, 2);
        assert_eq!(read(&a, &loads, "new").await.as_deref(), Some("new"));
        assert_eq!(tier.keys(), ["test:1:key", "test:2:key"]);
        // B has not heard of the write: it still reads generation 1 until the announcement.
        assert_eq!(read(&b, &loads, "unused").await.as_deref(), Some("old"));
        b_generations.announced(Family::Catalog, Some(2));
        assert_eq!(read(&b, &loads, "unused").await.as_deref(), Some("new"));
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_lease_holders_value_instead_of_loading() {
        let tier = Arc::new(MemoryTier::default());
        let (b, _) = instance(&tier, 1);
        tier.leases.lock().unwrap().insert("test:1:key:lease".to_owned());
        let filler = {
            let tier = Arc::clone(&tier);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                let value = serde_json::to_vec(&Some("filled by A")).unwrap();
                tier.values.lock().unwrap().insert("test:1:key".to_owned(), value);
            })
        };
        let loads = AtomicUsize::new(0);
        assert_eq!(read(&b, &loads, "loaded by B").await.as_deref(), Some("filled by A"));
        assert_eq!(loads.load(Ordering::SeqCst), 0);
        filler.await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_that_is_never_filled_costs_at_most_the_lease_then_loads() {
        let tier = Arc::new(MemoryTier::default());
        let (b, _) = instance(&tier, 1);
        tier.leases.lock().unwrap().insert("test:1:key:lease".to_owned());
        let loads = AtomicUsize::new(0);
        let started = std::time::Instant::now();
        assert_eq!(read(&b, &loads, "loaded by B").await.as_deref(), Some("loaded by B"));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_tier_that_fails_or_holds_garbage_falls_back_to_the_database() {
        let tier = Arc::new(MemoryTier::default());
        let (a, generations) = instance(&tier, 1);
        tier.down.store(true, Ordering::SeqCst);
        let loads = AtomicUsize::new(0);
        assert_eq!(read(&a, &loads, "from the database").await.as_deref(), Some("from the database"));
        tier.down.store(false, Ordering::SeqCst);
        tier.values.lock().unwrap().insert("test:2:key".to_owned(), b"not json".to_vec());
        generations.announced(Family::Catalog, Some(2));
        assert_eq!(read(&a, &loads, "fresh").await.as_deref(), Some("fresh"));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        let stored = tier.values.lock().unwrap().get("test:2:key").cloned().unwrap();
        assert_eq!(stored, serde_json::to_vec(&Some("fresh")).unwrap(), "the fill replaced the garbage");
    }

    #[test]
    fn long_keys_are_hashed() {
        let tier = Arc::new(MemoryTier::default());
        let (cache, _) = instance(&tier, 1);
        let fill = cache.shared.clone().unwrap();
        assert_eq!(fill.key_of("products", 4, &"slug:a".to_owned()), "products:4:slug:a");
        let long = fill.key_of("products", 4, &"q".repeat(500));
        assert!(long.starts_with("products:4:#") && long.len() == "products:4:#".len() + 64, "{long}");
    }
}

//! Read-through caching of domain reads: an in-process tier (moka) in front of the store,
//! with per-entry TTLs and jitter on the service's clock, single-flight fills, and
//! invalidation by generation so that no write path can leave a stale entry behind.
//!
//! Every cached key is stored under the generation of its family ([`Family`]) current when the
//! read began. A write bumps the generation ([`Generations::bump`]) after it commits — the
//! storage adapter does it for every catalog write, and a poller does it when another instance
//! wrote (the database keeps a counter its triggers bump, see [`crate::ports::CacheVersions`]).
//! A read that started before the bump stores its result under the old generation, which no
//! later read looks up: the cache-aside race (a slow read putting back what a write just
//! replaced) cannot happen.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod generations;
mod shared;

pub use generations::Generations;
use shared::SharedFill;
pub use shared::{Announcement, SharedStats, SharedTier, TierError, TierEvent, follow_shared_tier};

use rand::Rng;
use time::{Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::error::StoreError;

/// A group of cached reads invalidated together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Products, categories, product lists, search results and suggestions.
    Catalog,
    /// Sign-ins: sessions and API tokens with their users. Not followed across instances by
    /// the generation poll: their entries live at most `max_staleness`.
    Accounts,
}

impl Family {
    /// The families the database keeps a generation of, followed by the poll.
    pub const STORED: [Family; 1] = [Family::Catalog];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
            Self::Accounts => "accounts",
        }
    }
}

/// How the caches behave; validated by the configuration.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Off: every read goes to the store.
    pub enabled: bool,
    /// Upper bound of the estimated bytes held by each cache.
    pub capacity_bytes: u64,
    /// How long an entry lives at most.
    pub ttl: Duration,
    /// Each entry's TTL is shortened by a random fraction up to this (0 to 0.5), so entries
    /// filled together do not expire together (dogpile).
    pub jitter: f64,
    /// How long a "not found" is remembered.
    pub negative_ttl: Duration,
    /// How stale a read may be after another instance wrote: the period of the generation poll.
    pub max_staleness: Duration,
    /// How long one instance may fill a shared-tier key alone while the others wait for it.
    pub lease: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity_bytes: 64 * 1024 * 1024,
            ttl: Duration::seconds(60),
            jitter: 0.1,
            negative_ttl: Duration::seconds(5),
            max_staleness: Duration::seconds(1),
            lease: Duration::milliseconds(200),
        }
    }
}

/// An estimate of the bytes a cached value holds, for the capacity bound.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl<T: Weigh> Weigh for Option<T> {
    fn weight(&self) -> usize {
        self.as_ref().map_or(0, Weigh::weight)
    }
}

impl<T: Weigh> Weigh for Vec<T> {
    fn weight(&self) -> usize {
        self.iter().map(Weigh::weight).sum::<usize>() + 24
    }
}

impl<T: Weigh> Weigh for crate::Page<T> {
    fn weight(&self) -> usize {
        self.items.weight() + 32
    }
}

impl<A: Weigh, B: Weigh> Weigh for (A, B) {
    fn weight(&self) -> usize {
        self.0.weight() + self.1.weight()
    }
}

impl<T: Weigh + ?Sized> Weigh for Arc<T> {
    fn weight(&self) -> usize {
        T::weight(self)
    }
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    expires_at: OffsetDateTime,
}

#[derive(Debug, Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    fill_errors: AtomicU64,
    evictions: Arc<AtomicU64>,
    shared: shared::SharedCounts,
}

/// What a cache did so far, for metrics and the admin status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Loads run (one per set of concurrent misses of a key).
    pub fills: u64,
    pub fill_errors: u64,
    /// Entries dropped for capacity (not for expiry or invalidation).
    pub evictions: u64,
    pub entries: u64,
    pub weighted_bytes: u64,
    /// The shared tier's figures, when the cache has one.
    pub shared: Option<SharedStats>,
}

/// One cache of values `V` by key `K`, in a family.
pub struct ReadCache<K, V> {
    name: &'static str,
    family: Family,
    generations: Arc<Generations>,
    clock: Arc<dyn Clock>,
    settings: CacheSettings,
    entries: Option<moka::future::Cache<(u64, K), Entry<V>>>,
    counts: Arc<Counts>,
    /// The shared tier behind the local one, when configured.
    shared: Option<SharedFill<K, V>>,
}

impl<K, V> Clone for ReadCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            family: self.family,
            generations: Arc::clone(&self.generations),
            clock: Arc::clone(&self.clock),
            settings: self.settings.clone(),
            entries: self.entries.clone(),
            counts: Arc::clone(&self.counts),
            shared: self.shared.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for ReadCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache").field("name", &self.name).field("family", &self.family).finish_non_exhaustive()
    }
}

impl<K, V> ReadCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + Weigh + 'static,
    V: Clone + Send + Sync + Weigh + 'static,
{
    pub fn new(
        name: &'static str,
        family: Family,
        generations: Arc<Generations>,
        clock: Arc<dyn Clock>,
        settings: &CacheSettings,
    ) -> Self {
        let counts = Arc::new(Counts::default());
        let entries = settings.enabled.then(|| {
            let evictions = Arc::clone(&counts.evictions);
            let ttl = std::time::Duration::try_from(settings.ttl.max(settings.negative_ttl))
                .unwrap_or(std::time::Duration::from_secs(60));
            moka::future::Cache::builder()
                .max_capacity(settings.capacity_bytes)
                .weigher(|key: &(u64, K), entry: &Entry<V>| {
                    u32::try_from(key.1.weight() + entry.value.weight() + 64).unwrap_or(u32::MAX)
                })
                // The clock's TTL decides; moka's only returns the memory of entries nobody reads.
                .time_to_live(ttl)
                .support_invalidation_closures()
                .eviction_listener(move |_key, _value, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evictions.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()
        });
        Self { name, family, generations, clock, settings: settings.clone(), entries, counts, shared: None }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A new, empty, local-only cache of other types under this one's family, generations,
    /// clock and settings: for a derived form of what this cache holds (its rendered body, say),
    /// which every write that invalidates this cache invalidates too.
    pub fn sibling<K2, V2>(&self, name: &'static str) -> ReadCache<K2, V2>
    where
        K2: Hash + Eq + Clone + Send + Sync + Weigh + 'static,
        V2: Clone + Send + Sync + Weigh + 'static,
    {
        ReadCache::new(name, self.family, Arc::clone(&self.generations), Arc::clone(&self.clock), &self.settings)
    }

    /// Local misses look in `tier` (and fill it) before the store; values travel as JSON.
    pub fn with_shared(mut self, tier: Arc<dyn SharedTier>) -> Self
    where
        K: AsRef<str>,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        if self.entries.is_some() {
            self.shared = Some(SharedFill {
                tier,
                key: |key: &K| key.as_ref(),
                encode: |value: &V| serde_json::to_vec(value),
                decode: |bytes: &[u8]| serde_json::from_slice(bytes),
            });
        }
        self
    }

    /// The cached value of `key`, or the result of `load` (stored unless it failed). Concurrent
    /// misses of one key run one load. `negative` says which values are "not found" and get
    /// the short TTL.
    pub async fn get_or_load<F, Fut>(&self, key: K, negative: fn(&V) -> bool, load: F) -> Result<V, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        let Some(entries) = &self.entries else {
            return load().await;
        };
        let key = (self.generations.current(self.family), key);
        let now = self.clock.now();
        if let Some(entry) = entries.get(&key).await {
            if entry.expires_at > now {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                self.count("hit");
                return Ok(entry.value);
            }
            entries.invalidate(&key).await;
        }
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        self.count("miss");
        let counts = Arc::clone(&self.counts);
        let clock = Arc::clone(&self.clock);
        let settings = &self.settings;
        let name = self.name;
        // The shared tier only under a stored generation that covers this process's writes.
        let shared = self.shared.as_ref().and_then(|shared| {
            let generation = self.generations.shared(self.family)?;
            Some((shared, shared.key_of(name, generation, &key.1)))
        });
        let filled = entries
            .try_get_with(key, async move {
                counts.fills.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("cache_fills_total", "cache" => name, "tier" => "local").increment(1);
                let value = match shared {
                    Some((shared, key)) => {
                        shared.read_through(name, &key, settings, &counts.shared, negative, load).await?
                    }
                    None => load().await?,
                };
                let ttl = if negative(&value) { settings.negative_ttl } else { settings.ttl };
                Ok::<_, StoreError>(Entry { expires_at: clock.now() + jittered(ttl, settings.jitter), value })
            })
            .await;
        match filled {
            Ok(entry) => Ok(entry.value),
            Err(error) => {
                self.counts.fill_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("cache_fill_errors_total", "cache" => name, "tier" => "local").increment(1);
                Err(shared_error(&error))
            }
        }
    }

    /// Forgets `key` (after a write that changed only it, by this process).
    pub async fn invalidate(&self, key: K) {
        if let Some(entries) = &self.entries {
            entries.invalidate(&(self.generations.current(self.family), key)).await;
        }
    }

    pub fn stats(&self) -> CacheStats {
        let (entries, weighted_bytes) =
            self.entries.as_ref().map_or((0, 0), |entries| (entries.entry_count(), entries.weighted_size()));
        CacheStats {
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
            fills: self.counts.fills.load(Ordering::Relaxed),
            fill_errors: self.counts.fill_errors.load(Ordering::Relaxed),
            evictions: self.counts.evictions.load(Ordering::Relaxed),
            entries,
            weighted_bytes,
            shared: self.shared.as_ref().map(|_| self.counts.shared.stats()),
        }
    }

    /// Drops what older generations left behind (they are unreachable already) so memory is
    /// returned at once, not when their TTL ends.
    pub fn drop_unreachable(&self) {
        if let Some(entries) = &self.entries {
            let current = self.generations.current(self.family);
            // Only fails when invalidation closures are not enabled; they are not needed here.
            let _ = entries.invalidate_entries_if(move |key, _| key.0 != current);
        }
    }

    /// Drops every entry of this process's tier (an operator's flush); answers how many it
    /// held. The shared tier keeps its entries: they are keyed by generation and expire by TTL.
    pub async fn flush(&self) -> u64 {
        match &self.entries {
            Some(entries) => {
                // The count is kept lazily: settle it first, so the answer is what was held.
                entries.run_pending_tasks().await;
                let held = entries.entry_count();
                entries.invalidate_all();
                entries.run_pending_tasks().await;
                held
            }
            None => 0,
        }
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!("cache_requests_total", "cache" => self.name, "tier" => "local", "outcome" => outcome)
            .increment(1);
    }
}

/// A cache seen without its types: for metrics, the admin status and the generation poll.
#[async_trait::async_trait]
pub trait CacheHandle: Send + Sync {
    fn name(&self) -> &'static str;
    fn family(&self) -> Family;
    fn stats(&self) -> CacheStats;
    /// See [`ReadCache::drop_unreachable`].
    fn drop_unreachable(&self);
    /// See [`ReadCache::flush`].
    async fn flush(&self) -> u64;
}

#[async_trait::async_trait]
impl<K, V> CacheHandle for ReadCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + Weigh + 'static,
    V: Clone + Send + Sync + Weigh + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn family(&self) -> Family {
        self.family
    }

    fn stats(&self) -> CacheStats {
        ReadCache::stats(self)
    }

    fn drop_unreachable(&self) {
        ReadCache::drop_unreachable(self);
    }

    async fn flush(&self) -> u64 {
        ReadCache::flush(self).await
    }
}

/// Follows the database's generations every `every` until `stop`: when one changed (another
/// instance or anyone's SQL wrote), this process's generation of that family is bumped, so no
/// read lags a write by much more than `every`. A failed check bumps too: what cannot be
/// checked is not trusted. Also publishes each cache's figures as gauges.
pub async fn follow_stored_generations(
    versions: Arc<dyn crate::ports::CacheVersions>,
    caches: Vec<Arc<dyn CacheHandle>>,
    every: std::time::Duration,
    stop: impl Future<Output = ()>,
) {
    let generations = versions.generations();
    let mut seen: Vec<(Family, Option<u64>)> = Family::STORED.iter().map(|family| (*family, None)).collect();
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = &mut stop => return,
        }
        for (family, last) in &mut seen {
            let before = generations.current(*family);
            let changed = match versions.stored_generation(*family).await {
                Ok(stored) => {
                    let changed = last.replace(stored).is_some_and(|last| last != stored);
                    if changed {
                        generations.advance(*family, before, stored);
                    }
                    changed
                }
                Err(error) => {
                    tracing::warn!(%error, family = family.as_str(), "cannot read the stored cache generation; dropping cached reads");
                    *last = None;
                    generations.distrust(*family);
                    true
                }
            };
            if changed {
                for cache in caches.iter().filter(|cache| cache.family() == *family) {
                    cache.drop_unreachable();
                }
            }
        }
        publish(&caches);
    }
}

/// Each cache's size and hit ratio as gauges.
pub fn publish(caches: &[Arc<dyn CacheHandle>]) {
    for cache in caches {
        let stats = cache.stats();
        let name = cache.name();
        metrics::gauge!("cache_entries", "cache" => name, "tier" => "local").set(stats.entries as f64);
        metrics::gauge!("cache_weighted_bytes", "cache" => name, "tier" => "local").set(stats.weighted_bytes as f64);
        metrics::counter!("cache_evictions_total", "cache" => name, "tier" => "local").absolute(stats.evictions);
        if let Some(ratio) = stats.hit_ratio() {
            metrics::gauge!("cache_hit_ratio", "cache" => name, "tier" => "local").set(ratio);
        }
        if let Some(ratio) = stats.shared.and_then(|shared| shared.hit_ratio()) {
            metrics::gauge!("cache_hit_ratio", "cache" => name, "tier" => "shared").set(ratio);
        }
    }
}

impl CacheStats {
    /// Hits over lookups; `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

/// `ttl` shortened by a random fraction in `[0, jitter]`.
fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    let fraction = rand::rng().random_range(0.0..=jitter.min(0.5));
    ttl - ttl * fraction
}

/// The error of a load, for every caller that waited on it: the domain's variants as they
/// were, an adapter failure as its message (the original is logged by whoever logs it).
fn shared_error(error: &Arc<StoreError>) -> StoreError {
    match error.as_ref() {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict(conflict) => StoreError::Conflict(conflict.clone()),
        StoreError::Other(source) => StoreError::other(source.to_string()),
    }
}

impl Weigh for u64 {
    fn weight(&self) -> usize {
        8
    }
}

impl Weigh for String {
    fn weight(&self) -> usize {
        self.len() + 24
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::clock::ManualClock;

    fn settings() -> CacheSettings {
        CacheSettings { jitter: 0.0, ..CacheSettings::default() }
    }

    fn cache(
        clock: &Arc<ManualClock>,
        settings: &CacheSettings,
    ) -> (ReadCache<String, Option<String>>, Arc<Generations>) {
        let generations = Arc::new(Generations::default());
        let cache = ReadCache::new("test", Family::Catalog, Arc::clone(&generations), Arc::clone(clock) as _, settings);
        (cache, generations)
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH))
    }

    async fn load_counting(
        cache: &ReadCache<String, Option<String>>,
        loads: &AtomicUsize,
        value: Option<&str>,
    ) -> Option<String> {
        cache
            .get_or_load("key".to_owned(), Option::is_none, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(value.map(str::to_owned))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_value_is_served_until_its_ttl_ends() {
        let clock = clock();
        let (cache, _) = cache(&clock, &settings());
        let loads = AtomicUsize::new(0);
        assert_eq!(load_counting(&cache, &loads, Some("a")).await.as_deref(), Some("a"));
        clock.advance(Duration::seconds(59));
        assert_eq!(load_counting(&cache, &loads, Some("b")).await.as_deref(), Some("a"));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        clock.advance(Duration::seconds(1));
        assert_eq!(load_counting(&cache, &loads, Some("b")).await.as_deref(), Some("b"));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.fills), (1, 2, 2));
    }

    #[tokio::test]
    async fn not_found_is_remembered_briefly() {
        let clock = clock();
        let (cache, _) = cache(&clock, &settings());
        let loads = AtomicUsize::new(0);
        assert_eq!(load_counting(&cache, &loads, None).await, None);
        clock.advance(Duration::seconds(4));
        assert_eq!(load_counting(&cache, &loads, Some("a")).await, None);
        clock.advance(Duration::seconds(1));
        assert_eq!(load_counting(&cache, &loads, Some("a")).await.as_deref(), Some("a"));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn jitter_shortens_ttls_within_its_bound() {
        let clock = clock();
        let settings = CacheSettings { jitter: 0.5, ttl: Duration::seconds(100), ..CacheSettings::default() };
        let mut expiries = Vec::new();
        for _ in 0..50 {
            let (cache, _) = cache(&clock, &settings);
            let loads = AtomicUsize::new(0);
            load_counting(&cache, &loads, Some("a")).await;
            // Find the entry's expiry to the second by moving a copy of the clock forward.
            let mut lived = 0;
            let probe = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
            let probe_cache = ReadCache { clock: Arc::clone(&probe) as Arc<dyn Clock>, ..cache.clone() };
            while lived <= 100 {
                let before = loads.load(Ordering::SeqCst);
                load_counting(&probe_cache, &loads, Some("b")).await;
                if loads.load(Ordering::SeqCst) > before {
                    break;
                }
                lived += 1;
                probe.advance(Duration::seconds(1));
            }
            expiries.push(lived);
        }
        assert!(expiries.iter().all(|lived| (50..=100).contains(lived)), "{expiries:?}");
        let first = expiries[0];
        assert!(expiries.iter().any(|lived| *lived != first), "jitter spreads expiries: {expiries:?}");
    }

    #[tokio::test]
    async fn concurrent_misses_run_one_load() {
        let clock = clock();
        let (cache, _) = cache(&clock, &settings());
        let loads = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let cache = cache.clone();
            let loads = Arc::clone(&loads);
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("key".to_owned(), Option::is_none, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(Some("a".to_owned()))
                    })
                    .await
            }));
        }
        // Let every task reach the cache, then release the one load.
        while loads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        gate.notify_one();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().as_deref(), Some("a"));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().fills, 1);
    }

    #[tokio::test]
    async fn a_bump_hides_every_entry_and_a_read_begun_before_it() {
        let clock = clock();
        let (cache, generations) = cache(&clock, &settings());
        let loads = AtomicUsize::new(0);
        load_counting(&cache, &loads, Some("old")).await;
        generations.bump(Family::Catalog);
        assert_eq!(load_counting(&cache, &loads, Some("new")).await.as_deref(), Some("new"));
        // A read that began before a write stores what it read under the old generation.
        let slow = cache.get_or_load("key2".to_owned(), Option::is_none, || async {
            generations.bump(Family::Catalog);
            Ok(Some("read before the write".to_owned()))
        });
        assert_eq!(slow.await.unwrap().as_deref(), Some("read before the write"));
        let after = cache.get_or_load("key2".to_owned(), Option::is_none, || async { Ok(Some("fresh".to_owned())) });
        assert_eq!(after.await.unwrap().as_deref(), Some("fresh"));
        cache.drop_unreachable();
    }

    #[tokio::test]
    async fn failed_loads_are_not_cached_and_reach_the_caller() {
        let clock = clock();
        let (cache, _) = cache(&clock, &settings());
        let failed = cache
            .get_or_load("key".to_owned(), Option::is_none, || async { Err(StoreError::other("database down")) })
            .await;
        assert!(matches!(failed, Err(StoreError::Other(error)) if error.to_string() == "database down"));
        let loads = AtomicUsize::new(0);
        assert_eq!(load_counting(&cache, &loads, Some("a")).await.as_deref(), Some("a"));
        assert_eq!(cache.stats().fill_errors, 1);
    }

    #[tokio::test]
    async fn a_disabled_cache_always_loads() {
        let clock = clock();
        let (cache, _) = cache(&clock, &CacheSettings { enabled: false, ..settings() });
        let loads = AtomicUsize::new(0);
        load_counting(&cache, &loads, Some("a")).await;
        load_counting(&cache, &loads, Some("a")).await;
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn capacity_bounds_the_bytes_held() {
        let clock = clock();
        let (cache, _) = cache(&clock, &CacheSettings { capacity_bytes: 10_000, ..settings() });
        for index in 0..500 {
            cache
                .get_or_load(format!("key{index}"), Option::is_none, || async { Ok(Some("x".repeat(100))) })
                .await
                .unwrap();
        }
        if let Some(entries) = &cache.entries {
            entries.run_pending_tasks().await;
        }
        let stats = cache.stats();
        assert!(stats.weighted_bytes <= 10_000, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
    }
}

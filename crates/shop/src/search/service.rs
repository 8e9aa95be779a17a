//! The search use cases: ranked product search with typo fallback, type-ahead suggestions and
//! facets, over any [`SearchIndex`] adapter.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::highlight::{highlight, snippet};
use super::query::{
    Alternative, FacetRequest, Facets, FieldBoosts, IndexHit, IndexQuery, QueryTerm, SearchOrder, SearchText,
};
use super::{Analyzer, Language, TypoRules, Vocabulary, words};
use crate::cache::{CacheHandle, CacheSettings, Family, Generations, ReadCache, SharedTier, Weigh};
use crate::catalog::{Category, Product, ProductQuery, ProductStatus};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, StoreError};
use crate::pagination::{Page, PageRequest};
use crate::ports::SearchIndex;

/// Whether a search corrects typos (`labtop` → `laptop`) when exact words find too little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Typos {
    #[default]
    Tolerated,
    /// Words match as typed (and the last one of a suggestion by prefix).
    Exact,
}

/// Query words beyond this many are ignored (Meilisearch does the same with 10).
pub const MAX_QUERY_WORDS: usize = 10;
/// Corrections tried per query word.
const CORRECTIONS_PER_WORD: usize = 8;
/// Completions of the last word tried by suggestions.
const COMPLETIONS: usize = 10;
/// The most suggestions one request may ask for.
pub const MAX_SUGGESTIONS: u32 = 20;

/// How search behaves; the `[search]` configuration section.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    /// The stemming language; must be the one the index was built with (the store rebuilds
    /// the index at start when it changed).
    pub language: Language,
    pub boosts: FieldBoosts,
    pub typos: TypoRules,
    /// Typo-tolerant matching runs only when exact matching finds fewer hits than this, or a
    /// query word is in no product (0: never).
    pub typo_fallback_below: u64,
    /// How stale the vocabulary used for corrections may be before the index is asked
    /// whether it changed.
    pub vocabulary_refresh: Duration,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            language: Language::default(),
            boosts: FieldBoosts::default(),
            typos: TypoRules::default(),
            typo_fallback_below: 10,
            vocabulary_refresh: Duration::from_secs(1),
        }
    }
}

/// A product found, ready to show: the score and the highlighted name and description.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchHit {
    pub product: Product,
    /// The index's relevance score (comparable within one response).
    pub score: f64,
    pub matched_words: u32,
    pub typos: u32,
    /// The name, HTML-escaped, matched words in `<mark>`.
    pub name_highlight: String,
    /// About 160 characters of the description around the first match, escaped and marked.
    pub description_snippet: String,
}

/// One page of hits and what was searched for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SearchResults {
    pub page: Page<SearchHit>,
    /// The query as corrected when typo tolerance found what the words as typed did not.
    pub corrected_query: Option<String>,
    /// Whether the typo-tolerant search ran (exact matching found too few hits).
    pub typo_fallback: bool,
    pub facets: Option<Facets>,
}

/// A product completing what was typed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SuggestedProduct {
    pub product: Product,
    /// The name, HTML-escaped, matched words in `<mark>`.
    pub name_highlight: String,
}

/// Type-ahead answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Suggestions {
    pub products: Vec<SuggestedProduct>,
    pub categories: Vec<Category>,
}

/// Search over the catalog.
#[derive(Clone)]
pub struct SearchService {
    index: Arc<dyn SearchIndex>,
    analyzer: Analyzer,
    settings: SearchSettings,
    vocabulary: Arc<VocabularyCache>,
    caches: SearchCaches,
}

/// Cached search answers, of the catalog family (any catalog write makes them unreachable).
#[derive(Clone, Debug)]
pub struct SearchCaches {
    pub results: ReadCache<String, SearchResults>,
    pub suggestions: ReadCache<String, Suggestions>,
    pub facets: ReadCache<String, Facets>,
}

impl SearchCaches {
    pub fn handles(&self) -> Vec<Arc<dyn CacheHandle>> {
        vec![Arc::new(self.results.clone()), Arc::new(self.suggestions.clone()), Arc::new(self.facets.clone())]
    }

    fn new(generations: &Arc<Generations>, clock: &Arc<dyn Clock>, settings: &CacheSettings) -> Self {
        let catalog = Family::Catalog;
        Self {
            results: ReadCache::new("search_results", catalog, Arc::clone(generations), Arc::clone(clock), settings),
            suggestions: ReadCache::new("suggestions", catalog, Arc::clone(generations), Arc::clone(clock), settings),
            facets: ReadCache::new("facets", catalog, Arc::clone(generations), Arc::clone(clock), settings),
        }
    }
}

impl SearchService {
    /// Without caching; see [`SearchService::with_cache`].
    pub fn new(index: Arc<dyn SearchIndex>, settings: SearchSettings) -> Self {
        let disabled = CacheSettings { enabled: false, ..CacheSettings::default() };
        Self {
            index,
            analyzer: Analyzer::new(settings.language),
            settings,
            vocabulary: Arc::new(VocabularyCache::default()),
            caches: SearchCaches::new(&Arc::default(), &(Arc::new(SystemClock) as Arc<dyn Clock>), &disabled),
        }
    }

    /// Results, suggestions and facets go through caches with `settings`, invalidated by the
    /// catalog generation of `generations`.
    pub fn with_cache(
        mut self,
        generations: &Arc<Generations>,
        clock: &Arc<dyn Clock>,
        settings: &CacheSettings,
    ) -> Self {
        self.caches = SearchCaches::new(generations, clock, settings);
        self
    }

    pub fn caches(&self) -> &SearchCaches {
        &self.caches
    }

    /// Local misses of every search cache look in `tier` before searching the index.
    pub fn with_shared_tier(mut self, tier: &Arc<dyn SharedTier>) -> Self {
        let caches = self.caches;
        self.caches = SearchCaches {
            results: caches.results.with_shared(Arc::clone(tier)),
            suggestions: caches.suggestions.with_shared(Arc::clone(tier)),
            facets: caches.facets.with_shared(Arc::clone(tier)),
        };
        self
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Ranked hits of `text` within `filters` (its page; its sort is replaced by `order`).
    /// Exact words first; when they find fewer than `typo_fallback_below` hits, once more with
    /// each word's corrections from the vocabulary.
    pub async fn search(
        &self,
        text: &SearchText,
        filters: &ProductQuery,
        order: SearchOrder,
        facets: FacetRequest,
    ) -> Result<SearchResults, Error> {
        self.search_with(text, filters, order, facets, Typos::Tolerated).await
    }

    /// [`SearchService::search`], with typo tolerance on or off (the `fuzzy_search` flag).
    pub async fn search_with(
        &self,
        text: &SearchText,
        filters: &ProductQuery,
        order: SearchOrder,
        facets: FacetRequest,
        typos: Typos,
    ) -> Result<SearchResults, Error> {
        let key = format!("{text:?} {filters:?} {order:?} {facets:?} {typos:?}");
        let load = || self.run_search(text, filters, order, facets, typos);
        Ok(self.caches.results.get_or_load(key, |_| false, load).await?)
    }

    async fn run_search(
        &self,
        text: &SearchText,
        filters: &ProductQuery,
        order: SearchOrder,
        facets: FacetRequest,
        typos: Typos,
    ) -> Result<SearchResults, StoreError> {
        let words = query_words(text);
        let exact: Vec<QueryTerm> = words.iter().map(|word| self.exact_term(word)).collect();
        let mut query = IndexQuery { terms: exact, filters: filters.clone(), order, boosts: self.settings.boosts };
        let mut page = self.index.search(&query).await?;
        let mut corrected_query = None;
        let mut typo_fallback = false;
        let vocabulary = self.vocabulary().await?;
        // Too few hits, or a word no product holds (`labtop bag` finds bags, not laptops).
        let unknown_word = query.terms.iter().any(|term| !vocabulary.knows(term));
        let threshold = self.settings.typo_fallback_below;
        if typos == Typos::Tolerated && threshold > 0 && (page.total < threshold || unknown_word) {
            let tolerant: Vec<QueryTerm> =
                words.iter().map(|word| self.tolerant_term(word, &vocabulary.words)).collect();
            if tolerant != query.terms {
                typo_fallback = true;
                query.terms = tolerant;
                page = self.index.search(&query).await?;
                corrected_query = correction(&query.terms, &vocabulary);
            }
        }
        let facets = match facets.any() {
            true => Some(self.index.facets(&query.terms, filters, facets).await?),
            false => None,
        };
        let stems = searched_stems(&query.terms);
        let Page { items, total, request } = page;
        let items = items.into_iter().map(|hit| self.hit(hit, &stems)).collect();
        Ok(SearchResults { page: Page { items, total, request }, corrected_query, typo_fallback, facets })
    }

    /// Facet counts of the filtered list, without a query.
    pub async fn facets(&self, filters: &ProductQuery, wanted: FacetRequest) -> Result<Facets, Error> {
        let key = format!("{filters:?} {wanted:?}");
        Ok(self.caches.facets.get_or_load(key, |_| false, || self.index.facets(&[], filters, wanted)).await?)
    }

    /// Active products and categories completing `text`: its last word as a prefix (unless
    /// the text ends after a complete word), earlier words typo-tolerant; same ranking as
    /// search.
    pub async fn suggest(&self, text: &SearchText, limit: u32) -> Result<Suggestions, Error> {
        self.suggest_with(text, limit, Typos::Tolerated).await
    }

    /// [`SearchService::suggest`], with typo tolerance of the earlier words on or off.
    pub async fn suggest_with(&self, text: &SearchText, limit: u32, typos: Typos) -> Result<Suggestions, Error> {
        let key = format!("{text:?} {limit} {typos:?}");
        Ok(self.caches.suggestions.get_or_load(key, |_| false, || self.run_suggest(text, limit, typos)).await?)
    }

    async fn run_suggest(&self, text: &SearchText, limit: u32, typos: Typos) -> Result<Suggestions, StoreError> {
        let words = query_words(text);
        let vocabulary = self.vocabulary().await?;
        let ends_in_word = !text.ends_after_word();
        let mut terms: Vec<QueryTerm> = Vec::with_capacity(words.len());
        for (index, word) in words.iter().enumerate() {
            let last = index + 1 == words.len();
            terms.push(match (last && ends_in_word, typos) {
                (true, _) => self.prefix_term(word, &vocabulary.words),
                (false, Typos::Tolerated) => self.tolerant_term(word, &vocabulary.words),
                (false, Typos::Exact) => self.exact_term(word),
            });
        }
        let limit = limit.clamp(1, MAX_SUGGESTIONS);
        let filters = ProductQuery {
            page: PageRequest::new(Some(1), Some(limit)).unwrap_or_default(),
            status: Some(ProductStatus::Active),
            ..ProductQuery::default()
        };
        let query = IndexQuery { terms, filters, order: SearchOrder::Relevance, boosts: self.settings.boosts };
        let page = self.index.search(&query).await?;
        // Categories complete the last word only: "gaming lap" suggests "Laptops", not "Gaming".
        let last_terms = query.terms.last().cloned().into_iter().collect::<Vec<_>>();
        let categories = self.index.matching_categories(&last_terms, limit).await?;
        let stems = searched_stems(&query.terms);
        let products = page
            .items
            .into_iter()
            .map(|hit| SuggestedProduct {
                name_highlight: highlight(&self.analyzer, hit.product.name.as_str(), &stems),
                product: hit.product,
            })
            .collect();
        Ok(Suggestions { products, categories })
    }

    fn hit(&self, hit: IndexHit, stems: &HashSet<String>) -> SearchHit {
        SearchHit {
            name_highlight: highlight(&self.analyzer, hit.product.name.as_str(), stems),
            description_snippet: snippet(&self.analyzer, hit.product.description.as_str(), stems),
            score: hit.relevance,
            matched_words: hit.matched_words,
            typos: hit.typos,
            product: hit.product,
        }
    }

    fn exact_term(&self, word: &str) -> QueryTerm {
        let alternative = Alternative { word: word.to_owned(), stem: self.analyzer.stem(word), typos: 0 };
        QueryTerm { word: word.to_owned(), alternatives: vec![alternative] }
    }

    /// The word and its corrections from the vocabulary, fewest typos first.
    fn tolerant_term(&self, word: &str, vocabulary: &Vocabulary) -> QueryTerm {
        let mut term = self.exact_term(word);
        for correction in vocabulary.corrections(word, &self.settings.typos, CORRECTIONS_PER_WORD) {
            let stem = self.analyzer.stem(&correction.word);
            push_alternative(&mut term, Alternative { word: correction.word, stem, typos: correction.typos });
        }
        term
    }

    /// The words of the vocabulary starting with `prefix` (none: its corrections).
    fn prefix_term(&self, prefix: &str, vocabulary: &Vocabulary) -> QueryTerm {
        let completions = vocabulary.completions(prefix, COMPLETIONS);
        if completions.is_empty() {
            return self.tolerant_term(prefix, vocabulary);
        }
        let mut term = QueryTerm { word: prefix.to_owned(), alternatives: Vec::new() };
        for (word, _) in completions {
            let stem = self.analyzer.stem(&word);
            push_alternative(&mut term, Alternative { word, stem, typos: 0 });
        }
        term
    }

    /// The vocabulary, reloaded when the index says it changed (asked at most once per
    /// `vocabulary_refresh`).
    async fn vocabulary(&self) -> Result<Arc<VocabularySnapshot>, StoreError> {
        self.vocabulary.get(self.index.as_ref(), &self.analyzer, self.settings.vocabulary_refresh).await
    }
}

impl std::fmt::Debug for SearchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The distinct folded words of the query, at most [`MAX_QUERY_WORDS`].
fn query_words(text: &SearchText) -> Vec<String> {
    let mut seen = HashSet::new();
    words(text.as_str())
        .map(|word| word.folded)
        .filter(|word| seen.insert(word.clone()))
        .take(MAX_QUERY_WORDS)
        .collect()
}

/// Adds `alternative` unless a cheaper one already has its stem (alternatives come cheapest first).
fn push_alternative(term: &mut QueryTerm, alternative: Alternative) {
    if !term.alternatives.iter().any(|known| known.stem == alternative.stem) {
        term.alternatives.push(alternative);
    }
}

fn searched_stems(terms: &[QueryTerm]) -> HashSet<String> {
    terms.iter().flat_map(|term| term.alternatives.iter().map(|alternative| alternative.stem.clone())).collect()
}

/// The query with each word whose stem no product holds replaced by its best correction;
/// `None` when no word was replaced.
fn correction(terms: &[QueryTerm], vocabulary: &VocabularySnapshot) -> Option<String> {
    let mut changed = false;
    let corrected: Vec<&str> = terms
        .iter()
        .map(|term| match term.alternatives.get(1) {
            Some(best) if !vocabulary.knows(term) => {
                changed = true;
                best.word.as_str()
            }
            _ => term.word.as_str(),
        })
        .collect();
    changed.then(|| corrected.join(" "))
}

/// The vocabulary as last loaded: its words (for corrections and completions) and their stems
/// (which words of a query some product holds, however inflected).
#[derive(Default)]
struct VocabularySnapshot {
    words: Vocabulary,
    stems: HashSet<String>,
}

impl VocabularySnapshot {
    /// Whether some product holds the term's own word, in any inflection.
    fn knows(&self, term: &QueryTerm) -> bool {
        term.alternatives.first().is_some_and(|exact| self.stems.contains(&exact.stem))
    }
}

/// The vocabulary snapshot used for corrections and completions.
#[derive(Default)]
struct VocabularyCache {
    snapshot: RwLock<Snapshot>,
    /// One reload at a time; the others wait for it and use its result.
    reload: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Snapshot {
    version: Option<u64>,
    words: Arc<VocabularySnapshot>,
    checked_at: Option<Instant>,
}

impl VocabularyCache {
    async fn get(
        &self,
        index: &dyn SearchIndex,
        analyzer: &Analyzer,
        refresh: Duration,
    ) -> Result<Arc<VocabularySnapshot>, StoreError> {
        if let Some(words) = self.fresh(refresh) {
            return Ok(words);
        }
        let _reloading = self.reload.lock().await;
        if let Some(words) = self.fresh(refresh) {
            return Ok(words);
        }
        let version = index.vocabulary_version().await?;
        let known = self.read().version;
        if known != Some(version) {
            let (version, entries) = index.vocabulary().await?;
            let stems = entries.iter().map(|(word, _)| analyzer.stem(word)).collect();
            let words = Arc::new(VocabularySnapshot { words: Vocabulary::new(entries), stems });
            let mut snapshot = self.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            *snapshot =
                Snapshot { version: Some(version), words: Arc::clone(&words), checked_at: Some(Instant::now()) };
            return Ok(words);
        }
        let mut snapshot = self.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        snapshot.checked_at = Some(Instant::now());
        Ok(Arc::clone(&snapshot.words))
    }

    fn fresh(&self, refresh: Duration) -> Option<Arc<VocabularySnapshot>> {
        let snapshot = self.read();
        let checked_at = snapshot.checked_at?;
        (!refresh.is_zero() && checked_at.elapsed() < refresh).then(|| Arc::clone(&snapshot.words))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Weigh for SearchResults {
    fn weight(&self) -> usize {
        let hits: usize = self
            .page
            .items
            .iter()
            .map(|hit| hit.product.weight() + hit.name_highlight.len() + hit.description_snippet.len() + 64)
            .sum();
        let facets = self.facets.as_ref().map_or(0, Weigh::weight);
        hits + facets + self.corrected_query.as_ref().map_or(0, String::len) + 64
    }
}

impl Weigh for Suggestions {
    fn weight(&self) -> usize {
        let products: usize =
            self.products.iter().map(|suggested| suggested.product.weight() + suggested.name_highlight.len()).sum();
        products + self.categories.weight() + 48
    }
}

impl Weigh for Facets {
    fn weight(&self) -> usize {
        let categories = self.categories.as_ref().map_or(0, |categories| {
            categories.iter().map(|category| category.name.len() + category.slug.len() + 48).sum()
        });
        categories + self.prices.as_ref().map_or(0, |prices| prices.len() * 32) + 48
    }
}

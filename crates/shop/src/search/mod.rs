//! Product search's domain half: the text analysis both the index and the queries use, the
//! typo tolerance that corrects query words against the index vocabulary before the
//! database's full-text index is asked, and the service that ranks, suggests and counts
//! facets over the `SearchIndex` port.

mod analyzer;
mod highlight;
mod query;
mod service;
mod typos;

pub use analyzer::{Analyzer, Language, Word, distinct_words, fold, words};
pub use highlight::{highlight, snippet};
pub use query::{
    Alternative, CategoryCount, FacetRequest, Facets, FieldBoosts, IndexHit, IndexQuery, MAX_QUERY_CHARS,
    PRICE_BUCKETS, PriceCount, QueryTerm, SearchField, SearchOrder, SearchText,
};
pub use service::{
    MAX_QUERY_WORDS, MAX_SUGGESTIONS, SearchHit, SearchResults, SearchService, SearchSettings, SuggestedProduct,
    Suggestions, Typos,
};
pub use typos::{Correction, TypoRules, Vocabulary};

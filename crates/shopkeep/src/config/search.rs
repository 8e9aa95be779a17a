//! The `search` section: the stemming language of the index, field boosts, typo tolerance and
//! how fresh the vocabulary behind corrections must be.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shop::search::{FieldBoosts, Language, SearchSettings, TypoRules};

use super::{Validate, check_ranges};

/// Product search. Defaults: `shop::search::SearchSettings::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Stemming language of the index: `english` (default), `none`, `danish`, `dutch`,
    /// `finnish`, `french`, `german`, `hungarian`, `italian`, `norwegian`, `portuguese`,
    /// `romanian`, `russian`, `spanish`, `swedish`, `turkish`. Changing it rebuilds the
    /// index at the next `migrate up` (or start, where `serve` migrates).
    pub language: String,
    /// Worth of a query word found in the product's name (0–999).
    pub name_boost: u16,
    /// … in its category's name.
    pub category_boost: u16,
    /// … in its description.
    pub description_boost: u16,
    /// Words of at least this many letters may have one typo (Meilisearch: 5).
    pub one_typo_min_len: usize,
    /// Words of at least this many letters may have two (Meilisearch: 9).
    pub two_typos_min_len: usize,
    /// Typo-tolerant matching runs only when exact matching finds fewer hits than this, or a
    /// query word is in no product (0: never).
    pub typo_fallback_below: u64,
    /// How long the vocabulary used for corrections and suggestions is trusted before the
    /// index is asked whether it changed.
    pub vocabulary_refresh_ms: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        let defaults = SearchSettings::default();
        Self {
            language: defaults.language.as_str().to_owned(),
            name_boost: defaults.boosts.name,
            category_boost: defaults.boosts.category,
            description_boost: defaults.boosts.description,
            one_typo_min_len: defaults.typos.one_typo_min_len,
            two_typos_min_len: defaults.typos.two_typos_min_len,
            typo_fallback_below: defaults.typo_fallback_below,
            vocabulary_refresh_ms: u64::try_from(defaults.vocabulary_refresh.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl SearchConfig {
    /// The service's settings (the language must have passed validation; else the default).
    pub fn settings(&self) -> SearchSettings {
        SearchSettings {
            language: Language::parse(&self.language).unwrap_or_default(),
            boosts: FieldBoosts {
                name: self.name_boost,
                category: self.category_boost,
                description: self.description_boost,
            },
            typos: TypoRules { one_typo_min_len: self.one_typo_min_len, two_typos_min_len: self.two_typos_min_len },
            typo_fallback_below: self.typo_fallback_below,
            vocabulary_refresh: Duration::from_millis(self.vocabulary_refresh_ms),
        }
    }
}

impl Validate for SearchConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Err(problem) = Language::parse(&self.language) {
            problems.push(format!("search.language: {problem}"));
        }
        check_ranges(
            problems,
            [
                ("search.name_boost", u64::from(self.name_boost), 0..=999),
                ("search.category_boost", u64::from(self.category_boost), 0..=999),
                ("search.description_boost", u64::from(self.description_boost), 0..=999),
                ("search.one_typo_min_len", self.one_typo_min_len as u64, 1..=64),
                ("search.two_typos_min_len", self.two_typos_min_len as u64, 1..=64),
                ("search.typo_fallback_below", self.typo_fallback_below, 0..=10_000),
                ("search.vocabulary_refresh_ms", self.vocabulary_refresh_ms, 0..=3_600_000),
            ],
        );
        if self.two_typos_min_len < self.one_typo_min_len {
            problems.push("search.two_typos_min_len: must not be below search.one_typo_min_len".into());
        }
    }
}

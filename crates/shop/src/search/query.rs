//! What a search asks of the index and what the index answers: query words with the stems
//! that may stand for each (and what each costs in typos), filters, order, field boosts,
//! hits and facet counts. The `SearchIndex` port exchanges these.

use uuid::Uuid;

use crate::catalog::{Product, ProductQuery, ProductSort};
use crate::pagination::SortOrder;

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// Validated query text: not blank, at most [`MAX_QUERY_CHARS`] characters, with at least one
/// word (a run of letters or digits). Nothing else about it is special: `"`, `*`, `-`, `:`,
/// `NEAR`… are text like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    text: String,
    /// Whether what was typed ended after a complete word (a space or punctuation followed
    /// it): type-ahead then does not treat the last word as a prefix.
    ends_after_word: bool,
}

impl SearchText {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(format!("must be at most {MAX_QUERY_CHARS} characters"));
        }
        if super::words(text).next().is_none() {
            return Err("must contain a letter or digit".into());
        }
        let ends_after_word = raw.chars().last().is_some_and(|c| !c.is_alphanumeric());
        Ok(Self { text: text.to_owned(), ends_after_word })
    }

    /// The text, trimmed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the last word was followed by a space or punctuation as typed.
    pub fn ends_after_word(&self) -> bool {
        self.ends_after_word
    }
}

/// One stem that may stand for a query word, and the typos it costs (0: the word itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The folded word it stands for (the query's own, a correction or a completion).
    pub word: String,
    pub stem: String,
    pub typos: u8,
}

/// One word of the query (folded, as typed) and its alternatives, cheapest first. A hit
/// matches the word when any alternative is in one of its fields; the cheapest one found
/// counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTerm {
    pub word: String,
    pub alternatives: Vec<Alternative>,
}

/// How much a match in each field is worth (the seed's `title^3`): name above category name
/// above description by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldBoosts {
    pub name: u16,
    pub category: u16,
    pub description: u16,
}

impl Default for FieldBoosts {
    fn default() -> Self {
        Self { name: 3, category: 2, description: 1 }
    }
}

impl FieldBoosts {
    /// The three fields with their boosts, best first (ties: name, category, description).
    pub fn ranked(&self) -> [(SearchField, u16); 3] {
        let mut fields = [
            (SearchField::Name, self.name),
            (SearchField::Category, self.category),
            (SearchField::Description, self.description),
        ];
        fields.sort_by_key(|field| std::cmp::Reverse(field.1));
        fields
    }
}

/// A searched field of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchField {
    Name,
    Category,
    Description,
}

/// The order of hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Most matched words, then fewest typos, then best fields, then the merchant's boost,
    /// then in stock before sold out, then the index's own relevance score, then id.
    Relevance,
    /// A column of the product list, as without a query.
    By(ProductSort, SortOrder),
}

/// A search as the index runs it.
#[derive(Debug, Clone)]
pub struct IndexQuery {
    /// At least one.
    pub terms: Vec<QueryTerm>,
    /// Filters and page (its `sort_by`/`sort_order` are ignored: `order` decides).
    pub filters: ProductQuery,
    pub order: SearchOrder,
    pub boosts: FieldBoosts,
}

/// One product found, with how well it matched.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexHit {
    pub product: Product,
    /// The index's relevance score (BM25 in SQLite, `ts_rank` in PostgreSQL): higher is better,
    /// comparable within one result list only.
    pub relevance: f64,
    /// Query words found in the product.
    pub matched_words: u32,
    /// Typos of the alternatives that matched, summed over the words.
    pub typos: u32,
}

/// Which facets to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FacetRequest {
    pub category: bool,
    pub price: bool,
    pub in_stock: bool,
}

impl FacetRequest {
    /// From a comma-separated list: `category,price,inStock`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut wanted = Self::default();
        for name in raw.split(',').map(str::trim) {
            match name {
                "category" => wanted.category = true,
                "price" => wanted.price = true,
                "inStock" => wanted.in_stock = true,
                _ => return Err("must be a comma-separated list of category, price, inStock".into()),
            }
        }
        Ok(wanted)
    }

    pub fn any(&self) -> bool {
        self.category || self.price || self.in_stock
    }
}

/// The fixed price buckets of the price facet, in minor units: `[from, to)`, the last open.
pub const PRICE_BUCKETS: [(i64, Option<i64>); 7] = [
    (0, Some(1_000)),
    (1_000, Some(2_500)),
    (2_500, Some(5_000)),
    (5_000, Some(10_000)),
    (10_000, Some(25_000)),
    (25_000, Some(50_000)),
    (50_000, None),
];

/// Products of one category among the hits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CategoryCount {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub count: u64,
}

/// Products in one price bucket among the hits (`to` exclusive, `None` for the last).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PriceCount {
    pub from_minor: i64,
    pub to_minor: Option<i64>,
    pub count: u64,
}

/// Facet counts over every hit of a query (all pages), or over the filtered list without one.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Facets {
    /// Most products first, then by name; `None` when not asked for.
    pub categories: Option<Vec<CategoryCount>>,
    /// Every bucket of [`PRICE_BUCKETS`], empty ones included.
    pub prices: Option<Vec<PriceCount>>,
    /// `(in stock, sold out)`.
    pub stock: Option<(u64, u64)>,
}

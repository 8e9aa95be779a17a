//! Catalog records and queries as the service and repositories exchange them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Money, Slug};
use crate::pagination::{PageRequest, SortOrder};

/// Trimmed text within length bounds; names and descriptions of catalog entries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    /// A name: 1–200 characters.
    pub fn name(raw: &str) -> Result<Self, String> {
        Self::bounded(raw, 1, 200)
    }

    /// A description: up to 10,000 characters, may be empty.
    pub fn description(raw: &str) -> Result<Self, String> {
        Self::bounded(raw, 0, 10_000)
    }

    fn bounded(raw: &str, min: usize, max: usize) -> Result<Self, String> {
        let text = raw.trim();
        let chars = text.chars().count();
        if chars < min {
            return Err("is required".into());
        }
        if chars > max {
            return Err(format!("must be at most {max} characters"));
        }
        if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err("must not contain control characters".into());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units in stock: never negative, at most a billion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Stock(i64);

impl Stock {
    pub fn new(units: i64) -> Result<Self, String> {
        if !(0..=1_000_000_000).contains(&units) {
            return Err("must be between 0 and 1000000000".into());
        }
        Ok(Self(units))
    }

    pub fn units(&self) -> i64 {
        self.0
    }
}

/// A path segment that names a record either by id or by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrSlug {
    Id(Uuid),
    Slug(Slug),
}

impl IdOrSlug {
    pub fn parse(raw: &str) -> Option<Self> {
        match Uuid::parse_str(raw) {
            Ok(id) => Some(Self::Id(id)),
            Err(_) => Slug::parse(raw).ok().map(Self::Slug),
        }
    }
}

/// A product category.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Category {
    pub id: Uuid,
    pub name: Text,
    pub slug: Slug,
    pub description: Text,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewCategory {
    pub id: Uuid,
    pub name: Text,
    pub slug: Slug,
    pub description: Text,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default)]
pub struct CategoryChanges {
    pub name: Option<Text>,
    pub slug: Option<Slug>,
    pub description: Option<Text>,
}

/// Sort keys of the category list; the adapters map each to a fixed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CategorySort {
    #[default]
    CreatedAt,
    Name,
}

impl CategorySort {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "createdAt" => Ok(Self::CreatedAt),
            "name" => Ok(Self::Name),
            _ => Err("must be one of createdAt, name".into()),
        }
    }
}

/// Whether a product is on sale or hidden from the storefront.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProductStatus {
    Active,
    Archived,
}

impl ProductStatus {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "active" => Ok(Self::Active),
            "archived" => Ok(Self::Archived),
            _ => Err("must be active or archived".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

/// A merchant's search boost: −1000 to 1000, 0 by default. Among hits that match the query
/// equally well, the higher boost ranks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SearchBoost(i32);

impl SearchBoost {
    pub fn new(value: i64) -> Result<Self, String> {
        match i32::try_from(value) {
            Ok(value) if (-1000..=1000).contains(&value) => Ok(Self(value)),
            _ => Err("must be between -1000 and 1000".into()),
        }
    }

    pub fn value(self) -> i32 {
        self.0
    }
}

/// A product. `version` grows by one with every change; conditional updates compare it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub name: Text,
    pub slug: Slug,
    pub description: Text,
    pub price: Money,
    pub stock: Stock,
    pub category_id: Uuid,
    pub status: ProductStatus,
    pub search_boost: SearchBoost,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: Uuid,
    pub name: Text,
    pub slug: Slug,
    pub description: Text,
    pub price: Money,
    pub stock: Stock,
    pub category_id: Uuid,
    pub search_boost: SearchBoost,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    pub name: Option<Text>,
    pub slug: Option<Slug>,
    pub description: Option<Text>,
    pub price: Option<Money>,
    pub stock: Option<Stock>,
    pub category_id: Option<Uuid>,
    pub status: Option<ProductStatus>,
    pub search_boost: Option<SearchBoost>,
}

impl ProductChanges {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.slug.is_none()
            && self.description.is_none()
            && self.price.is_none()
            && self.stock.is_none()
            && self.category_id.is_none()
            && self.status.is_none()
            && self.search_boost.is_none()
    }
}

/// Sort keys of the product list (a whitelist: the adapters map each to a fixed column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProductSort {
    #[default]
    CreatedAt,
    UpdatedAt,
    Name,
    Price,
    Stock,
}

impl ProductSort {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "createdAt" => Ok(Self::CreatedAt),
            "updatedAt" => Ok(Self::UpdatedAt),
            "name" => Ok(Self::Name),
            "price" => Ok(Self::Price),
            "stock" => Ok(Self::Stock),
            _ => Err("must be one of createdAt, updatedAt, name, price, stock".into()),
        }
    }
}

/// Filters, order and page of a product list.
#[derive(Debug, Clone, Default)]
pub struct ProductQuery {
    pub page: PageRequest,
    pub sort_by: ProductSort,
    pub sort_order: SortOrder,
    pub category: Option<IdOrSlug>,
    /// Inclusive bounds in minor units.
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub in_stock: Option<bool>,
    /// `None` lists every status (staff only); the storefront asks for `Active`.
    pub status: Option<ProductStatus>,
}

impl crate::cache::Weigh for Product {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.as_str().len()
            + self.slug.as_str().len()
            + self.description.as_str().len()
    }
}

impl crate::cache::Weigh for Category {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.as_str().len()
            + self.slug.as_str().len()
            + self.description.as_str().len()
    }
}

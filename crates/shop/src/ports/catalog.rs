//! Ports of the catalog: categories, products, the search index and the generations of cached reads.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::{
    Category, CategoryChanges, CategorySort, IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery,
};
use crate::error::StoreError;
use crate::pagination::{Page, PageRequest, SortOrder};

/// Categories. Slugs are unique (`categories_slug_key`); deleting one that products use is a `Conflict`.
#[async_trait]
pub trait CategoryRepository: Send + Sync {
    async fn insert_category(&self, category: &NewCategory) -> Result<Category, StoreError>;
    async fn find_category(&self, key: &IdOrSlug) -> Result<Option<Category>, StoreError>;
    async fn list_categories(
        &self,
        page: PageRequest,
        sort_by: CategorySort,
        sort_order: SortOrder,
    ) -> Result<Page<Category>, StoreError>;
    /// `NotFound` when there is no such category.
    async fn update_category(
        &self,
        id: Uuid,
        changes: &CategoryChanges,
        now: OffsetDateTime,
    ) -> Result<Category, StoreError>;
    /// `NotFound` when there is no such category.
    async fn delete_category(&self, id: Uuid) -> Result<(), StoreError>;
}

/// Products. Slugs are unique (`products_slug_key`); an unknown category is a `Conflict` on
/// `products_category_id_fkey`.
#[async_trait]
pub trait ProductRepository: Send + Sync {
    async fn insert_product(&self, product: &NewProduct) -> Result<Product, StoreError>;
    async fn find_product(&self, key: &IdOrSlug) -> Result<Option<Product>, StoreError>;
    /// One page of products matching `query`, in its order.
    async fn list_product_items(&self, query: &ProductQuery) -> Result<Vec<Product>, StoreError>;
    /// How many products match `query`'s filters (its page and order do not matter).
    async fn count_products(&self, query: &ProductQuery) -> Result<u64, StoreError>;
    /// A page with its total: counted only when the page does not tell it (see
    /// [`crate::pagination::total_from_page`]).
    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, StoreError> {
        let items = self.list_product_items(query).await?;
        let total = match crate::pagination::total_from_page(query.page, items.len()) {
            Some(total) => total,
            None => self.count_products(query).await?,
        };
        Ok(Page { items, total, request: query.page })
    }
    /// Applies the changes and bumps `version`. Returns `None` when no product has this id
    /// (and, with `expected_version`, this version).
    async fn update_product(
        &self,
        id: Uuid,
        changes: &ProductChanges,
        expected_version: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError>;
    /// `NotFound` when there is no such product.
    async fn delete_product(&self, id: Uuid) -> Result<(), StoreError>;
}

/// The search index over the catalog: kept by the storage adapter in the same transaction as
/// catalog writes, or by an external engine. Every method answers from committed data.
#[async_trait]
pub trait SearchIndex: Send + Sync {
    /// One page of the products matching at least one term, within the filters, in the
    /// query's order, and how many match in all.
    async fn search(&self, query: &crate::search::IndexQuery) -> Result<Page<crate::search::IndexHit>, StoreError>;
    /// Facet counts over every product matching `terms` (no terms: every product) within
    /// `filters` (their page and sort are ignored).
    async fn facets(
        &self,
        terms: &[crate::search::QueryTerm],
        filters: &ProductQuery,
        wanted: crate::search::FacetRequest,
    ) -> Result<crate::search::Facets, StoreError>;
    /// Categories whose name holds an alternative of any term, by name, at most `limit`.
    async fn matching_categories(
        &self,
        terms: &[crate::search::QueryTerm],
        limit: u32,
    ) -> Result<Vec<Category>, StoreError>;
    /// Grows whenever a word enters or leaves the vocabulary.
    async fn vocabulary_version(&self) -> Result<u64, StoreError>;
    /// Every folded word of the catalog with the number of documents holding it, and the
    /// vocabulary version they are of.
    async fn vocabulary(&self) -> Result<(u64, Vec<(String, u64)>), StoreError>;
}

/// The generations of cached reads: the process's own, bumped by the adapter after each write
/// it commits, and the database's, bumped in the transaction of every write by anyone (another
/// instance, an operator's SQL), which a poll compares to see what others changed.
#[async_trait]
pub trait CacheVersions: Send + Sync {
    fn generations(&self) -> Arc<crate::cache::Generations>;
    /// A number that changes whenever a write to `family` commits, on any instance.
    async fn stored_generation(&self, family: crate::cache::Family) -> Result<u64, StoreError>;
}

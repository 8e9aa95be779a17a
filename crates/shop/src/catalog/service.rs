//! The catalog use cases. Authorization happens before these are called; rules live in the types.

use std::sync::Arc;

use uuid::Uuid;

use super::model::{
    Category, CategoryChanges, CategorySort, IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery,
    ProductSort, ProductStatus,
};
use super::{Slug, Text};
use crate::cache::{CacheHandle, CacheSettings, Family, ReadCache, SharedTier};
use crate::clock::Clock;
use crate::error::{Conflict, Error, StoreError};
use crate::pagination::{Page, PageRequest, SortOrder};
use crate::ports::Store;
use crate::validation::ValidationErrors;

/// Categories and products.
#[derive(Clone)]
pub struct CatalogService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    caches: CatalogCaches,
}

/// Cached catalog reads, all of the catalog family: a committed catalog write (any product or
/// category, stock taken by checkout included) makes every entry unreachable.
#[derive(Clone, Debug)]
pub struct CatalogCaches {
    pub products: ReadCache<String, Option<Product>>,
    pub categories: ReadCache<String, Option<Category>>,
    pub product_lists: ReadCache<String, Page<Product>>,
    /// Totals of product lists by their filters (shared by every page and order).
    pub product_counts: ReadCache<String, u64>,
    pub category_lists: ReadCache<String, Page<Category>>,
}

impl CatalogCaches {
    pub fn handles(&self) -> Vec<Arc<dyn CacheHandle>> {
        vec![
            Arc::new(self.products.clone()),
            Arc::new(self.categories.clone()),
            Arc::new(self.product_lists.clone()),
            Arc::new(self.product_counts.clone()),
            Arc::new(self.category_lists.clone()),
        ]
    }

    fn new(store: &Arc<dyn Store>, clock: &Arc<dyn Clock>, settings: &CacheSettings) -> Self {
        let generations = store.generations();
        Self {
            products: ReadCache::new(
                "products",
                Family::Catalog,
                Arc::clone(&generations),
                Arc::clone(clock),
                settings,
            ),
            categories: ReadCache::new(
                "categories",
                Family::Catalog,
                Arc::clone(&generations),
                Arc::clone(clock),
                settings,
            ),
            product_lists: ReadCache::new(
                "product_lists",
                Family::Catalog,
                Arc::clone(&generations),
                Arc::clone(clock),
                settings,
            ),
            product_counts: ReadCache::new(
                "product_counts",
                Family::Catalog,
                Arc::clone(&generations),
                Arc::clone(clock),
                settings,
            ),
            category_lists: ReadCache::new("category_lists", Family::Catalog, generations, Arc::clone(clock), settings),
        }
    }
}

fn key_of(key: &IdOrSlug) -> String {
    match key {
        IdOrSlug::Id(id) => format!("id:{id}"),
        IdOrSlug::Slug(slug) => format!("slug:{}", slug.as_str()),
    }
}

impl CatalogService {
    /// Without caching; see [`CatalogService::with_cache`].
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let caches = CatalogCaches::new(&store, &clock, &CacheSettings { enabled: false, ..CacheSettings::default() });
        Self { store, clock, caches }
    }

    /// Reads of products, categories and their lists go through caches with `settings`.
    pub fn with_cache(mut self, settings: &CacheSettings) -> Self {
        self.caches = CatalogCaches::new(&self.store, &self.clock, settings);
        self
    }

    pub fn caches(&self) -> &CatalogCaches {
        &self.caches
    }

    /// Local misses of every catalog cache look in `tier` before the store.
    pub fn with_shared_tier(mut self, tier: &Arc<dyn SharedTier>) -> Self {
        let caches = self.caches;
        self.caches = CatalogCaches {
            products: caches.products.with_shared(Arc::clone(tier)),
            categories: caches.categories.with_shared(Arc::clone(tier)),
            product_lists: caches.product_lists.with_shared(Arc::clone(tier)),
            product_counts: caches.product_counts.with_shared(Arc::clone(tier)),
            category_lists: caches.category_lists.with_shared(Arc::clone(tier)),
        };
        self
    }

    pub async fn create_category(&self, name: Text, slug: Slug, description: Text) -> Result<Category, Error> {
        let category = NewCategory { id: crate::new_id(), name, slug, description, created_at: self.clock.now() };
        self.store.insert_category(&category).await.map_err(category_conflict)
    }

    pub async fn get_category(&self, key: &IdOrSlug) -> Result<Category, Error> {
        let found = self.caches.categories.get_or_load(key_of(key), Option::is_none, || self.store.find_category(key));
        found.await?.ok_or(Error::NotFound)
    }

    pub async fn list_categories(
        &self,
        page: PageRequest,
        sort_by: CategorySort,
        sort_order: SortOrder,
    ) -> Result<Page<Category>, Error> {
        let key = format!("{page:?} {sort_by:?} {sort_order:?}");
        let load = || self.store.list_categories(page, sort_by, sort_order);
        Ok(self.caches.category_lists.get_or_load(key, |_| false, load).await?)
    }

    pub async fn update_category(&self, key: &IdOrSlug, changes: &CategoryChanges) -> Result<Category, Error> {
        let category = self.get_category(key).await?;
        self.store.update_category(category.id, changes, self.clock.now()).await.map_err(category_conflict)
    }

    /// Deletes a category; refused with a conflict while products still belong to it.
    pub async fn delete_category(&self, key: &IdOrSlug) -> Result<(), Error> {
        let category = self.get_category(key).await?;
        self.store.delete_category(category.id).await.map_err(|error| match error {
            StoreError::Conflict(_) => {
                Error::Conflict("the category still has products; move or delete them first".into())
            }
            other => other.into(),
        })
    }

    pub async fn create_product(&self, product: NewProductInput) -> Result<Product, Error> {
        let new_product = NewProduct {
            id: crate::new_id(),
            name: product.name,
            slug: product.slug,
            description: product.description,
            price: product.price,
            stock: product.stock,
            category_id: product.category_id,
            search_boost: product.search_boost,
            created_at: self.clock.now(),
        };
        self.store.insert_product(&new_product).await.map_err(product_conflict)
    }

    /// A product by id or slug. With `include_archived` false, archived products are not found.
    pub async fn get_product(&self, key: &IdOrSlug, include_archived: bool) -> Result<Product, Error> {
        let found = self.caches.products.get_or_load(key_of(key), Option::is_none, || self.store.find_product(key));
        match found.await? {
            Some(product) if include_archived || product.status == ProductStatus::Active => Ok(product),
            _ => Err(Error::NotFound),
        }
    }

    pub async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, Error> {
        // The query's Debug form names every filter, order and page field: a new field can
        // never be left out of the key.
        let key = format!("{query:?}");
        let load = || async {
            let items = self.store.list_product_items(query).await?;
            let total = match crate::pagination::total_from_page(query.page, items.len()) {
                Some(total) => total,
                None => {
                    // Every page and order of one filter has one total: counted once per
                    // catalog generation, not once per page asked for.
                    let filters = ProductQuery {
                        page: PageRequest::default(),
                        sort_by: ProductSort::default(),
                        sort_order: SortOrder::default(),
                        ..query.clone()
                    };
                    let count = || self.store.count_products(query);
                    self.caches.product_counts.get_or_load(format!("{filters:?}"), |_| false, count).await?
                }
            };
            Ok(Page { items, total, request: query.page })
        };
        Ok(self.caches.product_lists.get_or_load(key, |_| false, load).await?)
    }

    /// Applies `changes`; with `expected_version`, only if nobody changed the product since
    /// (else [`Error::PreconditionFailed`]).
    pub async fn update_product(
        &self,
        id: Uuid,
        changes: &ProductChanges,
        expected_version: Option<i64>,
    ) -> Result<Product, Error> {
        let updated = self
            .store
            .update_product(id, changes, expected_version, self.clock.now())
            .await
            .map_err(product_conflict)?;
        match updated {
            Some(product) => Ok(product),
            None if self.store.find_product(&IdOrSlug::Id(id)).await?.is_some() => Err(Error::PreconditionFailed),
            None => Err(Error::NotFound),
        }
    }

    /// Hides a product from the storefront; archiving an archived product changes nothing.
    pub async fn archive_product(&self, id: Uuid) -> Result<Product, Error> {
        let product = self.get_product(&IdOrSlug::Id(id), true).await?;
        if product.status == ProductStatus::Archived {
            return Ok(product);
        }
        let changes = ProductChanges { status: Some(ProductStatus::Archived), ..ProductChanges::default() };
        self.update_product(id, &changes, None).await
    }

    pub async fn delete_product(&self, id: Uuid) -> Result<(), Error> {
        Ok(self.store.delete_product(id).await?)
    }
}

impl std::fmt::Debug for CatalogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogService").finish_non_exhaustive()
    }
}

/// A validated product to create (the service adds id and timestamps).
#[derive(Debug, Clone)]
pub struct NewProductInput {
    pub name: Text,
    pub slug: Slug,
    pub description: Text,
    pub price: super::Money,
    pub stock: super::Stock,
    pub category_id: Uuid,
    pub search_boost: super::SearchBoost,
}

fn category_conflict(error: StoreError) -> Error {
    match error {
        StoreError::Conflict(_) => Error::Conflict("a category with this slug already exists".into()),
        other => other.into(),
    }
}

fn product_conflict(error: StoreError) -> Error {
    match error {
        StoreError::Conflict(Conflict::UnknownCategory) => {
            Error::Invalid(ValidationErrors::single("categoryId", "no such category"))
        }
        StoreError::Conflict(_) => Error::Conflict("a product with this slug already exists".into()),
        other => other.into(),
    }
}

//! The catalog use cases. Authorization happens before these are called; rules live in the types.

use std::sync::Arc;

use uuid::Uuid;

use super::model::{
    Category, CategoryChanges, CategorySort, IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery,
    ProductStatus,
};
use super::{Slug, Text};
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
}

impl CatalogService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub async fn create_category(&self, name: Text, slug: Slug, description: Text) -> Result<Category, Error> {
        let category = NewCategory { id: crate::new_id(), name, slug, description, created_at: self.clock.now() };
        self.store.insert_category(&category).await.map_err(category_conflict)
    }

    pub async fn get_category(&self, key: &IdOrSlug) -> Result<Category, Error> {
        self.store.find_category(key).await?.ok_or(Error::NotFound)
    }

    pub async fn list_categories(
        &self,
        page: PageRequest,
        sort_by: CategorySort,
        sort_order: SortOrder,
    ) -> Result<Page<Category>, Error> {
        Ok(self.store.list_categories(page, sort_by, sort_order).await?)
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
        match self.store.find_product(key).await? {
            Some(product) if include_archived || product.status == ProductStatus::Active => Ok(product),
            _ => Err(Error::NotFound),
        }
    }

    pub async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, Error> {
        Ok(self.store.list_products(query).await?)
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

//! Categories and products.

use async_trait::async_trait;
use shop::catalog::{
    Category, CategoryChanges, CategorySort, Currency, IdOrSlug, Money, NewCategory, NewProduct, Product,
    ProductChanges, ProductQuery, ProductSort, ProductStatus, SearchBoost, Slug, Stock, Text,
};
use shop::ports::{CategoryRepository, ProductRepository};
use shop::{Conflict, Page, PageRequest, SortOrder, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, corrupt, count, error, error_with_foreign_key, offset};
use crate::exec::{Executor as _, Statement, Value, sql};
use crate::search_index::{adjust_vocabulary, current_product_words, index_category_name, index_product};

macro_rules! category_columns {
    () => {
        "categories.id, categories.name, categories.slug, categories.description, categories.created_at, \
         categories.updated_at"
    };
}
pub(crate) use category_columns;

macro_rules! product_columns {
    () => {
        "products.id, products.name, products.slug, products.description, products.price_minor, products.currency, \
         products.stock, products.category_id, cast(products.status as text) as status, products.version, \
         cast(products.search_boost as bigint) as search_boost, products.created_at, products.updated_at"
    };
}
pub(crate) use product_columns;

#[derive(FromRow)]
pub(crate) struct CategoryRow {
    id: Uuid,
    name: String,
    slug: String,
    description: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl CategoryRow {
    pub(crate) fn into_category(self) -> Result<Category, StoreError> {
        Ok(Category {
            id: self.id,
            name: Text::name(&self.name).map_err(|e| corrupt("category name", e))?,
            slug: Slug::parse(&self.slug).map_err(|e| corrupt("category slug", e))?,
            description: Text::description(&self.description).map_err(|e| corrupt("category description", e))?,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ProductRow {
    id: Uuid,
    name: String,
    slug: String,
    description: String,
    price_minor: i64,
    currency: String,
    stock: i64,
    category_id: Uuid,
    status: String,
    version: i64,
    search_boost: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl ProductRow {
    pub(crate) fn into_product(self) -> Result<Product, StoreError> {
        let currency = Currency::parse(&self.currency).map_err(|e| corrupt("currency", e))?;
        Ok(Product {
            id: self.id,
            name: Text::name(&self.name).map_err(|e| corrupt("product name", e))?,
            slug: Slug::parse(&self.slug).map_err(|e| corrupt("product slug", e))?,
            description: Text::description(&self.description).map_err(|e| corrupt("product description", e))?,
            price: Money::from_minor(self.price_minor, currency).map_err(|e| corrupt("price", e))?,
            stock: Stock::new(self.stock).map_err(|e| corrupt("stock", e))?,
            category_id: self.category_id,
            status: ProductStatus::parse(&self.status).map_err(|e| corrupt("product status", e))?,
            version: self.version,
            search_boost: SearchBoost::new(self.search_boost).map_err(|e| corrupt("search boost", e))?,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
        })
    }
}

/// A product status as a bind value of the `product_status` enum (text in SQLite).
fn status_value(status: Option<ProductStatus>) -> Value {
    Value::label("product_status", status.map(ProductStatus::as_str))
}

#[async_trait]
impl CategoryRepository for SqlStore {
    async fn insert_category(&self, category: &NewCategory) -> Result<Category, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let created_at = category.created_at;
        let row: CategoryRow = tx
            .fetch_one(
                sql(concat!(
                    "insert into categories (id, name, slug, description, created_at, updated_at, search_name) \
                     values ($1, $2, $3, $4, $5, $6, $7) returning ",
                    category_columns!()
                ))
                .bind(category.id)
                .bind(category.name.as_str())
                .bind(category.slug.as_str())
                .bind(category.description.as_str())
                .bind(created_at)
                .bind(created_at)
                .bind(self.analyzer.document(category.name.as_str())),
            )
            .await
            .map_err(error("failed to insert category"))?;
        adjust_vocabulary(&mut tx, &shop::search::distinct_words(category.name.as_str()), &[]).await?;
        tx.commit().await?;
        self.catalog_written();
        row.into_category()
    }

    async fn find_category(&self, key: &IdOrSlug) -> Result<Option<Category>, StoreError> {
        self.catalog_read(|mut conn| async move {
            let statement = match key {
                IdOrSlug::Id(id) => {
                    sql(concat!("select ", category_columns!(), " from categories where id = $1")).bind(id)
                }
                IdOrSlug::Slug(slug) => {
                    sql(concat!("select ", category_columns!(), " from categories where slug = $1")).bind(slug.as_str())
                }
            };
            let row: Option<CategoryRow> =
                conn.fetch_optional(statement).await.map_err(error("failed to find category"))?;
            row.map(CategoryRow::into_category).transpose()
        })
        .await
    }

    async fn list_categories(
        &self,
        page: PageRequest,
        sort_by: CategorySort,
        sort_order: SortOrder,
    ) -> Result<Page<Category>, StoreError> {
        self.catalog_read(|mut conn| async move {
            let total: i64 = conn
                .fetch_scalar(sql("select count(*) from categories"))
                .await
                .map_err(error("failed to count categories"))?;
            let column = match sort_by {
                CategorySort::CreatedAt => "created_at",
                CategorySort::Name => "name",
            };
            let order = sort_order.sql();
            let mut select = sql(concat!("select ", category_columns!(), " from categories"));
            select.push(&format!(" order by {column} {order}, id {order} limit "));
            select.push_bind(page.limit()).push(" offset ").push_bind(offset(page));
            let rows: Vec<CategoryRow> = conn.fetch_all(select).await.map_err(error("failed to list categories"))?;
            let items = rows.into_iter().map(CategoryRow::into_category).collect::<Result<_, _>>()?;
            Ok(Page { items, total: count(total), request: page })
        })
        .await
    }

    async fn update_category(
        &self,
        id: Uuid,
        changes: &CategoryChanges,
        now: OffsetDateTime,
    ) -> Result<Category, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let old_name: Option<String> = match &changes.name {
            Some(_) => {
                let select = tx.dialect().locking("select name from categories where id = $1", "for no key update");
                tx.fetch_optional_scalar(Statement::owned(select).bind(id))
                    .await
                    .map_err(error("failed to read category"))?
            }
            None => None,
        };
        let search_name = changes.name.as_ref().map(|name| self.analyzer.document(name.as_str()));
        let row: Option<CategoryRow> = tx
            .fetch_optional(
                sql(concat!(
                    "update categories set name = coalesce($1, name), slug = coalesce($2, slug), \
                     description = coalesce($3, description), updated_at = $4, \
                     search_name = coalesce($6, search_name) where id = $5 returning ",
                    category_columns!()
                ))
                .bind(changes.name.as_ref().map(Text::as_str))
                .bind(changes.slug.as_ref().map(Slug::as_str))
                .bind(changes.description.as_ref().map(Text::as_str))
                .bind(now)
                .bind(id)
                .bind(search_name.clone()),
            )
            .await
            .map_err(error("failed to update category"))?;
        let row = row.ok_or(StoreError::NotFound)?;
        if let (Some(new_name), Some(search_name), Some(old_name)) = (&changes.name, &search_name, &old_name) {
            index_category_name(&mut tx, id, search_name).await?;
            let now = shop::search::distinct_words(new_name.as_str());
            adjust_vocabulary(&mut tx, &now, &shop::search::distinct_words(old_name)).await?;
        }
        tx.commit().await?;
        self.catalog_written();
        row.into_category()
    }

    async fn delete_category(&self, id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let deleted: Option<String> = tx
            .fetch_optional_scalar(sql("delete from categories where id = $1 returning name").bind(id))
            .await
            .map_err(|failure| match error("failed to delete category")(failure) {
                // The one rule deleting a category can break: products still belong to it.
                StoreError::Conflict(_) => StoreError::Conflict(Conflict::CategoryInUse),
                other => other,
            })?;
        let name = deleted.ok_or(StoreError::NotFound)?;
        adjust_vocabulary(&mut tx, &[], &shop::search::distinct_words(&name)).await?;
        tx.commit().await?;
        self.catalog_written();
        Ok(())
    }
}

#[async_trait]
impl ProductRepository for SqlStore {
    async fn insert_product(&self, product: &NewProduct) -> Result<Product, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let created_at = product.created_at;
        let row: ProductRow = tx
            .fetch_one(
                sql(concat!(
                    "insert into products (id, name, slug, description, price_minor, currency, stock, category_id, \
                     status, version, created_at, updated_at, search_boost) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, 'active', 1, $9, $10, $11) returning ",
                    product_columns!()
                ))
                .bind(product.id)
                .bind(product.name.as_str())
                .bind(product.slug.as_str())
                .bind(product.description.as_str())
                .bind(product.price.minor())
                .bind(product.price.currency().as_str())
                .bind(product.stock.units())
                .bind(product.category_id)
                .bind(created_at)
                .bind(created_at)
                .bind(i64::from(product.search_boost.value())),
            )
            .await
            .map_err(error_with_foreign_key("failed to insert product", Conflict::UnknownCategory))?;
        index_product(&mut tx, &self.analyzer, product.id, &[]).await?;
        tx.commit().await?;
        self.catalog_written();
        row.into_product()
    }

    async fn find_product(&self, key: &IdOrSlug) -> Result<Option<Product>, StoreError> {
        self.catalog_read(|mut conn| async move {
            let statement = match key {
                IdOrSlug::Id(id) => {
                    sql(concat!("select ", product_columns!(), " from products where id = $1")).bind(id)
                }
                IdOrSlug::Slug(slug) => {
                    sql(concat!("select ", product_columns!(), " from products where slug = $1")).bind(slug.as_str())
                }
            };
            let row: Option<ProductRow> =
                conn.fetch_optional(statement).await.map_err(error("failed to find product"))?;
            row.map(ProductRow::into_product).transpose()
        })
        .await
    }

    async fn count_products(&self, query: &ProductQuery) -> Result<u64, StoreError> {
        self.catalog_read(|mut conn| async move {
            let mut count_query = sql("select count(*) from products");
            push_product_filters(&mut count_query, query);
            let total: i64 = conn.fetch_scalar(count_query).await.map_err(error("failed to count products"))?;
            Ok(count(total))
        })
        .await
    }

    async fn list_product_items(&self, query: &ProductQuery) -> Result<Vec<Product>, StoreError> {
        self.catalog_read(|mut conn| async move {
            let mut select = sql(concat!("select ", product_columns!(), " from products"));
            push_product_filters(&mut select, query);
            let column = match query.sort_by {
                ProductSort::CreatedAt => "products.created_at",
                ProductSort::UpdatedAt => "products.updated_at",
                ProductSort::Name => "products.name",
                ProductSort::Price => "products.price_minor",
                ProductSort::Stock => "products.stock",
            };
            let order = query.sort_order.sql();
            select.push(&format!(" order by {column} {order}, products.id {order} limit "));
            select.push_bind(query.page.limit()).push(" offset ").push_bind(offset(query.page));
            let rows: Vec<ProductRow> = conn.fetch_all(select).await.map_err(error("failed to list products"))?;
            rows.into_iter().map(ProductRow::into_product).collect()
        })
        .await
    }

    async fn update_product(
        &self,
        id: Uuid,
        changes: &ProductChanges,
        expected_version: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let reindex = changes.name.is_some() || changes.description.is_some() || changes.category_id.is_some();
        let old_words = match reindex {
            true => current_product_words(&mut tx, id).await?,
            false => Vec::new(),
        };
        let row: Option<ProductRow> = tx
            .fetch_optional(
                sql(concat!(
                    "update products set name = coalesce($1, name), slug = coalesce($2, slug), \
                     description = coalesce($3, description), price_minor = coalesce($4, price_minor), \
                     currency = coalesce($5, currency), stock = coalesce($6, stock), \
                     category_id = coalesce($7, category_id), status = coalesce($8, status), \
                     search_boost = coalesce($12, search_boost), version = version + 1, updated_at = $9 \
                     where id = $10 and ($11 is null or version = $11) returning ",
                    product_columns!()
                ))
                .bind(changes.name.as_ref().map(Text::as_str))
                .bind(changes.slug.as_ref().map(Slug::as_str))
                .bind(changes.description.as_ref().map(Text::as_str))
                .bind(changes.price.map(|p| p.minor()))
                .bind(changes.price.map(|p| p.currency().as_str().to_owned()))
                .bind(changes.stock.map(|s| s.units()))
                .bind(changes.category_id)
                .bind(status_value(changes.status))
                .bind(now)
                .bind(id)
                .bind(expected_version)
                .bind(changes.search_boost.map(|boost| i64::from(boost.value()))),
            )
            .await
            .map_err(error_with_foreign_key("failed to update product", Conflict::UnknownCategory))?;
        if reindex && row.is_some() {
            index_product(&mut tx, &self.analyzer, id, &old_words).await?;
        }
        tx.commit().await?;
        self.catalog_written();
        row.map(ProductRow::into_product).transpose()
    }

    async fn delete_product(&self, id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let old_words = current_product_words(&mut tx, id).await?;
        // Its search document goes with it (`on delete cascade`).
        let deleted = tx
            .execute(sql("delete from products where id = $1").bind(id))
            .await
            .map_err(error("failed to delete product"))?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        adjust_vocabulary(&mut tx, &[], &old_words).await?;
        tx.commit().await?;
        self.catalog_written();
        Ok(())
    }
}

fn push_product_filters(statement: &mut Statement, query: &ProductQuery) {
    statement.push(" where 1 = 1");
    push_product_conditions(statement, query, "products");
}

/// The filters of `query` (not its page or order) as ` and …` conditions of a `where`, on the
/// columns of `table` (`products`, or a search document `d`, which carries the same ones).
pub(crate) fn push_product_conditions(statement: &mut Statement, query: &ProductQuery, table: &str) {
    if let Some(status) = query.status {
        statement.push(&format!(" and {table}.status = ")).push_bind(status_value(Some(status)));
    }
    match &query.category {
        Some(IdOrSlug::Id(id)) => {
            statement.push(&format!(" and {table}.category_id = ")).push_bind(id);
        }
        Some(IdOrSlug::Slug(slug)) => {
            statement
                .push(&format!(" and {table}.category_id = (select id from categories where slug = "))
                .push_bind(slug.as_str())
                .push(")");
        }
        None => {}
    }
    if let Some(min) = query.min_price_minor {
        statement.push(&format!(" and {table}.price_minor >= ")).push_bind(min);
    }
    if let Some(max) = query.max_price_minor {
        statement.push(&format!(" and {table}.price_minor <= ")).push_bind(max);
    }
    match query.in_stock {
        Some(true) => {
            statement.push(&format!(" and {table}.stock > 0"));
        }
        Some(false) => {
            statement.push(&format!(" and {table}.stock = 0"));
        }
        None => {}
    }
}

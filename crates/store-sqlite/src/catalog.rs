//! Categories and products in SQLite.

use async_trait::async_trait;
use shop::catalog::{
    Category, CategoryChanges, CategorySort, Currency, IdOrSlug, Money, NewCategory, NewProduct, Product,
    ProductChanges, ProductQuery, ProductSort, ProductStatus, Slug, Stock, Text,
};
use shop::ports::{CategoryRepository, ProductRepository};
use shop::{Page, PageRequest, SortOrder, StoreError};
use sqlx::{FromRow, QueryBuilder, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{corrupt, count, error, offset, parse_timestamp, timestamp};
use crate::{SqliteStore, commit};

macro_rules! category_columns {
    () => {
        "categories.id, categories.name, categories.slug, categories.description, categories.created_at, \
         categories.updated_at"
    };
}

macro_rules! product_columns {
    () => {
        "products.id, products.name, products.slug, products.description, products.price_minor, products.currency, \
         products.stock, products.category_id, products.status, products.version, products.created_at, \
         products.updated_at"
    };
}
pub(crate) use product_columns;

#[derive(FromRow)]
struct CategoryRow {
    id: Uuid,
    name: String,
    slug: String,
    description: String,
    created_at: String,
    updated_at: String,
}

impl CategoryRow {
    fn into_category(self) -> Result<Category, StoreError> {
        Ok(Category {
            id: self.id,
            name: Text::name(&self.name).map_err(|e| corrupt("category name", e))?,
            slug: Slug::parse(&self.slug).map_err(|e| corrupt("category slug", e))?,
            description: Text::description(&self.description).map_err(|e| corrupt("category description", e))?,
            created_at: parse_timestamp(&self.created_at)?,
            updated_at: parse_timestamp(&self.updated_at)?,
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
    created_at: String,
    updated_at: String,
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
            created_at: parse_timestamp(&self.created_at)?,
            updated_at: parse_timestamp(&self.updated_at)?,
        })
    }
}

/// The only foreign key a product write can break is its category's; name it as PostgreSQL does.
fn product_write_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |sql_error| match error(context)(sql_error) {
        StoreError::Conflict { constraint } if constraint == "foreign_key" => {
            StoreError::Conflict { constraint: "products_category_id_fkey".into() }
        }
        other => other,
    }
}

#[async_trait]
impl CategoryRepository for SqliteStore {
    async fn insert_category(&self, category: &NewCategory) -> Result<Category, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let created_at = timestamp(category.created_at);
        let row: CategoryRow = sqlx::query_as(concat!(
            "insert into categories (id, name, slug, description, created_at, updated_at) values (?, ?, ?, ?, ?, ?) \
             returning ",
            category_columns!()
        ))
        .bind(category.id)
        .bind(category.name.as_str())
        .bind(category.slug.as_str())
        .bind(category.description.as_str())
        .bind(&created_at)
        .bind(&created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(error("failed to insert category"))?;
        commit(tx).await?;
        row.into_category()
    }

    async fn find_category(&self, key: &IdOrSlug) -> Result<Option<Category>, StoreError> {
        let mut conn = self.connection().await?;
        let query = match key {
            IdOrSlug::Id(id) => {
                sqlx::query_as(concat!("select ", category_columns!(), " from categories where id = ?")).bind(*id)
            }
            IdOrSlug::Slug(slug) => {
                sqlx::query_as(concat!("select ", category_columns!(), " from categories where slug = ?"))
                    .bind(slug.as_str().to_owned())
            }
        };
        let row: Option<CategoryRow> =
            query.fetch_optional(&mut *conn).await.map_err(error("failed to find category"))?;
        row.map(CategoryRow::into_category).transpose()
    }

    async fn list_categories(
        &self,
        page: PageRequest,
        sort_by: CategorySort,
        sort_order: SortOrder,
    ) -> Result<Page<Category>, StoreError> {
        let mut conn = self.connection().await?;
        let total: i64 = sqlx::query_scalar("select count(*) from categories")
            .fetch_one(&mut *conn)
            .await
            .map_err(error("failed to count categories"))?;
        let column = match sort_by {
            CategorySort::CreatedAt => "created_at",
            CategorySort::Name => "name",
        };
        let order = sort_order.sql();
        let mut select = QueryBuilder::<Sqlite>::new(concat!("select ", category_columns!(), " from categories"));
        select.push(format_args!(" order by {column} {order}, id {order} limit "));
        select.push_bind(i64::from(page.limit())).push(" offset ").push_bind(offset(page));
        let rows: Vec<CategoryRow> =
            select.build_query_as().fetch_all(&mut *conn).await.map_err(error("failed to list categories"))?;
        let items = rows.into_iter().map(CategoryRow::into_category).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: page })
    }

    async fn update_category(
        &self,
        id: Uuid,
        changes: &CategoryChanges,
        now: OffsetDateTime,
    ) -> Result<Category, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let row: Option<CategoryRow> = sqlx::query_as(concat!(
            "update categories set name = coalesce(?, name), slug = coalesce(?, slug), \
             description = coalesce(?, description), updated_at = ? where id = ? returning ",
            category_columns!()
        ))
        .bind(changes.name.as_ref().map(|n| n.as_str().to_owned()))
        .bind(changes.slug.as_ref().map(|s| s.as_str().to_owned()))
        .bind(changes.description.as_ref().map(|d| d.as_str().to_owned()))
        .bind(timestamp(now))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("failed to update category"))?;
        commit(tx).await?;
        row.ok_or(StoreError::NotFound)?.into_category()
    }

    async fn delete_category(&self, id: Uuid) -> Result<(), StoreError> {
        let deleted = self.execute_write("delete from categories where id = ?", |q| q.bind(id)).await?;
        if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

#[async_trait]
impl ProductRepository for SqliteStore {
    async fn insert_product(&self, product: &NewProduct) -> Result<Product, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let created_at = timestamp(product.created_at);
        let row: ProductRow = sqlx::query_as(concat!(
            "insert into products (id, name, slug, description, price_minor, currency, stock, category_id, status, \
             version, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, 'active', 1, ?, ?) returning ",
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
        .bind(&created_at)
        .bind(&created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(product_write_error("failed to insert product"))?;
        commit(tx).await?;
        row.into_product()
    }

    async fn find_product(&self, key: &IdOrSlug) -> Result<Option<Product>, StoreError> {
        let mut conn = self.connection().await?;
        let query = match key {
            IdOrSlug::Id(id) => sqlx::query_as(concat!("select ", product_columns!(), " from products where id = ?"))
                .bind(id.to_owned()),
            IdOrSlug::Slug(slug) => {
                sqlx::query_as(concat!("select ", product_columns!(), " from products where slug = ?"))
                    .bind(slug.as_str().to_owned())
            }
        };
        let row: Option<ProductRow> =
            query.fetch_optional(&mut *conn).await.map_err(error("failed to find product"))?;
        row.map(ProductRow::into_product).transpose()
    }

    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = QueryBuilder::<Sqlite>::new("select count(*) from products");
        push_product_filters(&mut count_query, query);
        let total: i64 =
            count_query.build_query_scalar().fetch_one(&mut *conn).await.map_err(error("failed to count products"))?;
        let mut select = QueryBuilder::<Sqlite>::new(concat!("select ", product_columns!(), " from products"));
        push_product_filters(&mut select, query);
        let column = match query.sort_by {
            ProductSort::CreatedAt => "products.created_at",
            ProductSort::UpdatedAt => "products.updated_at",
            ProductSort::Name => "products.name",
            ProductSort::Price => "products.price_minor",
            ProductSort::Stock => "products.stock",
        };
        let order = query.sort_order.sql();
        select.push(format_args!(" order by {column} {order}, products.id {order} limit "));
        select.push_bind(i64::from(query.page.limit())).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<ProductRow> =
            select.build_query_as().fetch_all(&mut *conn).await.map_err(error("failed to list products"))?;
        let items = rows.into_iter().map(ProductRow::into_product).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn update_product(
        &self,
        id: Uuid,
        changes: &ProductChanges,
        expected_version: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let row: Option<ProductRow> = sqlx::query_as(concat!(
            "update products set name = coalesce(?1, name), slug = coalesce(?2, slug), \
             description = coalesce(?3, description), price_minor = coalesce(?4, price_minor), \
             currency = coalesce(?5, currency), stock = coalesce(?6, stock), category_id = coalesce(?7, category_id), \
             status = coalesce(?8, status), version = version + 1, updated_at = ?9 \
             where id = ?10 and (?11 is null or version = ?11) returning ",
            product_columns!()
        ))
        .bind(changes.name.as_ref().map(|n| n.as_str().to_owned()))
        .bind(changes.slug.as_ref().map(|s| s.as_str().to_owned()))
        .bind(changes.description.as_ref().map(|d| d.as_str().to_owned()))
        .bind(changes.price.map(|p| p.minor()))
        .bind(changes.price.map(|p| p.currency().as_str().to_owned()))
        .bind(changes.stock.map(|s| s.units()))
        .bind(changes.category_id)
        .bind(changes.status.map(ProductStatus::as_str))
        .bind(timestamp(now))
        .bind(id)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(product_write_error("failed to update product"))?;
        commit(tx).await?;
        row.map(ProductRow::into_product).transpose()
    }

    async fn delete_product(&self, id: Uuid) -> Result<(), StoreError> {
        let deleted = self.execute_write("delete from products where id = ?", |q| q.bind(id)).await?;
        if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

fn push_product_filters(builder: &mut QueryBuilder<Sqlite>, query: &ProductQuery) {
    builder.push(" where 1 = 1");
    if let Some(status) = query.status {
        builder.push(" and products.status = ").push_bind(status.as_str());
    }
    match &query.category {
        Some(IdOrSlug::Id(id)) => {
            builder.push(" and products.category_id = ").push_bind(*id);
        }
        Some(IdOrSlug::Slug(slug)) => {
            builder
                .push(" and products.category_id = (select id from categories where slug = ")
                .push_bind(slug.as_str().to_owned())
                .push(")");
        }
        None => {}
    }
    if let Some(min) = query.min_price_minor {
        builder.push(" and products.price_minor >= ").push_bind(min);
    }
    if let Some(max) = query.max_price_minor {
        builder.push(" and products.price_minor <= ").push_bind(max);
    }
    match query.in_stock {
        Some(true) => {
            builder.push(" and products.stock > 0");
        }
        Some(false) => {
            builder.push(" and products.stock = 0");
        }
        None => {}
    }
}

//! Carts in SQLite: one line per user and product. Every change is one `BEGIN IMMEDIATE`
//! transaction, so the line limit is counted and enforced with no other writer in between.

use std::collections::HashSet;

use async_trait::async_trait;
use shop::StoreError;
use shop::orders::CartLine;
use shop::ports::CartRepository;
use sqlx::{FromRow, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::{ProductRow, product_columns};
use crate::codec::{error, parse_timestamp, timestamp};
use crate::{SqliteStore, commit, roll_back};

#[derive(FromRow)]
struct CartLineRow {
    #[sqlx(flatten)]
    product: ProductRow,
    cart_quantity: i64,
    cart_added_at: String,
    cart_updated_at: String,
}

impl CartLineRow {
    fn into_line(self) -> Result<CartLine, StoreError> {
        Ok(CartLine {
            product: self.product.into_product()?,
            quantity: self.cart_quantity,
            added_at: parse_timestamp(&self.cart_added_at)?,
            updated_at: parse_timestamp(&self.cart_updated_at)?,
        })
    }
}

#[derive(FromRow)]
struct CartItemRow {
    product_id: Uuid,
    quantity: i64,
    added_at: String,
}

/// SQLite names no foreign key: the product is checked before the insert, so a violation left
/// is the user's. Name it as PostgreSQL does.
fn cart_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |sql_error| match error(context)(sql_error) {
        StoreError::Conflict { constraint } if constraint == "foreign_key" => {
            StoreError::Conflict { constraint: "cart_items_user_id_fkey".into() }
        }
        other => other,
    }
}

fn limit_reached() -> StoreError {
    StoreError::Conflict { constraint: "cart_items_limit".into() }
}

async fn cart_size(conn: &mut SqliteConnection, user_id: Uuid) -> Result<u32, StoreError> {
    let lines: i64 = sqlx::query_scalar("select count(*) from cart_items where user_id = ?")
        .bind(user_id)
        .fetch_one(conn)
        .await
        .map_err(error("failed to count cart lines"))?;
    Ok(u32::try_from(lines).unwrap_or(u32::MAX))
}

/// Adds a line for an existing product; `false` when there is no such product.
async fn insert_line(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    added_at: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "insert into cart_items (user_id, product_id, quantity, added_at, updated_at) \
         select ?, id, ?, ?, ? from products where id = ?",
    )
    .bind(user_id)
    .bind(quantity)
    .bind(added_at)
    .bind(now)
    .bind(product_id)
    .execute(conn)
    .await
    .map_err(cart_error("failed to add cart line"))?;
    Ok(inserted.rows_affected() == 1)
}

#[async_trait]
impl CartRepository for SqliteStore {
    async fn cart_lines(&self, user_id: Uuid) -> Result<Vec<CartLine>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<CartLineRow> = sqlx::query_as(concat!(
            "select ",
            product_columns!(),
            ", cart_items.quantity as cart_quantity, cart_items.added_at as cart_added_at, \
             cart_items.updated_at as cart_updated_at \
             from cart_items join products on products.id = cart_items.product_id \
             where cart_items.user_id = ? order by cart_items.added_at, cart_items.product_id"
        ))
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to read cart"))?;
        rows.into_iter().map(CartLineRow::into_line).collect()
    }

    async fn set_cart_quantity(
        &self,
        user_id: Uuid,
        product_id: Uuid,
        quantity: i64,
        max_lines: u32,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now = timestamp(now);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let updated =
            sqlx::query("update cart_items set quantity = ?, updated_at = ? where user_id = ? and product_id = ?")
                .bind(quantity)
                .bind(&now)
                .bind(user_id)
                .bind(product_id)
                .execute(&mut *tx)
                .await
                .map_err(cart_error("failed to change cart line"))?
                .rows_affected();
        // Returning early drops the transaction, which rolls back.
        if updated == 0 {
            if cart_size(&mut tx, user_id).await? >= max_lines {
                return Err(limit_reached());
            }
            if !insert_line(&mut tx, user_id, product_id, quantity, &now, &now).await? {
                return Err(StoreError::Conflict { constraint: "cart_items_product_id_fkey".into() });
            }
        }
        commit(tx).await
    }

    async fn remove_cart_item(&self, user_id: Uuid, product_id: Uuid) -> Result<bool, StoreError> {
        let deleted = self
            .execute_write("delete from cart_items where user_id = ? and product_id = ?", |q| {
                q.bind(user_id).bind(product_id)
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn merge_cart(
        &self,
        from: Uuid,
        into: Uuid,
        max_lines: u32,
        max_quantity: i64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if from == into {
            return Ok(());
        }
        let now = timestamp(now);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let moving: Vec<CartItemRow> = sqlx::query_as(
            "select product_id, quantity, added_at from cart_items where user_id = ? order by added_at, product_id",
        )
        .bind(from)
        .fetch_all(&mut *tx)
        .await
        .map_err(error("failed to read cart"))?;
        if moving.is_empty() {
            return roll_back(tx).await;
        }
        let present: HashSet<Uuid> = sqlx::query_scalar("select product_id from cart_items where user_id = ?")
            .bind(into)
            .fetch_all(&mut *tx)
            .await
            .map_err(error("failed to read cart"))?
            .into_iter()
            .collect();
        let mut lines = u32::try_from(present.len()).unwrap_or(u32::MAX);
        for item in moving {
            if present.contains(&item.product_id) {
                sqlx::query(
                    "update cart_items set quantity = min(quantity + ?, ?), updated_at = ? \
                     where user_id = ? and product_id = ?",
                )
                .bind(item.quantity)
                .bind(max_quantity)
                .bind(&now)
                .bind(into)
                .bind(item.product_id)
                .execute(&mut *tx)
                .await
                .map_err(error("failed to merge cart line"))?;
            } else if lines < max_lines {
                // The line keeps when it was first added, so the merged cart stays oldest first.
                let quantity = item.quantity.min(max_quantity);
                if insert_line(&mut tx, into, item.product_id, quantity, &item.added_at, &now).await? {
                    lines += 1;
                }
            }
        }
        sqlx::query("delete from cart_items where user_id = ?")
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to empty merged cart"))?;
        commit(tx).await
    }

    async fn purge_abandoned_carts(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let emptied: Vec<Uuid> = sqlx::query_scalar(
            "delete from cart_items where user_id in \
             (select user_id from cart_items group by user_id having max(updated_at) < ? limit ?) \
             returning user_id",
        )
        .bind(timestamp(before))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(error("failed to purge abandoned carts"))?;
        commit(tx).await?;
        let carts: HashSet<Uuid> = emptied.into_iter().collect();
        Ok(u64::try_from(carts.len()).unwrap_or(u64::MAX))
    }
}

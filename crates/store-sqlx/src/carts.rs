//! Carts: one line per user and product. Every change of a cart is one write transaction that
//! first locks its user's row on PostgreSQL (`for no key update`, which foreign key checks
//! elsewhere do not wait for; SQLite's `BEGIN IMMEDIATE` already excludes every other writer),
//! so concurrent changes of one cart are serialised and the line limit is counted and enforced
//! with no other writer in between.

use std::collections::HashSet;

use async_trait::async_trait;
use shop::orders::CartLine;
use shop::ports::CartRepository;
use shop::{Conflict, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::catalog::{ProductRow, product_columns};
use crate::codec::{Timestamp, error, error_with_foreign_key};
use crate::dialect::Dialect;
use crate::exec::{Executor as _, Transaction, sql};

#[derive(FromRow)]
struct CartLineRow {
    #[sqlx(flatten)]
    product: ProductRow,
    cart_quantity: i64,
    cart_added_at: Timestamp,
    cart_updated_at: Timestamp,
}

impl CartLineRow {
    fn into_line(self) -> Result<CartLine, StoreError> {
        Ok(CartLine {
            product: self.product.into_product()?,
            quantity: self.cart_quantity,
            added_at: self.cart_added_at.into(),
            updated_at: self.cart_updated_at.into(),
        })
    }
}

#[derive(FromRow)]
struct CartItemRow {
    product_id: Uuid,
    quantity: i64,
    added_at: Timestamp,
}

fn limit_reached() -> StoreError {
    StoreError::Conflict(Conflict::CartFull)
}

/// Locks the carts of these users on PostgreSQL (their rows, in id order so two merges cannot
/// deadlock). An unknown user locks nothing, and an insert for it then fails its foreign key.
/// SQLite's write transaction already excludes every other writer.
async fn lock_carts(tx: &mut Transaction<'_>, user_ids: &[Uuid]) -> Result<(), StoreError> {
    if tx.dialect() == Dialect::Postgres {
        let mut lock = sql("select 1 from users where id in ");
        lock.push_list(user_ids).push(" order by id for no key update");
        tx.execute(lock).await.map_err(error("failed to lock cart"))?;
    }
    Ok(())
}

async fn cart_size(tx: &mut Transaction<'_>, user_id: Uuid) -> Result<u32, StoreError> {
    let lines: i64 = tx
        .fetch_scalar(sql("select count(*) from cart_items where user_id = $1").bind(user_id))
        .await
        .map_err(error("failed to count cart lines"))?;
    Ok(u32::try_from(lines).unwrap_or(u32::MAX))
}

/// Adds a line for an existing product; `false` when there is no such product.
async fn insert_line(
    tx: &mut Transaction<'_>,
    user_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    added_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let inserted = tx
        .execute(
            sql("insert into cart_items (user_id, product_id, quantity, added_at, updated_at) \
                 select $1, id, $2, $3, $4 from products where id = $5")
            .bind(user_id)
            .bind(quantity)
            .bind(added_at)
            .bind(now)
            .bind(product_id),
        )
        .await
        // The insert selects the product, so the only foreign key it can break is the user's.
        .map_err(error_with_foreign_key("failed to add cart line", Conflict::UnknownUser))?;
    Ok(inserted == 1)
}

#[async_trait]
impl CartRepository for SqlStore {
    async fn cart_lines(&self, user_id: Uuid) -> Result<Vec<CartLine>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<CartLineRow> = conn
            .fetch_all(
                sql(concat!(
                    "select ",
                    product_columns!(),
                    ", cart_items.quantity as cart_quantity, cart_items.added_at as cart_added_at, \
                     cart_items.updated_at as cart_updated_at \
                     from cart_items join products on products.id = cart_items.product_id \
                     where cart_items.user_id = $1 order by cart_items.added_at, cart_items.product_id"
                ))
                .bind(user_id),
            )
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
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        lock_carts(&mut tx, &[user_id]).await?;
        let updated = tx
            .execute(
                sql("update cart_items set quantity = $1, updated_at = $2 where user_id = $3 and product_id = $4")
                    .bind(quantity)
                    .bind(now)
                    .bind(user_id)
                    .bind(product_id),
            )
            .await
            .map_err(error_with_foreign_key("failed to change cart line", Conflict::UnknownUser))?;
        // Returning early drops the transaction, which rolls back.
        if updated == 0 {
            if cart_size(&mut tx, user_id).await? >= max_lines {
                return Err(limit_reached());
            }
            if !insert_line(&mut tx, user_id, product_id, quantity, now, now).await? {
                return Err(StoreError::Conflict(Conflict::UnknownProduct));
            }
        }
        tx.commit().await
    }

    async fn remove_cart_item(&self, user_id: Uuid, product_id: Uuid) -> Result<bool, StoreError> {
        let deleted = self
            .execute_write(
                sql("delete from cart_items where user_id = $1 and product_id = $2").bind(user_id).bind(product_id),
            )
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
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        lock_carts(&mut tx, &[from, into]).await?;
        let moving: Vec<CartItemRow> = tx
            .fetch_all(
                sql("select product_id, quantity, added_at from cart_items where user_id = $1 \
                     order by added_at, product_id")
                .bind(from),
            )
            .await
            .map_err(error("failed to read cart"))?;
        if moving.is_empty() {
            return tx.roll_back().await;
        }
        let present: HashSet<Uuid> = tx
            .fetch_all_scalars(sql("select product_id from cart_items where user_id = $1").bind(into))
            .await
            .map_err(error("failed to read cart"))?
            .into_iter()
            .collect();
        let mut lines = u32::try_from(present.len()).unwrap_or(u32::MAX);
        for item in moving {
            if present.contains(&item.product_id) {
                // The smaller of the two, written as `case` because PostgreSQL calls it `least`
                // and SQLite `min`.
                tx.execute(
                    sql("update cart_items set \
                         quantity = case when quantity + $1 < $2 then quantity + $1 else $2 end, updated_at = $3 \
                         where user_id = $4 and product_id = $5")
                    .bind(item.quantity)
                    .bind(max_quantity)
                    .bind(now)
                    .bind(into)
                    .bind(item.product_id),
                )
                .await
                .map_err(error("failed to merge cart line"))?;
            } else if lines < max_lines {
                // The line keeps when it was first added, so the merged cart stays oldest first.
                let quantity = item.quantity.min(max_quantity);
                if insert_line(&mut tx, into, item.product_id, quantity, item.added_at.into(), now).await? {
                    lines += 1;
                }
            }
        }
        tx.execute(sql("delete from cart_items where user_id = $1").bind(from))
            .await
            .map_err(error("failed to empty merged cart"))?;
        tx.commit().await
    }

    async fn purge_abandoned_carts(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        // The outer cutoff is checked again on each row's current version: a line changed while
        // the statement runs (possible on PostgreSQL) is no longer abandoned and stays.
        let emptied: Vec<(Uuid,)> = self
            .write_returning(
                sql("delete from cart_items where updated_at < $1 and user_id in \
                     (select user_id from cart_items group by user_id having max(updated_at) < $1 limit $2) \
                     returning user_id")
                .bind(before)
                .bind(limit),
                "failed to purge abandoned carts",
            )
            .await?;
        let carts: HashSet<Uuid> = emptied.into_iter().map(|(user_id,)| user_id).collect();
        Ok(u64::try_from(carts.len()).unwrap_or(u64::MAX))
    }
}

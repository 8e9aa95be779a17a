//! Orders. Placing one reserves stock with one conditional update per line in one write
//! transaction, so of concurrent checkouts of the last units exactly as many succeed as there are
//! units: on SQLite the transaction (`BEGIN IMMEDIATE`) excludes every other writer; on
//! PostgreSQL each update waits for the row lock of a concurrent checkout and re-checks its
//! condition on the committed stock. Lines are reserved in product id order, so checkouts sharing
//! products lock them in the same order and never deadlock. A transition changes the status only
//! from the states it names, with its stock, cart and jobs in the same transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use shop::catalog::Currency;
use shop::jobs::NewJob;
use shop::orders::{
    NewOrder, Order, OrderLine, OrderQuery, OrderStatus, OrderTransition, ReservationFailure, ShippingAddress,
};
use shop::ports::OrderRepository;
use shop::{Conflict, Page, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, corrupt, count, error, error_with_foreign_key, offset, optional};
use crate::exec::{Executor, Statement, Transaction, sql};
use crate::jobs::insert_job;
use crate::reservations::{ProductAvailability, Reservation, reservation_failure, reservation_order};

macro_rules! order_columns {
    () => {
        "orders.id, orders.user_id, orders.status, orders.currency, orders.total_minor, orders.shipping_name, \
         orders.shipping_line1, orders.shipping_line2, orders.shipping_city, orders.shipping_postal_code, \
         orders.shipping_country, orders.test_mode, orders.payment_reference, orders.cancel_reason, \
         orders.created_at, orders.updated_at, orders.paid_at, orders.fulfilled_at, orders.cancelled_at, \
         orders.refunded_at"
    };
}

#[derive(FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    currency: String,
    total_minor: i64,
    shipping_name: String,
    shipping_line1: String,
    shipping_line2: Option<String>,
    shipping_city: String,
    shipping_postal_code: String,
    shipping_country: String,
    test_mode: bool,
    payment_reference: Option<String>,
    cancel_reason: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    paid_at: Option<Timestamp>,
    fulfilled_at: Option<Timestamp>,
    cancelled_at: Option<Timestamp>,
    refunded_at: Option<Timestamp>,
}

impl OrderRow {
    fn into_order(self, lines: Vec<OrderLine>) -> Result<Order, StoreError> {
        Ok(Order {
            id: self.id,
            user_id: self.user_id,
            status: OrderStatus::parse(&self.status).ok_or_else(|| corrupt("order status", self.status.clone()))?,
            currency: Currency::parse(&self.currency).map_err(|e| corrupt("currency", e))?,
            total_minor: self.total_minor,
            lines,
            shipping_address: ShippingAddress {
                name: self.shipping_name,
                line1: self.shipping_line1,
                line2: self.shipping_line2,
                city: self.shipping_city,
                postal_code: self.shipping_postal_code,
                country: self.shipping_country,
            },
            test_mode: self.test_mode,
            payment_reference: self.payment_reference,
            cancel_reason: self.cancel_reason,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
            paid_at: optional(self.paid_at),
            fulfilled_at: optional(self.fulfilled_at),
            cancelled_at: optional(self.cancelled_at),
            refunded_at: optional(self.refunded_at),
        })
    }
}

#[derive(FromRow)]
struct OrderLineRow {
    order_id: Uuid,
    product_id: Option<Uuid>,
    name: String,
    unit_price_minor: i64,
    quantity: i64,
}

/// The column that records when an order entered `status`.
fn status_timestamp_column(status: OrderStatus) -> Option<&'static str> {
    match status {
        OrderStatus::PendingPayment => None,
        OrderStatus::Paid => Some("paid_at"),
        OrderStatus::Fulfilled => Some("fulfilled_at"),
        OrderStatus::Cancelled => Some("cancelled_at"),
        OrderStatus::Refunded => Some("refunded_at"),
    }
}

/// Takes `reservation.quantity` units if the product is active, has them, and still has the
/// line's price in `currency`; `false` when it did not.
async fn reserve(
    tx: &mut Transaction<'_>,
    reservation: &Reservation,
    currency: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let updated = tx
        .execute(
            sql("update products set stock = stock - $1, version = version + 1, updated_at = $2 \
                 where id = $3 and status = 'active' and stock >= $1 and price_minor = $4 and currency = $5")
            .bind(reservation.quantity)
            .bind(now)
            .bind(reservation.product_id)
            .bind(reservation.unit_price_minor)
            .bind(currency),
        )
        .await
        .map_err(error("failed to reserve stock"))?;
    Ok(updated == 1)
}

/// The product as it is now; with `lock`, locked until the transaction ends on PostgreSQL, so it
/// stays so (SQLite's write transaction already keeps every row as it is).
async fn availability(
    tx: &mut Transaction<'_>,
    product_id: Uuid,
    lock: bool,
) -> Result<Option<ProductAvailability>, StoreError> {
    let select = "select cast(status as text) as status, price_minor, cast(currency as text) as currency, stock \
                  from products where id = $1";
    let select = if lock { tx.dialect().locking(select, "for no key update") } else { select.to_owned() };
    let row: Option<(String, i64, String, i64)> = tx
        .fetch_optional(Statement::owned(select).bind(product_id))
        .await
        .map_err(error("failed to read product stock"))?;
    Ok(row.map(|(status, price_minor, currency, stock)| ProductAvailability {
        active: status == "active",
        price_minor,
        currency,
        stock,
    }))
}

/// Reserves every line, by product id. On the first line that cannot be reserved, returns the
/// failure of the first line in checkout order that cannot be (lines not tried yet may come
/// before it); the caller then rolls back.
async fn reserve_all(tx: &mut Transaction<'_>, order: &NewOrder) -> Result<Option<ReservationFailure>, StoreError> {
    let currency = order.currency.as_str();
    let now = order.created_at;
    let reservations = reservation_order(&order.lines)?;
    for (tried, reservation) in reservations.iter().enumerate() {
        if reserve(tx, reservation, currency, now).await? {
            continue;
        }
        // Read under the row lock, so the reason holds until we roll back. On PostgreSQL a
        // concurrent release committed since the update looked may have made the line possible
        // after all: then reserve it now, which the lock guarantees. (On SQLite nothing can have
        // changed, so a failure always shows its reason.)
        let found = availability(tx, reservation.product_id, true).await?;
        let Some(failure) = reservation_failure(reservation, currency, found.as_ref()) else {
            if reserve(tx, reservation, currency, now).await? {
                continue;
            }
            return Err(StoreError::other(anyhow::anyhow!("a reservation failed for no reason the product shows")));
        };
        let mut first = (reservation.position, failure);
        for later in &reservations[tried + 1..] {
            if later.position < first.0 {
                let found = availability(tx, later.product_id, false).await?;
                if let Some(failure) = reservation_failure(later, currency, found.as_ref()) {
                    first = (later.position, failure);
                }
            }
        }
        return Ok(Some(first.1));
    }
    Ok(None)
}

async fn insert_order(tx: &mut Transaction<'_>, order: &NewOrder) -> Result<OrderRow, StoreError> {
    let address = &order.shipping_address;
    // The only foreign key an order insert can break is its user's.
    let row: OrderRow = tx
        .fetch_one(
            sql(concat!(
                "insert into orders (id, user_id, status, currency, total_minor, shipping_name, shipping_line1, \
                 shipping_line2, shipping_city, shipping_postal_code, shipping_country, test_mode, created_at, \
                 updated_at) \
                 values ($1, $2, 'pending_payment', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) returning ",
                order_columns!()
            ))
            .bind(order.id)
            .bind(order.user_id)
            .bind(order.currency.as_str())
            .bind(order.total_minor)
            .bind(&address.name)
            .bind(&address.line1)
            .bind(address.line2.as_deref())
            .bind(&address.city)
            .bind(&address.postal_code)
            .bind(&address.country)
            .bind(order.test_mode)
            .bind(order.created_at),
        )
        .await
        .map_err(error_with_foreign_key("failed to insert order", Conflict::UnknownUser))?;
    if !order.lines.is_empty() {
        let mut insert =
            sql("insert into order_lines (order_id, position, product_id, name, unit_price_minor, quantity) values ");
        for (position, line) in order.lines.iter().enumerate() {
            if position > 0 {
                insert.push(", ");
            }
            insert.push("(").push_bind(order.id);
            insert.push(", ").push_bind(i32::try_from(position).unwrap_or(i32::MAX));
            insert.push(", ").push_bind(line.product_id);
            insert.push(", ").push_bind(&line.name);
            insert.push(", ").push_bind(line.unit_price_minor);
            insert.push(", ").push_bind(line.quantity).push(")");
        }
        tx.execute(insert).await.map_err(error("failed to insert order lines"))?;
    }
    Ok(row)
}

/// The lines of each order, in position order.
async fn lines_of(conn: &mut impl Executor, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<OrderLine>>, StoreError> {
    let mut lines: HashMap<Uuid, Vec<OrderLine>> = HashMap::new();
    if ids.is_empty() {
        return Ok(lines);
    }
    let mut select =
        sql("select order_id, product_id, name, unit_price_minor, quantity from order_lines where order_id in ");
    select.push_list(ids).push(" order by order_id, position");
    let rows: Vec<OrderLineRow> = conn.fetch_all(select).await.map_err(error("failed to read order lines"))?;
    for row in rows {
        lines.entry(row.order_id).or_default().push(OrderLine {
            product_id: row.product_id,
            name: row.name,
            unit_price_minor: row.unit_price_minor,
            quantity: row.quantity,
        });
    }
    Ok(lines)
}

async fn with_lines(conn: &mut impl Executor, row: OrderRow) -> Result<Order, StoreError> {
    let lines = lines_of(conn, &[row.id]).await?.remove(&row.id).unwrap_or_default();
    row.into_order(lines)
}

fn push_order_filters(statement: &mut Statement, query: &OrderQuery) {
    statement.push(" from orders where 1 = 1");
    if let Some(user_id) = query.user_id {
        statement.push(" and orders.user_id = ").push_bind(user_id);
    }
    if let Some(status) = query.status {
        statement.push(" and orders.status = ").push_bind(status.as_str());
    }
}

#[async_trait]
impl OrderRepository for SqlStore {
    async fn place_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        jobs: &[NewJob],
    ) -> Result<Result<Order, ReservationFailure>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Returning early drops the transaction, which rolls back: nothing reserved, no order.
        if let Some(failure) = reserve_all(&mut tx, order).await? {
            tx.roll_back().await?;
            return Ok(Err(failure));
        }
        let row = insert_order(&mut tx, order).await?;
        if let Some((scope, key)) = idempotency {
            tx.execute(
                sql("update idempotency_records set order_id = $1 where user_id = $2 and scope = $3 and key = $4")
                    .bind(order.id)
                    .bind(order.user_id)
                    .bind(scope)
                    .bind(key),
            )
            .await
            .map_err(error("failed to link idempotency record"))?;
        }
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        // Stock was taken.
        self.catalog_written();
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(Ok(row.into_order(order.lines.clone())?))
    }

    async fn transition_order(&self, transition: &OrderTransition) -> Result<Option<Order>, StoreError> {
        if transition.from.is_empty() {
            return Ok(None);
        }
        let at = transition.at;
        let mut update = sql("update orders set status = ");
        update.push_bind(transition.to.as_str()).push(", updated_at = ").push_bind(at);
        if let Some(column) = status_timestamp_column(transition.to) {
            update.push(&format!(", {column} = ")).push_bind(at);
        }
        update.push(", payment_reference = coalesce(").push_bind(transition.payment_reference.as_deref());
        update.push(", payment_reference), cancel_reason = coalesce(").push_bind(transition.cancel_reason.as_deref());
        update.push(", cancel_reason) where id = ").push_bind(transition.order_id).push(" and status in ");
        update.push_list(transition.from.iter().map(|from| from.as_str()));
        update.push(concat!(" returning ", order_columns!()));

        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let row: Option<OrderRow> = tx.fetch_optional(update).await.map_err(error("failed to change order status"))?;
        let Some(row) = row else {
            tx.roll_back().await?;
            return Ok(None);
        };
        let lines = lines_of(&mut tx, &[row.id]).await?.remove(&row.id).unwrap_or_default();
        if transition.release_stock {
            let mut released: Vec<(Uuid, i64)> =
                lines.iter().filter_map(|line| Some((line.product_id?, line.quantity))).collect();
            released.sort_unstable();
            for (product_id, quantity) in released {
                tx.execute(
                    sql("update products set stock = stock + $1, version = version + 1, updated_at = $2 where id = $3")
                        .bind(quantity)
                        .bind(at)
                        .bind(product_id),
                )
                .await
                .map_err(error("failed to release stock"))?;
            }
        }
        if transition.clear_cart {
            // Lines changed after the order was placed are a new intention: they stay.
            tx.execute(
                sql("delete from cart_items where user_id = $1 and updated_at <= $2 and product_id in \
                     (select product_id from order_lines where order_id = $3 and product_id is not null)")
                .bind(row.user_id)
                .bind(row.created_at.0)
                .bind(row.id),
            )
            .await
            .map_err(error("failed to clear ordered cart lines"))?;
        }
        for job in &transition.jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        if transition.release_stock {
            self.catalog_written();
        }
        self.announce_jobs(transition.jobs.iter().map(|job| job.queue.as_str()));
        Ok(Some(row.into_order(lines)?))
    }

    async fn find_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<OrderRow> = conn
            .fetch_optional(sql(concat!("select ", order_columns!(), " from orders where id = $1")).bind(id))
            .await
            .map_err(error("failed to find order"))?;
        match row {
            Some(row) => Ok(Some(with_lines(&mut conn, row).await?)),
            None => Ok(None),
        }
    }

    async fn list_orders(&self, query: &OrderQuery) -> Result<Page<Order>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = sql("select count(*)");
        push_order_filters(&mut count_query, query);
        let total: i64 = conn.fetch_scalar(count_query).await.map_err(error("failed to count orders"))?;
        let mut select = sql(concat!("select ", order_columns!()));
        push_order_filters(&mut select, query);
        let order = query.sort_order.sql();
        select.push(&format!(" order by orders.created_at {order}, orders.id {order} limit "));
        select.push_bind(query.page.limit()).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<OrderRow> = conn.fetch_all(select).await.map_err(error("failed to list orders"))?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let mut lines = lines_of(&mut conn, &ids).await?;
        let items = rows
            .into_iter()
            .map(|row| {
                let order_lines = lines.remove(&row.id).unwrap_or_default();
                row.into_order(order_lines)
            })
            .collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }
}

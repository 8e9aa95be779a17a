//! Orders in PostgreSQL. Placing one reserves stock with one conditional update per line in one
//! transaction: each update waits for the row lock of a concurrent checkout and re-checks its
//! condition on the committed stock, so of concurrent checkouts of the last units exactly as many
//! succeed as there are units. Lines are reserved in product id order, so checkouts sharing
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
use shop::{Page, StoreError};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use store_sqlx::reservations::{ProductAvailability, Reservation, reservation_failure, reservation_order};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{corrupt, count, error, offset};
use crate::jobs::{begin, commit, insert_job, roll_back};

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
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    paid_at: Option<OffsetDateTime>,
    fulfilled_at: Option<OffsetDateTime>,
    cancelled_at: Option<OffsetDateTime>,
    refunded_at: Option<OffsetDateTime>,
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
            created_at: self.created_at,
            updated_at: self.updated_at,
            paid_at: self.paid_at,
            fulfilled_at: self.fulfilled_at,
            cancelled_at: self.cancelled_at,
            refunded_at: self.refunded_at,
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
    conn: &mut PgConnection,
    reservation: &Reservation,
    currency: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "update products set stock = stock - $1, version = version + 1, updated_at = $2 \
         where id = $3 and status = 'active' and stock >= $1 and price_minor = $4 and currency = $5",
    )
    .bind(reservation.quantity)
    .bind(now)
    .bind(reservation.product_id)
    .bind(reservation.unit_price_minor)
    .bind(currency)
    .execute(conn)
    .await
    .map_err(error("failed to reserve stock"))?;
    Ok(updated.rows_affected() == 1)
}

/// The product as it is now; with `lock`, locked until the transaction ends, so it stays so.
async fn availability(
    conn: &mut PgConnection,
    product_id: Uuid,
    lock: bool,
) -> Result<Option<ProductAvailability>, StoreError> {
    let sql = if lock {
        "select status::text, price_minor, currency::text, stock from products where id = $1 for no key update"
    } else {
        "select status::text, price_minor, currency::text, stock from products where id = $1"
    };
    let row: Option<(String, i64, String, i64)> = sqlx::query_as(sql)
        .bind(product_id)
        .fetch_optional(conn)
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
async fn reserve_all(conn: &mut PgConnection, order: &NewOrder) -> Result<Option<ReservationFailure>, StoreError> {
    let currency = order.currency.as_str();
    let now = order.created_at;
    let reservations = reservation_order(&order.lines)?;
    for (tried, reservation) in reservations.iter().enumerate() {
        if reserve(conn, reservation, currency, now).await? {
            continue;
        }
        // Read under the row lock, so the reason holds until we roll back. A concurrent release
        // committed since the update looked may have made the line possible after all: then
        // reserve it now, which the lock guarantees.
        let found = availability(conn, reservation.product_id, true).await?;
        let Some(failure) = reservation_failure(reservation, currency, found.as_ref()) else {
            if reserve(conn, reservation, currency, now).await? {
                continue;
            }
            return Err(StoreError::other(anyhow::anyhow!("a reservation failed for no reason the product shows")));
        };
        let mut first = (reservation.position, failure);
        for later in &reservations[tried + 1..] {
            if later.position < first.0 {
                let found = availability(conn, later.product_id, false).await?;
                if let Some(failure) = reservation_failure(later, currency, found.as_ref()) {
                    first = (later.position, failure);
                }
            }
        }
        return Ok(Some(first.1));
    }
    Ok(None)
}

async fn insert_order(conn: &mut PgConnection, order: &NewOrder) -> Result<OrderRow, StoreError> {
    let address = &order.shipping_address;
    let row: OrderRow = sqlx::query_as(concat!(
        "insert into orders (id, user_id, status, currency, total_minor, shipping_name, shipping_line1, \
         shipping_line2, shipping_city, shipping_postal_code, shipping_country, test_mode, created_at, updated_at) \
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
    .bind(order.created_at)
    .fetch_one(&mut *conn)
    .await
    .map_err(error("failed to insert order"))?;
    if !order.lines.is_empty() {
        let mut insert = QueryBuilder::<Postgres>::new(
            "insert into order_lines (order_id, position, product_id, name, unit_price_minor, quantity) ",
        );
        insert.push_values(order.lines.iter().enumerate(), |mut values, (position, line)| {
            values
                .push_bind(order.id)
                .push_bind(i32::try_from(position).unwrap_or(i32::MAX))
                .push_bind(line.product_id)
                .push_bind(line.name.clone())
                .push_bind(line.unit_price_minor)
                .push_bind(line.quantity);
        });
        insert.build().execute(conn).await.map_err(error("failed to insert order lines"))?;
    }
    Ok(row)
}

/// The lines of each order, in position order.
async fn lines_of(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<OrderLine>>, StoreError> {
    let mut lines: HashMap<Uuid, Vec<OrderLine>> = HashMap::new();
    if ids.is_empty() {
        return Ok(lines);
    }
    let mut select = QueryBuilder::<Postgres>::new(
        "select order_id, product_id, name, unit_price_minor, quantity from order_lines where order_id in (",
    );
    let mut separated = select.separated(", ");
    for id in ids {
        separated.push_bind(*id);
    }
    select.push(") order by order_id, position");
    let rows: Vec<OrderLineRow> =
        select.build_query_as().fetch_all(conn).await.map_err(error("failed to read order lines"))?;
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

async fn with_lines(conn: &mut PgConnection, row: OrderRow) -> Result<Order, StoreError> {
    let lines = lines_of(conn, &[row.id]).await?.remove(&row.id).unwrap_or_default();
    row.into_order(lines)
}

fn push_order_filters(builder: &mut QueryBuilder<Postgres>, query: &OrderQuery) {
    builder.push(" from orders where 1 = 1");
    if let Some(user_id) = query.user_id {
        builder.push(" and orders.user_id = ").push_bind(user_id);
    }
    if let Some(status) = query.status {
        builder.push(" and orders.status = ").push_bind(status.as_str());
    }
}

#[async_trait]
impl OrderRepository for PostgresStore {
    async fn place_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        jobs: &[NewJob],
    ) -> Result<Result<Order, ReservationFailure>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = begin(&mut conn).await?;
        // Returning early drops the transaction, which rolls back: nothing reserved, no order.
        if let Some(failure) = reserve_all(&mut tx, order).await? {
            roll_back(tx).await?;
            return Ok(Err(failure));
        }
        let row = insert_order(&mut tx, order).await?;
        if let Some((scope, key)) = idempotency {
            sqlx::query("update idempotency_records set order_id = $1 where user_id = $2 and scope = $3 and key = $4")
                .bind(order.id)
                .bind(order.user_id)
                .bind(scope)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(error("failed to link idempotency record"))?;
        }
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        Ok(Ok(row.into_order(order.lines.clone())?))
    }

    async fn transition_order(&self, transition: &OrderTransition) -> Result<Option<Order>, StoreError> {
        if transition.from.is_empty() {
            return Ok(None);
        }
        let at = transition.at;
        let mut update = QueryBuilder::<Postgres>::new("update orders set status = ");
        update.push_bind(transition.to.as_str()).push(", updated_at = ").push_bind(at);
        if let Some(column) = status_timestamp_column(transition.to) {
            update.push(format_args!(", {column} = ")).push_bind(at);
        }
        update.push(", payment_reference = coalesce(").push_bind(transition.payment_reference.clone());
        update.push(", payment_reference), cancel_reason = coalesce(").push_bind(transition.cancel_reason.clone());
        update.push(", cancel_reason) where id = ").push_bind(transition.order_id).push(" and status in (");
        let mut separated = update.separated(", ");
        for from in &transition.from {
            separated.push_bind(from.as_str());
        }
        update.push(concat!(") returning ", order_columns!()));

        let mut conn = self.connection().await?;
        let mut tx = begin(&mut conn).await?;
        let row: Option<OrderRow> =
            update.build_query_as().fetch_optional(&mut *tx).await.map_err(error("failed to change order status"))?;
        let Some(row) = row else {
            roll_back(tx).await?;
            return Ok(None);
        };
        let lines = lines_of(&mut tx, &[row.id]).await?.remove(&row.id).unwrap_or_default();
        if transition.release_stock {
            let mut released: Vec<(Uuid, i64)> =
                lines.iter().filter_map(|line| Some((line.product_id?, line.quantity))).collect();
            released.sort_unstable();
            for (product_id, quantity) in released {
                sqlx::query(
                    "update products set stock = stock + $1, version = version + 1, updated_at = $2 where id = $3",
                )
                .bind(quantity)
                .bind(at)
                .bind(product_id)
                .execute(&mut *tx)
                .await
                .map_err(error("failed to release stock"))?;
            }
        }
        if transition.clear_cart {
            // Lines changed after the order was placed are a new intention: they stay.
            sqlx::query(
                "delete from cart_items where user_id = $1 and updated_at <= $2 and product_id in \
                 (select product_id from order_lines where order_id = $3 and product_id is not null)",
            )
            .bind(row.user_id)
            .bind(row.created_at)
            .bind(row.id)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to clear ordered cart lines"))?;
        }
        for job in &transition.jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        Ok(Some(row.into_order(lines)?))
    }

    async fn find_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<OrderRow> = sqlx::query_as(concat!("select ", order_columns!(), " from orders where id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(error("failed to find order"))?;
        match row {
            Some(row) => Ok(Some(with_lines(&mut conn, row).await?)),
            None => Ok(None),
        }
    }

    async fn list_orders(&self, query: &OrderQuery) -> Result<Page<Order>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = QueryBuilder::<Postgres>::new("select count(*)");
        push_order_filters(&mut count_query, query);
        let total: i64 =
            count_query.build_query_scalar().fetch_one(&mut *conn).await.map_err(error("failed to count orders"))?;
        let mut select = QueryBuilder::<Postgres>::new(concat!("select ", order_columns!()));
        push_order_filters(&mut select, query);
        let order = query.sort_order.sql();
        select.push(format_args!(" order by orders.created_at {order}, orders.id {order} limit "));
        select.push_bind(i64::from(query.page.limit())).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<OrderRow> =
            select.build_query_as().fetch_all(&mut *conn).await.map_err(error("failed to list orders"))?;
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

//! Ports of carts, orders and idempotency keys.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::jobs::NewJob;
use crate::orders::{
    CartLine, CheckoutResult, IdempotencyBegin, IdempotencyRecord, NewOrder, Order, OrderQuery, OrderTransition,
    PaymentEventRecord, ReservationFailure,
};
use crate::pagination::Page;

/// Each user's current cart (lines keyed by product).
#[async_trait]
pub trait CartRepository: Send + Sync {
    /// The user's cart lines with their products as they are now, oldest line first.
    async fn cart_lines(&self, user_id: Uuid) -> Result<Vec<CartLine>, StoreError>;
    /// Sets a line's quantity (`1..=MAX_LINE_QUANTITY`), adding the line if new.
    /// `Conflict { cart_items_limit }` when a new line would exceed `max_lines`;
    /// `Conflict { cart_items_product_id_fkey }` for an unknown product.
    async fn set_cart_quantity(
        &self,
        user_id: Uuid,
        product_id: Uuid,
        quantity: i64,
        max_lines: u32,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Removes a line; `false` when there was none.
    async fn remove_cart_item(&self, user_id: Uuid, product_id: Uuid) -> Result<bool, StoreError>;
    /// Moves `from`'s lines into `into`'s cart in one transaction (a guest's cart at login):
    /// quantities of a product in both are added up to `max_quantity`; new lines are added
    /// oldest first while the cart has fewer than `max_lines`; `from`'s cart is then empty.
    async fn merge_cart(
        &self,
        from: Uuid,
        into: Uuid,
        max_lines: u32,
        max_quantity: i64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Empties at most `limit` carts whose last change was before `before` (abandoned).
    async fn purge_abandoned_carts(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}

/// Orders, with stock reserved and released in the same transactions as their state changes.
#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// In one transaction: reserves stock for every line — `stock -= quantity` only where the
    /// product is active, has at least that many units, and still has the line's unit price
    /// and the order's currency — inserts the order (`pending_payment`) and its lines, links
    /// the idempotency record `(user_id, scope, key)` to it when given, and enqueues `jobs`.
    /// When any line cannot be reserved nothing is written and the first failing line is
    /// returned. Reserving bumps each product's `version`.
    async fn place_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        jobs: &[NewJob],
    ) -> Result<Result<Order, ReservationFailure>, StoreError>;
    /// Applies the transition if the order is in one of its `from` states (else `None`):
    /// status, the timestamp of the new status (`paid_at`, …), reference and reason when
    /// given, stock released and cart cleared when asked, and its jobs — one transaction.
    async fn transition_order(&self, transition: &OrderTransition) -> Result<Option<Order>, StoreError>;
    async fn find_order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    /// Newest first unless `sort_order` says otherwise.
    async fn list_orders(&self, query: &OrderQuery) -> Result<Page<Order>, StoreError>;
}

/// Idempotency keys of requests with side effects (checkout).
#[async_trait]
pub trait IdempotencyRepository: Send + Sync {
    /// Starts a request: inserts `record` (in progress, locked until its lock time) — or finds
    /// the existing one for `(user_id, scope, key)`. An existing record in progress whose lock
    /// expired before `now` (its holder died) is taken over: its lock becomes the new record's
    /// and it is returned as `Resumed`. Of concurrent starts, exactly one gets `Started` (or
    /// `Resumed`); the others `Existing`.
    async fn begin_idempotent(
        &self,
        record: &IdempotencyRecord,
        now: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError>;
    /// Records how a finished request ended and for which order, for its replays.
    async fn complete_idempotent(
        &self,
        user_id: Uuid,
        scope: &str,
        key: &str,
        result: CheckoutResult,
        order_id: Uuid,
    ) -> Result<(), StoreError>;
    /// Forgets a request that ended without effect (it may be sent again).
    async fn release_idempotent(&self, user_id: Uuid, scope: &str, key: &str) -> Result<(), StoreError>;
    /// Deletes at most `limit` records that expired before `before`.
    async fn purge_idempotency_records(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// Whether the provider's webhook event `event_id` was already applied.
    async fn payment_event_seen(&self, provider: &str, event_id: &str) -> Result<bool, StoreError>;
    /// Records an applied webhook event; `false` (and nothing changed) when it already was.
    async fn record_payment_event(&self, event: &PaymentEventRecord) -> Result<bool, StoreError>;
    /// Deletes at most `limit` event records received before `before`.
    async fn purge_payment_events(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}

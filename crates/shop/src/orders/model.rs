//! Carts, orders and their states, as the services and repositories exchange them.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::{Currency, Product};
use crate::pagination::{PageRequest, SortOrder};

/// The most lines one cart may hold (unbounded results, seed 002).
pub const MAX_CART_LINES: u32 = 50;
/// The largest quantity of one product in a cart or an order.
pub const MAX_LINE_QUANTITY: i64 = 99;

/// One line of a user's current cart, with the product as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub product: Product,
    pub quantity: i64,
    pub added_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Where an order stands. `pendingPayment → paid → fulfilled`; `pendingPayment → cancelled`
/// (declined, expired, cancelled); `paid → cancelled` (cancelled before fulfilment: stock
/// released, refunded by a job); `paid | fulfilled → refunded` (staff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Fulfilled,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [Self::PendingPayment, Self::Paid, Self::Fulfilled, Self::Cancelled, Self::Refunded];

    /// The name in the database (`pending_payment`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Fulfilled => "fulfilled",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    /// The name in the API (`pendingPayment`).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::PendingPayment => "pendingPayment",
            other => other.as_str(),
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == raw)
    }

    pub fn parse_api(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.api_name() == raw)
    }

    /// Whether the state machine allows `self → to`.
    pub fn can_become(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::PendingPayment, Self::Paid | Self::Cancelled)
                | (Self::Paid, Self::Fulfilled | Self::Cancelled | Self::Refunded)
                | (Self::Fulfilled, Self::Refunded)
        )
    }

    /// The states from which `to` can be reached.
    pub fn sources_of(to: Self) -> Vec<Self> {
        Self::ALL.into_iter().filter(|from| from.can_become(to)).collect()
    }
}

/// A postal address, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

/// One line of an order: the product's name and price when it was ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// `None` once the product was deleted; the line keeps its snapshot.
    pub product_id: Option<Uuid>,
    pub name: String,
    pub unit_price_minor: i64,
    pub quantity: i64,
}

impl OrderLine {
    pub fn total_minor(&self) -> i64 {
        self.unit_price_minor * self.quantity
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub currency: Currency,
    pub total_minor: i64,
    /// In product order of the checkout (one line per product).
    pub lines: Vec<OrderLine>,
    pub shipping_address: ShippingAddress,
    /// Made with the built-in test-mode payment provider: nothing was really charged.
    pub test_mode: bool,
    /// The provider's id of the charge, once paid.
    pub payment_reference: Option<String>,
    /// Why it was cancelled (declined, expired, cancelled by …).
    pub cancel_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub paid_at: Option<OffsetDateTime>,
    pub fulfilled_at: Option<OffsetDateTime>,
    pub cancelled_at: Option<OffsetDateTime>,
    pub refunded_at: Option<OffsetDateTime>,
}

/// What the repository needs to place an order. Lines have distinct products.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: Currency,
    pub total_minor: i64,
    /// Each line's `product_id` is `Some`.
    pub lines: Vec<OrderLine>,
    pub shipping_address: ShippingAddress,
    pub test_mode: bool,
    pub created_at: OffsetDateTime,
}

/// Why stock could not be reserved for a line: nothing was reserved for any line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationFailure {
    /// Fewer units in stock than ordered.
    OutOfStock { product_id: Uuid, available: i64 },
    /// Its price or currency changed since the cart was read.
    PriceChanged { product_id: Uuid },
    /// Archived or deleted.
    Unavailable { product_id: Uuid },
}

/// A conditional state change of an order, with what goes with it, in one transaction.
#[derive(Debug, Clone)]
pub struct OrderTransition {
    pub order_id: Uuid,
    /// The change happens only if the order is in one of these states.
    pub from: Vec<OrderStatus>,
    pub to: OrderStatus,
    pub at: OffsetDateTime,
    /// Recorded when given (the provider's charge id when paid).
    pub payment_reference: Option<String>,
    /// Recorded when given (why it was cancelled).
    pub cancel_reason: Option<String>,
    /// Puts each line's quantity back into its product's stock (products that still exist).
    pub release_stock: bool,
    /// Removes the ordered products from the owner's cart, for lines added before the order.
    pub clear_cart: bool,
    /// Enqueued in the same transaction (confirmation mail, refund, webhooks).
    pub jobs: Vec<crate::jobs::NewJob>,
}

impl OrderTransition {
    pub fn new(order_id: Uuid, to: OrderStatus, at: OffsetDateTime) -> Self {
        Self {
            order_id,
            from: OrderStatus::sources_of(to),
            to,
            at,
            payment_reference: None,
            cancel_reason: None,
            release_stock: false,
            clear_cart: false,
            jobs: Vec::new(),
        }
    }
}

/// Filters of the order list.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    pub page: PageRequest,
    /// Only this user's orders (customers); `None` for staff.
    pub user_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
    /// By `created_at` (then id).
    pub sort_order: SortOrder,
}

/// Where a request with an `Idempotency-Key` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    /// Being processed by whoever holds the lock until then.
    InProgress { locked_until: OffsetDateTime },
    /// Finished: the saved response.
    Completed(SavedResponse),
}

/// A response kept for replays of the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    pub status: u16,
    /// JSON.
    pub body: String,
    pub location: Option<String>,
}

/// One idempotent request: per user, operation (`scope`) and client key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user_id: Uuid,
    pub scope: String,
    pub key: String,
    /// SHA-256 of the request body (canonical JSON) — the same key with another body is refused.
    pub request_hash: [u8; 32],
    pub state: IdempotencyState,
    /// The order the request created, once it exists (set in the order's transaction).
    pub order_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// How starting an idempotent request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// A new record: go ahead.
    Started,
    /// The record of an earlier attempt whose holder died (lock expired): its lock is now
    /// ours; go on from where it got to (`order_id`).
    Resumed(IdempotencyRecord),
    /// Someone else holds it (in progress, locked), or it is completed.
    Existing(IdempotencyRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_only_its_transitions() {
        use OrderStatus::*;
        let allowed = [
            (PendingPayment, Paid),
            (PendingPayment, Cancelled),
            (Paid, Fulfilled),
            (Paid, Cancelled),
            (Paid, Refunded),
            (Fulfilled, Refunded),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from:?} → {to:?}");
            }
        }
        assert_eq!(OrderStatus::sources_of(Refunded), vec![Paid, Fulfilled]);
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            assert_eq!(OrderStatus::parse_api(status.api_name()), Some(status));
        }
        assert_eq!(PendingPayment.api_name(), "pendingPayment");
        assert_eq!(PendingPayment.as_str(), "pending_payment");
    }
}

/// A payment provider's webhook event the shop applied, remembered by its id so a redelivery
/// is acknowledged without acting twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEventRecord {
    /// The provider's name in the webhook URL.
    pub provider: String,
    pub event_id: String,
    /// `charged`, `declined`, `refunded`, or the provider's type of an ignored event.
    pub event_type: String,
    pub order_id: Option<Uuid>,
    /// What the shop did, e.g. `order paid`, `no change: order is paid`.
    pub outcome: String,
    pub received_at: OffsetDateTime,
}

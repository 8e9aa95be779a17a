//! Carts, orders and their states, as the services and repositories exchange them.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::{Currency, Product};
use crate::pagination::{PageRequest, SortOrder};
use crate::validation::ValidationErrors;

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

/// A postal address as a client sent it: every field optional, nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShippingAddressInput {
    pub name: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
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

impl ShippingAddress {
    /// Validates an address, every problem at once (fields named `shippingAddress.*`).
    pub fn parse(input: &ShippingAddressInput) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let mut text = |field: &str, value: Option<&str>, max: usize| -> String {
            let value = value.unwrap_or_default().trim();
            if value.is_empty() {
                errors.add(&format!("shippingAddress.{field}"), "is required");
            } else if value.chars().count() > max || value.chars().any(char::is_control) {
                errors.add(
                    &format!("shippingAddress.{field}"),
                    format!("must be at most {max} characters, no control characters"),
                );
            }
            value.to_owned()
        };
        let name = text("name", input.name.as_deref(), 100);
        let line1 = text("line1", input.line1.as_deref(), 200);
        let city = text("city", input.city.as_deref(), 100);
        let postal_code = text("postalCode", input.postal_code.as_deref(), 20);
        let country = input.country.as_deref().unwrap_or_default().trim().to_ascii_uppercase();
        let line2 = input.line2.as_deref().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned);
        if line2.as_ref().is_some_and(|line| line.chars().count() > 200 || line.chars().any(char::is_control)) {
            errors.add("shippingAddress.line2", "must be at most 200 characters, no control characters");
        }
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.add("shippingAddress.country", "must be an ISO 3166-1 alpha-2 code like DE or US");
        }
        errors.into_result()?;
        Ok(Self { name, line1, line2, city, postal_code, country })
    }
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
    /// Finished with this result (the record's `order_id` names the order): replays answer
    /// with it and the order as it is then.
    Completed(CheckoutResult),
}

/// How a finished checkout ended, as kept under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutResult {
    /// Charged: the order is paid.
    Paid,
    /// The provider's answer was unknown: the order waited for settlement.
    Pending,
    /// The provider refused: the order was cancelled.
    Declined,
}

impl CheckoutResult {
    pub const ALL: [Self; 3] = [Self::Paid, Self::Pending, Self::Declined];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Pending => "pending",
            Self::Declined => "declined",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|result| result.as_str() == raw)
    }
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

//! Carts, checkout, payments and orders: one current cart per user (guests included), a
//! checkout that reserves stock atomically and charges once however often it is retried, and
//! the order state machine.

mod checkout;
mod jobs;
mod model;
mod payments;
mod service;

/// The kinds of the orders' recurring purges (jobs without a payload).
pub const PURGE_CARTS: &str = "carts.purge_abandoned";
pub const PURGE_IDEMPOTENCY: &str = "orders.purge_idempotency_keys";

pub use checkout::{CHECKOUT_SCOPE, Checkout, CheckoutOutcome, MAX_IDEMPOTENCY_KEY_LEN, request_hash};
pub use jobs::{OrderConfirmationJob, RefundPaymentJob, SettlePaymentJob};
pub use model::{
    CartLine, CheckoutResult, IdempotencyBegin, IdempotencyRecord, IdempotencyState, MAX_CART_LINES, MAX_LINE_QUANTITY,
    NewOrder, Order, OrderLine, OrderQuery, OrderStatus, OrderTransition, PaymentEventRecord, ReservationFailure,
    ShippingAddress, ShippingAddressInput,
};
pub use payments::{
    ChargeOutcome, ChargeRequest, PaymentError, PaymentEvent, PaymentEventKind, PaymentProvider, TestModePayments,
    WebhookRejection,
};
pub use service::{OrderService, OrderSettings, PaymentEventApplied, SettleError};

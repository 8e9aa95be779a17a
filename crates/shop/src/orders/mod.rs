//! Carts, checkout, payments and orders: one current cart per user (guests included), a
//! checkout that reserves stock atomically and charges once however often it is retried, and
//! the order state machine.

mod model;
mod payments;
mod service;

pub use model::{
    CartLine, IdempotencyBegin, IdempotencyRecord, IdempotencyState, MAX_CART_LINES, MAX_LINE_QUANTITY, NewOrder,
    Order, OrderLine, OrderQuery, OrderStatus, OrderTransition, PaymentEventRecord, ReservationFailure, SavedResponse,
    ShippingAddress,
};
pub use payments::{
    ChargeOutcome, ChargeRequest, PaymentError, PaymentEvent, PaymentEventKind, PaymentProvider, TestModePayments,
    WebhookRejection,
};
pub use service::{
    CHECKOUT_SCOPE, CheckoutOutcome, CheckoutStart, MAX_IDEMPOTENCY_KEY_LEN, OrderService, OrderSettings,
    PaymentEventApplied, REFUND_PAYMENT, SEND_ORDER_CONFIRMATION, SETTLE_PAYMENT, SettleError, parse_shipping_address,
    request_hash,
};

//! Checkout, the whole of its protocol: the `Idempotency-Key`'s life (claimed, replayed,
//! refused while in progress or reused with another body, freed when the attempt had no
//! effect, completed with its result), the order with every line's stock reserved in one
//! transaction, and one charge outside it keyed by the order id.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::jobs::SettlePaymentJob;
use super::model::{
    CheckoutResult, IdempotencyBegin, IdempotencyRecord, IdempotencyState, NewOrder, Order, OrderLine, OrderStatus,
    ReservationFailure, ShippingAddress,
};
use super::payments::{ChargeOutcome, ChargeRequest, PaymentError};
use super::service::OrderService;
use crate::accounts::Caller;
use crate::catalog::{Money, ProductStatus};
use crate::error::Error;
use crate::jobs::{JobPayload as _, NewJob};
use crate::validation::ValidationErrors;

/// The idempotency scope of checkout.
pub const CHECKOUT_SCOPE: &str = "POST /orders";
/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// SHA-256 of a request body (canonical JSON), the fingerprint a key's replays must match.
pub fn request_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// A checkout's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub outcome: CheckoutOutcome,
    /// True when the key's request had finished before: this is its result again (with the
    /// order as it is now), and nothing was reserved or charged this time.
    pub replayed: bool,
}

/// How a checkout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutOutcome {
    /// Charged: the order is `paid`.
    Paid(Order),
    /// The provider's answer is unknown: the order stays `pendingPayment` and is settled later.
    Pending(Order),
    /// The provider refused: the order is `cancelled` and its stock released.
    Declined(Order),
}

impl CheckoutOutcome {
    pub fn order(&self) -> &Order {
        match self {
            Self::Paid(order) | Self::Pending(order) | Self::Declined(order) => order,
        }
    }

    pub fn result(&self) -> CheckoutResult {
        match self {
            Self::Paid(_) => CheckoutResult::Paid,
            Self::Pending(_) => CheckoutResult::Pending,
            Self::Declined(_) => CheckoutResult::Declined,
        }
    }

    /// Why a declined order was not charged, for its buyer.
    pub fn decline_detail(order: &Order) -> String {
        let reason = order.cancel_reason.as_deref().unwrap_or("the payment was declined");
        format!("{reason}; order {} is cancelled and nothing was charged", order.id)
    }
}

/// How a request may proceed, decided by its key.
enum KeyClaim {
    /// Go ahead; `resume` names the order an earlier attempt (whose process died) created.
    Proceed { resume: Option<Uuid> },
    /// The same request finished before.
    Replay { result: CheckoutResult, order_id: Option<Uuid> },
    /// The same request is still running elsewhere.
    Busy { retry_after_seconds: u32 },
    /// The key was used for a different request.
    Reused,
}

/// Whether this is an order's first charge attempt, or a checkout resumed after an attempt
/// that may have reached the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Resumed,
}

impl OrderService {
    /// Checks out the caller's cart under `key`, once however often it is retried: one order
    /// with every line's stock reserved (all or none), then one charge through the provider,
    /// outside any transaction, keyed by the order id. `request_hash` is the request's
    /// fingerprint ([`request_hash`]): the same key with another request is refused
    /// ([`Error::IdempotencyKeyReused`]), and while the key's first request runs, a retry is
    /// told to wait ([`Error::RequestInProgress`]). A finished request is replayed. A failure
    /// that left nothing behind (invalid cart, out of stock, payments unavailable) frees the
    /// key for another try; any other failure may have come after the order was placed, so the
    /// key stays held until its lock expires and a retry then resumes that order.
    pub async fn checkout(
        &self,
        caller: &Caller,
        key: &str,
        request_hash: [u8; 32],
        shipping_address: ShippingAddress,
    ) -> Result<Checkout, Error> {
        let resume = match self.claim_key(caller, key, request_hash).await? {
            KeyClaim::Proceed { resume } => resume,
            KeyClaim::Replay { result, order_id } => return self.replay(caller, result, order_id).await,
            KeyClaim::Busy { retry_after_seconds } => return Err(Error::RequestInProgress { retry_after_seconds }),
            KeyClaim::Reused => return Err(Error::IdempotencyKeyReused),
        };
        let user_id = caller.user.id;
        match self.place_and_pay(caller, key, shipping_address, resume).await {
            Ok(outcome) => {
                let order_id = outcome.order().id;
                self.store.complete_idempotent(user_id, CHECKOUT_SCOPE, key, outcome.result(), order_id).await?;
                Ok(Checkout { outcome, replayed: false })
            }
            Err(error @ (Error::Invalid(_) | Error::Conflict(_) | Error::Unavailable { .. })) => {
                // Nothing was charged and nothing stays reserved: the key may be used again.
                self.store.release_idempotent(user_id, CHECKOUT_SCOPE, key).await?;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Claims the key for this request, or says how to answer instead.
    async fn claim_key(&self, caller: &Caller, key: &str, request_hash: [u8; 32]) -> Result<KeyClaim, Error> {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::Invalid(ValidationErrors::single(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters (a UUID is a good choice)"),
            )));
        }
        let now = self.clock.now();
        let record = IdempotencyRecord {
            user_id: caller.user.id,
            scope: CHECKOUT_SCOPE.to_owned(),
            key: key.to_owned(),
            request_hash,
            state: IdempotencyState::InProgress { locked_until: now + self.settings.idempotency_lock },
            order_id: None,
            created_at: now,
            expires_at: now + self.settings.idempotency_ttl,
        };
        Ok(match self.store.begin_idempotent(&record, now).await? {
            IdempotencyBegin::Started => KeyClaim::Proceed { resume: None },
            IdempotencyBegin::Resumed(existing) if existing.request_hash == request_hash => {
                tracing::warn!(userId = %caller.user.id, orderId = ?existing.order_id, "resuming a checkout whose process stopped");
                KeyClaim::Proceed { resume: existing.order_id }
            }
            IdempotencyBegin::Resumed(_) => KeyClaim::Reused,
            IdempotencyBegin::Existing(existing) if existing.request_hash != request_hash => KeyClaim::Reused,
            IdempotencyBegin::Existing(existing) => match existing.state {
                IdempotencyState::Completed(result) => KeyClaim::Replay { result, order_id: existing.order_id },
                IdempotencyState::InProgress { locked_until } => {
                    let seconds = (locked_until - now).whole_seconds().clamp(1, 60);
                    KeyClaim::Busy { retry_after_seconds: u32::try_from(seconds).unwrap_or(1) }
                }
            },
        })
    }

    /// A finished checkout's result again, with its order as it is now.
    async fn replay(&self, caller: &Caller, result: CheckoutResult, order_id: Option<Uuid>) -> Result<Checkout, Error> {
        let order = match order_id {
            Some(id) => self.store.find_order(id).await?.filter(|order| order.user_id == caller.user.id),
            None => None,
        };
        let order = order.ok_or_else(|| Error::Internal("the order of a completed checkout is gone".into()))?;
        let outcome = match result {
            CheckoutResult::Paid => CheckoutOutcome::Paid(order),
            CheckoutResult::Pending => CheckoutOutcome::Pending(order),
            CheckoutResult::Declined => CheckoutOutcome::Declined(order),
        };
        Ok(Checkout { outcome, replayed: true })
    }

    /// Places the order (or, with `resume`, continues the one an earlier attempt of the same
    /// request created) and charges it.
    async fn place_and_pay(
        &self,
        caller: &Caller,
        key: &str,
        shipping_address: ShippingAddress,
        resume: Option<Uuid>,
    ) -> Result<CheckoutOutcome, Error> {
        if let Some(order_id) = resume {
            let order = self.store.find_order(order_id).await?.filter(|order| order.user_id == caller.user.id);
            if let Some(order) = order {
                return self.pay(order, Attempt::Resumed).await;
            }
        }
        if let Err(retry_after) = self.payments.accepting() {
            return Err(payments_unavailable(retry_after));
        }
        let order = self.new_order(caller, shipping_address).await?;
        let expire = NewJob::of(&SettlePaymentJob { order_id: order.id }, order.created_at)
            .run_at(order.created_at + self.settings.pending_payment_timeout)
            .max_attempts(20)
            .unique_key(format!("{}:expire:{}", SettlePaymentJob::KIND, order.id));
        let placed = match self.store.place_order(&order, Some((CHECKOUT_SCOPE, key)), &[expire]).await? {
            Ok(placed) => placed,
            Err(failure) => {
                return Err(reservation_error(&failure));
            }
        };
        tracing::info!(orderId = %placed.id, userId = %caller.user.id, total = placed.total_minor, "order placed; stock reserved");
        self.pay(placed, Attempt::First).await
    }

    /// The order for the caller's cart as it is now.
    async fn new_order(&self, caller: &Caller, shipping_address: ShippingAddress) -> Result<NewOrder, Error> {
        let cart = self.store.cart_lines(caller.user.id).await?;
        let Some(first) = cart.first() else {
            return Err(Error::Invalid(ValidationErrors::single("cart", "is empty; add products before checking out")));
        };
        let currency = first.product.price.currency();
        let mut lines = Vec::with_capacity(cart.len());
        let mut total: i64 = 0;
        for line in &cart {
            let product = &line.product;
            if product.status != ProductStatus::Active {
                return Err(Error::Conflict(format!(
                    "{} is no longer sold; remove it from your cart",
                    product.name.as_str()
                )));
            }
            if product.price.currency() != currency {
                return Err(Error::Invalid(ValidationErrors::single(
                    "cart",
                    "holds products priced in different currencies; check them out separately",
                )));
            }
            let line = OrderLine {
                product_id: Some(product.id),
                name: product.name.as_str().to_owned(),
                unit_price_minor: product.price.minor(),
                quantity: line.quantity,
            };
            total = total
                .checked_add(line.total_minor())
                .filter(|total| Money::from_minor(*total, currency).is_ok())
                .ok_or_else(|| Error::Invalid(ValidationErrors::single("cart", "its total is too large")))?;
            lines.push(line);
        }
        Ok(NewOrder {
            id: crate::new_id(),
            user_id: caller.user.id,
            currency,
            total_minor: total,
            lines,
            shipping_address,
            test_mode: self.payments.test_mode(),
            created_at: self.clock.now(),
        })
    }

    /// Charges a `pendingPayment` order (again: the provider knows it by its id) and records
    /// the outcome; an order already settled is reported as it is.
    async fn pay(&self, order: Order, attempt: Attempt) -> Result<CheckoutOutcome, Error> {
        match order.status {
            OrderStatus::PendingPayment => {}
            OrderStatus::Cancelled => return Ok(CheckoutOutcome::Declined(order)),
            _ => return Ok(CheckoutOutcome::Paid(order)),
        }
        let amount =
            Money::from_minor(order.total_minor, order.currency).map_err(|problem| Error::Internal(problem.into()))?;
        let request = ChargeRequest { order_id: order.id, amount, description: format!("Order {}", order.id) };
        match self.payments.charge(&request).await {
            Ok(ChargeOutcome::Approved { reference }) => {
                self.mark_paid(&order, reference).await.map(|(order, _)| CheckoutOutcome::Paid(order))
            }
            // A resumed checkout's earlier attempt may have charged: a refusal of this one
            // proves nothing, so settlement asks the provider about the order.
            Ok(ChargeOutcome::Declined { reason }) if attempt == Attempt::Resumed => {
                self.await_settlement(&order, &format!("the resumed charge was refused: {reason}")).await
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                let reason = format!("payment declined: {reason}");
                self.cancel_unpaid(&order, &reason).await.map(|(order, _)| CheckoutOutcome::Declined(order))
            }
            Err(PaymentError::Unavailable { retry_after }) if attempt == Attempt::First => {
                // Nothing reached the provider: undo the reservation, let the client retry.
                self.cancel_unpaid(&order, "the payment provider was unavailable").await?;
                Err(payments_unavailable(retry_after))
            }
            // A resumed checkout's earlier attempt may have charged before the process died:
            // not hearing from the provider now proves nothing, so settlement decides.
            Err(PaymentError::Unavailable { .. }) => {
                self.await_settlement(&order, "the payment provider is unavailable").await
            }
            Err(PaymentError::Unknown(detail)) => self.await_settlement(&order, &detail).await,
        }
    }

    /// Leaves an order whose charge may or may not have happened `pendingPayment` and has the
    /// `payments.settle` job ask the provider about it later.
    async fn await_settlement(&self, order: &Order, detail: &str) -> Result<CheckoutOutcome, Error> {
        tracing::warn!(orderId = %order.id, detail, "payment outcome unknown; the order waits for settlement");
        let now = self.clock.now();
        let settle = NewJob::of(&SettlePaymentJob { order_id: order.id }, now)
            .run_at(now + self.settings.settle_after)
            .max_attempts(20)
            .unique_key(format!("{}:unknown:{}", SettlePaymentJob::KIND, order.id));
        self.store.enqueue_job(&settle).await?;
        // A webhook may have settled it meanwhile: answer (and save for replays) what it is now.
        let current = self.store.find_order(order.id).await?.ok_or(Error::NotFound)?;
        Ok(match current.status {
            OrderStatus::PendingPayment => CheckoutOutcome::Pending(current),
            OrderStatus::Cancelled => CheckoutOutcome::Declined(current),
            _ => CheckoutOutcome::Paid(current),
        })
    }
}

fn payments_unavailable(retry_after: std::time::Duration) -> Error {
    Error::Unavailable {
        detail: "payments are unavailable right now; nothing was reserved or charged — try again shortly",
        retry_after_seconds: u32::try_from(retry_after.as_secs().clamp(1, 300)).unwrap_or(30),
    }
}

fn reservation_error(failure: &ReservationFailure) -> Error {
    Error::Conflict(match failure {
        ReservationFailure::OutOfStock { product_id, available } => {
            format!("not enough stock of product {product_id}: {available} left; nothing was reserved or charged")
        }
        ReservationFailure::PriceChanged { product_id } => {
            format!("the price of product {product_id} changed; review your cart and check out again")
        }
        ReservationFailure::Unavailable { product_id } => {
            format!("product {product_id} is no longer sold; remove it from your cart")
        }
    })
}

//! The order use cases: the current cart, checkout (idempotent; stock reserved atomically;
//! charged once, outside the transaction), the order state machine's actions, and the jobs
//! that settle payments whose outcome was unknown.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::jobs::{OrderConfirmationJob, RefundPaymentJob};
use super::model::{
    CartLine, MAX_CART_LINES, MAX_LINE_QUANTITY, Order, OrderQuery, OrderStatus, OrderTransition, PaymentEventRecord,
};
use super::payments::{ChargeOutcome, PaymentError, PaymentEvent, PaymentEventKind, PaymentProvider, WebhookRejection};
use crate::accounts::{Caller, Role};
use crate::catalog::{IdOrSlug, Money, ProductStatus};
use crate::clock::Clock;
use crate::error::{Conflict, Error, StoreError};
use crate::jobs::{JobPayload as _, NewJob};
use crate::mail::MAIL_QUEUE;
use crate::pagination::Page;
use crate::ports::Store;
use crate::validation::ValidationErrors;
use crate::webhooks::order_event_job;

/// Timings of checkout and payment settlement.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// An order still `pendingPayment` this long after checkout is settled with the provider:
    /// paid if the provider has the charge, else cancelled and its stock released.
    pub pending_payment_timeout: Duration,
    /// After an unknown payment outcome, the provider is asked again after this.
    pub settle_after: Duration,
    /// Idempotency keys are remembered this long.
    pub idempotency_ttl: Duration,
    /// A checkout in progress holds its key this long; a holder that died loses it then.
    pub idempotency_lock: Duration,
    /// Carts untouched this long are emptied.
    pub abandoned_cart_ttl: Duration,
    /// Applied payment webhook events are remembered (to absorb redeliveries) this long.
    pub payment_event_retention: Duration,
    pub shop_name: String,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            pending_payment_timeout: Duration::minutes(30),
            settle_after: Duration::minutes(1),
            idempotency_ttl: Duration::hours(24),
            idempotency_lock: Duration::seconds(60),
            abandoned_cart_ttl: Duration::days(30),
            payment_event_retention: Duration::days(30),
            shop_name: "Shopkeep".into(),
        }
    }
}

/// Carts, checkout and orders.
#[derive(Clone)]
pub struct OrderService {
    pub(super) store: Arc<dyn Store>,
    pub(super) payments: Arc<dyn PaymentProvider>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: OrderSettings,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("payments", &self.payments.name())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OrderService {
    pub fn new(
        store: Arc<dyn Store>,
        payments: Arc<dyn PaymentProvider>,
        clock: Arc<dyn Clock>,
        settings: OrderSettings,
    ) -> Self {
        Self { store, payments, clock, settings }
    }

    pub fn payments(&self) -> &Arc<dyn PaymentProvider> {
        &self.payments
    }

    // ----- carts -----

    /// The caller's current cart (empty when they have none).
    pub async fn cart(&self, caller: &Caller) -> Result<Vec<CartLine>, Error> {
        Ok(self.store.cart_lines(caller.user.id).await?)
    }

    /// Sets how many of a product are in the caller's cart; 0 removes it.
    pub async fn set_cart_quantity(
        &self,
        caller: &Caller,
        product_id: Uuid,
        quantity: i64,
    ) -> Result<Vec<CartLine>, Error> {
        if !(0..=MAX_LINE_QUANTITY).contains(&quantity) {
            return Err(Error::Invalid(ValidationErrors::single(
                "quantity",
                format!("must be a whole number from 0 to {MAX_LINE_QUANTITY}"),
            )));
        }
        if quantity == 0 {
            self.store.remove_cart_item(caller.user.id, product_id).await?;
            return self.cart(caller).await;
        }
        let on_sale = self
            .store
            .find_product(&IdOrSlug::Id(product_id))
            .await?
            .is_some_and(|product| product.status == ProductStatus::Active);
        if !on_sale {
            return Err(not_on_sale());
        }
        let now = self.clock.now();
        match self.store.set_cart_quantity(caller.user.id, product_id, quantity, MAX_CART_LINES, now).await {
            Ok(()) => self.cart(caller).await,
            Err(StoreError::Conflict(Conflict::CartFull)) => Err(Error::Conflict(format!(
                "a cart holds at most {MAX_CART_LINES} different products; remove one first"
            ))),
            // Deleted between the check and the insert.
            Err(StoreError::Conflict(_)) => Err(not_on_sale()),
            Err(other) => Err(other.into()),
        }
    }

    /// Removes a product from the caller's cart (nothing happens when it is not there).
    pub async fn remove_cart_item(&self, caller: &Caller, product_id: Uuid) -> Result<(), Error> {
        self.store.remove_cart_item(caller.user.id, product_id).await?;
        Ok(())
    }

    /// A guest's cart joins the account's cart when the guest signs in to it.
    pub async fn merge_guest_cart(&self, guest: Uuid, into: Uuid) -> Result<(), Error> {
        if guest == into {
            return Ok(());
        }
        let now = self.clock.now();
        self.store.merge_cart(guest, into, MAX_CART_LINES, MAX_LINE_QUANTITY, now).await?;
        Ok(())
    }

    /// Empties at most `limit` carts untouched for the abandoned-cart time.
    pub async fn purge_abandoned_carts(&self, limit: u32) -> Result<u64, Error> {
        let before = self.clock.now() - self.settings.abandoned_cart_ttl;
        Ok(self.store.purge_abandoned_carts(before, limit).await?)
    }

    /// Deletes at most `limit` expired idempotency records and, within the same limit, records
    /// of payment webhook events older than their retention.
    pub async fn purge_request_records(&self, limit: u32) -> Result<u64, Error> {
        let now = self.clock.now();
        let keys = self.store.purge_idempotency_records(now, limit).await?;
        let left = u32::try_from(u64::from(limit).saturating_sub(keys)).unwrap_or(0);
        if left == 0 {
            return Ok(keys);
        }
        let events = self.store.purge_payment_events(now - self.settings.payment_event_retention, left).await?;
        Ok(keys + events)
    }

    // ----- payment webhooks -----

    /// Verifies a webhook of the configured provider (signature, replay window) against the
    /// shop's clock and reads its event.
    pub fn verify_payment_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<PaymentEvent, WebhookRejection> {
        self.payments.verify_webhook(signature, body, self.clock.now())
    }

    /// Applies a verified webhook event of `provider` through the order state machine, once:
    /// a redelivered event (same id) is acknowledged and changes nothing. An event about an
    /// order this shop does not have, or one the order has moved past, is acknowledged too:
    /// the provider need not send it again.
    pub async fn apply_payment_event(&self, provider: &str, event: PaymentEvent) -> Result<PaymentEventApplied, Error> {
        if self.store.payment_event_seen(provider, &event.id).await? {
            tracing::info!(provider, eventId = event.id.as_str(), "payment webhook event already applied");
            return Ok(PaymentEventApplied { duplicate: true, outcome: "already applied".into() });
        }
        let outcome = match event.kind.order_id() {
            None => "ignored: not an event the shop acts on".to_owned(),
            Some(order_id) => match self.store.find_order(order_id).await? {
                None => "ignored: no such order".to_owned(),
                Some(order) => self.apply_to_order(order, &event.kind).await?,
            },
        };
        let record = PaymentEventRecord {
            provider: provider.to_owned(),
            event_id: event.id.clone(),
            event_type: event.kind.label().to_owned(),
            order_id: event.kind.order_id(),
            outcome: outcome.clone(),
            received_at: self.clock.now(),
        };
        // A concurrent delivery of the same event may have recorded it first; the state
        // machine let only one of them change the order.
        let first = self.store.record_payment_event(&record).await?;
        tracing::info!(
            provider,
            eventId = event.id.as_str(),
            kind = event.kind.label(),
            outcome = outcome.as_str(),
            "payment webhook event applied"
        );
        Ok(PaymentEventApplied { duplicate: !first, outcome })
    }

    async fn apply_to_order(&self, order: Order, kind: &PaymentEventKind) -> Result<String, Error> {
        let unchanged = |order: &Order| format!("no change: the order is {}", order.status.as_str());
        Ok(match kind {
            PaymentEventKind::Charged { reference, .. } => match order.status {
                // Paid now; or, if it was cancelled meanwhile, the charge is refunded.
                OrderStatus::PendingPayment | OrderStatus::Cancelled => {
                    match self.mark_paid(&order, reference.clone()).await? {
                        (_, true) => "order paid".to_owned(),
                        (after, false) if after.status == OrderStatus::Cancelled => {
                            "the order was cancelled: a refund of the charge is queued".to_owned()
                        }
                        (after, false) => unchanged(&after),
                    }
                }
                _ => unchanged(&order),
            },
            PaymentEventKind::Declined { reason, .. } => {
                if order.status != OrderStatus::PendingPayment {
                    return Ok(unchanged(&order));
                }
                // Events may come out of order: a declined attempt can precede the charge that
                // succeeded. The provider's record of the order decides, as in settlement.
                match self.payments.find_charge(order.id).await {
                    Ok(Some(ChargeOutcome::Approved { reference })) => match self.mark_paid(&order, reference).await? {
                        (_, true) => "a later charge succeeded: order paid".to_owned(),
                        (after, false) => unchanged(&after),
                    },
                    Ok(_) => match self.cancel_unpaid(&order, &format!("payment declined: {reason}")).await? {
                        (_, true) => "order cancelled".to_owned(),
                        (after, false) => unchanged(&after),
                    },
                    Err(error) => return Err(payments_unconfirmed(&error)),
                }
            }
            PaymentEventKind::Refunded { amount_minor, .. } if *amount_minor < order.total_minor => {
                // A goodwill refund of part of the price: the sale stands.
                format!("no change: a partial refund of {amount_minor} of {}", order.total_minor)
            }
            PaymentEventKind::Refunded { .. } => self.refunded_by_provider(order).await?,
            PaymentEventKind::Other { .. } => unchanged(&order),
        })
    }

    /// The provider refunded the whole charge: a paid, fulfilled or cancelled order becomes
    /// `refunded` (stock released if it had not shipped); an order still awaiting its payment
    /// is cancelled, its stock released — the money is back, so it must never ship.
    async fn refunded_by_provider(&self, mut order: Order) -> Result<String, Error> {
        // Twice: a concurrent transition (fulfilment, our own refund job) may change the
        // status between the read and the conditional update.
        for _ in 0..2 {
            if order.status == OrderStatus::PendingPayment {
                match self.cancel_unpaid(&order, "the payment was refunded by the provider").await? {
                    (_, true) => return Ok("order cancelled: its payment was refunded".to_owned()),
                    (after, false) => {
                        order = after;
                        continue;
                    }
                }
            }
            if !order.status.can_become(OrderStatus::Refunded) {
                return Ok(format!("no change: the order is {}", order.status.as_str()));
            }
            let mut transition = OrderTransition::new(order.id, OrderStatus::Refunded, self.clock.now());
            transition.from = vec![order.status];
            transition.release_stock = order.status == OrderStatus::Paid;
            if self.apply(transition).await?.is_some() {
                return Ok("order refunded".to_owned());
            }
            order = self.store.find_order(order.id).await?.ok_or(Error::NotFound)?;
        }
        Err(stale(order.id))
    }

    /// `pendingPayment → paid`, the cart's ordered products removed and the confirmation
    /// queued in the same transaction. If the order was cancelled meanwhile (it expired while
    /// the charge was under way), the charge is refunded. Also says whether this call made the
    /// order paid (of concurrent callers, one does).
    pub(super) async fn mark_paid(&self, order: &Order, reference: String) -> Result<(Order, bool), Error> {
        let now = self.clock.now();
        let confirmation = NewJob::of(&OrderConfirmationJob { order_id: order.id }, now)
            .queue(MAIL_QUEUE)
            .max_attempts(12)
            .unique_key(format!("{}:{}", OrderConfirmationJob::KIND, order.id));
        let mut transition = OrderTransition::new(order.id, OrderStatus::Paid, now);
        transition.payment_reference = Some(reference);
        transition.clear_cart = true;
        transition.jobs = vec![confirmation];
        if let Some(paid) = self.apply(transition).await? {
            tracing::info!(orderId = %order.id, "order paid");
            return Ok((paid, true));
        }
        let current = self.store.find_order(order.id).await?.ok_or(Error::NotFound)?;
        if current.status == OrderStatus::Cancelled {
            tracing::warn!(orderId = %order.id, "charged after the order was cancelled; refunding");
            self.store.enqueue_job(&refund_job(order.id, now)).await?;
        }
        Ok((current, false))
    }

    /// `pendingPayment → cancelled` with the stock released; also says whether this call
    /// cancelled it.
    pub(super) async fn cancel_unpaid(&self, order: &Order, reason: &str) -> Result<(Order, bool), Error> {
        let mut transition = OrderTransition::new(order.id, OrderStatus::Cancelled, self.clock.now());
        transition.from = vec![OrderStatus::PendingPayment];
        transition.cancel_reason = Some(reason.to_owned());
        transition.release_stock = true;
        match self.apply(transition).await? {
            Some(cancelled) => {
                tracing::info!(orderId = %order.id, reason, "unpaid order cancelled; stock released");
                Ok((cancelled, true))
            }
            None => Ok((self.store.find_order(order.id).await?.ok_or(Error::NotFound)?, false)),
        }
    }

    /// Applies a transition with its `webhooks.dispatch` event job added, so every state change
    /// that merchants can subscribe to enqueues its event in the change's own transaction.
    async fn apply(&self, mut transition: OrderTransition) -> Result<Option<Order>, StoreError> {
        transition.jobs.extend(order_event_job(transition.to, transition.order_id, transition.at));
        self.store.transition_order(&transition).await
    }

    // ----- settlement jobs -----

    /// The `payments.settle` job: asks the provider about a `pendingPayment` order. Charged →
    /// paid; declined → cancelled; no charge → cancelled once the order is past the pending
    /// timeout (before that: `Ok(false)`, try again later). `Ok(true)` when settled (or
    /// nothing is left to do).
    pub async fn settle_payment(&self, order_id: Uuid) -> Result<bool, SettleError> {
        let Some(order) = self.store.find_order(order_id).await? else { return Ok(true) };
        if order.status != OrderStatus::PendingPayment {
            return Ok(true);
        }
        let found = self.payments.find_charge(order_id).await.map_err(SettleError::Provider)?;
        let now = self.clock.now();
        match found {
            Some(ChargeOutcome::Approved { reference }) => {
                self.mark_paid(&order, reference).await?;
            }
            Some(ChargeOutcome::Declined { reason }) => {
                self.cancel_unpaid(&order, &format!("payment declined: {reason}")).await?;
            }
            None if now >= order.created_at + self.settings.pending_payment_timeout => {
                self.cancel_unpaid(&order, "payment not completed in time").await?;
            }
            None => return Ok(false),
        }
        Ok(true)
    }

    /// The `payments.refund` job: refunds the order's charge, if the provider has one, and
    /// marks the order refunded (releasing stock still held by a paid, unshipped order).
    pub async fn refund_payment(&self, order_id: Uuid) -> Result<(), SettleError> {
        let Some(order) = self.store.find_order(order_id).await? else { return Ok(()) };
        if order.status == OrderStatus::Refunded {
            return Ok(());
        }
        let charged = matches!(
            self.payments.find_charge(order_id).await.map_err(SettleError::Provider)?,
            Some(ChargeOutcome::Approved { .. })
        );
        if !charged {
            tracing::info!(orderId = %order_id, "nothing was charged; nothing to refund");
            return Ok(());
        }
        let amount =
            Money::from_minor(order.total_minor, order.currency).map_err(|problem| Error::Internal(problem.into()))?;
        let reference = self.payments.refund(order_id, amount).await.map_err(SettleError::Provider)?;
        let mut transition = OrderTransition::new(order_id, OrderStatus::Refunded, self.clock.now());
        transition.from = vec![order.status];
        transition.release_stock = order.status == OrderStatus::Paid;
        if self.apply(transition).await?.is_none() {
            return Err(SettleError::Raced);
        }
        tracing::info!(orderId = %order_id, refund = reference, "order refunded");
        Ok(())
    }

    /// The confirmation mail of a paid order, `None` when there is nothing to send.
    pub async fn confirmation_mail(&self, order_id: Uuid) -> Result<Option<crate::mail::Mail>, Error> {
        let Some(order) = self.store.find_order(order_id).await? else { return Ok(None) };
        let Some(user) = self.store.find_user(order.user_id).await? else { return Ok(None) };
        if user.guest {
            // A guest has no address yet; the order page shows the confirmation.
            return Ok(None);
        }
        Ok(Some(crate::mail::order_confirmation(&user.email, user.name.as_str(), &order, &self.settings.shop_name)))
    }

    // ----- orders -----

    /// The caller's orders; staff see everyone's.
    pub async fn list_orders(&self, caller: &Caller, mut query: OrderQuery) -> Result<Page<Order>, Error> {
        if !caller.has_role(Role::Staff) {
            query.user_id = Some(caller.user.id);
        }
        Ok(self.store.list_orders(&query).await?)
    }

    /// One order: the owner's or, for staff, anyone's; otherwise not found.
    pub async fn get_order(&self, caller: &Caller, id: Uuid) -> Result<Order, Error> {
        let order = self.store.find_order(id).await?.ok_or(Error::NotFound)?;
        if order.user_id != caller.user.id && !caller.has_role(Role::Staff) {
            return Err(Error::NotFound);
        }
        Ok(order)
    }

    /// Cancels an order before fulfilment (the owner, or staff): stock released; a charge, if
    /// any, refunded by a job (for an unpaid order, after the settlement delay, in case a
    /// charge was still under way).
    pub async fn cancel_order(&self, caller: &Caller, id: Uuid) -> Result<Order, Error> {
        let order = self.get_order(caller, id).await?;
        if !matches!(order.status, OrderStatus::PendingPayment | OrderStatus::Paid) {
            return Err(illegal(order.status, OrderStatus::Cancelled));
        }
        let now = self.clock.now();
        let by = if order.user_id == caller.user.id { "the buyer" } else { "staff" };
        let refund_at = if order.status == OrderStatus::Paid { now } else { now + self.settings.settle_after };
        let mut transition = OrderTransition::new(id, OrderStatus::Cancelled, now);
        transition.from = vec![order.status];
        transition.cancel_reason = Some(format!("cancelled by {by}"));
        transition.release_stock = true;
        transition.jobs = vec![refund_job(id, now).run_at(refund_at)];
        let cancelled = self.apply(transition).await?.ok_or_else(|| stale(id))?;
        tracing::info!(orderId = %id, by, "order cancelled; stock released");
        Ok(cancelled)
    }

    /// Staff: `paid → fulfilled`.
    pub async fn fulfil_order(&self, caller: &Caller, id: Uuid) -> Result<Order, Error> {
        let order = self.get_order(caller, id).await?;
        if !order.status.can_become(OrderStatus::Fulfilled) {
            return Err(illegal(order.status, OrderStatus::Fulfilled));
        }
        let mut transition = OrderTransition::new(id, OrderStatus::Fulfilled, self.clock.now());
        transition.from = vec![order.status];
        self.apply(transition).await?.ok_or_else(|| stale(id))
    }

    /// Staff: refunds a paid or fulfilled order through a job (the order becomes `refunded`
    /// once the provider has refunded it).
    pub async fn refund_order(&self, caller: &Caller, id: Uuid) -> Result<Order, Error> {
        let order = self.get_order(caller, id).await?;
        if !order.status.can_become(OrderStatus::Refunded) {
            return Err(illegal(order.status, OrderStatus::Refunded));
        }
        self.store.enqueue_job(&refund_job(id, self.clock.now())).await?;
        tracing::info!(orderId = %id, "refund requested");
        Ok(order)
    }
}

/// What a payment webhook event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEventApplied {
    /// The event had been applied before (a redelivery): nothing changed.
    pub duplicate: bool,
    /// What the shop did, e.g. `order paid`, `no change: the order is paid`.
    pub outcome: String,
}

/// Why a settlement or refund job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Provider(PaymentError),
    #[error("the order changed while it was being settled")]
    Raced,
    #[error(transparent)]
    Shop(#[from] Error),
}

impl From<StoreError> for SettleError {
    fn from(error: StoreError) -> Self {
        Self::Shop(error.into())
    }
}

fn refund_job(order_id: Uuid, now: OffsetDateTime) -> NewJob {
    NewJob::of(&RefundPaymentJob { order_id }, now)
        .max_attempts(20)
        .unique_key(format!("{}:{order_id}", RefundPaymentJob::KIND))
}

fn not_on_sale() -> Error {
    Error::Invalid(ValidationErrors::single("productId", "is not a product on sale"))
}

/// The provider could not confirm what a webhook said; the event is not recorded, so the
/// provider's redelivery is applied later.
fn payments_unconfirmed(error: &PaymentError) -> Error {
    tracing::warn!(%error, "could not confirm a payment webhook with the provider");
    Error::Unavailable {
        detail: "the payment provider could not confirm the event; send it again later",
        retry_after_seconds: 30,
    }
}

fn illegal(from: OrderStatus, to: OrderStatus) -> Error {
    Error::Conflict(format!("an order that is {} cannot become {}", from.api_name(), to.api_name()))
}

fn stale(id: Uuid) -> Error {
    Error::Conflict(format!("order {id} changed meanwhile; fetch it again"))
}

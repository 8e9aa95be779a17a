//! A payment sandbox: a Stripe-like payment provider over HTTP for tests and demos. It charges
//! at once, honours idempotency keys, refuses a second successful charge for the same order, and
//! records every charge and refund it makes, so a test can prove that nothing was charged twice
//! even when the sandbox is made to fail after charging (see [`PaymentMode`]).
//!
//! `/v1/payment_intents` and `/v1/refunds` want `Authorization: Bearer SECRET`; the `/sandbox/...`
//! control endpoints (mode, charges, refunds, reset, webhooks, events) want nothing, and a test in
//! the same process can skip HTTP altogether through [`PaymentSandbox`].
//!
//! Like a real provider it sends signed webhooks, once a target is set
//! ([`PaymentSandbox::set_webhooks`], `PUT /sandbox/webhooks`): every intent or refund the ledger
//! creates becomes an event — `payment_intent.succeeded`, `payment_intent.payment_failed` or
//! `charge.refunded` — and an idempotent replay or an order found already paid creates none.
//! Events are emitted whatever the mode answers afterwards, so in `charge-then-fail` the client
//! sees a 500 while the shop still learns of the charge by webhook. The body is
//! `{"id":"evt_…","object":"event","type":…,"created":…,"data":{"object":…}}`, the object being
//! the intent as the API returns it, or the refund with its `order_id` added. Each is POSTed with
//! `Webhook-Signature: t=UNIX,v1=HEX` ([`webhook_signature`]: HMAC-SHA256 of `"{t}.{body}"`) by
//! one background task, in creation order, with a 5 s timeout per attempt and up to 5 retries
//! (backoff 100 ms doubling, at most 2 s) on an error or a non-2xx answer. Every event and
//! attempt is recorded ([`PaymentSandbox::webhook_events`], `GET /sandbox/events`), and
//! [`PaymentSandbox::redeliver`] sends one again for duplicate-delivery tests.

mod ledger;
mod mode;
mod routes;
mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use mode::PaymentMode;
pub use webhooks::{DeliveryAttempt, SandboxEvent, webhook_signature};

use ledger::Ledger;
use webhooks::Webhooks;

/// A running payment sandbox. Dropping it stops it: it accepts nothing more, and hung requests
/// get a 503 as their connection closes.
#[derive(Debug)]
pub struct PaymentSandbox {
    address: SocketAddr,
    state: Arc<SandboxState>,
    stop: watch::Sender<bool>,
}

/// One charge attempt that created a payment intent, succeeded or declined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCharge {
    /// `pi_…`
    pub id: String,
    pub order_id: String,
    /// In minor units (cents).
    pub amount: i64,
    /// Lowercase ISO 4217, e.g. `eur`.
    pub currency: String,
    pub description: Option<String>,
    pub status: ChargeStatus,
    /// The key of the request that created it.
    pub idempotency_key: String,
    /// Unix seconds.
    pub created: u64,
}

/// Whether a charge took the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    /// Declined (`card_declined`): nothing was charged.
    Declined,
}

/// One refund the sandbox made; every refund succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRefund {
    /// `re_…`
    pub id: String,
    /// The `pi_…` it refunds.
    pub payment_intent: String,
    /// In minor units, at most the charged amount.
    pub amount: i64,
    pub currency: String,
    /// The key of the request that created it.
    pub idempotency_key: String,
    /// Unix seconds.
    pub created: u64,
}

impl ChargeStatus {
    /// `succeeded` or `declined`, as the API says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
        }
    }
}

// === impl PaymentSandbox ===

impl PaymentSandbox {
    /// Listens on `127.0.0.1` at a free port, approving everything; clients authenticate with
    /// `Authorization: Bearer {secret}`.
    pub async fn start(secret: &str) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), secret, PaymentMode::Approve).await
    }

    /// Listens on `address` (port 0 for any) in `mode`; [`PaymentSandbox::reset`] returns to it.
    pub async fn start_on(address: SocketAddr, secret: &str, mode: PaymentMode) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let (webhooks, queued) = Webhooks::new()?;
        let webhooks = Arc::new(webhooks);
        tokio::spawn(webhooks::deliver_queued(Arc::clone(&webhooks), queued, stopped.clone()));
        let state = Arc::new(SandboxState {
            secret: secret.to_owned(),
            start_mode: mode.clone(),
            mode: RwLock::new(mode.clone()),
            ledger: Mutex::new(Ledger::default()),
            webhooks,
            stopped: stopped.clone(),
        });
        let server = axum::serve(listener, routes::router(Arc::clone(&state)))
            .with_graceful_shutdown(async move { wait_until_stopped(stopped).await });
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "payment sandbox server failed");
            }
        });
        tracing::info!(%address, %mode, "payment sandbox listening");
        Ok(Self { address, state, stop })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn mode(&self) -> PaymentMode {
        self.state.mode()
    }

    /// Changes how the `/v1/...` endpoints answer from the next request on.
    pub fn set_mode(&self, mode: PaymentMode) {
        self.state.set_mode(mode);
    }

    /// Every charge attempt that created a payment intent, oldest first.
    pub fn charges(&self) -> Vec<SandboxCharge> {
        self.state.ledger().charges().to_vec()
    }

    /// The succeeded charges for `order_id`: more than one would be a double charge, which the
    /// sandbox itself refuses, so a correct client sees zero or one.
    pub fn succeeded_charges_for(&self, order_id: &str) -> Vec<SandboxCharge> {
        self.state
            .ledger()
            .charges()
            .iter()
            .filter(|charge| charge.order_id == order_id && charge.status == ChargeStatus::Succeeded)
            .cloned()
            .collect()
    }

    /// Every refund made, oldest first.
    pub fn refunds(&self) -> Vec<SandboxRefund> {
        self.state.ledger().refunds().to_vec()
    }

    /// From now on, POSTs every new event to `url` (a full URL, e.g.
    /// `http://127.0.0.1:PORT/api/v1/payment-webhooks/sandbox`), signed with `secret`. Events
    /// created before are not sent (see [`PaymentSandbox::redeliver`]).
    pub fn set_webhooks(&self, url: impl Into<String>, secret: impl Into<String>) {
        self.state.webhooks.set_target(url.into(), secret.into());
    }

    /// Stops sending: new events are still recorded, as not delivered, and an event being retried
    /// gets no further attempt.
    pub fn clear_webhooks(&self) {
        self.state.webhooks.clear_target();
    }

    /// Every event emitted since the start or the last reset, oldest first, with its attempts.
    pub fn webhook_events(&self) -> Vec<SandboxEvent> {
        self.state.webhooks.events()
    }

    /// Sends the event `event_id` once more, right now, with a fresh signature, and returns the
    /// status the receiver answered; the attempt is recorded. An error for an unknown event, no
    /// webhook target, or a transport error.
    pub async fn redeliver(&self, event_id: &str) -> Result<u16, String> {
        self.state.webhooks.redeliver(event_id).await
    }

    /// Forgets every charge, refund, idempotency key and webhook event and returns to the mode it
    /// started in; the webhook target stays.
    pub fn reset(&self) {
        self.state.reset();
    }
}

impl Drop for PaymentSandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

// === impl SandboxState ===

/// What the server and the [`PaymentSandbox`] handle share.
#[derive(Debug)]
struct SandboxState {
    secret: String,
    start_mode: PaymentMode,
    mode: RwLock<PaymentMode>,
    /// One lock over all the books: a charge decision and its record happen together, so
    /// concurrent retries cannot both charge.
    ledger: Mutex<Ledger>,
    webhooks: Arc<Webhooks>,
    stopped: watch::Receiver<bool>,
}

impl SandboxState {
    fn mode(&self) -> PaymentMode {
        self.mode.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_mode(&self, mode: PaymentMode) {
        tracing::info!(%mode, "payment sandbox mode changed");
        *self.mode.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = mode;
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reset(&self) {
        // Under the ledger lock, as events are emitted: no event of a forgotten charge survives.
        let mut ledger = self.ledger();
        *ledger = Ledger::default();
        self.webhooks.forget_events();
        drop(ledger);
        self.set_mode(self.start_mode.clone());
        tracing::info!("payment sandbox reset");
    }

    /// Resolves when the [`PaymentSandbox`] is dropped.
    async fn stopped(&self) {
        wait_until_stopped(self.stopped.clone()).await;
    }
}

async fn wait_until_stopped(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop too.
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

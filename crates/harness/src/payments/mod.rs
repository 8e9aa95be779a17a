//! A payment sandbox: a Stripe-like payment provider over HTTP for tests and demos. It charges
//! at once, honours idempotency keys, refuses a second successful charge for the same order, and
//! records every charge and refund it makes, so a test can prove that nothing was charged twice
//! even when the sandbox is made to fail after charging (see [`PaymentMode`]).
//!
//! `/v1/payment_intents` and `/v1/refunds` want `Authorization: Bearer SECRET`; the `/sandbox/...`
//! control endpoints (mode, charges, refunds, reset) want nothing, and a test in the same process
//! can skip HTTP altogether through [`PaymentSandbox`].

mod ledger;
mod mode;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use mode::PaymentMode;

use ledger::Ledger;

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
        let state = Arc::new(SandboxState {
            secret: secret.to_owned(),
            start_mode: mode.clone(),
            mode: RwLock::new(mode.clone()),
            ledger: Mutex::new(Ledger::default()),
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

    /// Forgets every charge, refund and idempotency key and returns to the mode it started in.
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
        *self.ledger() = Ledger::default();
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

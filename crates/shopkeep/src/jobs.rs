//! The shop's job handlers and recurring jobs, and the worker built from the configuration.
//! Every handler is idempotent: a job can run more than once (after a crash or a lost lease).

use std::sync::Arc;
use std::time::Duration;

use shop::Store;
use shop::accounts::{AccountService, LinkJob, SendLoginChallengeJob, SendPasswordResetJob, SendVerificationJob};
use shop::jobs::{Job, JobService, RecurringJob, Schedule};
use shop::mail::{Mail, MailError};
use shop::orders::{OrderConfirmationJob, OrderService, RefundPaymentJob, SettlePaymentJob};
use shop::ports::Mailer;
use worker::{HandlerError, Handlers, JobHandler, PayloadHandler, QueueSettings, Worker, WorkerSettings};

use crate::config::Config;

use shop::accounts::{PURGE_ACCOUNT_TOKENS, PURGE_GUESTS, PURGE_SESSIONS};
use shop::mail::PURGE_MAIL_OUTBOX;
use shop::orders::{PURGE_CARTS, PURGE_IDEMPOTENCY};
use shop::webhooks::PURGE_WEBHOOK_DELIVERIES;

/// Every recurring job, by name (the keys of `jobs.schedules`); their kinds are defined in
/// `shop`, beside the services whose purges they run.
pub const RECURRING: [&str; 7] = [
    PURGE_SESSIONS,
    PURGE_GUESTS,
    PURGE_ACCOUNT_TOKENS,
    PURGE_MAIL_OUTBOX,
    PURGE_CARTS,
    PURGE_IDEMPOTENCY,
    PURGE_WEBHOOK_DELIVERIES,
];

/// What the worker needs for merchant webhooks.
pub struct WebhookParts {
    pub service: shop::webhooks::WebhookService,
    pub sender: Arc<dyn shop::webhooks::WebhookSender>,
}

/// `payments.settle`: asks the provider about an order still `pendingPayment` (an unknown
/// outcome, or the pending-payment timeout): paid, or cancelled with its stock released.
/// Idempotent: a settled order is left alone.
pub struct SettlePayment {
    orders: OrderService,
}

#[async_trait::async_trait]
impl PayloadHandler for SettlePayment {
    type Payload = SettlePaymentJob;

    async fn run(&self, _job: &Job, payload: SettlePaymentJob) -> Result<(), HandlerError> {
        match self.orders.settle_payment(payload.order_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(HandlerError::Transient("the provider has no charge yet; asking again later".into())),
            Err(error) => Err(HandlerError::Transient(error.to_string())),
        }
    }
}

/// `payments.refund`: refunds an order's charge (the provider refunds once per order) and
/// marks it refunded. Idempotent.
pub struct RefundPayment {
    orders: OrderService,
}

#[async_trait::async_trait]
impl PayloadHandler for RefundPayment {
    type Payload = RefundPaymentJob;

    async fn run(&self, _job: &Job, payload: RefundPaymentJob) -> Result<(), HandlerError> {
        self.orders.refund_payment(payload.order_id).await.map_err(|error| HandlerError::Transient(error.to_string()))
    }
}

/// `orders.send_confirmation`: mails the buyer of a paid order, under the job's id.
pub struct SendOrderConfirmation {
    orders: OrderService,
    mailer: Arc<dyn Mailer>,
}

#[async_trait::async_trait]
impl PayloadHandler for SendOrderConfirmation {
    type Payload = OrderConfirmationJob;

    async fn run(&self, job: &Job, payload: OrderConfirmationJob) -> Result<(), HandlerError> {
        let mail = self
            .orders
            .confirmation_mail(payload.order_id)
            .await
            .map_err(|error| HandlerError::Transient(error.to_string()))?;
        match mail {
            Some(mail) => self.mailer.send(&mail, job.id).await.map_err(handler_error),
            None => Ok(()),
        }
    }
}

/// `carts.purge_abandoned` and `orders.purge_idempotency_keys`: batches of 1,000 under a
/// governor. Idempotent.
pub struct PurgeOrderData {
    orders: OrderService,
    governor: resilience::ActionGovernor,
    carts: bool,
}

#[async_trait::async_trait]
impl JobHandler for PurgeOrderData {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let run = governed_purge(&self.governor, SESSION_PURGE_BATCH, |limit| async move {
            if self.carts {
                self.orders.purge_abandoned_carts(limit).await
            } else {
                self.orders.purge_request_records(limit).await
            }
        });
        let outcome = run.await.map_err(|error| HandlerError::Transient(error.to_string()))?;
        let what = if self.carts { "carts" } else { "idempotency_keys" };
        metrics::counter!("orders_purged_total", "what" => what).increment(outcome.purged);
        Ok(())
    }
}

/// `accounts.purge_guests`: deletes idle guests whose sessions are gone, at the pace its
/// governor allows. Idempotent.
pub struct PurgeGuests {
    accounts: AccountService,
    governor: resilience::ActionGovernor,
}

#[async_trait::async_trait]
impl JobHandler for PurgeGuests {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let run = governed_purge(&self.governor, SESSION_PURGE_BATCH, |limit| self.accounts.purge_idle_guests(limit));
        let outcome = run.await.map_err(|error| HandlerError::Transient(error.to_string()))?;
        metrics::counter!("accounts_guests_purged_total").increment(outcome.purged);
        tracing::debug!(purged = outcome.purged, heldBack = outcome.held_back, "idle guests deleted");
        Ok(())
    }
}

/// `mail.send`: hands the rendered message to the mailer, with the job id as its message id.
/// Idempotent as far as mail can be: the outbox stores a job's message once; over SMTP a
/// message sent twice (crash between send and acknowledgement) carries the same Message-ID.
pub struct SendMail {
    mailer: Arc<dyn Mailer>,
}

#[async_trait::async_trait]
impl PayloadHandler for SendMail {
    type Payload = Mail;

    async fn run(&self, job: &Job, mail: Mail) -> Result<(), HandlerError> {
        self.mailer.send(&mail, job.id).await.map_err(handler_error)
    }
}

/// `accounts.send_verification` / `accounts.send_password_reset` / `accounts.send_login_challenge`:
/// makes a fresh link token (replacing the user's earlier one, so a retried job leaves one
/// working link) and mails it under the token's id.
pub struct SendLink<P> {
    accounts: AccountService,
    mailer: Arc<dyn Mailer>,
    link: std::marker::PhantomData<fn() -> P>,
}

impl<P> SendLink<P> {
    fn new(accounts: &AccountService, mailer: &Arc<dyn Mailer>) -> Self {
        Self { accounts: accounts.clone(), mailer: Arc::clone(mailer), link: std::marker::PhantomData }
    }
}

#[async_trait::async_trait]
impl<P: LinkJob> PayloadHandler for SendLink<P> {
    type Payload = P;

    async fn run(&self, _job: &Job, payload: P) -> Result<(), HandlerError> {
        let user_id = payload.user_id();
        let context = payload.context().map_err(HandlerError::Permanent)?;
        let prepared = self
            .accounts
            .prepare_link_mail(P::PURPOSE, user_id, &context)
            .await
            .map_err(|error| HandlerError::Transient(error.to_string()))?;
        let Some((mail, token_id)) = prepared else {
            tracing::info!(%user_id, purpose = P::PURPOSE.as_str(), "nothing to mail any more");
            return Ok(());
        };
        // Sent under the token's id: a retry (new token) is a new message, not a duplicate of
        // one whose link no longer works.
        self.mailer.send(&mail, token_id).await.map_err(handler_error)
    }
}

/// `accounts.purge_tokens`: deletes link tokens a day after they expired or were used.
pub struct PurgeAccountTokens {
    accounts: AccountService,
}

#[async_trait::async_trait]
impl JobHandler for PurgeAccountTokens {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        loop {
            let purged = self
                .accounts
                .purge_account_tokens(1_000)
                .await
                .map_err(|error| HandlerError::Transient(error.to_string()))?;
            if purged < 1_000 {
                return Ok(());
            }
        }
    }
}

/// A mail that could not be sent is a failed attempt of the same kind.
fn handler_error(error: MailError) -> HandlerError {
    match error {
        MailError::Transient(detail) => HandlerError::Transient(detail),
        MailError::Permanent(detail) => HandlerError::Permanent(detail),
    }
}

/// A governor allowing `max_actions` per hour to the automation `name`.
pub(crate) fn hourly_governor(name: &str, max_actions: u32) -> resilience::ActionGovernor {
    resilience::ActionGovernor::new(
        resilience::ActionGovernorConfig { name: name.into(), max_actions, period: Duration::from_secs(3_600) },
        Arc::new(resilience::MonotonicClock),
    )
}

/// `mail.purge_outbox`: deletes outbox mail past its retention, in batches. Idempotent.
pub struct PurgeMailOutbox {
    store: Arc<dyn Store>,
    retention: Duration,
}

#[async_trait::async_trait]
impl JobHandler for PurgeMailOutbox {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let before = time::OffsetDateTime::now_utc() - self.retention;
        loop {
            let purged = self
                .store
                .purge_outbox_mail(before, 1_000)
                .await
                .map_err(|error| HandlerError::Transient(error.to_string()))?;
            metrics::counter!("mail_outbox_purged_total").increment(purged);
            if purged < 1_000 {
                return Ok(());
            }
        }
    }
}

/// `audit.purge`: deletes audit entries past `flags.audit_retention_days`, in batches, at the
/// pace of its governor (100,000 an hour per process), counted in `audit_entries_purged_total`.
/// Idempotent.
pub struct PurgeAudit {
    audit: shop::audit::AuditLog,
    retention: Duration,
    governor: resilience::ActionGovernor,
}

#[async_trait::async_trait]
impl JobHandler for PurgeAudit {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let before = time::OffsetDateTime::now_utc() - self.retention;
        let run = governed_purge(&self.governor, 1_000, |limit| self.audit.purge(before, limit));
        let outcome = run.await.map_err(|error| HandlerError::Transient(error.to_string()))?;
        tracing::debug!(purged = outcome.purged, heldBack = outcome.held_back, "old audit entries deleted");
        Ok(())
    }
}

/// The worker as configured, with every handler and recurring job of the shop.
pub fn build_worker(
    config: &Config,
    store: Arc<dyn Store>,
    jobs: JobService,
    accounts: AccountService,
    orders: OrderService,
    mailer: Arc<dyn Mailer>,
    webhooks: WebhookParts,
) -> Worker {
    let mut handlers = Handlers::new();
    handlers.register_payload(crate::webhooks::DispatchWebhooks {
        store: Arc::clone(&store),
        webhooks: webhooks.service.clone(),
    });
    handlers.register_payload(crate::webhooks::DeliverWebhook {
        webhooks: webhooks.service.clone(),
        sender: Arc::clone(&webhooks.sender),
        governor: hourly_governor("webhook_auto_disable", config.webhooks.auto_disable_max_per_hour),
    });
    handlers.register(
        PURGE_WEBHOOK_DELIVERIES,
        crate::webhooks::PurgeWebhookDeliveries {
            webhooks: webhooks.service,
            sender: webhooks.sender,
            governor: hourly_governor(PURGE_WEBHOOK_DELIVERIES, 100_000),
        },
    );
    handlers.register_payload(SettlePayment { orders: orders.clone() });
    handlers.register_payload(RefundPayment { orders: orders.clone() });
    handlers.register_payload(SendOrderConfirmation { orders: orders.clone(), mailer: Arc::clone(&mailer) });
    for (kind, carts) in [(PURGE_CARTS, true), (PURGE_IDEMPOTENCY, false)] {
        let governor = hourly_governor(kind, 100_000);
        handlers.register(kind, PurgeOrderData { orders: orders.clone(), governor, carts });
    }
    handlers.register_payload(SendMail { mailer: Arc::clone(&mailer) });
    handlers.register_payload(SendLink::<SendVerificationJob>::new(&accounts, &mailer));
    handlers.register_payload(SendLink::<SendPasswordResetJob>::new(&accounts, &mailer));
    handlers.register_payload(SendLink::<SendLoginChallengeJob>::new(&accounts, &mailer));
    handlers.register(PURGE_ACCOUNT_TOKENS, PurgeAccountTokens { accounts: accounts.clone() });
    let governor = hourly_governor("guest_purge", config.accounts.guest_purge_max_per_hour);
    handlers.register(PURGE_GUESTS, PurgeGuests { accounts: accounts.clone(), governor });
    handlers.register(
        PURGE_MAIL_OUTBOX,
        PurgeMailOutbox {
            store: Arc::clone(&store),
            retention: Duration::from_secs(config.mail.outbox_retention_days * 86_400),
        },
    );
    handlers.register(
        shop::audit::PURGE_AUDIT,
        PurgeAudit {
            audit: shop::audit::AuditLog::new(Arc::clone(&store) as _),
            retention: Duration::from_secs(u64::from(config.flags.audit_retention_days) * 86_400),
            governor: hourly_governor(shop::audit::PURGE_AUDIT, 100_000),
        },
    );
    let governor = hourly_governor("session_purge", config.accounts.session_purge_max_per_hour);
    handlers.register(PURGE_SESSIONS, PurgeSessions { accounts, governor });
    let settings = worker_settings(config);
    Worker::new(store, jobs, handlers, settings)
        .schedule(RecurringJob {
            name: PURGE_SESSIONS.into(),
            kind: PURGE_SESSIONS.into(),
            queue: "default".into(),
            schedule: schedule(
                config,
                PURGE_SESSIONS,
                Duration::from_secs(config.accounts.session_purge_interval_secs),
            ),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: PURGE_GUESTS.into(),
            kind: PURGE_GUESTS.into(),
            queue: "default".into(),
            schedule: schedule(config, PURGE_GUESTS, Duration::from_secs(3_600)),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: PURGE_ACCOUNT_TOKENS.into(),
            kind: PURGE_ACCOUNT_TOKENS.into(),
            queue: "default".into(),
            schedule: schedule(config, PURGE_ACCOUNT_TOKENS, Duration::from_secs(86_400)),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: PURGE_MAIL_OUTBOX.into(),
            kind: PURGE_MAIL_OUTBOX.into(),
            queue: "default".into(),
            schedule: schedule(config, PURGE_MAIL_OUTBOX, Duration::from_secs(86_400)),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: shop::audit::PURGE_AUDIT.into(),
            kind: shop::audit::PURGE_AUDIT.into(),
            queue: "default".into(),
            schedule: schedule(config, shop::audit::PURGE_AUDIT, Duration::from_secs(86_400)),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: PURGE_CARTS.into(),
            kind: PURGE_CARTS.into(),
            queue: "default".into(),
            schedule: schedule(config, PURGE_CARTS, Duration::from_secs(86_400)),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: PURGE_WEBHOOK_DELIVERIES.into(),
            kind: PURGE_WEBHOOK_DELIVERIES.into(),
            queue: "default".into(),
            schedule: schedule(config, PURGE_WEBHOOK_DELIVERIES, Duration::from_secs(86_400)),
            payload: serde_json::json!({}),
        })
        .schedule(RecurringJob {
            name: PURGE_IDEMPOTENCY.into(),
            kind: PURGE_IDEMPOTENCY.into(),
            queue: "default".into(),
            schedule: schedule(config, PURGE_IDEMPOTENCY, Duration::from_secs(3_600)),
            payload: serde_json::json!({}),
        })
}

/// The mailer as configured: SMTP (its breaker registered as `smtp`) when `mail.smtp_url` is
/// set, else the outbox table. Must be called inside the Tokio runtime (lettre's pool).
pub fn build_mailer(
    config: &Config,
    store: Arc<dyn Store>,
    breakers: &resilience::BreakerRegistry,
    breaker_clock: Arc<dyn resilience::Clock>,
) -> anyhow::Result<Arc<dyn Mailer>> {
    let Some(url) = &config.mail.smtp_url else {
        tracing::warn!(
            "no SMTP_URL: mail is kept in the outbox table, NOT delivered (shopkeep admin mail list); \
             its links are live tokens, so treat the database as holding them"
        );
        return Ok(Arc::new(::mailer::OutboxMailer::new(store, Arc::new(shop::SystemClock))));
    };
    let mut settings = ::mailer::SmtpConfig::new(url.expose(), config.mail.from.clone());
    settings.send_timeout = Duration::from_secs(config.mail.timeout_secs);
    settings.command_timeout = settings.command_timeout.min(settings.send_timeout);
    let smtp = ::mailer::SmtpMailer::new(settings, breaker_clock)
        .map_err(|error| anyhow::anyhow!("mail.smtp_url: {error}"))?;
    breakers.register(Arc::clone(smtp.breaker()))?;
    Ok(Arc::new(smtp))
}

/// Wakes the worker's queues whenever jobs are enqueued, until `stop`: from the database's
/// notifications (PostgreSQL LISTEN/NOTIFY, on `database.direct_url` behind PgBouncer) or the store's in-process
/// announcements (SQLite). Without either the worker polls, which stays the fallback anyway.
pub fn wake_on_new_jobs(
    config: &Config,
    store: &dyn Store,
    wakers: worker::Wakers,
    stop: tokio_util::sync::CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let listen = (config.backend() == Ok(crate::config::Backend::Postgres))
        .then(|| config.database.session_url().map(str::to_owned))
        .flatten();
    let announcements = store.job_wakeups();
    async move {
        let notified = async {
            if let Some(url) = listen {
                let wakers = wakers.clone();
                let on_job = move |queue: Option<&str>| match queue {
                    Some(queue) => wakers.wake(queue),
                    None => wakers.wake_all(),
                };
                store_sqlx::listen_for_jobs(url, on_job, stop.clone()).await;
            }
        };
        let announced = async {
            let Some(mut announcements) = announcements else { return };
            loop {
                match announcements.recv().await {
                    Ok(queue) => wakers.wake(&queue),
                    // Some announcements were missed: wake every queue once.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wakers.wake_all(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        tokio::select! {
            _ = async { tokio::join!(notified, announced) } => {}
            () = stop.cancelled() => {}
        }
    }
}

/// The retention of finished jobs.
pub fn job_settings(config: &Config) -> shop::jobs::JobSettings {
    shop::jobs::JobSettings {
        succeeded_retention: Duration::from_secs(config.jobs.succeeded_retention_hours * 3_600),
        dead_retention: Duration::from_secs(config.jobs.dead_retention_days * 86_400),
    }
}

fn worker_settings(config: &Config) -> WorkerSettings {
    let jobs = &config.jobs;
    let worker_id = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "shopkeep".into()),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    WorkerSettings {
        queues: jobs
            .queues
            .iter()
            .map(|(name, concurrency)| QueueSettings { name: name.clone(), concurrency: *concurrency })
            .collect(),
        batch_size: jobs.batch_size,
        poll_interval: Duration::from_millis(jobs.poll_interval_ms),
        lease: Duration::from_secs(jobs.lease_secs),
        job_timeout: Duration::from_secs(jobs.job_timeout_secs),
        retry_base: Duration::from_secs(jobs.retry_base_secs),
        retry_max: Duration::from_secs(jobs.retry_max_secs),
        shutdown_timeout: Duration::from_secs(jobs.shutdown_timeout_secs),
        ..WorkerSettings::new(worker_id)
    }
}

/// Sessions deleted per statement, so a large purge never holds a long write lock.
pub(crate) const SESSION_PURGE_BATCH: u32 = 1_000;

/// `sessions.purge`: deletes expired sessions (steady state) at the pace its governor allows.
/// Idempotent: deleting what is already gone deletes nothing.
pub struct PurgeSessions {
    accounts: AccountService,
    governor: resilience::ActionGovernor,
}

#[async_trait::async_trait]
impl JobHandler for PurgeSessions {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let run =
            governed_purge(&self.governor, SESSION_PURGE_BATCH, |limit| self.accounts.purge_expired_sessions(limit));
        let outcome = run.await.map_err(|error| HandlerError::Transient(error.to_string()))?;
        metrics::counter!("sessions_purged_total").increment(outcome.purged);
        tracing::debug!(purged = outcome.purged, heldBack = outcome.held_back, "expired sessions purged");
        Ok(())
    }
}

/// What one governed purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PurgeOutcome {
    pub(crate) purged: u64,
    /// The governor stopped the purge while rows may remain (it logged a warning).
    held_back: bool,
}

/// Deletes in batches of at most `batch` rows while `governor` allows, until a batch comes back
/// short (nothing left). Unused grants are given back, so only rows really deleted count.
pub(crate) async fn governed_purge<F, Fut>(
    governor: &resilience::ActionGovernor,
    batch: u32,
    mut delete: F,
) -> Result<PurgeOutcome, shop::Error>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, shop::Error>>,
{
    let mut purged = 0;
    loop {
        // Ask only for what is left, so that the governor refuses (and warns) only when the
        // allowance is spent, not whenever a batch is larger than the rest of it.
        let allowance = governor.allowance();
        let grant = governor.request(if allowance == 0 { batch } else { batch.min(allowance) });
        if grant.granted == 0 {
            return Ok(PurgeOutcome { purged, held_back: true });
        }
        let deleted = match delete(grant.granted).await {
            Ok(deleted) => deleted,
            Err(error) => {
                governor.release(grant.granted);
                return Err(error);
            }
        };
        purged += deleted;
        let unused = u64::from(grant.granted).saturating_sub(deleted);
        governor.release(u32::try_from(unused).unwrap_or(grant.granted));
        if unused > 0 {
            return Ok(PurgeOutcome { purged, held_back: false });
        }
    }
}

/// A recurring job's schedule: the cron expression of `jobs.schedules`, if one is configured
/// (validated with the configuration), else the built-in interval.
fn schedule(config: &Config, name: &str, every: Duration) -> Schedule {
    match config.jobs.schedules.get(name).map(|expression| shop::jobs::CronSchedule::parse(expression)) {
        Some(Ok(cron)) => Schedule::Cron(Box::new(cron)),
        Some(Err(problem)) => {
            tracing::error!(schedule = name, problem, "invalid cron schedule; using the built-in interval");
            Schedule::Every(every)
        }
        None => Schedule::Every(every),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A table of `rows` expired rows; each call deletes up to the limit and records it.
    struct Rows {
        left: Mutex<u64>,
        calls: Mutex<Vec<u32>>,
    }

    impl Rows {
        fn new(rows: u64) -> Self {
            Self { left: Mutex::new(rows), calls: Mutex::default() }
        }

        async fn delete(&self, limit: u32) -> Result<u64, shop::Error> {
            self.calls.lock().unwrap().push(limit);
            let mut left = self.left.lock().unwrap();
            let deleted = (*left).min(u64::from(limit));
            *left -= deleted;
            Ok(deleted)
        }
    }

    fn governor(max_actions: u32, clock: &Arc<resilience::ManualClock>) -> resilience::ActionGovernor {
        let config = resilience::ActionGovernorConfig {
            name: "session_purge".into(),
            max_actions,
            period: Duration::from_secs(3_600),
        };
        resilience::ActionGovernor::new(config, Arc::clone(clock) as Arc<dyn resilience::Clock>)
    }

    #[tokio::test]
    async fn a_purge_goes_in_batches_until_a_short_one() {
        let clock = Arc::new(resilience::ManualClock::default());
        let governor = governor(10_000, &clock);
        let rows = Rows::new(2_500);
        let outcome = governed_purge(&governor, 1_000, |limit| rows.delete(limit)).await.unwrap();
        assert_eq!(outcome, PurgeOutcome { purged: 2_500, held_back: false });
        assert_eq!(*rows.calls.lock().unwrap(), [1_000, 1_000, 1_000]);
        assert_eq!(governor.allowance(), 7_500, "only rows really deleted count");
    }

    #[tokio::test]
    async fn the_governor_holds_a_runaway_purge_back_until_the_period_passes() {
        let clock = Arc::new(resilience::ManualClock::default());
        let governor = governor(2_500, &clock);
        // A clock bug makes every one of 10,000 sessions look expired.
        let rows = Rows::new(10_000);
        let first = governed_purge(&governor, 1_000, |limit| rows.delete(limit)).await.unwrap();
        assert_eq!(first, PurgeOutcome { purged: 2_500, held_back: true });
        assert_eq!(*rows.calls.lock().unwrap(), [1_000, 1_000, 500], "the last batch is cut to the allowance");
        let again = governed_purge(&governor, 1_000, |limit| rows.delete(limit)).await.unwrap();
        assert_eq!(again, PurgeOutcome { purged: 0, held_back: true }, "nothing more within the hour");
        clock.advance(Duration::from_secs(3_600));
        let later = governed_purge(&governor, 1_000, |limit| rows.delete(limit)).await.unwrap();
        assert_eq!(later.purged, 2_500);
        assert_eq!(*rows.left.lock().unwrap(), 5_000);
    }

    #[tokio::test]
    async fn a_failed_batch_gives_its_grant_back() {
        let clock = Arc::new(resilience::ManualClock::default());
        let governor = governor(100, &clock);
        let failing = |_limit: u32| async { Err::<u64, _>(shop::Error::Internal("database gone".into())) };
        assert!(governed_purge(&governor, 10, failing).await.is_err());
        assert_eq!(governor.allowance(), 100);
    }
}

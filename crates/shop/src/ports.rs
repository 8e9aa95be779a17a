//! The storage ports: what the services need from a database, implemented by each `store-*` crate.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::{
    ApiToken, AuthorizationRequest, Email, ExternalIdentity, ExternalLoginError, ExternalProfile, NewAccountToken,
    NewApiTokenRecord, NewSession, NewUser, PendingExternalLogin, PersonName, Session, User, UserChanges, UserQuery,
    UserWithPassword,
};
use crate::catalog::{
    Category, CategoryChanges, CategorySort, IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery,
};
use crate::error::StoreError;
use crate::jobs::{Claim, Job, JobFailure, JobQuery, JobState, NewJob, QueueDepth};
use crate::mail::{Mail, MailError, OutboxMail};
use crate::orders::{
    CartLine, CheckoutResult, IdempotencyBegin, IdempotencyRecord, NewOrder, Order, OrderQuery, OrderTransition,
    PaymentEventRecord, ReservationFailure,
};
use crate::pagination::{Page, PageRequest, SortOrder};
use crate::secrets::SecretHash;
use crate::webhooks::{DeliveryAttempt, DeliveryQuery, WebhookDelivery, WebhookEndpoint, WebhookEndpointChanges};

/// Users. Email addresses are unique (constraint `users_email_key`).
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Inserts the user and enqueues `jobs` in the same transaction (the outbox): both or neither.
    async fn insert_user(&self, user: &NewUser, jobs: &[NewJob]) -> Result<User, StoreError>;
    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<UserWithPassword>, StoreError>;
    async fn find_user_with_password(&self, id: Uuid) -> Result<Option<UserWithPassword>, StoreError>;
    /// `NotFound` when there is no such user.
    async fn update_user(&self, id: Uuid, changes: &UserChanges, now: OffsetDateTime) -> Result<User, StoreError>;
    async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, StoreError>;
    /// Turns a guest into a full account in place (same id, so its cart and orders stay): sets
    /// email, name, password hash, `guest = false`, and enqueues `jobs` in the same transaction.
    /// `NotFound` when the id is not a guest; `Conflict { users_email_key }` when the address is taken.
    async fn upgrade_guest(
        &self,
        id: Uuid,
        email: &Email,
        name: &PersonName,
        password_hash: &str,
        now: OffsetDateTime,
        jobs: &[NewJob],
    ) -> Result<User, StoreError>;
    /// Deletes at most `limit` guests created before `created_before` that have no session used
    /// since then (idle guests); their sessions and data go with them (cascades).
    async fn delete_idle_guests(&self, created_before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}

/// Browser sessions, looked up by the hash of their secret.
#[async_trait]
pub trait SessionRepository: Send + Sync {
    async fn insert_session(&self, session: &NewSession) -> Result<(), StoreError>;
    async fn find_session(&self, token_hash: &SecretHash) -> Result<Option<(Session, User)>, StoreError>;
    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError>;
    async fn delete_session(&self, id: Uuid) -> Result<(), StoreError>;
    /// Deletes every session of a user except `keep`; returns how many were deleted.
    async fn delete_user_sessions(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<u64, StoreError>;
    /// Deletes at most `limit` sessions that expired (`expires_at <= now`) or went idle
    /// (`last_seen_at <= idle_cutoff`); returns how many went.
    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// Personal API tokens, looked up by the hash of their secret.
#[async_trait]
pub trait ApiTokenRepository: Send + Sync {
    async fn insert_api_token(&self, token: &NewApiTokenRecord) -> Result<ApiToken, StoreError>;
    async fn find_api_token(&self, token_hash: &SecretHash) -> Result<Option<(ApiToken, User)>, StoreError>;
    async fn touch_api_token(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError>;
    /// A user's tokens, newest first.
    async fn list_api_tokens(&self, user_id: Uuid) -> Result<Vec<ApiToken>, StoreError>;
    /// `NotFound` unless the token exists and belongs to `user_id`.
    async fn delete_api_token(&self, user_id: Uuid, id: Uuid) -> Result<(), StoreError>;
}

/// Categories. Slugs are unique (`categories_slug_key`); deleting one that products use is a `Conflict`.
#[async_trait]
pub trait CategoryRepository: Send + Sync {
    async fn insert_category(&self, category: &NewCategory) -> Result<Category, StoreError>;
    async fn find_category(&self, key: &IdOrSlug) -> Result<Option<Category>, StoreError>;
    async fn list_categories(
        &self,
        page: PageRequest,
        sort_by: CategorySort,
        sort_order: SortOrder,
    ) -> Result<Page<Category>, StoreError>;
    /// `NotFound` when there is no such category.
    async fn update_category(
        &self,
        id: Uuid,
        changes: &CategoryChanges,
        now: OffsetDateTime,
    ) -> Result<Category, StoreError>;
    /// `NotFound` when there is no such category.
    async fn delete_category(&self, id: Uuid) -> Result<(), StoreError>;
}

/// Products. Slugs are unique (`products_slug_key`); an unknown category is a `Conflict` on
/// `products_category_id_fkey`.
#[async_trait]
pub trait ProductRepository: Send + Sync {
    async fn insert_product(&self, product: &NewProduct) -> Result<Product, StoreError>;
    async fn find_product(&self, key: &IdOrSlug) -> Result<Option<Product>, StoreError>;
    /// One page of products matching `query`, in its order.
    async fn list_product_items(&self, query: &ProductQuery) -> Result<Vec<Product>, StoreError>;
    /// How many products match `query`'s filters (its page and order do not matter).
    async fn count_products(&self, query: &ProductQuery) -> Result<u64, StoreError>;
    /// A page with its total: counted only when the page does not tell it (see
    /// [`crate::pagination::total_from_page`]).
    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, StoreError> {
        let items = self.list_product_items(query).await?;
        let total = match crate::pagination::total_from_page(query.page, items.len()) {
            Some(total) => total,
            None => self.count_products(query).await?,
        };
        Ok(Page { items, total, request: query.page })
    }
    /// Applies the changes and bumps `version`. Returns `None` when no product has this id
    /// (and, with `expected_version`, this version).
    async fn update_product(
        &self,
        id: Uuid,
        changes: &ProductChanges,
        expected_version: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError>;
    /// `NotFound` when there is no such product.
    async fn delete_product(&self, id: Uuid) -> Result<(), StoreError>;
}

/// The search index over the catalog: kept by the storage adapter in the same transaction as
/// catalog writes, or by an external engine. Every method answers from committed data.
#[async_trait]
pub trait SearchIndex: Send + Sync {
    /// One page of the products matching at least one term, within the filters, in the
    /// query's order, and how many match in all.
    async fn search(&self, query: &crate::search::IndexQuery) -> Result<Page<crate::search::IndexHit>, StoreError>;
    /// Facet counts over every product matching `terms` (no terms: every product) within
    /// `filters` (their page and sort are ignored).
    async fn facets(
        &self,
        terms: &[crate::search::QueryTerm],
        filters: &ProductQuery,
        wanted: crate::search::FacetRequest,
    ) -> Result<crate::search::Facets, StoreError>;
    /// Categories whose name holds an alternative of any term, by name, at most `limit`.
    async fn matching_categories(
        &self,
        terms: &[crate::search::QueryTerm],
        limit: u32,
    ) -> Result<Vec<Category>, StoreError>;
    /// Grows whenever a word enters or leaves the vocabulary.
    async fn vocabulary_version(&self) -> Result<u64, StoreError>;
    /// Every folded word of the catalog with the number of documents holding it, and the
    /// vocabulary version they are of.
    async fn vocabulary(&self) -> Result<(u64, Vec<(String, u64)>), StoreError>;
}

/// The generations of cached reads: the process's own, bumped by the adapter after each write
/// it commits, and the database's, bumped in the transaction of every write by anyone (another
/// instance, an operator's SQL), which a poll compares to see what others changed.
#[async_trait]
pub trait CacheVersions: Send + Sync {
    fn generations(&self) -> Arc<crate::cache::Generations>;
    /// A number that changes whenever a write to `family` commits, on any instance.
    async fn stored_generation(&self, family: crate::cache::Family) -> Result<u64, StoreError>;
}

/// Connection pool figures for metrics and the admin health view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (idle or in use).
    pub size: u32,
    pub idle: u32,
    /// Tasks currently waiting for a connection.
    pub waiting: u32,
    pub max_size: u32,
}

/// Health and lifecycle of the storage backend.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// A trivial round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    fn pool_stats(&self) -> PoolStats;
    /// The backend's name for logs and status pages (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Waits for connections in use to return, then closes them all.
    async fn close(&self);
    /// The read replicas and their freshness as last checked (none by default).
    fn replicas(&self) -> Vec<ReplicaHealth> {
        Vec::new()
    }
}

/// One read replica as its last check found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaHealth {
    /// `host:port/database` (never credentials).
    pub name: String,
    /// Proven to hold the primary's writes within the configured lag.
    pub fresh: bool,
    /// Reads go to it now (fresh, and no catalog change known since the proof).
    pub serving: bool,
    /// Seconds since it was last proven fresh; `None` if never.
    pub lag_seconds: Option<f64>,
}

/// The durable job queue. Only the lease owner may finish a running job: a worker whose lease
/// expired (and whose job was recovered and claimed by another) learns it from a `false`.
#[async_trait]
pub trait JobRepository: Send + Sync {
    /// Enqueues one job on its own; `false` when a live job (queued, running, failed) has the
    /// same unique key, in which case nothing is added.
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError>;
    /// Takes up to `claim.limit` due jobs (`queued` or `failed` with `run_at <= now`) of the
    /// queue, highest priority then earliest `run_at` first: each becomes `running`, leased to
    /// the worker until `lease_until`, with one more attempt counted. Concurrent claims never
    /// return the same job.
    async fn claim_jobs(&self, claim: &Claim) -> Result<Vec<Job>, StoreError>;
    /// Extends the leases the worker still holds; returns the ids it still holds.
    async fn extend_leases(
        &self,
        worker: &str,
        ids: &[Uuid],
        lease_until: OffsetDateTime,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// `running` → `succeeded`; `false` when the worker no longer holds the lease.
    async fn complete_job(&self, id: Uuid, worker: &str, now: OffsetDateTime) -> Result<bool, StoreError>;
    /// `running` → `failed` (with `retry_at`) or `dead`; `false` when the lease is no longer held.
    async fn fail_job(
        &self,
        id: Uuid,
        worker: &str,
        failure: &JobFailure,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Gives leased jobs back (a worker shutting down): `running` → `queued`, due now; the
    /// attempt already counted stays counted.
    async fn release_jobs(&self, worker: &str, ids: &[Uuid], now: OffsetDateTime) -> Result<u64, StoreError>;
    /// Jobs whose lease expired (their worker died): `failed` and due now, or `dead` when that
    /// was their last attempt. Returns how many were recovered.
    async fn recover_expired_leases(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
    async fn find_job(&self, id: Uuid) -> Result<Option<Job>, StoreError>;
    async fn list_jobs(&self, query: &JobQuery) -> Result<Page<Job>, StoreError>;
    /// An operator's retry of a `dead` or `failed` job: `queued`, due now, attempts reset.
    /// `NotFound`, or `Conflict { constraint: "jobs_state" }` in any other state.
    async fn retry_job(&self, id: Uuid, now: OffsetDateTime) -> Result<Job, StoreError>;
    /// Deletes at most `limit` jobs in `state` (succeeded or dead) finished before `before`.
    async fn purge_jobs(&self, state: JobState, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// Depth by queue and state, with the oldest due job of each queue.
    async fn queue_depths(&self, now: OffsetDateTime) -> Result<Vec<QueueDepth>, StoreError>;
    /// Moves a recurring job's next occurrence from `expected` (`None`: never scheduled) to
    /// `next` and enqueues `job`, in one transaction, only if nobody moved it first. `true`
    /// when this caller won the occurrence.
    async fn advance_schedule(
        &self,
        name: &str,
        expected: Option<OffsetDateTime>,
        next: OffsetDateTime,
        job: Option<&NewJob>,
    ) -> Result<bool, StoreError>;
    /// The next occurrence of a recurring job, if it was ever scheduled.
    async fn scheduled_at(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    /// In-process announcements of committed job inserts (the queue's name), for a store whose
    /// database cannot notify (SQLite); `None` where the database does (PostgreSQL's NOTIFY).
    fn job_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}

/// One-time tokens sent by mail (email verification, password reset); stored only hashed.
/// A token is usable when its purpose matches, it was never used and `now < expires_at`; using
/// it is atomic, so of two concurrent uses exactly one succeeds.
#[async_trait]
pub trait AccountTokenRepository: Send + Sync {
    /// Stores a token, deleting the user's earlier tokens of the same purpose (for a login
    /// challenge: of the same device) in the same transaction: only the newest link works.
    async fn replace_account_token(&self, token: &NewAccountToken) -> Result<(), StoreError>;
    /// In one transaction: uses a usable password-reset token, sets the user's password hash,
    /// and deletes every session and API token of the user (whoever knew the old password may
    /// hold either). The user id, or `None` when the token is not usable.
    async fn reset_password_with_token(
        &self,
        token_hash: &SecretHash,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError>;
    /// In one transaction: uses a usable email-verification token and sets the user's
    /// `email_verified_at` to `now` (kept if already set). The user id, or `None`.
    async fn verify_email_with_token(
        &self,
        token_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError>;
    /// In one transaction: uses a usable login-challenge token and records its `device_hash`
    /// as a known device of the user (as [`AccountTokenRepository::remember_device`] does). The
    /// user id, or `None`.
    async fn confirm_login_challenge(
        &self,
        token_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError>;
    /// Deletes at most `limit` tokens that expired, or were used, before `before`.
    async fn purge_account_tokens(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// Whether the user has signed in from this device (the hash of its device cookie) before;
    /// when so, its `last_seen_at` becomes `now`.
    async fn touch_known_device(
        &self,
        user_id: Uuid,
        device_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Forgets at most `limit` known devices last seen before `before` (exclusive): an old
    /// device cookie stops being trusted.
    async fn purge_known_devices(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// Records a device as known for the user (insert, or refresh `last_seen_at`).
    async fn remember_device(
        &self,
        user_id: Uuid,
        device_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

/// Sign-ins with external identity providers: pending logins between the redirect to the
/// provider and its callback, and the links from a provider's subject to an account.
#[async_trait]
pub trait ExternalLoginRepository: Send + Sync {
    async fn insert_pending_external_login(&self, login: &PendingExternalLogin) -> Result<(), StoreError>;
    /// Removes and returns the pending login with this handle, if there is one and
    /// `now < expires_at`; an expired one is removed and `None` returned. Of two concurrent
    /// takes, at most one gets it.
    async fn take_pending_external_login(
        &self,
        handle_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<PendingExternalLogin>, StoreError>;
    /// Deletes at most `limit` pending logins that expired before `before`.
    async fn purge_pending_external_logins(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// The account linked to the issuer's subject, if any.
    async fn find_user_by_external_identity(&self, issuer: &str, subject: &str) -> Result<Option<User>, StoreError>;
    /// Links an issuer's subject to an existing account. `Conflict { external_identities_pkey }`
    /// when the subject is already linked; `Conflict { external_identities_user_id_fkey }` when there
    /// is no such user.
    async fn link_external_identity(&self, identity: &ExternalIdentity) -> Result<(), StoreError>;
    /// Creates an account signed in through a provider, linked to its subject, with `jobs`,
    /// in one transaction. `email_verified_at` is set when the provider verified the address.
    /// `Conflict { users_email_key }` or `Conflict { external_identities_pkey }`.
    async fn insert_external_user(
        &self,
        user: &NewUser,
        email_verified_at: Option<OffsetDateTime>,
        identity: &ExternalIdentity,
        jobs: &[NewJob],
    ) -> Result<User, StoreError>;
    /// The identities linked to an account, oldest first.
    async fn list_external_identities(&self, user_id: Uuid) -> Result<Vec<ExternalIdentity>, StoreError>;
    /// Unlinks the issuer's subject from the account `user_id` and enqueues `jobs`, in one
    /// transaction. `NotFound` when the subject is not linked to that account (someone else's or
    /// none). A `Conflict::LastSignInMethod` (and no change) when it
    /// is the account's last way to sign in: no password (a hash that is no PHC string, see
    /// [`crate::accounts::PasswordHasher::is_hash`]) and no other link. Concurrent unlinks of one
    /// account's links are serialised, so of its last two at most one goes.
    async fn unlink_external_identity(
        &self,
        user_id: Uuid,
        issuer: &str,
        subject: &str,
        jobs: &[NewJob],
    ) -> Result<(), StoreError>;
}

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

/// Merchant webhook endpoints and the delivery log.
#[async_trait]
pub trait WebhookRepository: Send + Sync {
    /// Inserts an endpoint unless `max_endpoints` exist already (`Conflict { webhook_endpoints_limit }`);
    /// the count and the insert are one transaction.
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        max_endpoints: u32,
    ) -> Result<WebhookEndpoint, StoreError>;
    async fn find_webhook_endpoint(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// Every endpoint, oldest first (there are at most `max_endpoints`).
    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Applies the changes; enabling clears `disabled_at`/`disabled_reason` and resets
    /// `consecutive_failures`. `NotFound` when there is no such endpoint.
    async fn update_webhook_endpoint(
        &self,
        id: Uuid,
        changes: &WebhookEndpointChanges,
        now: OffsetDateTime,
    ) -> Result<WebhookEndpoint, StoreError>;
    /// Disables an enabled endpoint with a reason and abandons its pending and failed
    /// deliveries, in one transaction. `None` when it does not exist or is already disabled.
    async fn disable_webhook_endpoint(
        &self,
        id: Uuid,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// Deletes an endpoint and its delivery log. `NotFound` when there is no such endpoint.
    async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<(), StoreError>;
    /// Inserts a delivery and enqueues `job` (its `webhooks.deliver`) in one transaction;
    /// `false` (and nothing written) when the endpoint already has a delivery of this event.
    async fn insert_webhook_delivery(&self, delivery: &WebhookDelivery, job: &NewJob) -> Result<bool, StoreError>;
    async fn find_webhook_delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError>;
    /// One endpoint's deliveries, newest first.
    async fn list_webhook_deliveries(&self, query: &DeliveryQuery) -> Result<Page<WebhookDelivery>, StoreError>;
    /// Records an attempt of a live (`pending` or `failed`) delivery: its state, attempts + 1,
    /// status, error and time; the endpoint's `consecutive_failures` reset on success, else
    /// incremented. Not `attempted`: only the state changes, and the error is kept when the
    /// delivery already has one. One transaction; the endpoint as it is afterwards, `None`
    /// (and nothing written) when the delivery is gone or no longer live, or the endpoint gone.
    async fn record_webhook_attempt(&self, attempt: &DeliveryAttempt) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// An admin's retry: a `failed` or `abandoned` delivery of the endpoint becomes `pending`
    /// and `job` is enqueued, in one transaction. `NotFound`; `Conflict { webhook_deliveries_state }`
    /// in any other state; `Conflict { jobs_unique_key }` when its retry is already queued.
    async fn requeue_webhook_delivery(
        &self,
        endpoint_id: Uuid,
        delivery_id: Uuid,
        job: &NewJob,
        now: OffsetDateTime,
    ) -> Result<WebhookDelivery, StoreError>;
    /// Abandons the live (`pending` or `failed`) deliveries last changed before `before`, with
    /// `reason` as their error: their job died without recording (a database error, a lost
    /// lease). Returns how many.
    async fn abandon_stale_webhook_deliveries(
        &self,
        before: OffsetDateTime,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Deletes at most `limit` finished (succeeded or abandoned) deliveries created before `before`.
    async fn purge_webhook_deliveries(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
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

/// Mail kept in the database because no SMTP server is configured (the embedded default):
/// clearly not delivered, listed by `shopkeep admin mail list`.
#[async_trait]
pub trait MailOutboxRepository: Send + Sync {
    /// Stores a message; `false` when one with the same id (the sending job's) is already there.
    async fn insert_outbox_mail(&self, mail: &OutboxMail) -> Result<bool, StoreError>;
    /// Most recent first.
    async fn list_outbox_mail(&self, page: &PageRequest) -> Result<Page<OutboxMail>, StoreError>;
    /// Deletes at most `limit` messages stored before `before` (exclusive; steady state).
    async fn purge_outbox_mail(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}

/// Sends mail: over SMTP, or into the outbox table when no server is configured.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `mail`. `message_id` is the same for every attempt of one job, so a message sent
    /// twice (a crash between sending and acknowledging) is recognisably one message.
    async fn send(&self, mail: &Mail, message_id: Uuid) -> Result<(), MailError>;
    /// `smtp` or `outbox`, for logs and status.
    fn kind(&self) -> &'static str;
}

/// An OpenID Connect provider as the account service needs it; the adapter speaks the protocol
/// (discovery, PKCE, the code exchange, ID token verification against the provider's keys)
/// through a client that never follows redirects, with timeouts and a circuit breaker.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// The configured name, as in `/auth/oidc/{name}/start`.
    fn name(&self) -> &str;
    /// A fresh authorization request (new state, nonce and PKCE verifier).
    async fn authorization_request(&self) -> Result<AuthorizationRequest, ExternalLoginError>;
    /// Exchanges the authorization code (with the PKCE verifier), verifies the ID token
    /// (signature against the provider's keys, issuer, audience, expiry, `nonce`) and returns
    /// who signed in.
    /// `issuer` is the callback's `iss` parameter (RFC 9207), when the provider sent one: it
    /// must then be the provider's issuer.
    async fn complete(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        issuer: Option<&str>,
    ) -> Result<ExternalProfile, ExternalLoginError>;
}

/// Everything a storage adapter provides.
pub trait Store:
    UserRepository
    + SessionRepository
    + ApiTokenRepository
    + CategoryRepository
    + ProductRepository
    + JobRepository
    + MailOutboxRepository
    + AccountTokenRepository
    + ExternalLoginRepository
    + CartRepository
    + OrderRepository
    + IdempotencyRepository
    + WebhookRepository
    + StoreHealth
    + CacheVersions
{
}

impl<T> Store for T where
    T: UserRepository
        + SessionRepository
        + ApiTokenRepository
        + CategoryRepository
        + ProductRepository
        + JobRepository
        + MailOutboxRepository
        + AccountTokenRepository
        + ExternalLoginRepository
        + CartRepository
        + OrderRepository
        + IdempotencyRepository
        + WebhookRepository
        + StoreHealth
        + CacheVersions
{
}

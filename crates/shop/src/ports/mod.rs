//! The storage ports: what the services need from a database, implemented by each `store-*` crate,
//! and the outbound ports (mail, identity providers) — one module per part of the shop.

mod accounts;
mod catalog;
mod flags;
mod health;
mod jobs;
mod mail;
mod orders;
mod webhooks;

pub use accounts::{
    AccountTokenRepository, ApiTokenRepository, ExternalLoginRepository, IdentityProvider, SessionRepository,
    UserRepository,
};
pub use catalog::{CacheVersions, CategoryRepository, ProductRepository, SearchIndex};
pub use flags::{AuditRepository, FlagRepository};
pub use health::{PoolStats, ReplicaHealth, StoreHealth};
pub use jobs::JobRepository;
pub use mail::{MailOutboxRepository, Mailer};
pub use orders::{CartRepository, IdempotencyRepository, OrderRepository};
pub use webhooks::WebhookRepository;

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
    + FlagRepository
    + AuditRepository
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
        + FlagRepository
        + AuditRepository
{
}

//! The storage ports: what the services need from a database, implemented by each `store-*` crate.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::{
    ApiToken, Email, NewApiTokenRecord, NewSession, NewUser, Session, User, UserChanges, UserQuery, UserWithPassword,
};
use crate::catalog::{
    Category, CategoryChanges, CategorySort, IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery,
};
use crate::error::StoreError;
use crate::pagination::{Page, PageRequest, SortOrder};
use crate::secrets::SecretHash;

/// Users. Email addresses are unique (constraint `users_email_key`).
#[async_trait]
pub trait UserRepository: Send + Sync {
    async fn insert_user(&self, user: &NewUser) -> Result<User, StoreError>;
    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<UserWithPassword>, StoreError>;
    async fn find_user_with_password(&self, id: Uuid) -> Result<Option<UserWithPassword>, StoreError>;
    /// `NotFound` when there is no such user.
    async fn update_user(&self, id: Uuid, changes: &UserChanges, now: OffsetDateTime) -> Result<User, StoreError>;
    async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, StoreError>;
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
    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, StoreError>;
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
}

/// Everything a storage adapter provides.
pub trait Store:
    UserRepository + SessionRepository + ApiTokenRepository + CategoryRepository + ProductRepository + StoreHealth
{
}

impl<T> Store for T where
    T: UserRepository + SessionRepository + ApiTokenRepository + CategoryRepository + ProductRepository + StoreHealth
{
}

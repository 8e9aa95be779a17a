//! Ports of the account service: users, sessions, API tokens, one-time mail tokens, external
//! sign-ins and the identity providers behind them.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::{
    ApiToken, AuthorizationRequest, Email, ExternalIdentity, ExternalLoginError, ExternalProfile, NewAccountToken,
    NewApiTokenRecord, NewSession, NewUser, PendingExternalLogin, PersonName, Session, User, UserChanges, UserQuery,
    UserWithPassword,
};
use crate::error::StoreError;
use crate::jobs::NewJob;
use crate::pagination::Page;
use crate::secrets::SecretHash;

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
    /// A user's sessions, most recently seen first, at most `limit`.
    async fn list_user_sessions(&self, user_id: Uuid, limit: u32) -> Result<Vec<Session>, StoreError>;
    /// An operator ends every session of a user: deleted, and audited (`sessions.end`, target
    /// `user:<id>`, the count before) in the same transaction; returns how many ended.
    async fn end_user_sessions(&self, user_id: Uuid, audit: &crate::audit::AuditContext) -> Result<u64, StoreError>;
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

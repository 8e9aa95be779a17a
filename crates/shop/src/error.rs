//! Errors of the domain services and of the storage ports.

use crate::validation::ValidationErrors;

/// What a storage adapter reports. A broken storage rule (a unique or foreign key, a limit, a
/// state an operation requires) becomes `Conflict`, named in the domain's words, so the service
/// can say which rule was broken without knowing how the adapter enforces it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(Conflict),
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(error.into())
    }
}

/// Which storage rule a write broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Another account has this email address.
    #[error("the email address is taken")]
    EmailTaken,
    /// The flag's version is not the one the write expected (or the flag is gone).
    #[error("the flag changed since it was read")]
    FlagChanged,
    /// Creating the flag would pass `flags::MAX_FLAGS`.
    #[error("the flag limit is reached")]
    FlagLimit,
    /// Another category has this slug.
    #[error("the category slug is taken")]
    CategorySlugTaken,
    /// Another product has this slug.
    #[error("the product slug is taken")]
    ProductSlugTaken,
    /// A product names a category that does not exist.
    #[error("no such category")]
    UnknownCategory,
    /// A category that products still belong to cannot be deleted.
    #[error("the category has products")]
    CategoryInUse,
    /// A record names a user that does not exist.
    #[error("no such user")]
    UnknownUser,
    /// A cart line names a product that does not exist.
    #[error("no such product")]
    UnknownProduct,
    /// A new cart line would exceed the cart's line limit.
    #[error("the cart is full")]
    CartFull,
    /// A live (queued or running) job has the same unique key.
    #[error("a job with this unique key is queued or running")]
    DuplicateJob,
    /// The job is in a state the operation does not accept (a retry takes dead or failed jobs).
    #[error("the job is in another state")]
    JobState,
    /// The issuer's subject is already linked to an account.
    #[error("the external identity is already linked")]
    IdentityLinked,
    /// Unlinking the identity would leave the account no way to sign in.
    #[error("the identity is the account's last sign-in method")]
    LastSignInMethod,
    /// The configured number of webhook endpoints exists already.
    #[error("the webhook endpoint limit is reached")]
    WebhookEndpointLimit,
    /// The delivery is in a state the operation does not accept (a retry takes failed or
    /// abandoned deliveries).
    #[error("the delivery is in another state")]
    DeliveryState,
    /// Another account token has this hash.
    #[error("the account token exists")]
    DuplicateToken,
    /// A rule the adapter has no domain name for; the text (the adapter's name for the rule) is
    /// for the log only.
    #[error("storage rule {0}")]
    Unnamed(String),
}

/// What a service reports to its caller; `shop-api` maps each variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input broke one or more rules; every broken rule is listed.
    #[error("invalid input")]
    Invalid(ValidationErrors),
    /// The thing does not exist, or the caller may not know that it does.
    #[error("not found")]
    NotFound,
    /// The request clashes with the current state (duplicate key, thing still in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The same idempotent request (same key) is still being processed: try again after
    /// `retry_after_seconds`.
    #[error("the request with this key is still in progress")]
    RequestInProgress { retry_after_seconds: u32 },
    /// Too many failed sign-ins locked the account for a while; nothing was checked.
    #[error("the account is locked after too many failed sign-ins")]
    AccountLocked(crate::accounts::AccountLock),
    /// The idempotency key was used before with a different request.
    #[error("the idempotency key was used with another request")]
    IdempotencyKeyReused,
    /// A conditional update found the record changed since the caller read it.
    #[error("the resource has changed since it was read")]
    PreconditionFailed,
    /// Wrong email or password, unknown account or disabled account: deliberately one case.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The caller is known but the action is not theirs to take.
    #[error("forbidden")]
    Forbidden,
    /// A dependency the request needs is down (its breaker open, timing out): try again after
    /// `retry_after_seconds`. Nothing was changed.
    #[error("unavailable: {detail}")]
    Unavailable { detail: &'static str, retry_after_seconds: u32 },
    /// Storage or another dependency failed; details go to the log, not to the client.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(conflict) => {
                // Services map the conflicts they expect; an unexpected one is logged, and the
                // client hears no table or constraint names.
                tracing::warn!(%conflict, "unmapped storage conflict");
                Self::Conflict("the request conflicts with existing data".into())
            }
            StoreError::Other(source) => Self::Internal(source),
        }
    }
}

impl From<ValidationErrors> for Error {
    fn from(errors: ValidationErrors) -> Self {
        Self::Invalid(errors)
    }
}

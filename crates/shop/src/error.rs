//! Errors of the domain services and of the storage ports.

use crate::validation::ValidationErrors;

/// What a storage adapter reports. A unique or foreign-key violation becomes `Conflict`
/// with the constraint's name, so the service can say which rule was broken.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record not found")]
    NotFound,
    #[error("constraint violated: {constraint}")]
    Conflict { constraint: String },
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(error.into())
    }
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
            StoreError::Conflict { constraint } => {
                // Services map the conflicts they expect; an unexpected one is logged, and the
                // client hears no table or constraint names.
                tracing::warn!(constraint, "unmapped storage conflict");
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

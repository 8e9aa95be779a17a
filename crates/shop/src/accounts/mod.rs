//! Accounts: users, roles, passwords, sessions and personal API tokens.

mod email;
mod external;
mod guests;
mod links;
mod password;
mod role;
mod service;
mod throttle;
mod user;

pub use email::Email;

/// The kinds of the accounts' recurring purges (jobs without a payload).
pub const PURGE_SESSIONS: &str = "sessions.purge";
pub const PURGE_ACCOUNT_TOKENS: &str = "accounts.purge_tokens";
pub const PURGE_GUESTS: &str = "accounts.purge_guests";
pub use external::{
    AuthorizationRequest, ExternalCallback, ExternalIdentity, ExternalLoginError, ExternalLoginStart, ExternalProfile,
    MAX_ISSUER_LEN, MAX_RETURN_TO_LEN, MAX_SUBJECT_LEN, PendingExternalLogin,
};
pub use links::{LinkContext, LinkJob, SendLoginChallengeJob, SendPasswordResetJob, SendVerificationJob};
pub use password::{PasswordHasher, PasswordPlain};
pub use role::Role;
pub use service::{AccountService, AccountSettings, ChallengeRequired, LoginOutcome, NewApiToken, SignedIn};
pub use throttle::{AccountLock, LoginThrottle, NoLoginThrottle};
pub use user::{
    ApiToken, AuthMethod, Caller, NewAccountToken, NewApiTokenRecord, NewSession, NewUser, PersonName, Session,
    TokenPurpose, User, UserChanges, UserQuery, UserSort, UserWithPassword,
};

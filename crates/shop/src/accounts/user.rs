//! Account records as the services and repositories exchange them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Email, Role};
use crate::pagination::{PageRequest, SortOrder};
use crate::secrets::SecretHash;

/// A person's display name: 1–100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("is required".into());
        }
        if name.chars().count() > 100 {
            return Err("must be at most 100 characters".into());
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: Email,
    pub name: PersonName,
    pub role: Role,
    pub disabled: bool,
    /// When the owner proved the address is theirs (the verification link); `None` until then.
    pub email_verified_at: Option<OffsetDateTime>,
    /// A guest account (see [`NewUser::guest`]) until upgraded with an email and password.
    pub guest: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A user with the stored password hash, for the few code paths that verify passwords.
#[derive(Debug, Clone)]
pub struct UserWithPassword {
    pub user: User,
    pub password_hash: String,
}

/// What the repository needs to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: Email,
    pub name: PersonName,
    pub role: Role,
    pub password_hash: String,
    /// An ephemeral guest account (anonymous checkout): a placeholder address under
    /// `.invalid`, a password hash that never verifies, purged when idle unless upgraded.
    pub guest: bool,
    pub created_at: OffsetDateTime,
}

/// A partial update of a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub name: Option<PersonName>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
}

/// Sort keys of the user list; the adapters map each to a fixed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSort {
    #[default]
    CreatedAt,
    Email,
}

impl UserSort {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "createdAt" => Ok(Self::CreatedAt),
            "email" => Ok(Self::Email),
            _ => Err("must be one of createdAt, email".into()),
        }
    }
}

/// Filters for the admin's user list.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub page: PageRequest,
    pub sort_by: UserSort,
    pub role: Option<Role>,
    /// Case-insensitive substring of the email address.
    pub email_contains: Option<String>,
    pub disabled: Option<bool>,
    pub sort_order: SortOrder,
}

/// A signed-in browser session. Only the hash of its secret id is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What the repository needs to create a session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub token_hash: SecretHash,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A personal API token (its secret is shown once at creation and stored only hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// What the repository needs to create an API token.
#[derive(Debug, Clone)]
pub struct NewApiTokenRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub token_hash: SecretHash,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    Session { session_id: Uuid },
    ApiToken { token_id: Uuid },
}

/// An authenticated caller: the user and how they signed in.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub method: AuthMethod,
}

impl Caller {
    pub fn has_role(&self, required: Role) -> bool {
        self.user.role.includes(required)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PersonName::parse("  Ada  ").map(|n| n.as_str().to_owned()), Ok("Ada".into()));
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"a".repeat(101)).is_err());
        assert!(PersonName::parse("Ada\u{0}").is_err());
    }
}

/// What a one-time account token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPurpose {
    EmailVerification,
    PasswordReset,
    /// Confirms a sign-in from a device the account has not used before.
    LoginChallenge,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailVerification => "email_verification",
            Self::PasswordReset => "password_reset",
            Self::LoginChallenge => "login_challenge",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::EmailVerification, Self::PasswordReset, Self::LoginChallenge]
            .into_iter()
            .find(|purpose| purpose.as_str() == raw)
    }
}

/// A one-time token sent by mail (verification and reset links). Only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccountToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub purpose: TokenPurpose,
    pub token_hash: SecretHash,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// For a login challenge: the hash of the device cookie of the sign-in it confirms.
    pub device_hash: Option<SecretHash>,
}

impl crate::cache::Weigh for User {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.email.as_str().len() + self.name.as_str().len()
    }
}

impl crate::cache::Weigh for Session {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl crate::cache::Weigh for ApiToken {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.name.len()
    }
}

//! Sign-in with an external identity provider (OpenID Connect; seed 000, "allow login from
//! external providers"): the records the flow keeps, and the rules for which account an external
//! identity signs in to. The protocol itself (PKCE, state, nonce, ID token verification) is the
//! adapter's, behind [`crate::ports::IdentityProvider`].

use subtle::ConstantTimeEq as _;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::service::{AccountService, LoginOutcome};
use super::user::{Caller, NewUser, User};
use super::{Email, PersonName, Role};
use crate::error::{Error, StoreError};
use crate::ports::IdentityProvider;
use crate::secrets::{SecretHash, SecretToken};
use crate::validation::ValidationErrors;

/// The largest `returnTo` path accepted (it is kept with the pending login and sent back).
pub const MAX_RETURN_TO_LEN: usize = 512;

/// What a provider vouched for after a completed, verified sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalProfile {
    /// The provider's configured name (`/auth/oidc/{provider}/…`).
    pub provider: String,
    /// The provider's stable identifier of the person (`sub`); never reassigned.
    pub subject: String,
    /// The address the provider holds, if it shared one.
    pub email: Option<Email>,
    /// Whether the provider says the address was verified (`email_verified`).
    pub email_verified: bool,
    /// A display name, if the provider shared one.
    pub name: Option<String>,
}

/// A link from a provider's subject to one of our accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    pub user_id: Uuid,
    /// The address the provider gave when the link was made (informational).
    pub email: Option<Email>,
    pub created_at: OffsetDateTime,
}

/// The start of a provider's authorization request: where to send the browser, and the
/// single-use values the callback is checked against.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub url: String,
    /// The `state` parameter (CSRF protection of the callback).
    pub state: String,
    /// The `nonce` the ID token must carry (replay protection).
    pub nonce: String,
    /// The PKCE code verifier; only its S256 challenge went to the provider.
    pub pkce_verifier: String,
}

/// A sign-in started at the provider and not yet completed: keyed by the hash of a random
/// handle kept in the browser's cookie, so only the browser that started it can complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingExternalLogin {
    pub handle_hash: SecretHash,
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// A path on the storefront to return to afterwards (validated: starts with one `/`).
    pub return_to: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Why a provider could not complete a sign-in.
#[derive(Debug, thiserror::Error)]
pub enum ExternalLoginError {
    /// The provider is unreachable, slow, failing or its breaker is open: try again later.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider's answer failed verification (bad signature, issuer, audience, nonce,
    /// expiry), or it refused the code: the sign-in is not trusted.
    #[error("the sign-in could not be verified: {0}")]
    Rejected(String),
}

/// What the provider sent back to the callback (its query string).
#[derive(Debug, Clone, Default)]
pub struct ExternalCallback {
    pub state: Option<String>,
    pub code: Option<String>,
    /// The provider's error code (`access_denied` when the person declined).
    pub error: Option<String>,
    /// The issuer, when the provider says who it is (RFC 9207); must then match.
    pub issuer: Option<String>,
}

/// External-only accounts have no password: this is no Argon2 hash, so nothing verifies
/// against it (a password can be set later through a password reset).
const NO_PASSWORD: &str = "!external";

fn start_again(message: &str) -> Error {
    Error::Invalid(ValidationErrors::single("state", message))
}

/// `returnTo` must be a path on the storefront: one leading `/`, never `//` or `/\` (which
/// browsers read as another host), no control characters, bounded.
fn parse_return_to(raw: Option<&str>) -> Result<String, Error> {
    let Some(path) = raw.filter(|path| !path.is_empty()) else { return Ok("/".to_owned()) };
    let valid = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= MAX_RETURN_TO_LEN
        && !path.chars().any(char::is_control);
    if valid {
        Ok(path.to_owned())
    } else {
        Err(Error::Invalid(ValidationErrors::single(
            "returnTo",
            format!("must be a path on this shop starting with a single /, at most {MAX_RETURN_TO_LEN} characters"),
        )))
    }
}

fn provider_error(error: ExternalLoginError) -> Error {
    match error {
        ExternalLoginError::Unavailable(detail) => {
            tracing::warn!(%detail, "identity provider unavailable");
            Error::Unavailable {
                detail: "the sign-in provider is unavailable; try again shortly",
                retry_after_seconds: 30,
            }
        }
        ExternalLoginError::Rejected(detail) => {
            tracing::warn!(%detail, "external sign-in rejected");
            Error::Invalid(ValidationErrors::single("code", "the provider's answer could not be verified; start again"))
        }
    }
}

/// A started external sign-in: send the browser to `url` and keep `handle` in a cookie for
/// `lifetime`.
#[derive(Debug)]
pub struct ExternalLoginStart {
    pub url: String,
    pub handle: SecretToken,
    pub lifetime: Duration,
}

impl AccountService {
    /// `GET /auth/oidc/{provider}/start`: a fresh authorization request, remembered under a
    /// random handle for the browser's cookie.
    pub async fn begin_external_login(
        &self,
        provider: &dyn IdentityProvider,
        return_to: Option<&str>,
    ) -> Result<ExternalLoginStart, Error> {
        let return_to = parse_return_to(return_to)?;
        let request = provider.authorization_request().await.map_err(provider_error)?;
        let handle = SecretToken::generate("");
        let now = self.clock.now();
        let lifetime = self.settings.external_login_ttl;
        self.store
            .insert_pending_external_login(&PendingExternalLogin {
                handle_hash: handle.hash(),
                provider: provider.name().to_owned(),
                state: request.state,
                nonce: request.nonce,
                pkce_verifier: request.pkce_verifier,
                return_to,
                created_at: now,
                expires_at: now + lifetime,
            })
            .await?;
        Ok(ExternalLoginStart { url: request.url, handle, lifetime })
    }

    /// `GET /auth/oidc/{provider}/callback`: checks that this browser started the sign-in
    /// (handle) and that the answer belongs to it (state), lets the provider verify the code
    /// and ID token, then signs in to the linked account — linking or creating one as
    /// [`AccountService::account_for_external_profile`] decides. Returns the outcome and where
    /// to send the browser (the storefront's `link_base_url` + the `returnTo` path).
    pub async fn complete_external_login(
        &self,
        provider: &dyn IdentityProvider,
        handle: Option<&SecretToken>,
        callback: &ExternalCallback,
        previous_session: Option<&SecretToken>,
        device: &SecretHash,
        from_address: &str,
    ) -> Result<(LoginOutcome, String), Error> {
        const NOT_STARTED_HERE: &str =
            "this sign-in was not started in this browser, was already used, or took too long; start again";
        let handle = handle.ok_or_else(|| start_again(NOT_STARTED_HERE))?;
        let pending = self
            .store
            .take_pending_external_login(&handle.hash(), self.clock.now())
            .await?
            .filter(|pending| pending.provider == provider.name())
            .ok_or_else(|| start_again(NOT_STARTED_HERE))?;
        let state_matches =
            callback.state.as_deref().is_some_and(|state| bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())));
        if !state_matches {
            tracing::warn!(provider = provider.name(), "external sign-in callback with a wrong state");
            return Err(start_again("does not match the sign-in this browser started; start again"));
        }
        if let Some(error) = &callback.error {
            let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            return Err(Error::Invalid(ValidationErrors::single(
                "error",
                format!("the provider did not sign you in ({error})"),
            )));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|code| !code.is_empty())
            .ok_or_else(|| Error::Invalid(ValidationErrors::single("code", "is required")))?;
        let profile = provider
            .complete(code, &pending.pkce_verifier, &pending.nonce, callback.issuer.as_deref())
            .await
            .map_err(provider_error)?;
        let user = self.account_for_external_profile(&profile).await?;
        let outcome = self.finish_login(user, previous_session, device, from_address).await?;
        let location = format!("{}{}", self.settings.link_base_url.trim_end_matches('/'), pending.return_to);
        Ok((outcome, location))
    }

    /// The account an external identity signs in to:
    /// - the account linked to the provider's subject, if any;
    /// - otherwise the account with the provider's address — linked now, but only when the
    ///   provider verified the address *and* the account's owner verified it here too (anything
    ///   less would let whoever controls one side take over the other);
    /// - otherwise a new customer account, verified when the provider verified the address,
    ///   else with a verification mail queued in the same transaction.
    async fn account_for_external_profile(&self, profile: &ExternalProfile) -> Result<User, Error> {
        if let Some(user) = self.store.find_user_by_external_identity(&profile.provider, &profile.subject).await? {
            return self.usable(user);
        }
        let email = profile.email.clone().ok_or_else(|| {
            Error::Invalid(ValidationErrors::single(
                "email",
                "the provider did not share an email address; allow access to it and try again",
            ))
        })?;
        let now = self.clock.now();
        let identity = ExternalIdentity {
            provider: profile.provider.clone(),
            subject: profile.subject.clone(),
            user_id: crate::new_id(),
            email: Some(email.clone()),
            created_at: now,
        };
        if let Some(existing) = self.store.find_user_by_email(&email).await? {
            let user = self.usable(existing.user)?;
            if !(profile.email_verified && user.email_verified_at.is_some()) {
                return Err(Error::Conflict(
                    "an account with this email address exists; sign in with its password. It is linked to this \
                     provider only once both the provider and the account have verified the address"
                        .into(),
                ));
            }
            let link = ExternalIdentity { user_id: user.id, ..identity };
            return match self.store.link_external_identity(&link).await {
                Ok(()) => {
                    tracing::info!(userId = %user.id, provider = %profile.provider, "external identity linked by verified email");
                    Ok(user)
                }
                Err(StoreError::Conflict { .. }) => self.linked_meanwhile(profile).await,
                Err(other) => Err(other.into()),
            };
        }
        let name = profile
            .name
            .as_deref()
            .and_then(|name| PersonName::parse(name).ok())
            .or_else(|| email.as_str().split('@').next().and_then(|local| PersonName::parse(local).ok()))
            .ok_or_else(|| Error::Internal("no usable name for an external account".into()))?;
        let user = NewUser {
            id: identity.user_id,
            email,
            name,
            role: Role::Customer,
            password_hash: NO_PASSWORD.to_owned(),
            guest: false,
            created_at: now,
        };
        let verified_at = profile.email_verified.then_some(now);
        let jobs = if profile.email_verified {
            Vec::new()
        } else {
            vec![super::links::send_link_job(super::links::SEND_VERIFICATION, user.id, now)]
        };
        match self.store.insert_external_user(&user, verified_at, &identity, &jobs).await {
            Ok(user) => {
                tracing::info!(userId = %user.id, provider = %profile.provider, "account created by external sign-in");
                Ok(user)
            }
            Err(StoreError::Conflict { constraint }) if constraint == "external_identities_pkey" => {
                self.linked_meanwhile(profile).await
            }
            Err(StoreError::Conflict { .. }) => {
                Err(Error::Conflict("an account with this email address was created meanwhile; try again".into()))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// A concurrent sign-in linked the subject first: use its account.
    async fn linked_meanwhile(&self, profile: &ExternalProfile) -> Result<User, Error> {
        let user = self
            .store
            .find_user_by_external_identity(&profile.provider, &profile.subject)
            .await?
            .ok_or_else(|| Error::Conflict("the sign-in clashed with another; try again".into()))?;
        self.usable(user)
    }

    fn usable(&self, user: User) -> Result<User, Error> {
        if user.disabled || user.guest { Err(Error::InvalidCredentials) } else { Ok(user) }
    }

    /// The providers an account is linked to (for `GET /users/me/identities`).
    pub async fn external_identities(&self, caller: &Caller) -> Result<Vec<ExternalIdentity>, Error> {
        Ok(self.store.list_external_identities(caller.user.id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_must_stay_on_the_shop() {
        assert_eq!(parse_return_to(None).ok(), Some("/".to_owned()));
        assert_eq!(parse_return_to(Some("")).ok(), Some("/".to_owned()));
        assert_eq!(parse_return_to(Some("/cart?step=2")).ok(), Some("/cart?step=2".to_owned()));
        for bad in ["https://evil.example", "//evil.example", "/\\evil.example", "cart", "/a\nb"] {
            assert!(parse_return_to(Some(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(parse_return_to(Some(&format!("/{}", "a".repeat(MAX_RETURN_TO_LEN)))).is_err());
    }
}

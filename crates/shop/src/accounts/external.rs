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
use crate::error::{Conflict, Error, StoreError};
use crate::ports::IdentityProvider;
use crate::secrets::{SecretHash, SecretToken};
use crate::validation::ValidationErrors;

/// The largest `returnTo` path accepted (it is kept with the pending login and sent back).
pub const MAX_RETURN_TO_LEN: usize = 512;
/// The longest `sub` accepted (OpenID Connect Core §2: at most 255 ASCII characters).
pub const MAX_SUBJECT_LEN: usize = 255;
/// The longest issuer URL accepted.
pub const MAX_ISSUER_LEN: usize = 255;

/// What a provider vouched for after a completed, verified sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalProfile {
    /// The provider's configured name (`/auth/oidc/{provider}/…`).
    pub provider: String,
    /// The verified issuer of the ID token: the namespace in which `subject` is unique.
    pub issuer: String,
    /// The provider's stable identifier of the person (`sub`, at most
    /// [`MAX_SUBJECT_LEN`] bytes); never reassigned within its issuer.
    pub subject: String,
    /// The address the provider holds, if it shared one.
    pub email: Option<Email>,
    /// Whether the provider says the address was verified (`email_verified`).
    pub email_verified: bool,
    /// A display name, if the provider shared one.
    pub name: Option<String>,
}

/// A link from an issuer's subject to one of our accounts. Keyed by the issuer, not by our name
/// for the provider, so pointing a configured name at another issuer links nobody by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub user_id: Uuid,
    /// The address the provider gave when the link was made (informational).
    pub email: Option<Email>,
    pub created_at: OffsetDateTime,
}

impl ExternalIdentity {
    /// The link's identifier in the API (`DELETE /users/me/identities/{id}`): the unpadded
    /// base64url SHA-256 of the issuer and the subject. The table has no id column and needs
    /// none: (issuer, subject) is its key, and hashing it gives a short, path-safe name that
    /// stays the same as long as the link exists, without putting the subject into URLs.
    pub fn link_id(&self) -> String {
        use base64::Engine as _;
        use sha2::{Digest as _, Sha256};
        // The issuer's length first, so that no two pairs hash the same bytes.
        let issuer_len = u64::try_from(self.issuer.len()).unwrap_or(u64::MAX);
        let digest = Sha256::new()
            .chain_update(issuer_len.to_be_bytes())
            .chain_update(self.issuer.as_bytes())
            .chain_update(self.subject.as_bytes())
            .finalize();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    }
}

/// The start of a provider's authorization request: where to send the browser, and the
/// single-use values the callback is checked against.
#[derive(Clone)]
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
#[derive(Clone, PartialEq, Eq)]
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
#[derive(Clone, Default)]
pub struct ExternalCallback {
    pub state: Option<String>,
    pub code: Option<String>,
    /// The provider's error code (`access_denied` when the person declined).
    pub error: Option<String>,
    /// The provider's explanation of `error`, for the log.
    pub error_description: Option<String>,
    /// The issuer, when the provider says who it is (RFC 9207); must then match.
    pub issuer: Option<String>,
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest").field("url", &self.url).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PendingExternalLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingExternalLogin")
            .field("provider", &self.provider)
            .field("return_to", &self.return_to)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ExternalCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCallback")
            .field("error", &self.error)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
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
        && path.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(path.to_owned())
    } else {
        Err(Error::Invalid(ValidationErrors::single(
            "returnTo",
            format!(
                "must be a path on this shop starting with a single /, at most {MAX_RETURN_TO_LEN} visible ASCII \
                 characters (percent-encode the rest)"
            ),
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
            let description: Option<String> = callback
                .error_description
                .as_ref()
                .map(|text| text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(200).collect());
            tracing::info!(provider = provider.name(), error, description, "the provider did not sign the person in");
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
    /// - the account linked to the issuer's subject, if any;
    /// - otherwise, only when the provider verified the address: the account with that address
    ///   — linked now, but only if its owner verified the address here too — or else a new,
    ///   verified customer account. An address the provider has not verified makes and links
    ///   nothing: anyone can type any address at some providers, and an account made from it
    ///   would sit on a stranger's address (and survive that stranger's password reset).
    async fn account_for_external_profile(&self, profile: &ExternalProfile) -> Result<User, Error> {
        if let Some(user) = self.store.find_user_by_external_identity(&profile.issuer, &profile.subject).await? {
            return self.usable(user);
        }
        let email = profile.email.clone().ok_or_else(|| {
            Error::Invalid(ValidationErrors::single(
                "email",
                "the provider did not share an email address; allow access to it and try again",
            ))
        })?;
        if !profile.email_verified {
            return Err(Error::Invalid(ValidationErrors::single(
                "email",
                "the provider has not verified this email address; verify it there, or sign up with a password",
            )));
        }
        let now = self.clock.now();
        let identity = ExternalIdentity {
            issuer: profile.issuer.clone(),
            subject: profile.subject.clone(),
            user_id: crate::new_id(),
            email: Some(email.clone()),
            created_at: now,
        };
        if let Some(existing) = self.store.find_user_by_email(&email).await? {
            let user = self.usable(existing.user)?;
            if user.email_verified_at.is_none() {
                return Err(Error::Conflict(
                    "an account with this email address exists but its owner has not verified the address here; \
                     sign in with its password and verify it first, then sign in with the provider to link it"
                        .into(),
                ));
            }
            let link = ExternalIdentity { user_id: user.id, ..identity };
            return match self.store.link_external_identity(&link).await {
                Ok(()) => {
                    tracing::info!(userId = %user.id, provider = %profile.provider, "external identity linked by verified email");
                    Ok(user)
                }
                Err(StoreError::Conflict(_)) => self.linked_meanwhile(profile).await,
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
        match self.store.insert_external_user(&user, Some(now), &identity, &[]).await {
            Ok(user) => {
                tracing::info!(userId = %user.id, provider = %profile.provider, "account created by external sign-in");
                Ok(user)
            }
            // A concurrent callback of the same person won the race: use what it made.
            Err(StoreError::Conflict(_)) => self.linked_meanwhile(profile).await,
            Err(other) => Err(other.into()),
        }
    }

    /// A concurrent sign-in linked the subject first: use its account.
    async fn linked_meanwhile(&self, profile: &ExternalProfile) -> Result<User, Error> {
        let user =
            self.store.find_user_by_external_identity(&profile.issuer, &profile.subject).await?.ok_or_else(|| {
                Error::Conflict("an account with this email address was created meanwhile; try again".into())
            })?;
        self.usable(user)
    }

    fn usable(&self, user: User) -> Result<User, Error> {
        if user.disabled || user.guest { Err(Error::InvalidCredentials) } else { Ok(user) }
    }

    /// The issuers an account is linked to (for `GET /users/me/identities`).
    pub async fn external_identities(&self, caller: &Caller) -> Result<Vec<ExternalIdentity>, Error> {
        Ok(self.store.list_external_identities(caller.user.id).await?)
    }

    /// Unlinks one of the caller's identities, named by its [`ExternalIdentity::link_id`], and
    /// mails the owner about it. Someone else's link and an unknown id are both "not found". The
    /// store refuses to unlink an account's last way to sign in (no password, no other link),
    /// atomically with the unlinking, so two concurrent unlinks never leave it locked out.
    pub async fn unlink_external_identity(&self, caller: &Caller, link_id: &str) -> Result<(), Error> {
        // Guests never have links (a provider sign-in refuses them), so for them every id is unknown.
        if caller.user.guest {
            return Err(Error::NotFound);
        }
        let identity = self
            .store
            .list_external_identities(caller.user.id)
            .await?
            .into_iter()
            .find(|identity| identity.link_id() == link_id)
            .ok_or(Error::NotFound)?;
        let now = self.clock.now();
        let mail = crate::mail::external_identity_unlinked(
            &caller.user.email,
            caller.user.name.as_str(),
            &identity.issuer,
            now,
            &self.settings.shop_name,
        );
        let job = crate::mail::send_mail_job(&mail, None, now);
        match self.store.unlink_external_identity(caller.user.id, &identity.issuer, &identity.subject, &[job]).await {
            Ok(()) => {
                tracing::info!(userId = %caller.user.id, issuer = %identity.issuer, "external identity unlinked");
                Ok(())
            }
            Err(StoreError::Conflict(Conflict::LastSignInMethod)) => Err(Error::Conflict(
                "this is the only way to sign in to your account: set a password first (request a password \
                 reset at POST /api/v1/password-resets), or link another provider, then unlink this one"
                    .into(),
            )),
            // Unlinked meanwhile (another request, another device).
            Err(StoreError::NotFound) => Err(Error::NotFound),
            Err(other) => Err(other.into()),
        }
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
        for bad in ["https://evil.example", "//evil.example", "/\\evil.example", "cart", "/a\nb", "/café", "/a b"] {
            assert!(parse_return_to(Some(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(parse_return_to(Some(&format!("/{}", "a".repeat(MAX_RETURN_TO_LEN)))).is_err());
    }
}

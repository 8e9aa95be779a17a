//! Flows that prove control of an email address with a link: verification after sign-up and
//! password reset. The link's token is made by the job that sends the mail (so the raw token
//! is never stored, not even in the job), kept only as a hash, works once, and expires.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::service::AccountService;
use super::{Email, NewAccountToken, PasswordPlain, TokenPurpose};
use crate::error::Error;
use crate::jobs::{JobPayload, NewJob};
use crate::mail::{MAIL_QUEUE, Mail};
use crate::secrets::{SecretHash, SecretToken};
use crate::validation::ValidationErrors;

/// A job that makes a fresh link of its purpose and mails it to the user.
pub trait LinkJob: JobPayload {
    const PURPOSE: TokenPurpose;

    fn user_id(&self) -> Uuid;

    /// What the link needs besides the user; an error when the payload lacks it.
    fn context(&self) -> Result<LinkContext, String> {
        Ok(LinkContext::default())
    }
}

/// `accounts.send_verification`: the link that verifies the user's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendVerificationJob {
    pub user_id: Uuid,
}

impl JobPayload for SendVerificationJob {
    const KIND: &'static str = "accounts.send_verification";
}

impl LinkJob for SendVerificationJob {
    const PURPOSE: TokenPurpose = TokenPurpose::EmailVerification;

    fn user_id(&self) -> Uuid {
        self.user_id
    }
}

/// `accounts.send_password_reset`: the link that sets a new password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendPasswordResetJob {
    pub user_id: Uuid,
}

impl JobPayload for SendPasswordResetJob {
    const KIND: &'static str = "accounts.send_password_reset";
}

impl LinkJob for SendPasswordResetJob {
    const PURPOSE: TokenPurpose = TokenPurpose::PasswordReset;

    fn user_id(&self) -> Uuid {
        self.user_id
    }
}

/// `accounts.send_login_challenge`: the link that confirms a sign-in from a new device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendLoginChallengeJob {
    pub user_id: Uuid,
    /// The device to trust once confirmed: its SHA-256, hex.
    pub device_hash: String,
    /// Where the sign-in came from, shown in the mail.
    pub from_address: Option<String>,
}

impl JobPayload for SendLoginChallengeJob {
    const KIND: &'static str = "accounts.send_login_challenge";
}

impl LinkJob for SendLoginChallengeJob {
    const PURPOSE: TokenPurpose = TokenPurpose::LoginChallenge;

    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn context(&self) -> Result<LinkContext, String> {
        let device_hash = hex::decode(&self.device_hash)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(SecretHash)
            .ok_or_else(|| "login challenge payload without a valid deviceHash".to_owned())?;
        Ok(LinkContext { device_hash: Some(device_hash), from_address: self.from_address.clone() })
    }
}

/// What a link job needs besides the user: for a login challenge, the device to trust and the
/// network address the sign-in came from (both shown or kept; neither is a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkContext {
    pub device_hash: Option<SecretHash>,
    pub from_address: Option<String>,
}

/// The job that mails the link of `payload` to its user; one pending per user and kind.
pub(super) fn send_link_job<P: LinkJob>(payload: &P, now: OffsetDateTime) -> NewJob {
    NewJob::of(payload, now).queue(MAIL_QUEUE).max_attempts(12).unique_key(format!("{}:{}", P::KIND, payload.user_id()))
}

fn invalid_token() -> Error {
    let mut errors = ValidationErrors::new();
    errors.add("token", "is invalid, expired or already used");
    Error::Invalid(errors)
}

impl AccountService {
    /// `POST /password-resets`: queues the reset mail when the address belongs to an active
    /// account, and says nothing either way (no enumeration).
    pub async fn request_password_reset(&self, email: &Email) -> Result<(), Error> {
        let Some(found) = self.store.find_user_by_email(email).await? else { return Ok(()) };
        if found.user.disabled || found.user.guest {
            return Ok(());
        }
        let job = send_link_job(&SendPasswordResetJob { user_id: found.user.id }, self.clock.now());
        if self.store.enqueue_job(&job).await? {
            tracing::info!(userId = %found.user.id, "password reset mail queued");
        }
        Ok(())
    }

    /// The body of the link jobs: makes a fresh token (replacing the user's earlier one of that
    /// purpose), and returns the mail carrying its link with the token's id, to send it under
    /// (a retried job makes a new token, so its mail is a new message with a working link) —
    /// `None` when there is nothing to send (the account is gone, disabled or a guest, or the
    /// address is already verified).
    pub async fn prepare_link_mail(
        &self,
        purpose: TokenPurpose,
        user_id: Uuid,
        context: &LinkContext,
    ) -> Result<Option<(Mail, Uuid)>, Error> {
        let Some(user) = self.store.find_user(user_id).await? else { return Ok(None) };
        if user.disabled
            || user.guest
            || (purpose == TokenPurpose::EmailVerification && user.email_verified_at.is_some())
        {
            return Ok(None);
        }
        if purpose == TokenPurpose::LoginChallenge && context.device_hash.is_none() {
            return Err(Error::Internal("a login challenge job without a device".into()));
        }
        let now = self.clock.now();
        let (ttl, page) = match purpose {
            TokenPurpose::EmailVerification => (self.settings.verification_ttl, "verify-email"),
            TokenPurpose::PasswordReset => (self.settings.password_reset_ttl, "reset-password"),
            TokenPurpose::LoginChallenge => (self.settings.login_challenge_ttl, "confirm-login"),
        };
        let token = SecretToken::generate("");
        let token_id = crate::new_id();
        self.store
            .replace_account_token(&NewAccountToken {
                id: token_id,
                user_id,
                purpose,
                token_hash: token.hash(),
                created_at: now,
                expires_at: now + ttl,
                device_hash: context.device_hash,
            })
            .await?;
        let link = format!("{}/{page}?token={}", self.settings.link_base_url.trim_end_matches('/'), token.expose());
        let name = user.name.as_str();
        let shop = &self.settings.shop_name;
        let mail = match purpose {
            TokenPurpose::EmailVerification => crate::mail::verify_email(&user.email, name, &link, ttl, shop),
            TokenPurpose::PasswordReset => crate::mail::password_reset(&user.email, name, &link, ttl, shop),
            TokenPurpose::LoginChallenge => {
                let from = context.from_address.as_deref().unwrap_or("unknown");
                crate::mail::login_challenge(&user.email, name, &link, ttl, from, shop)
            }
        };
        Ok(Some((mail, token_id)))
    }

    /// `POST /password-resets/confirm`: a usable token sets the new password and ends every
    /// session of the account, in one transaction.
    pub async fn reset_password(&self, token: &str, new_password: PasswordPlain) -> Result<(), Error> {
        let token = SecretToken::from_presented(token).ok_or_else(invalid_token)?;
        let password_hash = self.hasher.hash(&new_password).await?;
        match self.store.reset_password_with_token(&token.hash(), &password_hash, self.clock.now()).await? {
            Some(user_id) => {
                tracing::info!(userId = %user_id, "password reset; every session of the account ended");
                Ok(())
            }
            None => Err(invalid_token()),
        }
    }

    /// `POST /email-verifications/confirm`.
    pub async fn verify_email(&self, token: &str) -> Result<(), Error> {
        let token = SecretToken::from_presented(token).ok_or_else(invalid_token)?;
        match self.store.verify_email_with_token(&token.hash(), self.clock.now()).await? {
            Some(user_id) => {
                tracing::info!(userId = %user_id, "email address verified");
                Ok(())
            }
            None => Err(invalid_token()),
        }
    }

    /// `POST /login-challenges/confirm`: trusts the device of the challenged sign-in; signing
    /// in again from it then succeeds.
    pub async fn confirm_login_challenge(&self, token: &str) -> Result<(), Error> {
        let token = SecretToken::from_presented(token).ok_or_else(invalid_token)?;
        match self.store.confirm_login_challenge(&token.hash(), self.clock.now()).await? {
            Some(user_id) => {
                tracing::info!(userId = %user_id, "sign-in from a new device confirmed by mail");
                Ok(())
            }
            None => Err(invalid_token()),
        }
    }

    /// Deletes at most `limit` link tokens that expired or were used over a day ago, at most
    /// `limit` known devices unseen for a year, and at most `limit` expired pending external
    /// sign-ins; returns the larger count (repeat while it is `limit`).
    pub async fn purge_account_tokens(&self, limit: u32) -> Result<u64, Error> {
        let now = self.clock.now();
        let tokens = self.store.purge_account_tokens(now - time::Duration::days(1), limit).await?;
        let devices = self.store.purge_known_devices(now - time::Duration::days(365), limit).await?;
        let logins = self.store.purge_pending_external_logins(now, limit).await?;
        Ok(tokens.max(devices).max(logins))
    }
}

//! Guest accounts (seed 000, "temporary ephemeral accounts"): anonymous shoppers get a real
//! account and session at once, which becomes a full account in place — same id, so whatever
//! it owns stays — when they give an email and a password. Idle guests are deleted.

use super::service::AccountService;
use super::user::{AuthMethod, Caller, NewUser};
use super::{Email, PasswordPlain, PersonName, Role, SignedIn};
use crate::error::{Error, StoreError};

/// Guests have no password: this is no Argon2 hash, so nothing ever verifies against it.
const NO_PASSWORD: &str = "!guest";

impl AccountService {
    /// `POST /guests`: a new guest account, signed in.
    pub async fn create_guest(&self) -> Result<SignedIn, Error> {
        let id = crate::new_id();
        let email = Email::parse(&format!("guest-{}@guest.invalid", id.simple()))
            .map_err(|problem| Error::Internal(format!("guest placeholder address {problem}").into()))?;
        let name = PersonName::parse("Guest").map_err(|problem| Error::Internal(problem.into()))?;
        let user = NewUser {
            id,
            email,
            name,
            role: Role::Customer,
            password_hash: NO_PASSWORD.to_owned(),
            guest: true,
            created_at: self.clock.now(),
        };
        let user = self.store.insert_user(&user, &[]).await?;
        tracing::info!(userId = %user.id, "guest account created");
        self.start_session(user).await
    }

    /// Turns the calling guest into a full account with an email and password: the same
    /// account (its cart and orders stay), a verification mail queued in the same transaction,
    /// and a new session in place of the guest's (its privileges changed).
    pub async fn upgrade_guest(
        &self,
        caller: &Caller,
        email: Email,
        password: PasswordPlain,
        name: PersonName,
    ) -> Result<SignedIn, Error> {
        if !caller.user.guest {
            return Err(Error::Conflict("this account is already a full account".into()));
        }
        let password_hash = self.hasher.hash(&password).await?;
        let now = self.clock.now();
        let jobs = [super::links::send_link_job(&super::SendVerificationJob { user_id: caller.user.id }, now)];
        let user = self.store.upgrade_guest(caller.user.id, &email, &name, &password_hash, now, &jobs).await.map_err(
            |error| match error {
                StoreError::Conflict(_) => Error::Conflict("an account with this email already exists".into()),
                StoreError::NotFound => Error::Conflict("this account is already a full account".into()),
                other => other.into(),
            },
        )?;
        if let AuthMethod::Session { session_id } = caller.method {
            self.store.delete_session(session_id).await?;
        }
        tracing::info!(userId = %user.id, "guest account upgraded to a full account");
        self.start_session(user).await
    }

    /// Deletes at most `limit` guests idle past the guest idle time whose sessions are gone.
    pub async fn purge_idle_guests(&self, limit: u32) -> Result<u64, Error> {
        let cutoff = self.clock.now() - self.settings.guest_idle_ttl;
        Ok(self.store.delete_idle_guests(cutoff, limit).await?)
    }
}

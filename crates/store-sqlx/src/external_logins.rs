//! Sign-ins with external identity providers: pending logins between the redirect and the
//! callback, and the links from an issuer's subject to an account. Taking a pending login is one
//! `DELETE … RETURNING` statement (inside `BEGIN IMMEDIATE` in SQLite, so of two concurrent takes
//! only the first finds the row; in PostgreSQL a concurrent take waits for the row lock, then
//! finds the row gone). Unlinking checks that the account keeps a way to sign in and deletes in
//! one statement inside a write transaction that first locks the account's row in PostgreSQL
//! (`for no key update`, which foreign key checks do not wait for; SQLite's `BEGIN IMMEDIATE`
//! already excludes every other writer), so two unlinks of one account's last links take turns
//! and the second, in a new snapshot, sees the first one's link gone.

use async_trait::async_trait;
use shop::accounts::{Email, ExternalIdentity, NewUser, PendingExternalLogin, User};
use shop::jobs::NewJob;
use shop::ports::ExternalLoginRepository;
use shop::secrets::SecretHash;
use shop::{Conflict, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::accounts::{UserRow, insert_user_row, user_columns};
use crate::codec::{Timestamp, corrupt, error, error_with_foreign_key};
use crate::dialect::Dialect;
use crate::exec::{Executor as _, Statement, Transaction, sql};
use crate::jobs::insert_job;

#[derive(FromRow)]
struct PendingExternalLoginRow {
    handle_hash: Vec<u8>,
    provider: String,
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    created_at: Timestamp,
    expires_at: Timestamp,
}

impl PendingExternalLoginRow {
    fn into_pending_login(self) -> Result<PendingExternalLogin, StoreError> {
        let handle_hash = SecretHash::from_slice(&self.handle_hash)
            .ok_or_else(|| corrupt("pending login handle hash", format!("{} bytes", self.handle_hash.len())))?;
        Ok(PendingExternalLogin {
            handle_hash,
            provider: self.provider,
            state: self.state,
            nonce: self.nonce,
            pkce_verifier: self.pkce_verifier,
            return_to: self.return_to,
            created_at: self.created_at.into(),
            expires_at: self.expires_at.into(),
        })
    }
}

#[derive(FromRow)]
struct ExternalIdentityRow {
    issuer: String,
    subject: String,
    user_id: Uuid,
    email: Option<String>,
    created_at: Timestamp,
}

impl ExternalIdentityRow {
    fn into_identity(self) -> Result<ExternalIdentity, StoreError> {
        Ok(ExternalIdentity {
            issuer: self.issuer,
            subject: self.subject,
            user_id: self.user_id,
            email: self.email.as_deref().map(Email::parse).transpose().map_err(|e| corrupt("identity email", e))?,
            created_at: self.created_at.into(),
        })
    }
}

/// A link can break two rules: the subject is linked already (the primary key, which SQLite
/// names by its columns) or the user is unknown (the only foreign key, which SQLite does not
/// name).
fn identity_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    error_with_foreign_key(context, Conflict::UnknownUser)
}

/// Inserts a link inside the caller's transaction.
async fn insert_identity(tx: &mut Transaction<'_>, identity: &ExternalIdentity) -> Result<(), StoreError> {
    tx.execute(
        sql(
            "insert into external_identities (issuer, subject, user_id, email, created_at) values ($1, $2, $3, $4, $5)",
        )
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(identity.user_id)
        .bind(identity.email.as_ref().map(Email::as_str))
        .bind(identity.created_at),
    )
    .await
    .map_err(identity_error("failed to link external identity"))?;
    Ok(())
}

#[async_trait]
impl ExternalLoginRepository for SqlStore {
    async fn insert_pending_external_login(&self, login: &PendingExternalLogin) -> Result<(), StoreError> {
        let login = login.clone();
        self.execute_write(
            sql("insert into pending_external_logins \
                 (handle_hash, provider, state, nonce, pkce_verifier, return_to, created_at, expires_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(login.handle_hash.as_bytes())
            .bind(login.provider)
            .bind(login.state)
            .bind(login.nonce)
            .bind(login.pkce_verifier)
            .bind(login.return_to)
            .bind(login.created_at)
            .bind(login.expires_at),
        )
        .await?;
        Ok(())
    }

    async fn take_pending_external_login(
        &self,
        handle_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<PendingExternalLogin>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Deleted whatever its expiry: an expired login can never complete, so it is gone either way.
        let row: Option<PendingExternalLoginRow> = tx
            .fetch_optional(
                sql("delete from pending_external_logins where handle_hash = $1 \
                     returning handle_hash, provider, state, nonce, pkce_verifier, return_to, created_at, expires_at")
                .bind(handle_hash.as_bytes()),
            )
            .await
            .map_err(error("failed to take pending external login"))?;
        tx.commit().await?;
        let Some(login) = row.map(PendingExternalLoginRow::into_pending_login).transpose()? else {
            return Ok(None);
        };
        Ok((now < login.expires_at).then_some(login))
    }

    async fn purge_pending_external_logins(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from pending_external_logins where handle_hash in \
                 (select handle_hash from pending_external_logins where expires_at < $1 limit $2)")
            .bind(before)
            .bind(limit),
        )
        .await
    }

    async fn find_user_by_external_identity(&self, issuer: &str, subject: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = conn
            .fetch_optional(
                sql(concat!(
                    "select ",
                    user_columns!(),
                    " from external_identities join users on users.id = external_identities.user_id \
                     where external_identities.issuer = $1 and external_identities.subject = $2"
                ))
                .bind(issuer)
                .bind(subject),
            )
            .await
            .map_err(error("failed to find user by external identity"))?;
        Ok(row.map(UserRow::into_user).transpose()?.map(|found| found.user))
    }

    async fn link_external_identity(&self, identity: &ExternalIdentity) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        insert_identity(&mut tx, identity).await?;
        tx.commit().await
    }

    async fn insert_external_user(
        &self,
        user: &NewUser,
        email_verified_at: Option<OffsetDateTime>,
        identity: &ExternalIdentity,
        jobs: &[NewJob],
    ) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Returning early drops the transaction, which rolls back: no account without its link,
        // and no job (nor notification) without either. The link is to the account created here.
        let inserted = insert_user_row(&mut tx, user, email_verified_at).await?;
        insert_identity(&mut tx, &ExternalIdentity { user_id: inserted.id, ..identity.clone() }).await?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(inserted)
    }

    async fn list_external_identities(&self, user_id: Uuid) -> Result<Vec<ExternalIdentity>, StoreError> {
        let mut conn = self.connection().await?;
        // Byte order for the ties, as SQLite sorts text (its default collation compares bytes),
        // whatever the PostgreSQL database's collation. SQLite has no "C" collation to name.
        let select = match conn.dialect() {
            Dialect::Sqlite => {
                "select issuer, subject, user_id, email, created_at from external_identities \
                 where user_id = $1 order by created_at, issuer, subject"
            }
            Dialect::Postgres => {
                "select issuer, subject, user_id, email, created_at from external_identities \
                 where user_id = $1 order by created_at, issuer collate \"C\", subject collate \"C\""
            }
        };
        let rows: Vec<ExternalIdentityRow> =
            conn.fetch_all(sql(select).bind(user_id)).await.map_err(error("failed to list external identities"))?;
        rows.into_iter().map(ExternalIdentityRow::into_identity).collect()
    }

    async fn unlink_external_identity(
        &self,
        user_id: Uuid,
        issuer: &str,
        subject: &str,
        jobs: &[NewJob],
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Without the lock on PostgreSQL, two unlinks (each of one of the last two links) would
        // each see the other's link in their snapshot and both go. Returning early rolls the
        // transaction back.
        let lock = tx.dialect().locking("select 1 from users where id = $1", "for no key update");
        let account: Option<i32> = tx
            .fetch_optional_scalar(Statement::owned(lock).bind(user_id))
            .await
            .map_err(error("failed to lock user for unlinking"))?;
        if account.is_none() {
            return Err(StoreError::NotFound);
        }
        // A password is a PHC string (`$argon2id$…`); accounts without one hold a `!` marker.
        let deleted = tx
            .execute(
                sql("delete from external_identities where issuer = $1 and subject = $2 and user_id = $3 \
                     and (exists (select 1 from users where id = $3 and substr(password_hash, 1, 1) = '$') \
                          or exists (select 1 from external_identities as other where other.user_id = $3 \
                                     and not (other.issuer = $1 and other.subject = $2)))")
                .bind(issuer)
                .bind(subject)
                .bind(user_id),
            )
            .await
            .map_err(error("failed to unlink external identity"))?;
        if deleted == 0 {
            let linked: Option<i32> = tx
                .fetch_optional_scalar(
                    sql("select 1 from external_identities where issuer = $1 and subject = $2 and user_id = $3")
                        .bind(issuer)
                        .bind(subject)
                        .bind(user_id),
                )
                .await
                .map_err(error("failed to find external identity"))?;
            // Dropping the transaction rolls it back: nothing was written.
            return Err(match linked {
                Some(_) => StoreError::Conflict(Conflict::LastSignInMethod),
                None => StoreError::NotFound,
            });
        }
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(())
    }
}

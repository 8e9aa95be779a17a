//! Sign-ins with external identity providers in SQLite: pending logins between the redirect and
//! the callback, and the links from an issuer's subject to an account. Taking a pending login
//! is one `DELETE … RETURNING` inside `BEGIN IMMEDIATE`, so of two concurrent takes only the
//! first finds the row. Unlinking checks that the account keeps a way to sign in and deletes in
//! one statement inside `BEGIN IMMEDIATE`, so two unlinks of one account's last links take turns.

use async_trait::async_trait;
use shop::StoreError;
use shop::accounts::{Email, ExternalIdentity, LAST_SIGN_IN_METHOD, NewUser, PendingExternalLogin, User};
use shop::jobs::NewJob;
use shop::ports::ExternalLoginRepository;
use shop::secrets::SecretHash;
use sqlx::{FromRow, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::{UserRow, insert_user_row, user_columns};
use crate::codec::{corrupt, error, parse_timestamp, timestamp};
use crate::jobs::insert_job;
use crate::{SqliteStore, commit};

#[derive(FromRow)]
struct PendingExternalLoginRow {
    handle_hash: Vec<u8>,
    provider: String,
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    created_at: String,
    expires_at: String,
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
            created_at: parse_timestamp(&self.created_at)?,
            expires_at: parse_timestamp(&self.expires_at)?,
        })
    }
}

#[derive(FromRow)]
struct ExternalIdentityRow {
    issuer: String,
    subject: String,
    user_id: Uuid,
    email: Option<String>,
    created_at: String,
}

impl ExternalIdentityRow {
    fn into_identity(self) -> Result<ExternalIdentity, StoreError> {
        Ok(ExternalIdentity {
            issuer: self.issuer,
            subject: self.subject,
            user_id: self.user_id,
            email: self.email.as_deref().map(Email::parse).transpose().map_err(|e| corrupt("identity email", e))?,
            created_at: parse_timestamp(&self.created_at)?,
        })
    }
}

/// SQLite reports neither constraint's name: a unique violation names the key's columns and a
/// foreign key violation names nothing, and the user is the only foreign key. Name them as
/// PostgreSQL does.
fn identity_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |sql_error| match error(context)(sql_error) {
        StoreError::Conflict { constraint }
            if constraint == "external_identities_issuer_external_identities_subject_key" =>
        {
            StoreError::Conflict { constraint: "external_identities_pkey".into() }
        }
        StoreError::Conflict { constraint } if constraint == "foreign_key" => {
            StoreError::Conflict { constraint: "external_identities_user_id_fkey".into() }
        }
        other => other,
    }
}

/// Inserts a link inside the caller's transaction.
async fn insert_identity(conn: &mut SqliteConnection, identity: &ExternalIdentity) -> Result<(), StoreError> {
    sqlx::query("insert into external_identities (issuer, subject, user_id, email, created_at) values (?, ?, ?, ?, ?)")
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(identity.user_id)
        .bind(identity.email.as_ref().map(Email::as_str))
        .bind(timestamp(identity.created_at))
        .execute(conn)
        .await
        .map_err(identity_error("failed to link external identity"))?;
    Ok(())
}

#[async_trait]
impl ExternalLoginRepository for SqliteStore {
    async fn insert_pending_external_login(&self, login: &PendingExternalLogin) -> Result<(), StoreError> {
        let login = login.clone();
        self.execute_write(
            "insert into pending_external_logins \
             (handle_hash, provider, state, nonce, pkce_verifier, return_to, created_at, expires_at) \
             values (?, ?, ?, ?, ?, ?, ?, ?)",
            |q| {
                q.bind(login.handle_hash.as_bytes().to_vec())
                    .bind(login.provider)
                    .bind(login.state)
                    .bind(login.nonce)
                    .bind(login.pkce_verifier)
                    .bind(login.return_to)
                    .bind(timestamp(login.created_at))
                    .bind(timestamp(login.expires_at))
            },
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
        let mut tx = Self::begin_write(&mut conn).await?;
        // Deleted whatever its expiry: an expired login can never complete, so it is gone either way.
        let row: Option<PendingExternalLoginRow> = sqlx::query_as(
            "delete from pending_external_logins where handle_hash = ? \
             returning handle_hash, provider, state, nonce, pkce_verifier, return_to, created_at, expires_at",
        )
        .bind(handle_hash.as_bytes())
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("failed to take pending external login"))?;
        commit(tx).await?;
        let Some(login) = row.map(PendingExternalLoginRow::into_pending_login).transpose()? else {
            return Ok(None);
        };
        Ok((now < login.expires_at).then_some(login))
    }

    async fn purge_pending_external_logins(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from pending_external_logins where handle_hash in \
             (select handle_hash from pending_external_logins where expires_at < ?1 limit ?2)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }

    async fn find_user_by_external_identity(&self, issuer: &str, subject: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "select ",
            user_columns!(),
            " from external_identities join users on users.id = external_identities.user_id \
             where external_identities.issuer = ? and external_identities.subject = ?"
        ))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await
        .map_err(error("failed to find user by external identity"))?;
        Ok(row.map(UserRow::into_user).transpose()?.map(|found| found.user))
    }

    async fn link_external_identity(&self, identity: &ExternalIdentity) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        insert_identity(&mut tx, identity).await?;
        commit(tx).await
    }

    async fn insert_external_user(
        &self,
        user: &NewUser,
        email_verified_at: Option<OffsetDateTime>,
        identity: &ExternalIdentity,
        jobs: &[NewJob],
    ) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        // Returning early drops the transaction, which rolls back: no account without its link,
        // and no job without either. The link is to the account created here.
        let inserted = insert_user_row(&mut tx, user, email_verified_at).await?;
        insert_identity(&mut tx, &ExternalIdentity { user_id: inserted.id, ..identity.clone() }).await?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(inserted)
    }

    async fn list_external_identities(&self, user_id: Uuid) -> Result<Vec<ExternalIdentity>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<ExternalIdentityRow> = sqlx::query_as(
            "select issuer, subject, user_id, email, created_at from external_identities \
             where user_id = ? order by created_at, issuer, subject",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to list external identities"))?;
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
        let mut tx = Self::begin_write(&mut conn).await?;
        // A password is a PHC string (`$argon2id$…`); accounts without one hold a `!` marker.
        let deleted = sqlx::query(
            "delete from external_identities where issuer = ?1 and subject = ?2 and user_id = ?3 \
             and (exists (select 1 from users where id = ?3 and substr(password_hash, 1, 1) = '$') \
                  or exists (select 1 from external_identities as other where other.user_id = ?3 \
                             and not (other.issuer = ?1 and other.subject = ?2)))",
        )
        .bind(issuer)
        .bind(subject)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(error("failed to unlink external identity"))?
        .rows_affected();
        if deleted == 0 {
            let linked: Option<i64> = sqlx::query_scalar(
                "select 1 from external_identities where issuer = ? and subject = ? and user_id = ?",
            )
            .bind(issuer)
            .bind(subject)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(error("failed to find external identity"))?;
            // Dropping the transaction rolls it back: nothing was written.
            return Err(match linked {
                Some(_) => StoreError::Conflict { constraint: LAST_SIGN_IN_METHOD.into() },
                None => StoreError::NotFound,
            });
        }
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(())
    }
}

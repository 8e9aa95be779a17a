//! Sign-ins with external identity providers in PostgreSQL: pending logins between the redirect
//! and the callback, and the links from an issuer's subject to an account. Taking a pending
//! login is one `DELETE … RETURNING` statement: a concurrent take waits for the row lock, then
//! finds the row gone. Unlinking first locks the account's row (`for no key update`, which
//! foreign key checks do not wait for), so two unlinks of one account's last links take turns and
//! the second, in a new snapshot, sees the first one's link gone.

use async_trait::async_trait;
use shop::StoreError;
use shop::accounts::{Email, ExternalIdentity, LAST_SIGN_IN_METHOD, NewUser, PendingExternalLogin, User};
use shop::jobs::NewJob;
use shop::ports::ExternalLoginRepository;
use shop::secrets::SecretHash;
use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PostgresStore;
use crate::accounts::{UserRow, insert_user_row, user_columns};
use crate::codec::{corrupt, error};
use crate::jobs::{begin, commit, insert_job};

#[derive(FromRow)]
struct PendingExternalLoginRow {
    handle_hash: Vec<u8>,
    provider: String,
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
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
            created_at: self.created_at,
            expires_at: self.expires_at,
        })
    }
}

#[derive(FromRow)]
struct ExternalIdentityRow {
    issuer: String,
    subject: String,
    user_id: Uuid,
    email: Option<String>,
    created_at: OffsetDateTime,
}

impl ExternalIdentityRow {
    fn into_identity(self) -> Result<ExternalIdentity, StoreError> {
        Ok(ExternalIdentity {
            issuer: self.issuer,
            subject: self.subject,
            user_id: self.user_id,
            email: self.email.as_deref().map(Email::parse).transpose().map_err(|e| corrupt("identity email", e))?,
            created_at: self.created_at,
        })
    }
}

/// Inserts a link inside the caller's transaction (or on its own). The schema names both
/// constraints it can break, `external_identities_pkey` and `external_identities_user_id_fkey`.
async fn insert_identity(conn: &mut PgConnection, identity: &ExternalIdentity) -> Result<(), StoreError> {
    sqlx::query(
        "insert into external_identities (issuer, subject, user_id, email, created_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(&identity.issuer)
    .bind(&identity.subject)
    .bind(identity.user_id)
    .bind(identity.email.as_ref().map(Email::as_str))
    .bind(identity.created_at)
    .execute(conn)
    .await
    .map_err(error("failed to link external identity"))?;
    Ok(())
}

#[async_trait]
impl ExternalLoginRepository for PostgresStore {
    async fn insert_pending_external_login(&self, login: &PendingExternalLogin) -> Result<(), StoreError> {
        let login = login.clone();
        self.execute(
            "insert into pending_external_logins \
             (handle_hash, provider, state, nonce, pkce_verifier, return_to, created_at, expires_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
            |q| {
                q.bind(login.handle_hash.as_bytes().to_vec())
                    .bind(login.provider)
                    .bind(login.state)
                    .bind(login.nonce)
                    .bind(login.pkce_verifier)
                    .bind(login.return_to)
                    .bind(login.created_at)
                    .bind(login.expires_at)
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
        // Deleted whatever its expiry: an expired login can never complete, so it is gone either way.
        let row: Option<PendingExternalLoginRow> = sqlx::query_as(
            "delete from pending_external_logins where handle_hash = $1 \
             returning handle_hash, provider, state, nonce, pkce_verifier, return_to, created_at, expires_at",
        )
        .bind(handle_hash.as_bytes())
        .fetch_optional(&mut *conn)
        .await
        .map_err(error("failed to take pending external login"))?;
        let Some(login) = row.map(PendingExternalLoginRow::into_pending_login).transpose()? else {
            return Ok(None);
        };
        Ok((now < login.expires_at).then_some(login))
    }

    async fn purge_pending_external_logins(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute(
            "delete from pending_external_logins where handle_hash in \
             (select handle_hash from pending_external_logins where expires_at < $1 limit $2)",
            |q| q.bind(before).bind(i64::from(limit)),
        )
        .await
    }

    async fn find_user_by_external_identity(&self, issuer: &str, subject: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "select ",
            user_columns!(),
            " from external_identities join users on users.id = external_identities.user_id \
             where external_identities.issuer = $1 and external_identities.subject = $2"
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
        insert_identity(&mut conn, identity).await
    }

    async fn insert_external_user(
        &self,
        user: &NewUser,
        email_verified_at: Option<OffsetDateTime>,
        identity: &ExternalIdentity,
        jobs: &[NewJob],
    ) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = begin(&mut conn).await?;
        // Returning early drops the transaction, which rolls back: no account without its link,
        // and no job (nor notification) without either. The link is to the account created here.
        let inserted = insert_user_row(&mut tx, user, email_verified_at).await?;
        insert_identity(&mut tx, &ExternalIdentity { user_id: inserted.id, ..identity.clone() }).await?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        Ok(inserted)
    }

    async fn list_external_identities(&self, user_id: Uuid) -> Result<Vec<ExternalIdentity>, StoreError> {
        let mut conn = self.connection().await?;
        // Byte order for the ties, as SQLite sorts text, whatever the database's collation.
        let rows: Vec<ExternalIdentityRow> = sqlx::query_as(
            "select issuer, subject, user_id, email, created_at from external_identities \
             where user_id = $1 order by created_at, issuer collate \"C\", subject collate \"C\"",
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
        let mut tx = begin(&mut conn).await?;
        // Without the lock, two unlinks (each of one of the last two links) would each see the
        // other's link in their snapshot and both go. Returning early rolls the transaction back.
        let account: Option<i32> = sqlx::query_scalar("select 1 from users where id = $1 for no key update")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(error("failed to lock user for unlinking"))?;
        if account.is_none() {
            return Err(StoreError::NotFound);
        }
        // A password is a PHC string (`$argon2id$…`); accounts without one hold a `!` marker.
        let deleted = sqlx::query(
            "delete from external_identities where issuer = $1 and subject = $2 and user_id = $3 \
             and (exists (select 1 from users where id = $3 and substr(password_hash, 1, 1) = '$') \
                  or exists (select 1 from external_identities as other where other.user_id = $3 \
                             and not (other.issuer = $1 and other.subject = $2)))",
        )
        .bind(issuer)
        .bind(subject)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(error("failed to unlink external identity"))?
        .rows_affected();
        if deleted == 0 {
            let linked: Option<i32> = sqlx::query_scalar(
                "select 1 from external_identities where issuer = $1 and subject = $2 and user_id = $3",
            )
            .bind(issuer)
            .bind(subject)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(error("failed to find external identity"))?;
            return Err(match linked {
                Some(_) => StoreError::Conflict { constraint: LAST_SIGN_IN_METHOD.into() },
                None => StoreError::NotFound,
            });
        }
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await
    }
}

//! One-time account tokens (email verification, password reset) in SQLite. Each operation is
//! one `BEGIN IMMEDIATE` transaction, so concurrent uses of one token are serialised and only
//! the first finds it unused.

use anyhow::Context as _;
use async_trait::async_trait;
use shop::StoreError;
use shop::accounts::{NewAccountToken, TokenPurpose};
use shop::ports::AccountTokenRepository;
use shop::secrets::SecretHash;
use sqlx::{Sqlite, SqliteConnection, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{error, timestamp};
use crate::{SqliteStore, commit};

/// Marks a usable token of `purpose` as used at `now` and returns its user. A token of a
/// disabled user is not usable and stays unused.
async fn use_token(
    conn: &mut SqliteConnection,
    token_hash: &SecretHash,
    purpose: TokenPurpose,
    now: &str,
) -> Result<Option<Uuid>, StoreError> {
    sqlx::query_scalar(
        "update account_tokens set used_at = ?1 \
         where token_hash = ?2 and purpose = ?3 and used_at is null and expires_at > ?1 \
         and exists (select 1 from users where users.id = account_tokens.user_id and not users.disabled) \
         returning user_id",
    )
    .bind(now)
    .bind(token_hash.as_bytes())
    .bind(purpose.as_str())
    .fetch_optional(conn)
    .await
    .map_err(error("failed to use account token"))
}

/// Ends a transaction that found nothing to do, releasing its locks now rather than when the
/// connection is next used.
async fn roll_back(tx: Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    tx.rollback().await.context("failed to roll back").map_err(StoreError::other)
}

#[async_trait]
impl AccountTokenRepository for SqliteStore {
    async fn replace_account_token(&self, token: &NewAccountToken) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        sqlx::query("delete from account_tokens where user_id = ? and purpose = ?")
            .bind(token.user_id)
            .bind(token.purpose.as_str())
            .execute(&mut *tx)
            .await
            .map_err(error("failed to delete earlier account tokens"))?;
        sqlx::query(
            "insert into account_tokens (id, user_id, purpose, token_hash, created_at, expires_at) \
             values (?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id)
        .bind(token.user_id)
        .bind(token.purpose.as_str())
        .bind(token.token_hash.as_bytes())
        .bind(timestamp(token.created_at))
        .bind(timestamp(token.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(error("failed to insert account token"))?;
        commit(tx).await
    }

    async fn reset_password_with_token(
        &self,
        token_hash: &SecretHash,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError> {
        let now = timestamp(now);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let Some(user_id) = use_token(&mut tx, token_hash, TokenPurpose::PasswordReset, &now).await? else {
            roll_back(tx).await?;
            return Ok(None);
        };
        sqlx::query("update users set password_hash = ?, updated_at = ? where id = ?")
            .bind(password_hash)
            .bind(&now)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to set password"))?;
        // Whoever held the old password may hold a session too: sign every session out.
        sqlx::query("delete from sessions where user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to delete sessions"))?;
        commit(tx).await?;
        Ok(Some(user_id))
    }

    async fn verify_email_with_token(
        &self,
        token_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError> {
        let now = timestamp(now);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let Some(user_id) = use_token(&mut tx, token_hash, TokenPurpose::EmailVerification, &now).await? else {
            roll_back(tx).await?;
            return Ok(None);
        };
        sqlx::query(
            "update users set email_verified_at = coalesce(email_verified_at, ?1), updated_at = ?1 where id = ?2",
        )
        .bind(&now)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(error("failed to mark email as verified"))?;
        commit(tx).await?;
        Ok(Some(user_id))
    }

    async fn purge_account_tokens(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from account_tokens where id in \
             (select id from account_tokens where expires_at < ?1 or used_at < ?1 limit ?2)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }
}

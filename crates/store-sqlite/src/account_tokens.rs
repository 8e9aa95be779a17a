//! One-time account tokens (email verification, password reset, login challenge) and the known
//! devices a login challenge records, in SQLite. Each operation is one `BEGIN IMMEDIATE`
//! transaction, so concurrent uses of one token are serialised and only the first finds it
//! unused.

use async_trait::async_trait;
use shop::StoreError;
use shop::accounts::{NewAccountToken, TokenPurpose};
use shop::ports::AccountTokenRepository;
use shop::secrets::SecretHash;
use sqlx::{FromRow, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{error, timestamp};
use crate::{SqliteStore, commit, roll_back};

/// What using a token returns: its user and, for a login challenge, the device it confirms.
#[derive(FromRow)]
struct UsedToken {
    user_id: Uuid,
    device_hash: Option<Vec<u8>>,
}

/// Records a device (`?2`) as known for a user (`?1`), seen at `?3`.
const UPSERT_KNOWN_DEVICE: &str = "insert into known_devices (user_id, device_hash, created_at, last_seen_at) \
     values (?1, ?2, ?3, ?3) \
     on conflict (user_id, device_hash) do update set last_seen_at = excluded.last_seen_at";

/// Marks a usable token of `purpose` as used at `now` and returns it. A token of a disabled
/// user, or a login challenge without a device, is not usable and stays unused.
async fn use_token(
    conn: &mut SqliteConnection,
    token_hash: &SecretHash,
    purpose: TokenPurpose,
    now: &str,
) -> Result<Option<UsedToken>, StoreError> {
    sqlx::query_as(
        "update account_tokens set used_at = ?1 \
         where token_hash = ?2 and purpose = ?3 and used_at is null and expires_at > ?1 \
         and (purpose <> 'login_challenge' or device_hash is not null) \
         and exists (select 1 from users where users.id = account_tokens.user_id and not users.disabled) \
         returning user_id, device_hash",
    )
    .bind(now)
    .bind(token_hash.as_bytes())
    .bind(purpose.as_str())
    .fetch_optional(conn)
    .await
    .map_err(error("failed to use account token"))
}

#[async_trait]
impl AccountTokenRepository for SqliteStore {
    async fn replace_account_token(&self, token: &NewAccountToken) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        // A login challenge replaces only the challenge of the same device: two devices
        // signing in at once each keep a working link.
        sqlx::query("delete from account_tokens where user_id = ? and purpose = ? and (purpose <> 'login_challenge' or device_hash is ?)")
            .bind(token.user_id)
            .bind(token.purpose.as_str())
            .bind(token.device_hash.map(|hash| hash.as_bytes().to_vec()))
            .execute(&mut *tx)
            .await
            .map_err(error("failed to delete earlier account tokens"))?;
        sqlx::query(
            "insert into account_tokens (id, user_id, purpose, token_hash, created_at, expires_at, device_hash) \
             values (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id)
        .bind(token.user_id)
        .bind(token.purpose.as_str())
        .bind(token.token_hash.as_bytes())
        .bind(timestamp(token.created_at))
        .bind(timestamp(token.expires_at))
        .bind(token.device_hash.as_ref().map(SecretHash::as_bytes))
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
        let Some(UsedToken { user_id, .. }) = use_token(&mut tx, token_hash, TokenPurpose::PasswordReset, &now).await?
        else {
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
        sqlx::query("delete from api_tokens where user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to delete API tokens"))?;
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
        let Some(UsedToken { user_id, .. }) =
            use_token(&mut tx, token_hash, TokenPurpose::EmailVerification, &now).await?
        else {
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

    async fn confirm_login_challenge(
        &self,
        token_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError> {
        let now = timestamp(now);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        // use_token refuses a challenge without a device, so `device_hash` is always there; the
        // pattern only spares an unwrap.
        let Some(UsedToken { user_id, device_hash: Some(device_hash) }) =
            use_token(&mut tx, token_hash, TokenPurpose::LoginChallenge, &now).await?
        else {
            roll_back(tx).await?;
            return Ok(None);
        };
        sqlx::query(UPSERT_KNOWN_DEVICE)
            .bind(user_id)
            .bind(device_hash)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to remember device"))?;
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

    async fn purge_known_devices(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from known_devices where rowid in \
             (select rowid from known_devices where last_seen_at < ?1 limit ?2)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }

    async fn touch_known_device(
        &self,
        user_id: Uuid,
        device_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let device_hash = device_hash.as_bytes().to_vec();
        let touched = self
            .execute_write("update known_devices set last_seen_at = ?1 where user_id = ?2 and device_hash = ?3", |q| {
                q.bind(timestamp(now)).bind(user_id).bind(device_hash)
            })
            .await?;
        Ok(touched > 0)
    }

    async fn remember_device(
        &self,
        user_id: Uuid,
        device_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let device_hash = device_hash.as_bytes().to_vec();
        self.execute_write(UPSERT_KNOWN_DEVICE, |q| q.bind(user_id).bind(device_hash).bind(timestamp(now))).await?;
        Ok(())
    }
}

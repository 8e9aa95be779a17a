//! One-time account tokens (email verification, password reset, login challenge) and the known
//! devices a login challenge records. Each token operation is one write transaction. In SQLite
//! it begins with `BEGIN IMMEDIATE`, so concurrent uses of one token are serialised and only the
//! first finds it unused. In PostgreSQL every token operation locks the user's row before it
//! touches the user's tokens or devices, so replacing and using tokens of one user are serialised
//! (no two live tokens of one purpose, no deadlock between the two), and a user cannot be
//! disabled between the check and the use. Touching or remembering a device is one statement
//! that locks the device's row (and, when it inserts, key-shares the user's row, which does not
//! conflict with `for no key update`), so it never waits for a lock while holding one.

use async_trait::async_trait;
use shop::StoreError;
use shop::accounts::{NewAccountToken, TokenPurpose};
use shop::ports::AccountTokenRepository;
use shop::secrets::SecretHash;
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::error;
use crate::exec::{Executor as _, Statement, Transaction, sql};

/// Records a device (`$2`) as known for a user (`$1`), seen at `$3`.
const UPSERT_KNOWN_DEVICE: &str = "insert into known_devices (user_id, device_hash, created_at, last_seen_at) \
     values ($1, $2, $3, $3) \
     on conflict (user_id, device_hash) do update set last_seen_at = excluded.last_seen_at";

/// Locks the row of the user who owns the token with this hash (on PostgreSQL; SQLite's write
/// transaction already excludes every other writer), whatever the token's state; `None` when no
/// token has this hash.
async fn lock_token_user(tx: &mut Transaction<'_>, token_hash: &SecretHash) -> Result<Option<Uuid>, StoreError> {
    let select = tx.dialect().locking(
        "select users.id from account_tokens join users on users.id = account_tokens.user_id \
         where account_tokens.token_hash = $1",
        "for no key update of users",
    );
    tx.fetch_optional_scalar(Statement::owned(select).bind(token_hash.as_bytes()))
        .await
        .map_err(error("failed to lock the token's user"))
}

/// What using a token returns: its user and, for a login challenge, the device it confirms.
#[derive(FromRow)]
struct UsedToken {
    user_id: Uuid,
    device_hash: Option<Vec<u8>>,
}

/// Marks a usable token of `purpose` as used at `now` and returns it. A token of a disabled
/// user, or a login challenge without a device, is not usable and stays unused.
async fn use_token(
    tx: &mut Transaction<'_>,
    token_hash: &SecretHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UsedToken>, StoreError> {
    tx.fetch_optional(
        sql("update account_tokens set used_at = $1 \
             where token_hash = $2 and purpose = $3 and used_at is null and expires_at > $1 \
             and (purpose <> 'login_challenge' or device_hash is not null) \
             and exists (select 1 from users where users.id = account_tokens.user_id and not users.disabled) \
             returning user_id, device_hash")
        .bind(now)
        .bind(token_hash.as_bytes())
        .bind(purpose.as_str()),
    )
    .await
    .map_err(error("failed to use account token"))
}

/// Locks the token's user (whatever the token's state), then uses a usable token of `purpose`;
/// `None` when there is no such token (the caller rolls back: nothing changed).
async fn take_token(
    tx: &mut Transaction<'_>,
    token_hash: &SecretHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UsedToken>, StoreError> {
    if lock_token_user(tx, token_hash).await?.is_none() {
        return Ok(None);
    }
    use_token(tx, token_hash, purpose, now).await
}

#[async_trait]
impl AccountTokenRepository for SqlStore {
    async fn replace_account_token(&self, token: &NewAccountToken) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Without the lock, two concurrent replacements on PostgreSQL would each delete only the
        // tokens they can see and both insert: two live links. An unknown user locks nothing and
        // fails the foreign key below.
        let lock = tx.dialect().locking("select 1 from users where id = $1", "for no key update");
        tx.execute(Statement::owned(lock).bind(token.user_id)).await.map_err(error("failed to lock user"))?;
        // A login challenge replaces only the challenge of the same device: two devices
        // signing in at once each keep a working link.
        tx.execute(
            sql("delete from account_tokens where user_id = $1 and purpose = $2 \
                 and (purpose <> 'login_challenge' or device_hash is not distinct from $3)")
            .bind(token.user_id)
            .bind(token.purpose.as_str())
            .bind(token.device_hash.as_ref().map(SecretHash::as_bytes)),
        )
        .await
        .map_err(error("failed to delete earlier account tokens"))?;
        tx.execute(
            sql("insert into account_tokens (id, user_id, purpose, token_hash, created_at, expires_at, device_hash) \
                 values ($1, $2, $3, $4, $5, $6, $7)")
            .bind(token.id)
            .bind(token.user_id)
            .bind(token.purpose.as_str())
            .bind(token.token_hash.as_bytes())
            .bind(token.created_at)
            .bind(token.expires_at)
            .bind(token.device_hash.as_ref().map(SecretHash::as_bytes)),
        )
        .await
        .map_err(error("failed to insert account token"))?;
        tx.commit().await
    }

    async fn reset_password_with_token(
        &self,
        token_hash: &SecretHash,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let Some(UsedToken { user_id, .. }) = take_token(&mut tx, token_hash, TokenPurpose::PasswordReset, now).await?
        else {
            tx.roll_back().await?;
            return Ok(None);
        };
        tx.execute(
            sql("update users set password_hash = $1, updated_at = $2 where id = $3")
                .bind(password_hash)
                .bind(now)
                .bind(user_id),
        )
        .await
        .map_err(error("failed to set password"))?;
        // Whoever held the old password may hold a session too: sign every session out.
        tx.execute(sql("delete from sessions where user_id = $1").bind(user_id))
            .await
            .map_err(error("failed to delete sessions"))?;
        tx.execute(sql("delete from api_tokens where user_id = $1").bind(user_id))
            .await
            .map_err(error("failed to delete API tokens"))?;
        tx.commit().await?;
        self.accounts_written();
        Ok(Some(user_id))
    }

    async fn verify_email_with_token(
        &self,
        token_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let Some(UsedToken { user_id, .. }) =
            take_token(&mut tx, token_hash, TokenPurpose::EmailVerification, now).await?
        else {
            tx.roll_back().await?;
            return Ok(None);
        };
        tx.execute(
            sql("update users set email_verified_at = coalesce(email_verified_at, $1), updated_at = $1 where id = $2")
                .bind(now)
                .bind(user_id),
        )
        .await
        .map_err(error("failed to mark email as verified"))?;
        tx.commit().await?;
        self.accounts_written();
        Ok(Some(user_id))
    }

    async fn confirm_login_challenge(
        &self,
        token_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // take_token refuses a challenge without a device, so `device_hash` is always there; the
        // pattern only spares an unwrap.
        let Some(UsedToken { user_id, device_hash: Some(device_hash) }) =
            take_token(&mut tx, token_hash, TokenPurpose::LoginChallenge, now).await?
        else {
            tx.roll_back().await?;
            return Ok(None);
        };
        tx.execute(sql(UPSERT_KNOWN_DEVICE).bind(user_id).bind(device_hash).bind(now))
            .await
            .map_err(error("failed to remember device"))?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    async fn purge_account_tokens(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from account_tokens where id in \
                 (select id from account_tokens where expires_at < $1 or used_at < $1 limit $2)")
            .bind(before)
            .bind(limit),
        )
        .await
    }

    async fn purge_known_devices(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        // Keyed by (user_id, device_hash) on both (a row value, which SQLite reads too).
        self.execute_write(
            sql("delete from known_devices where (user_id, device_hash) in \
                 (select user_id, device_hash from known_devices where last_seen_at < $1 limit $2)")
            .bind(before)
            .bind(limit),
        )
        .await
    }

    async fn touch_known_device(
        &self,
        user_id: Uuid,
        device_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let touched = self
            .execute_write(
                sql("update known_devices set last_seen_at = $1 where user_id = $2 and device_hash = $3")
                    .bind(now)
                    .bind(user_id)
                    .bind(device_hash.as_bytes()),
            )
            .await?;
        Ok(touched > 0)
    }

    async fn remember_device(
        &self,
        user_id: Uuid,
        device_hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.execute_write(sql(UPSERT_KNOWN_DEVICE).bind(user_id).bind(device_hash.as_bytes()).bind(now)).await?;
        Ok(())
    }
}

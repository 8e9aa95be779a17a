//! Users, sessions and API tokens.

use async_trait::async_trait;
use shop::accounts::{
    ApiToken, Email, NewApiTokenRecord, NewSession, NewUser, PersonName, Role, Session, User, UserChanges, UserQuery,
    UserSort, UserWithPassword,
};
use shop::jobs::NewJob;
use shop::ports::{ApiTokenRepository, SessionRepository, UserRepository};
use shop::secrets::SecretHash;
use shop::{Page, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{self, Timestamp, corrupt, count, error, offset};
use crate::dialect::Dialect;
use crate::exec::{Executor as _, Statement, Transaction, Value, sql};
use crate::jobs::insert_job;

/// The columns `UserRow` reads, as a macro so queries stay `&'static str`. The role is a
/// `user_role` enum in PostgreSQL and text in SQLite: read as text on both.
macro_rules! user_columns {
    () => {
        "users.id, users.email, users.name, cast(users.role as text) as role, users.disabled, users.password_hash, \
         users.email_verified_at, users.is_guest, users.created_at, users.updated_at"
    };
}
pub(crate) use user_columns;

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    role: String,
    disabled: bool,
    password_hash: String,
    email_verified_at: Option<Timestamp>,
    is_guest: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<UserWithPassword, StoreError> {
        let user = User {
            id: self.id,
            email: Email::parse(&self.email).map_err(|e| corrupt("email", e))?,
            name: PersonName::parse(&self.name).map_err(|e| corrupt("name", e))?,
            role: Role::parse(&self.role).map_err(|e| corrupt("role", e))?,
            disabled: self.disabled,
            email_verified_at: codec::optional(self.email_verified_at),
            guest: self.is_guest,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
        };
        Ok(UserWithPassword { user, password_hash: self.password_hash })
    }
}

/// A role as a bind value (of the `user_role` enum in PostgreSQL, text in SQLite).
fn role_value(role: Option<Role>) -> Value {
    Value::label("user_role", role.map(Role::as_str))
}

/// Inserts a user inside the caller's transaction (every sign-up path: a password, a guest, an
/// identity provider), verified at `email_verified_at` if given.
pub(crate) async fn insert_user_row(
    tx: &mut Transaction<'_>,
    user: &NewUser,
    email_verified_at: Option<OffsetDateTime>,
) -> Result<User, StoreError> {
    let row: UserRow = tx
        .fetch_one(
            sql(concat!(
                "insert into users (id, email, name, role, disabled, password_hash, is_guest, email_verified_at, \
                 created_at, updated_at) values ($1, $2, $3, $4, false, $5, $6, $7, $8, $8) returning ",
                user_columns!()
            ))
            .bind(user.id)
            .bind(user.email.as_str())
            .bind(user.name.as_str())
            .bind(role_value(Some(user.role)))
            .bind(&user.password_hash)
            .bind(user.guest)
            .bind(email_verified_at)
            .bind(user.created_at),
        )
        .await
        .map_err(error("failed to insert user"))?;
    Ok(row.into_user()?.user)
}

#[async_trait]
impl UserRepository for SqlStore {
    async fn insert_user(&self, user: &NewUser, jobs: &[NewJob]) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let inserted = insert_user_row(&mut tx, user, None).await?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(inserted)
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self.find_user_with_password(id).await?.map(|found| found.user))
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<UserWithPassword>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = conn
            .fetch_optional(
                sql(concat!("select ", user_columns!(), " from users where email = $1")).bind(email.as_str()),
            )
            .await
            .map_err(error("failed to find user by email"))?;
        row.map(UserRow::into_user).transpose()
    }

    async fn find_user_with_password(&self, id: Uuid) -> Result<Option<UserWithPassword>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = conn
            .fetch_optional(sql(concat!("select ", user_columns!(), " from users where id = $1")).bind(id))
            .await
            .map_err(error("failed to find user"))?;
        row.map(UserRow::into_user).transpose()
    }

    async fn update_user(&self, id: Uuid, changes: &UserChanges, now: OffsetDateTime) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let row: Option<UserRow> = tx
            .fetch_optional(
                sql(concat!(
                    "update users set name = coalesce($1, name), role = coalesce($2, role), \
                     disabled = coalesce($3, disabled), password_hash = coalesce($4, password_hash), updated_at = $5 \
                     where id = $6 returning ",
                    user_columns!()
                ))
                .bind(changes.name.as_ref().map(PersonName::as_str))
                .bind(role_value(changes.role))
                .bind(changes.disabled)
                .bind(changes.password_hash.as_deref())
                .bind(now)
                .bind(id),
            )
            .await
            .map_err(error("failed to update user"))?;
        tx.commit().await?;
        self.accounts_written();
        Ok(row.ok_or(StoreError::NotFound)?.into_user()?.user)
    }

    async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, StoreError> {
        let mut conn = self.connection().await?;
        let dialect = conn.dialect();
        let mut count_query = Statement::owned("select count(*)".to_owned());
        push_user_filters(&mut count_query, query, dialect);
        let total: i64 = conn.fetch_scalar(count_query).await.map_err(error("failed to count users"))?;
        let mut select = Statement::owned(concat!("select ", user_columns!()).to_owned());
        push_user_filters(&mut select, query, dialect);
        let column = match query.sort_by {
            UserSort::CreatedAt => "created_at",
            UserSort::Email => "email",
        };
        let order = query.sort_order.sql();
        select.push(&format!(" order by {column} {order}, id {order} limit "));
        select.push_bind(query.page.limit()).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<UserRow> = conn.fetch_all(select).await.map_err(error("failed to list users"))?;
        let items = rows.into_iter().map(|row| row.into_user().map(|found| found.user)).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn upgrade_guest(
        &self,
        id: Uuid,
        email: &Email,
        name: &PersonName,
        password_hash: &str,
        now: OffsetDateTime,
        jobs: &[NewJob],
    ) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let row: Option<UserRow> = tx
            .fetch_optional(
                sql(concat!(
                    "update users set email = $1, name = $2, password_hash = $3, is_guest = false, updated_at = $4 \
                     where id = $5 and is_guest returning ",
                    user_columns!()
                ))
                .bind(email.as_str())
                .bind(name.as_str())
                .bind(password_hash)
                .bind(now)
                .bind(id),
            )
            .await
            .map_err(error("failed to upgrade guest"))?;
        // Returning drops the transaction, which rolls back: no job (and no notification)
        // without the upgrade.
        let row = row.ok_or(StoreError::NotFound)?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        self.accounts_written();
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(row.into_user()?.user)
    }

    async fn delete_idle_guests(&self, created_before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        // The outer is_guest is re-checked on the current row version, so a guest upgraded while
        // the statement runs is not deleted.
        // A guest who ordered stays: orders are kept, and so is their owner (on delete restrict).
        self.accounts_write(
            sql("delete from users where is_guest and id in \
                 (select id from users where is_guest and created_at < $1 \
                  and not exists (select 1 from sessions where sessions.user_id = users.id \
                                  and sessions.last_seen_at >= $1) \
                  and not exists (select 1 from orders where orders.user_id = users.id) limit $2)")
            .bind(created_before)
            .bind(limit),
        )
        .await
        .map_err(|error| match error {
            // A guest ordered between the check and the delete: its order's foreign key refuses
            // the delete (PostgreSQL names it, SQLite does not), and the next purge tries again.
            StoreError::Conflict(_) => {
                StoreError::other(anyhow::anyhow!("a guest being deleted placed an order meanwhile"))
            }
            other => other,
        })
    }
}

fn push_user_filters(statement: &mut Statement, query: &UserQuery, dialect: Dialect) {
    statement.push(" from users where 1 = 1");
    if let Some(role) = query.role {
        statement.push(" and role = ").push_bind(role_value(Some(role)));
    }
    if let Some(fragment) = &query.email_contains {
        // The same function (1-based position of the fragment, 0 if absent) under two names.
        let position = match dialect {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        };
        statement.push(" and ").push(position).push("(email, ").push_bind(fragment.to_lowercase()).push(") > 0");
    }
    if let Some(disabled) = query.disabled {
        statement.push(" and disabled = ").push_bind(disabled);
    }
}

#[derive(FromRow)]
struct SessionRow {
    session_id: Uuid,
    session_created_at: Timestamp,
    last_seen_at: Timestamp,
    expires_at: Timestamp,
    #[sqlx(flatten)]
    user: UserRow,
}

#[async_trait]
impl SessionRepository for SqlStore {
    async fn insert_session(&self, session: &NewSession) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        tx.execute(
            sql("insert into sessions (id, token_hash, user_id, created_at, updated_at, last_seen_at, expires_at) \
                 values ($1, $2, $3, $4, $4, $4, $5)")
            .bind(session.id)
            .bind(session.token_hash.as_bytes())
            .bind(session.user_id)
            .bind(session.created_at)
            .bind(session.expires_at),
        )
        .await
        .map_err(error("failed to insert session"))?;
        tx.commit().await
    }

    async fn find_session(&self, token_hash: &SecretHash) -> Result<Option<(Session, User)>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<SessionRow> = conn
            .fetch_optional(
                sql(concat!(
                    "select sessions.id as session_id, sessions.created_at as session_created_at, \
                     sessions.last_seen_at, sessions.expires_at, ",
                    user_columns!(),
                    " from sessions join users on users.id = sessions.user_id where sessions.token_hash = $1"
                ))
                .bind(token_hash.as_bytes()),
            )
            .await
            .map_err(error("failed to find session"))?;
        let Some(row) = row else { return Ok(None) };
        let user = row.user.into_user()?.user;
        let session = Session {
            id: row.session_id,
            user_id: user.id,
            created_at: row.session_created_at.into(),
            last_seen_at: row.last_seen_at.into(),
            expires_at: row.expires_at.into(),
        };
        Ok(Some((session, user)))
    }

    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        self.execute_write(
            sql("update sessions set last_seen_at = $1, updated_at = $1 where id = $2").bind(at).bind(id),
        )
        .await
        .map(|_| ())
    }

    async fn delete_session(&self, id: Uuid) -> Result<(), StoreError> {
        self.accounts_write(sql("delete from sessions where id = $1").bind(id)).await.map(|_| ())
    }

    async fn delete_user_sessions(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<u64, StoreError> {
        self.accounts_write(
            sql("delete from sessions where user_id = $1 and ($2 is null or id <> $2)").bind(user_id).bind(keep),
        )
        .await
    }

    async fn list_user_sessions(&self, user_id: Uuid, limit: u32) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<(Uuid, Timestamp, Timestamp, Timestamp)> = conn
            .fetch_all(
                sql("select id, created_at, last_seen_at, expires_at from sessions where user_id = $1 \
                     order by last_seen_at desc, id desc limit $2")
                .bind(user_id)
                .bind(limit),
            )
            .await
            .map_err(error("failed to list sessions"))?;
        Ok(rows
            .into_iter()
            .map(|(id, created_at, last_seen_at, expires_at)| Session {
                id,
                user_id,
                created_at: created_at.into(),
                last_seen_at: last_seen_at.into(),
                expires_at: expires_at.into(),
            })
            .collect())
    }

    async fn end_user_sessions(&self, user_id: Uuid, audit: &shop::audit::AuditContext) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let ended = tx
            .execute(sql("delete from sessions where user_id = $1").bind(user_id))
            .await
            .map_err(error("failed to end sessions"))?;
        let record = crate::flags::AuditRecord {
            action: "sessions.end",
            target: format!("user:{user_id}"),
            before: Some(serde_json::json!({ "sessions": ended })),
            after: Some(serde_json::json!({ "sessions": 0 })),
        };
        crate::flags::record_audit(&mut tx, audit, record).await?;
        tx.commit().await?;
        self.accounts_written();
        Ok(ended)
    }

    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.accounts_write(
            sql("delete from sessions where id in \
                 (select id from sessions where expires_at <= $1 or last_seen_at <= $2 limit $3)")
            .bind(now)
            .bind(idle_cutoff)
            .bind(limit),
        )
        .await
    }
}

#[derive(FromRow)]
struct ApiTokenRow {
    token_id: Uuid,
    token_user_id: Uuid,
    token_name: String,
    token_created_at: Timestamp,
    token_expires_at: Option<Timestamp>,
    token_last_used_at: Option<Timestamp>,
}

macro_rules! api_token_columns {
    () => {
        "api_tokens.id as token_id, api_tokens.user_id as token_user_id, api_tokens.name as token_name, \
         api_tokens.created_at as token_created_at, api_tokens.expires_at as token_expires_at, \
         api_tokens.last_used_at as token_last_used_at"
    };
}

impl ApiTokenRow {
    fn into_token(self) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            id: self.token_id,
            user_id: self.token_user_id,
            name: self.token_name,
            created_at: self.token_created_at.into(),
            expires_at: codec::optional(self.token_expires_at),
            last_used_at: codec::optional(self.token_last_used_at),
        })
    }
}

#[derive(FromRow)]
struct ApiTokenWithUserRow {
    #[sqlx(flatten)]
    token: ApiTokenRow,
    #[sqlx(flatten)]
    user: UserRow,
}

#[async_trait]
impl ApiTokenRepository for SqlStore {
    async fn insert_api_token(&self, token: &NewApiTokenRecord) -> Result<ApiToken, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let row: ApiTokenRow = tx
            .fetch_one(
                sql(concat!(
                    "insert into api_tokens (id, user_id, name, token_hash, created_at, updated_at, expires_at) \
                     values ($1, $2, $3, $4, $5, $5, $6) returning ",
                    api_token_columns!()
                ))
                .bind(token.id)
                .bind(token.user_id)
                .bind(&token.name)
                .bind(token.token_hash.as_bytes())
                .bind(token.created_at)
                .bind(token.expires_at),
            )
            .await
            .map_err(error("failed to insert API token"))?;
        tx.commit().await?;
        row.into_token()
    }

    async fn find_api_token(&self, token_hash: &SecretHash) -> Result<Option<(ApiToken, User)>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<ApiTokenWithUserRow> = conn
            .fetch_optional(
                sql(concat!(
                    "select ",
                    api_token_columns!(),
                    ", ",
                    user_columns!(),
                    " from api_tokens join users on users.id = api_tokens.user_id where api_tokens.token_hash = $1"
                ))
                .bind(token_hash.as_bytes()),
            )
            .await
            .map_err(error("failed to find API token"))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((row.token.into_token()?, row.user.into_user()?.user)))
    }

    async fn touch_api_token(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        self.execute_write(
            sql("update api_tokens set last_used_at = $1, updated_at = $1 where id = $2").bind(at).bind(id),
        )
        .await
        .map(|_| ())
    }

    async fn list_api_tokens(&self, user_id: Uuid) -> Result<Vec<ApiToken>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<ApiTokenRow> = conn
            .fetch_all(
                sql(concat!(
                    "select ",
                    api_token_columns!(),
                    " from api_tokens where user_id = $1 order by created_at desc, id desc limit 100"
                ))
                .bind(user_id),
            )
            .await
            .map_err(error("failed to list API tokens"))?;
        rows.into_iter().map(ApiTokenRow::into_token).collect()
    }

    async fn delete_api_token(&self, user_id: Uuid, id: Uuid) -> Result<(), StoreError> {
        let deleted = self
            .accounts_write(sql("delete from api_tokens where id = $1 and user_id = $2").bind(id).bind(user_id))
            .await?;
        if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

//! Users, sessions and API tokens in SQLite.

use async_trait::async_trait;
use shop::accounts::{
    ApiToken, Email, NewApiTokenRecord, NewSession, NewUser, PersonName, Role, Session, User, UserChanges, UserQuery,
    UserSort, UserWithPassword,
};
use shop::jobs::NewJob;
use shop::ports::{ApiTokenRepository, SessionRepository, UserRepository};
use shop::secrets::SecretHash;
use shop::{Page, StoreError};
use sqlx::{FromRow, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{corrupt, count, error, offset, parse_optional_timestamp, parse_timestamp, timestamp};
use crate::jobs::insert_job;
use crate::{SqliteStore, commit};

/// The columns `UserRow` reads, as a macro so queries stay `&'static str` (sqlx's `SqlSafeStr`).
macro_rules! user_columns {
    () => {
        "users.id, users.email, users.name, users.role, users.disabled, users.password_hash, \
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
    email_verified_at: Option<String>,
    is_guest: bool,
    created_at: String,
    updated_at: String,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<UserWithPassword, StoreError> {
        let user = User {
            id: self.id,
            email: Email::parse(&self.email).map_err(|e| corrupt("email", e))?,
            name: PersonName::parse(&self.name).map_err(|e| corrupt("name", e))?,
            role: Role::parse(&self.role).map_err(|e| corrupt("role", e))?,
            disabled: self.disabled,
            email_verified_at: parse_optional_timestamp(self.email_verified_at.as_deref())?,
            guest: self.is_guest,
            created_at: parse_timestamp(&self.created_at)?,
            updated_at: parse_timestamp(&self.updated_at)?,
        };
        Ok(UserWithPassword { user, password_hash: self.password_hash })
    }
}

/// Inserts a user inside the caller's transaction (every sign-up path: a password, a guest, an
/// identity provider), verified at `email_verified_at` if given.
pub(crate) async fn insert_user_row(
    conn: &mut SqliteConnection,
    user: &NewUser,
    email_verified_at: Option<OffsetDateTime>,
) -> Result<User, StoreError> {
    let row: UserRow = sqlx::query_as(concat!(
        "insert into users (id, email, name, role, disabled, password_hash, is_guest, email_verified_at, \
         created_at, updated_at) values (?, ?, ?, ?, 0, ?, ?, ?, ?, ?) returning ",
        user_columns!()
    ))
    .bind(user.id)
    .bind(user.email.as_str())
    .bind(user.name.as_str())
    .bind(user.role.as_str())
    .bind(&user.password_hash)
    .bind(user.guest)
    .bind(email_verified_at.map(timestamp))
    .bind(timestamp(user.created_at))
    .bind(timestamp(user.created_at))
    .fetch_one(conn)
    .await
    .map_err(error("failed to insert user"))?;
    Ok(row.into_user()?.user)
}

#[async_trait]
impl UserRepository for SqliteStore {
    async fn insert_user(&self, user: &NewUser, jobs: &[NewJob]) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let inserted = insert_user_row(&mut tx, user, None).await?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(inserted)
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self.find_user_with_password(id).await?.map(|found| found.user))
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<UserWithPassword>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = sqlx::query_as(concat!("select ", user_columns!(), " from users where email = ?"))
            .bind(email.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(error("failed to find user by email"))?;
        row.map(UserRow::into_user).transpose()
    }

    async fn find_user_with_password(&self, id: Uuid) -> Result<Option<UserWithPassword>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<UserRow> = sqlx::query_as(concat!("select ", user_columns!(), " from users where id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(error("failed to find user"))?;
        row.map(UserRow::into_user).transpose()
    }

    async fn update_user(&self, id: Uuid, changes: &UserChanges, now: OffsetDateTime) -> Result<User, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "update users set name = coalesce(?, name), role = coalesce(?, role), \
             disabled = coalesce(?, disabled), password_hash = coalesce(?, password_hash), updated_at = ? \
             where id = ? returning ",
            user_columns!()
        ))
        .bind(changes.name.as_ref().map(PersonName::as_str))
        .bind(changes.role.map(Role::as_str))
        .bind(changes.disabled)
        .bind(changes.password_hash.as_deref())
        .bind(timestamp(now))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("failed to update user"))?;
        commit(tx).await?;
        Ok(row.ok_or(StoreError::NotFound)?.into_user()?.user)
    }

    async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("select count(*)");
        push_user_filters(&mut count_query, query);
        let total: i64 =
            count_query.build_query_scalar().fetch_one(&mut *conn).await.map_err(error("failed to count users"))?;
        let mut select = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!("select ", user_columns!()));
        push_user_filters(&mut select, query);
        let column = match query.sort_by {
            UserSort::CreatedAt => "created_at",
            UserSort::Email => "email",
        };
        let order = query.sort_order.sql();
        select.push(format_args!(" order by {column} {order}, id {order} limit "));
        select.push_bind(i64::from(query.page.limit())).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<UserRow> =
            select.build_query_as().fetch_all(&mut *conn).await.map_err(error("failed to list users"))?;
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
        let mut tx = Self::begin_write(&mut conn).await?;
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "update users set email = ?, name = ?, password_hash = ?, is_guest = 0, updated_at = ? \
             where id = ? and is_guest = 1 returning ",
            user_columns!()
        ))
        .bind(email.as_str())
        .bind(name.as_str())
        .bind(password_hash)
        .bind(timestamp(now))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("failed to upgrade guest"))?;
        // Returning drops the transaction, which rolls back: no job without the upgrade.
        let row = row.ok_or(StoreError::NotFound)?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        self.announce_jobs(jobs.iter().map(|job| job.queue.as_str()));
        Ok(row.into_user()?.user)
    }

    async fn delete_idle_guests(&self, created_before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        // A guest who ordered stays: orders are kept, and so is their owner (on delete restrict).
        self.execute_write(
            "delete from users where is_guest = 1 and id in \
             (select id from users where is_guest = 1 and created_at < ?1 \
              and not exists (select 1 from sessions where sessions.user_id = users.id \
                              and sessions.last_seen_at >= ?1) \
              and not exists (select 1 from orders where orders.user_id = users.id) limit ?2)",
            |q| q.bind(timestamp(created_before)).bind(i64::from(limit)),
        )
        .await
    }
}

fn push_user_filters(builder: &mut sqlx::QueryBuilder<sqlx::Sqlite>, query: &UserQuery) {
    builder.push(" from users where 1 = 1");
    if let Some(role) = query.role {
        builder.push(" and role = ").push_bind(role.as_str());
    }
    if let Some(fragment) = &query.email_contains {
        builder.push(" and instr(email, ").push_bind(fragment.to_lowercase()).push(") > 0");
    }
    if let Some(disabled) = query.disabled {
        builder.push(" and disabled = ").push_bind(disabled);
    }
}

#[derive(FromRow)]
struct SessionRow {
    session_id: Uuid,
    session_created_at: String,
    last_seen_at: String,
    expires_at: String,
    #[sqlx(flatten)]
    user: UserRow,
}

#[async_trait]
impl SessionRepository for SqliteStore {
    async fn insert_session(&self, session: &NewSession) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let created_at = timestamp(session.created_at);
        sqlx::query(
            "insert into sessions (id, token_hash, user_id, created_at, updated_at, last_seen_at, expires_at) \
             values (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(session.id)
        .bind(session.token_hash.as_bytes())
        .bind(session.user_id)
        .bind(&created_at)
        .bind(&created_at)
        .bind(&created_at)
        .bind(timestamp(session.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(error("failed to insert session"))?;
        commit(tx).await
    }

    async fn find_session(&self, token_hash: &SecretHash) -> Result<Option<(Session, User)>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<SessionRow> = sqlx::query_as(concat!(
            "select sessions.id as session_id, sessions.created_at as session_created_at, sessions.last_seen_at, \
             sessions.expires_at, ",
            user_columns!(),
            " \
             from sessions join users on users.id = sessions.user_id where sessions.token_hash = ?"
        ))
        .bind(token_hash.as_bytes())
        .fetch_optional(&mut *conn)
        .await
        .map_err(error("failed to find session"))?;
        let Some(row) = row else { return Ok(None) };
        let user = row.user.into_user()?.user;
        let session = Session {
            id: row.session_id,
            user_id: user.id,
            created_at: parse_timestamp(&row.session_created_at)?,
            last_seen_at: parse_timestamp(&row.last_seen_at)?,
            expires_at: parse_timestamp(&row.expires_at)?,
        };
        Ok(Some((session, user)))
    }

    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        self.execute_write("update sessions set last_seen_at = ?1, updated_at = ?1 where id = ?2", |q| {
            q.bind(timestamp(at)).bind(id)
        })
        .await
        .map(|_| ())
    }

    async fn delete_session(&self, id: Uuid) -> Result<(), StoreError> {
        self.execute_write("delete from sessions where id = ?", |q| q.bind(id)).await.map(|_| ())
    }

    async fn delete_user_sessions(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<u64, StoreError> {
        self.execute_write("delete from sessions where user_id = ? and (? is null or id <> ?)", |q| {
            q.bind(user_id).bind(keep).bind(keep)
        })
        .await
    }

    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from sessions where id in \
             (select id from sessions where expires_at <= ? or last_seen_at <= ? limit ?)",
            |q| q.bind(timestamp(now)).bind(timestamp(idle_cutoff)).bind(i64::from(limit)),
        )
        .await
    }
}

#[derive(FromRow)]
struct ApiTokenRow {
    token_id: Uuid,
    token_user_id: Uuid,
    token_name: String,
    token_created_at: String,
    token_expires_at: Option<String>,
    token_last_used_at: Option<String>,
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
            created_at: parse_timestamp(&self.token_created_at)?,
            expires_at: parse_optional_timestamp(self.token_expires_at.as_deref())?,
            last_used_at: parse_optional_timestamp(self.token_last_used_at.as_deref())?,
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
impl ApiTokenRepository for SqliteStore {
    async fn insert_api_token(&self, token: &NewApiTokenRecord) -> Result<ApiToken, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let created_at = timestamp(token.created_at);
        let row: ApiTokenRow = sqlx::query_as(concat!(
            "insert into api_tokens (id, user_id, name, token_hash, created_at, updated_at, expires_at) \
             values (?, ?, ?, ?, ?, ?, ?) returning ",
            api_token_columns!()
        ))
        .bind(token.id)
        .bind(token.user_id)
        .bind(&token.name)
        .bind(token.token_hash.as_bytes())
        .bind(&created_at)
        .bind(&created_at)
        .bind(token.expires_at.map(timestamp))
        .fetch_one(&mut *tx)
        .await
        .map_err(error("failed to insert API token"))?;
        commit(tx).await?;
        row.into_token()
    }

    async fn find_api_token(&self, token_hash: &SecretHash) -> Result<Option<(ApiToken, User)>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<ApiTokenWithUserRow> = sqlx::query_as(concat!(
            "select ",
            api_token_columns!(),
            ", ",
            user_columns!(),
            " \
             from api_tokens join users on users.id = api_tokens.user_id where api_tokens.token_hash = ?"
        ))
        .bind(token_hash.as_bytes())
        .fetch_optional(&mut *conn)
        .await
        .map_err(error("failed to find API token"))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((row.token.into_token()?, row.user.into_user()?.user)))
    }

    async fn touch_api_token(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        self.execute_write("update api_tokens set last_used_at = ?1, updated_at = ?1 where id = ?2", |q| {
            q.bind(timestamp(at)).bind(id)
        })
        .await
        .map(|_| ())
    }

    async fn list_api_tokens(&self, user_id: Uuid) -> Result<Vec<ApiToken>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<ApiTokenRow> = sqlx::query_as(concat!(
            "select ",
            api_token_columns!(),
            " from api_tokens where user_id = ? order by created_at desc, id desc limit 100"
        ))
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to list API tokens"))?;
        rows.into_iter().map(ApiTokenRow::into_token).collect()
    }

    async fn delete_api_token(&self, user_id: Uuid, id: Uuid) -> Result<(), StoreError> {
        let deleted = self
            .execute_write("delete from api_tokens where id = ? and user_id = ?", |q| q.bind(id).bind(user_id))
            .await?;
        if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

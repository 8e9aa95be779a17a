//! Idempotency keys in SQLite. Starting a request is an `INSERT … ON CONFLICT DO NOTHING` and,
//! when the key exists, a read and possibly a takeover of an expired lock, all in one
//! `BEGIN IMMEDIATE` transaction: of concurrent starts exactly one goes ahead.

use async_trait::async_trait;
use shop::StoreError;
use shop::orders::{IdempotencyBegin, IdempotencyRecord, IdempotencyState, PaymentEventRecord, SavedResponse};
use shop::ports::IdempotencyRepository;
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{corrupt, error, parse_timestamp, timestamp};
use crate::{SqliteStore, commit};

macro_rules! idempotency_columns {
    () => {
        "user_id, scope, key, request_hash, state, locked_until, response_status, response_body, \
         response_location, order_id, created_at, expires_at"
    };
}

#[derive(FromRow)]
struct IdempotencyRow {
    user_id: Uuid,
    scope: String,
    key: String,
    request_hash: Vec<u8>,
    state: String,
    locked_until: Option<String>,
    response_status: Option<i64>,
    response_body: Option<String>,
    response_location: Option<String>,
    order_id: Option<Uuid>,
    created_at: String,
    expires_at: String,
}

impl IdempotencyRow {
    fn into_record(self) -> Result<IdempotencyRecord, StoreError> {
        let state = match (self.state.as_str(), self.locked_until, self.response_status, self.response_body) {
            ("in_progress", Some(locked_until), _, _) => {
                IdempotencyState::InProgress { locked_until: parse_timestamp(&locked_until)? }
            }
            ("completed", _, Some(status), Some(body)) => IdempotencyState::Completed(SavedResponse {
                status: u16::try_from(status).map_err(|e| corrupt("response status", e.to_string()))?,
                body,
                location: self.response_location,
            }),
            (state, ..) => return Err(corrupt("idempotency state", state.to_owned())),
        };
        Ok(IdempotencyRecord {
            user_id: self.user_id,
            scope: self.scope,
            key: self.key,
            request_hash: self
                .request_hash
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("request hash", format!("{} bytes", self.request_hash.len())))?,
            state,
            order_id: self.order_id,
            created_at: parse_timestamp(&self.created_at)?,
            expires_at: parse_timestamp(&self.expires_at)?,
        })
    }
}

/// The state columns of a record: state, lock, response status, body and location.
type StateColumns<'a> = (&'static str, Option<String>, Option<i64>, Option<&'a str>, Option<&'a str>);

fn state_columns(state: &IdempotencyState) -> StateColumns<'_> {
    match state {
        IdempotencyState::InProgress { locked_until } => {
            ("in_progress", Some(timestamp(*locked_until)), None, None, None)
        }
        IdempotencyState::Completed(response) => (
            "completed",
            None,
            Some(i64::from(response.status)),
            Some(response.body.as_str()),
            response.location.as_deref(),
        ),
    }
}

#[async_trait]
impl IdempotencyRepository for SqliteStore {
    async fn begin_idempotent(
        &self,
        record: &IdempotencyRecord,
        now: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError> {
        let (state, locked_until, status, body, location) = state_columns(&record.state);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let inserted = sqlx::query(
            "insert into idempotency_records (user_id, scope, key, request_hash, state, locked_until, \
             response_status, response_body, response_location, order_id, created_at, expires_at) \
             values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict do nothing",
        )
        .bind(record.user_id)
        .bind(&record.scope)
        .bind(&record.key)
        .bind(record.request_hash.as_slice())
        .bind(state)
        .bind(locked_until.as_deref())
        .bind(status)
        .bind(body)
        .bind(location)
        .bind(record.order_id)
        .bind(timestamp(record.created_at))
        .bind(timestamp(record.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(error("failed to start idempotent request"))?
        .rows_affected();
        if inserted == 1 {
            commit(tx).await?;
            return Ok(IdempotencyBegin::Started);
        }
        let existing: IdempotencyRow = sqlx::query_as(concat!(
            "select ",
            idempotency_columns!(),
            " from idempotency_records where user_id = ? and scope = ? and key = ?"
        ))
        .bind(record.user_id)
        .bind(&record.scope)
        .bind(&record.key)
        .fetch_one(&mut *tx)
        .await
        .map_err(error("failed to read idempotency record"))?;
        let now = timestamp(now);
        let expired_lock = match (&existing.state[..], &existing.locked_until) {
            ("in_progress", Some(held_until)) if *held_until < now => Some(held_until.clone()),
            _ => None,
        };
        let (Some(held_until), Some(new_lock)) = (expired_lock, locked_until) else {
            commit(tx).await?;
            return Ok(IdempotencyBegin::Existing(existing.into_record()?));
        };
        // Conditional on the lock read, as the PostgreSQL adapter does; the write lock makes it
        // hold here.
        let resumed: Option<IdempotencyRow> = sqlx::query_as(concat!(
            "update idempotency_records set locked_until = ? where user_id = ? and scope = ? and key = ? \
             and state = 'in_progress' and locked_until = ? returning ",
            idempotency_columns!()
        ))
        .bind(&new_lock)
        .bind(record.user_id)
        .bind(&record.scope)
        .bind(&record.key)
        .bind(&held_until)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("failed to take over idempotent request"))?;
        commit(tx).await?;
        match resumed {
            Some(row) => Ok(IdempotencyBegin::Resumed(row.into_record()?)),
            None => Ok(IdempotencyBegin::Existing(existing.into_record()?)),
        }
    }

    async fn complete_idempotent(
        &self,
        user_id: Uuid,
        scope: &str,
        key: &str,
        response: &SavedResponse,
    ) -> Result<(), StoreError> {
        let (scope, key, response) = (scope.to_owned(), key.to_owned(), response.clone());
        self.execute_write(
            "update idempotency_records set state = 'completed', locked_until = null, response_status = ?, \
             response_body = ?, response_location = ? where user_id = ? and scope = ? and key = ?",
            |q| {
                q.bind(i64::from(response.status))
                    .bind(response.body)
                    .bind(response.location)
                    .bind(user_id)
                    .bind(scope)
                    .bind(key)
            },
        )
        .await
        .map(|_| ())
    }

    async fn release_idempotent(&self, user_id: Uuid, scope: &str, key: &str) -> Result<(), StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.execute_write("delete from idempotency_records where user_id = ? and scope = ? and key = ?", |q| {
            q.bind(user_id).bind(scope).bind(key)
        })
        .await
        .map(|_| ())
    }

    async fn purge_idempotency_records(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from idempotency_records where (user_id, scope, key) in \
             (select user_id, scope, key from idempotency_records where expires_at < ? limit ?)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }

    async fn payment_event_seen(&self, provider: &str, event_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<(i64,)> = sqlx::query_as("select 1 from payment_events where provider = ? and event_id = ?")
            .bind(provider)
            .bind(event_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(error("failed to look up a payment event"))?;
        Ok(row.is_some())
    }

    async fn record_payment_event(&self, event: &PaymentEventRecord) -> Result<bool, StoreError> {
        let event = event.clone();
        let inserted = self
            .execute_write(
                "insert into payment_events (provider, event_id, event_type, order_id, outcome, received_at) \
                 values (?, ?, ?, ?, ?, ?) on conflict do nothing",
                |q| {
                    q.bind(event.provider)
                        .bind(event.event_id)
                        .bind(event.event_type)
                        .bind(event.order_id)
                        .bind(event.outcome)
                        .bind(timestamp(event.received_at))
                },
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn purge_payment_events(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from payment_events where (provider, event_id) in \
             (select provider, event_id from payment_events where received_at < ? limit ?)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }
}

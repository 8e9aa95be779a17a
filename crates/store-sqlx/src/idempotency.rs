//! Idempotency keys. Starting a request is an `INSERT … ON CONFLICT DO NOTHING` and, when the
//! key exists, a read and possibly a takeover of an expired lock, in one write transaction. On
//! SQLite (`BEGIN IMMEDIATE`) no other writer runs in between, so of concurrent starts exactly one
//! goes ahead. On PostgreSQL, of concurrent inserts of one key exactly one inserts, the others
//! wait for it and then find the row; taking over an expired lock is an update conditional on
//! the lock that was read, so of concurrent takeovers exactly one wins.

use async_trait::async_trait;
use shop::StoreError;
use shop::orders::{CheckoutResult, IdempotencyBegin, IdempotencyRecord, IdempotencyState, PaymentEventRecord};
use shop::ports::IdempotencyRepository;
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, corrupt, error};
use crate::exec::{Executor as _, Transaction, sql};

/// How often a start retries when the record it conflicted with disappears (released or
/// purged) before it could be read. Only on PostgreSQL: SQLite's write transaction excludes the
/// release, so there the first attempt always finds the record.
const BEGIN_ATTEMPTS: usize = 3;

macro_rules! idempotency_columns {
    () => {
        "user_id, scope, key, request_hash, state, locked_until, outcome, order_id, created_at, expires_at"
    };
}

#[derive(FromRow)]
struct IdempotencyRow {
    user_id: Uuid,
    scope: String,
    key: String,
    request_hash: Vec<u8>,
    state: String,
    locked_until: Option<Timestamp>,
    outcome: Option<String>,
    order_id: Option<Uuid>,
    created_at: Timestamp,
    expires_at: Timestamp,
}

impl IdempotencyRow {
    fn into_record(self) -> Result<IdempotencyRecord, StoreError> {
        let state = match (self.state.as_str(), self.locked_until, self.outcome.as_deref()) {
            ("in_progress", Some(locked_until), _) => {
                IdempotencyState::InProgress { locked_until: locked_until.into() }
            }
            ("completed", _, Some(outcome)) => IdempotencyState::Completed(
                CheckoutResult::parse(outcome).ok_or_else(|| corrupt("checkout outcome", outcome.to_owned()))?,
            ),
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
            created_at: self.created_at.into(),
            expires_at: self.expires_at.into(),
        })
    }
}

/// The state columns of a record: state, lock and outcome.
fn state_columns(state: &IdempotencyState) -> (&'static str, Option<OffsetDateTime>, Option<&'static str>) {
    match state {
        IdempotencyState::InProgress { locked_until } => ("in_progress", Some(*locked_until), None),
        IdempotencyState::Completed(result) => ("completed", None, Some(result.as_str())),
    }
}

async fn find_record(
    tx: &mut Transaction<'_>,
    user_id: Uuid,
    scope: &str,
    key: &str,
) -> Result<Option<IdempotencyRow>, StoreError> {
    tx.fetch_optional(
        sql(concat!(
            "select ",
            idempotency_columns!(),
            " from idempotency_records where user_id = $1 and scope = $2 and key = $3"
        ))
        .bind(user_id)
        .bind(scope)
        .bind(key),
    )
    .await
    .map_err(error("failed to read idempotency record"))
}

#[async_trait]
impl IdempotencyRepository for SqlStore {
    async fn begin_idempotent(
        &self,
        record: &IdempotencyRecord,
        now: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError> {
        let (state, locked_until, outcome) = state_columns(&record.state);
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        for _ in 0..BEGIN_ATTEMPTS {
            let inserted = tx
                .execute(
                    sql("insert into idempotency_records (user_id, scope, key, request_hash, state, locked_until, \
                         outcome, order_id, created_at, expires_at) \
                         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict do nothing")
                    .bind(record.user_id)
                    .bind(&record.scope)
                    .bind(&record.key)
                    .bind(record.request_hash.as_slice())
                    .bind(state)
                    .bind(locked_until)
                    .bind(outcome)
                    .bind(record.order_id)
                    .bind(record.created_at)
                    .bind(record.expires_at),
                )
                .await
                .map_err(error("failed to start idempotent request"))?;
            if inserted == 1 {
                tx.commit().await?;
                return Ok(IdempotencyBegin::Started);
            }
            let Some(existing) = find_record(&mut tx, record.user_id, &record.scope, &record.key).await? else {
                continue;
            };
            let expired_lock = match (existing.state.as_str(), existing.locked_until) {
                ("in_progress", Some(held_until)) if held_until.0 < now => Some(held_until.0),
                _ => None,
            };
            let (Some(held_until), Some(new_lock)) = (expired_lock, locked_until) else {
                tx.commit().await?;
                return Ok(IdempotencyBegin::Existing(existing.into_record()?));
            };
            // Conditional on the lock read: on PostgreSQL a concurrent takeover may have won
            // meanwhile; on SQLite the write lock makes the condition hold.
            let resumed: Option<IdempotencyRow> = tx
                .fetch_optional(
                    sql(concat!(
                        "update idempotency_records set locked_until = $1 where user_id = $2 and scope = $3 \
                         and key = $4 and state = 'in_progress' and locked_until = $5 returning ",
                        idempotency_columns!()
                    ))
                    .bind(new_lock)
                    .bind(record.user_id)
                    .bind(&record.scope)
                    .bind(&record.key)
                    .bind(held_until),
                )
                .await
                .map_err(error("failed to take over idempotent request"))?;
            if let Some(row) = resumed {
                tx.commit().await?;
                return Ok(IdempotencyBegin::Resumed(row.into_record()?));
            }
            // Someone else took it over (or finished it) first.
            if let Some(current) = find_record(&mut tx, record.user_id, &record.scope, &record.key).await? {
                tx.commit().await?;
                return Ok(IdempotencyBegin::Existing(current.into_record()?));
            }
        }
        tx.roll_back().await?;
        Err(StoreError::other(anyhow::anyhow!("the idempotency record kept disappearing while starting")))
    }

    async fn complete_idempotent(
        &self,
        user_id: Uuid,
        scope: &str,
        key: &str,
        result: CheckoutResult,
        order_id: Uuid,
    ) -> Result<(), StoreError> {
        self.execute_write(
            sql("update idempotency_records set state = 'completed', locked_until = null, outcome = $1, \
                 order_id = $2 where user_id = $3 and scope = $4 and key = $5")
            .bind(result.as_str())
            .bind(order_id)
            .bind(user_id)
            .bind(scope)
            .bind(key),
        )
        .await
        .map(|_| ())
    }

    async fn release_idempotent(&self, user_id: Uuid, scope: &str, key: &str) -> Result<(), StoreError> {
        self.execute_write(
            sql("delete from idempotency_records where user_id = $1 and scope = $2 and key = $3")
                .bind(user_id)
                .bind(scope)
                .bind(key),
        )
        .await
        .map(|_| ())
    }

    async fn purge_idempotency_records(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from idempotency_records where (user_id, scope, key) in \
                 (select user_id, scope, key from idempotency_records where expires_at < $1 limit $2)")
            .bind(before)
            .bind(limit),
        )
        .await
    }

    async fn payment_event_seen(&self, provider: &str, event_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<i32> = conn
            .fetch_optional_scalar(
                sql("select 1 from payment_events where provider = $1 and event_id = $2").bind(provider).bind(event_id),
            )
            .await
            .map_err(error("failed to look up a payment event"))?;
        Ok(row.is_some())
    }

    async fn record_payment_event(&self, event: &PaymentEventRecord) -> Result<bool, StoreError> {
        let inserted = self
            .execute_write(
                sql("insert into payment_events (provider, event_id, event_type, order_id, outcome, received_at) \
                     values ($1, $2, $3, $4, $5, $6) on conflict do nothing")
                .bind(&event.provider)
                .bind(&event.event_id)
                .bind(&event.event_type)
                .bind(event.order_id)
                .bind(&event.outcome)
                .bind(event.received_at),
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn purge_payment_events(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from payment_events where (provider, event_id) in \
                 (select provider, event_id from payment_events where received_at < $1 limit $2)")
            .bind(before)
            .bind(limit),
        )
        .await
    }
}

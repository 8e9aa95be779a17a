//! Webhook endpoints and the delivery log. The endpoint limit is checked while registrations
//! are serialised (a table lock on PostgreSQL, the write lock of `BEGIN IMMEDIATE` on SQLite),
//! so concurrent registrations cannot overshoot it; every multi-statement write is one
//! transaction, so the attempt bookkeeping holds under concurrency.

use async_trait::async_trait;
use shop::jobs::NewJob;
use shop::ports::WebhookRepository;
use shop::webhooks::{
    DeliveryAttempt, DeliveryQuery, DeliveryState, WebhookDelivery, WebhookEndpoint, WebhookEndpointChanges,
    WebhookEventType, WebhookSecret,
};
use shop::{Conflict, Page, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, corrupt, count, error, offset, optional};
use crate::dialect::Dialect;
use crate::exec::{Executor, Statement, sql};
use crate::jobs::insert_job;

macro_rules! endpoint_columns {
    () => {
        "id, url, description, events, secret, disabled_at, disabled_reason, consecutive_failures, created_at, \
         updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, endpoint_id, event_id, event_type, payload, state, attempts, last_status, last_error, \
         last_attempt_at, created_at, updated_at"
    };
}

#[derive(FromRow)]
struct EndpointRow {
    id: Uuid,
    url: String,
    description: Option<String>,
    events: String,
    secret: String,
    disabled_at: Option<Timestamp>,
    disabled_reason: Option<String>,
    consecutive_failures: i32,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl EndpointRow {
    fn into_endpoint(self) -> Result<WebhookEndpoint, StoreError> {
        Ok(WebhookEndpoint {
            id: self.id,
            url: self.url,
            description: self.description,
            events: WebhookEventType::split(&self.events).ok_or_else(|| corrupt("webhook events", self.events))?,
            secret: WebhookSecret::from_stored(self.secret),
            disabled_at: optional(self.disabled_at),
            disabled_reason: self.disabled_reason,
            consecutive_failures: u32::try_from(self.consecutive_failures)
                .map_err(|e| corrupt("webhook failure count", e.to_string()))?,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
        })
    }
}

#[derive(FromRow)]
struct DeliveryRow {
    id: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    event_type: String,
    payload: String,
    state: String,
    attempts: i32,
    last_status: Option<i32>,
    last_error: Option<String>,
    last_attempt_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl DeliveryRow {
    fn into_delivery(self) -> Result<WebhookDelivery, StoreError> {
        Ok(WebhookDelivery {
            id: self.id,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            event_type: WebhookEventType::parse(&self.event_type)
                .ok_or_else(|| corrupt("webhook event type", self.event_type.clone()))?,
            payload: self.payload,
            state: DeliveryState::parse(&self.state).ok_or_else(|| corrupt("delivery state", self.state.clone()))?,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt("delivery attempts", e.to_string()))?,
            last_status: self
                .last_status
                .map(u16::try_from)
                .transpose()
                .map_err(|e| corrupt("delivery status", e.to_string()))?,
            last_error: self.last_error,
            last_attempt_at: optional(self.last_attempt_at),
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
        })
    }
}

async fn endpoint_in(conn: &mut impl Executor, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
    let row: Option<EndpointRow> = conn
        .fetch_optional(sql(concat!("select ", endpoint_columns!(), " from webhook_endpoints where id = $1")).bind(id))
        .await
        .map_err(error("failed to read webhook endpoint"))?;
    row.map(EndpointRow::into_endpoint).transpose()
}

async fn delivery_in(conn: &mut impl Executor, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
    let row: Option<DeliveryRow> = conn
        .fetch_optional(sql(concat!("select ", delivery_columns!(), " from webhook_deliveries where id = $1")).bind(id))
        .await
        .map_err(error("failed to read webhook delivery"))?;
    row.map(DeliveryRow::into_delivery).transpose()
}

#[async_trait]
impl WebhookRepository for SqlStore {
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        max_endpoints: u32,
    ) -> Result<WebhookEndpoint, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Serialises registrations (reads and deliveries are not blocked), so the count holds.
        // SQLite's write transaction already excludes every other writer.
        if tx.dialect() == Dialect::Postgres {
            tx.execute(sql("lock table webhook_endpoints in share row exclusive mode"))
                .await
                .map_err(error("failed to lock webhook endpoints"))?;
        }
        let existing: i64 = tx
            .fetch_scalar(sql("select count(*) from webhook_endpoints"))
            .await
            .map_err(error("failed to count webhook endpoints"))?;
        if existing >= i64::from(max_endpoints) {
            tx.roll_back().await?;
            return Err(StoreError::Conflict(Conflict::WebhookEndpointLimit));
        }
        let row: EndpointRow = tx
            .fetch_one(
                sql(concat!(
                    "insert into webhook_endpoints (",
                    endpoint_columns!(),
                    ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning ",
                    endpoint_columns!()
                ))
                .bind(endpoint.id)
                .bind(&endpoint.url)
                .bind(endpoint.description.as_deref())
                .bind(WebhookEventType::join(&endpoint.events))
                .bind(endpoint.secret.expose())
                .bind(endpoint.disabled_at)
                .bind(endpoint.disabled_reason.as_deref())
                .bind(endpoint.consecutive_failures)
                .bind(endpoint.created_at)
                .bind(endpoint.updated_at),
            )
            .await
            .map_err(error("failed to insert webhook endpoint"))?;
        tx.commit().await?;
        row.into_endpoint()
    }

    async fn find_webhook_endpoint(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        let mut conn = self.connection().await?;
        endpoint_in(&mut conn, id).await
    }

    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<EndpointRow> = conn
            .fetch_all(sql(concat!("select ", endpoint_columns!(), " from webhook_endpoints order by created_at, id")))
            .await
            .map_err(error("failed to list webhook endpoints"))?;
        rows.into_iter().map(EndpointRow::into_endpoint).collect()
    }

    async fn update_webhook_endpoint(
        &self,
        id: Uuid,
        changes: &WebhookEndpointChanges,
        now: OffsetDateTime,
    ) -> Result<WebhookEndpoint, StoreError> {
        let mut update = Statement::owned("update webhook_endpoints set updated_at = $1".into()).bind(now);
        if let Some(url) = &changes.url {
            update.push(", url = ").push_bind(url);
        }
        if let Some(events) = &changes.events {
            update.push(", events = ").push_bind(WebhookEventType::join(events));
        }
        if let Some(description) = &changes.description {
            update.push(", description = ").push_bind(description.clone());
        }
        if let Some(secret) = &changes.secret {
            update.push(", secret = ").push_bind(secret.expose());
        }
        if changes.enable {
            update.push(", disabled_at = null, disabled_reason = null, consecutive_failures = 0");
        }
        update.push(" where id = ").push_bind(id).push(concat!(" returning ", endpoint_columns!()));
        let rows: Vec<EndpointRow> = self.write_returning(update, "failed to update webhook endpoint").await?;
        rows.into_iter().next().ok_or(StoreError::NotFound)?.into_endpoint()
    }

    async fn disable_webhook_endpoint(
        &self,
        id: Uuid,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let row: Option<EndpointRow> = tx
            .fetch_optional(
                sql(concat!(
                    "update webhook_endpoints set disabled_at = $1, disabled_reason = $2, updated_at = $1 \
                     where id = $3 and disabled_at is null returning ",
                    endpoint_columns!()
                ))
                .bind(now)
                .bind(reason)
                .bind(id),
            )
            .await
            .map_err(error("failed to disable webhook endpoint"))?;
        let Some(row) = row else {
            tx.roll_back().await?;
            return Ok(None);
        };
        tx.execute(
            sql("update webhook_deliveries set state = 'abandoned', updated_at = $1, \
                 last_error = coalesce(last_error, 'not attempted: the endpoint was disabled') \
                 where endpoint_id = $2 and state in ('pending', 'failed')")
            .bind(now)
            .bind(id),
        )
        .await
        .map_err(error("failed to abandon webhook deliveries"))?;
        tx.commit().await?;
        row.into_endpoint().map(Some)
    }

    async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<(), StoreError> {
        let deleted = self.execute_write(sql("delete from webhook_endpoints where id = $1").bind(id)).await?;
        if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn insert_webhook_delivery(&self, delivery: &WebhookDelivery, job: &NewJob) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let inserted = tx
            .execute(
                sql(concat!(
                    "insert into webhook_deliveries (",
                    delivery_columns!(),
                    ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) on conflict do nothing"
                ))
                .bind(delivery.id)
                .bind(delivery.endpoint_id)
                .bind(delivery.event_id)
                .bind(delivery.event_type.as_str())
                .bind(&delivery.payload)
                .bind(delivery.state.as_str())
                .bind(delivery.attempts)
                .bind(delivery.last_status)
                .bind(delivery.last_error.as_deref())
                .bind(delivery.last_attempt_at)
                .bind(delivery.created_at)
                .bind(delivery.updated_at),
            )
            .await
            .map_err(error("failed to insert webhook delivery"))?;
        if inserted == 0 {
            tx.roll_back().await?;
            return Ok(false);
        }
        insert_job(&mut tx, job).await?;
        tx.commit().await?;
        self.announce_jobs([job.queue.as_str()]);
        Ok(true)
    }

    async fn find_webhook_delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        let mut conn = self.connection().await?;
        delivery_in(&mut conn, id).await
    }

    async fn list_webhook_deliveries(&self, query: &DeliveryQuery) -> Result<Page<WebhookDelivery>, StoreError> {
        let state = query.state.map(DeliveryState::as_str);
        let mut conn = self.connection().await?;
        let total: i64 = conn
            .fetch_scalar(
                sql("select count(*) from webhook_deliveries where endpoint_id = $1 and ($2 is null or state = $2)")
                    .bind(query.endpoint_id)
                    .bind(state),
            )
            .await
            .map_err(error("failed to count webhook deliveries"))?;
        let rows: Vec<DeliveryRow> = conn
            .fetch_all(
                sql(concat!(
                    "select ",
                    delivery_columns!(),
                    " from webhook_deliveries where endpoint_id = $1 and ($2 is null or state = $2) \
                     order by created_at desc, id desc limit $3 offset $4"
                ))
                .bind(query.endpoint_id)
                .bind(state)
                .bind(query.page.limit())
                .bind(offset(query.page)),
            )
            .await
            .map_err(error("failed to list webhook deliveries"))?;
        let items = rows.into_iter().map(DeliveryRow::into_delivery).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn record_webhook_attempt(&self, attempt: &DeliveryAttempt) -> Result<Option<WebhookEndpoint>, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let recorded = tx
            .execute(
                sql(
                    "update webhook_deliveries set state = $1, attempts = attempts + (case when $2 then 1 else 0 end), \
                     last_status = case when $2 then $3 else last_status end, \
                     last_error = case when $2 then $4 else coalesce(last_error, $4) end, \
                     last_attempt_at = case when $2 then $5 else last_attempt_at end, updated_at = $5 \
                     where id = $6 and endpoint_id = $7 and state in ('pending', 'failed')",
                )
                .bind(attempt.state.as_str())
                .bind(attempt.attempted)
                .bind(attempt.status)
                .bind(attempt.error.as_deref())
                .bind(attempt.at)
                .bind(attempt.delivery_id)
                .bind(attempt.endpoint_id),
            )
            .await
            .map_err(error("failed to record webhook attempt"))?;
        if recorded == 0 {
            tx.roll_back().await?;
            return Ok(None);
        }
        if attempt.attempted {
            tx.execute(
                sql("update webhook_endpoints set updated_at = $1, \
                     consecutive_failures = case when $2 then 0 else consecutive_failures + 1 end where id = $3")
                .bind(attempt.at)
                .bind(attempt.state == DeliveryState::Succeeded)
                .bind(attempt.endpoint_id),
            )
            .await
            .map_err(error("failed to count webhook failures"))?;
        }
        let endpoint = endpoint_in(&mut tx, attempt.endpoint_id).await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    async fn requeue_webhook_delivery(
        &self,
        endpoint_id: Uuid,
        delivery_id: Uuid,
        job: &NewJob,
        now: OffsetDateTime,
    ) -> Result<WebhookDelivery, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // Locks the row on PostgreSQL, so two concurrent retries cannot both see it failed
        // (SQLite's write transaction excludes the other retry altogether).
        let select = tx.dialect().locking(
            concat!("select ", delivery_columns!(), " from webhook_deliveries where id = $1 and endpoint_id = $2"),
            "for update",
        );
        let row: Option<DeliveryRow> = tx
            .fetch_optional(Statement::owned(select).bind(delivery_id).bind(endpoint_id))
            .await
            .map_err(error("failed to read webhook delivery"))?;
        let Some(delivery) = row.map(DeliveryRow::into_delivery).transpose()? else {
            tx.roll_back().await?;
            return Err(StoreError::NotFound);
        };
        if !matches!(delivery.state, DeliveryState::Failed | DeliveryState::Abandoned) {
            tx.roll_back().await?;
            return Err(StoreError::Conflict(Conflict::DeliveryState));
        }
        if !insert_job(&mut tx, job).await? {
            tx.roll_back().await?;
            return Err(StoreError::Conflict(Conflict::DuplicateJob));
        }
        let row: DeliveryRow = tx
            .fetch_one(
                sql(concat!(
                    "update webhook_deliveries set state = 'pending', updated_at = $1 where id = $2 returning ",
                    delivery_columns!()
                ))
                .bind(now)
                .bind(delivery_id),
            )
            .await
            .map_err(error("failed to requeue webhook delivery"))?;
        tx.commit().await?;
        self.announce_jobs([job.queue.as_str()]);
        row.into_delivery()
    }

    async fn abandon_stale_webhook_deliveries(
        &self,
        before: OffsetDateTime,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.execute_write(
            sql("update webhook_deliveries set state = 'abandoned', last_error = $1, updated_at = $2 \
                 where updated_at < $3 and state in ('pending', 'failed')")
            .bind(reason)
            .bind(now)
            .bind(before),
        )
        .await
    }

    async fn purge_webhook_deliveries(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from webhook_deliveries where id in (select id from webhook_deliveries \
                 where created_at < $1 and state in ('succeeded', 'abandoned') limit $2)")
            .bind(before)
            .bind(limit),
        )
        .await
    }
}

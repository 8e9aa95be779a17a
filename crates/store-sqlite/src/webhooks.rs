//! Webhook endpoints and the delivery log in SQLite; every write in one `BEGIN IMMEDIATE`
//! transaction, so the endpoint limit and the attempt bookkeeping hold under concurrency.

use async_trait::async_trait;
use shop::jobs::NewJob;
use shop::ports::WebhookRepository;
use shop::webhooks::{
    DeliveryAttempt, DeliveryQuery, DeliveryState, WebhookDelivery, WebhookEndpoint, WebhookEndpointChanges,
    WebhookEventType, WebhookSecret,
};
use shop::{Page, StoreError};
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{corrupt, count, error, offset, parse_optional_timestamp, parse_timestamp, timestamp};
use crate::jobs::insert_job;
use crate::{SqliteStore, commit, roll_back};

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
    disabled_at: Option<String>,
    disabled_reason: Option<String>,
    consecutive_failures: i64,
    created_at: String,
    updated_at: String,
}

impl EndpointRow {
    fn into_endpoint(self) -> Result<WebhookEndpoint, StoreError> {
        Ok(WebhookEndpoint {
            id: self.id,
            url: self.url,
            description: self.description,
            events: WebhookEventType::split(&self.events).ok_or_else(|| corrupt("webhook events", self.events))?,
            secret: WebhookSecret::from_stored(self.secret),
            disabled_at: parse_optional_timestamp(self.disabled_at.as_deref())?,
            disabled_reason: self.disabled_reason,
            consecutive_failures: u32::try_from(self.consecutive_failures)
                .map_err(|e| corrupt("webhook failure count", e.to_string()))?,
            created_at: parse_timestamp(&self.created_at)?,
            updated_at: parse_timestamp(&self.updated_at)?,
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
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    last_attempt_at: Option<String>,
    created_at: String,
    updated_at: String,
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
            last_attempt_at: parse_optional_timestamp(self.last_attempt_at.as_deref())?,
            created_at: parse_timestamp(&self.created_at)?,
            updated_at: parse_timestamp(&self.updated_at)?,
        })
    }
}

async fn endpoint_in(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
    let row: Option<EndpointRow> =
        sqlx::query_as(concat!("select ", endpoint_columns!(), " from webhook_endpoints where id = ?"))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(error("failed to read webhook endpoint"))?;
    row.map(EndpointRow::into_endpoint).transpose()
}

async fn delivery_in(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
    let row: Option<DeliveryRow> =
        sqlx::query_as(concat!("select ", delivery_columns!(), " from webhook_deliveries where id = ?"))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(error("failed to read webhook delivery"))?;
    row.map(DeliveryRow::into_delivery).transpose()
}

#[async_trait]
impl WebhookRepository for SqliteStore {
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        max_endpoints: u32,
    ) -> Result<WebhookEndpoint, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let existing: i64 = sqlx::query_scalar("select count(*) from webhook_endpoints")
            .fetch_one(&mut *tx)
            .await
            .map_err(error("failed to count webhook endpoints"))?;
        if existing >= i64::from(max_endpoints) {
            roll_back(tx).await?;
            return Err(StoreError::Conflict { constraint: "webhook_endpoints_limit".into() });
        }
        sqlx::query(concat!(
            "insert into webhook_endpoints (",
            endpoint_columns!(),
            ") values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(endpoint.id)
        .bind(&endpoint.url)
        .bind(endpoint.description.as_deref())
        .bind(WebhookEventType::join(&endpoint.events))
        .bind(endpoint.secret.expose())
        .bind(endpoint.disabled_at.map(timestamp))
        .bind(endpoint.disabled_reason.as_deref())
        .bind(i64::from(endpoint.consecutive_failures))
        .bind(timestamp(endpoint.created_at))
        .bind(timestamp(endpoint.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(error("failed to insert webhook endpoint"))?;
        let inserted = endpoint_in(&mut tx, endpoint.id).await?.ok_or(StoreError::NotFound)?;
        commit(tx).await?;
        Ok(inserted)
    }

    async fn find_webhook_endpoint(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        let mut conn = self.connection().await?;
        endpoint_in(&mut conn, id).await
    }

    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<EndpointRow> =
            sqlx::query_as(concat!("select ", endpoint_columns!(), " from webhook_endpoints order by created_at, id"))
                .fetch_all(&mut *conn)
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
        let mut update = QueryBuilder::<Sqlite>::new("update webhook_endpoints set updated_at = ");
        update.push_bind(timestamp(now));
        if let Some(url) = &changes.url {
            update.push(", url = ").push_bind(url.clone());
        }
        if let Some(events) = &changes.events {
            update.push(", events = ").push_bind(WebhookEventType::join(events));
        }
        if let Some(description) = &changes.description {
            update.push(", description = ").push_bind(description.clone());
        }
        if let Some(secret) = &changes.secret {
            update.push(", secret = ").push_bind(secret.expose().to_owned());
        }
        if changes.enable {
            update.push(", disabled_at = null, disabled_reason = null, consecutive_failures = 0");
        }
        update.push(" where id = ").push_bind(id);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let updated = update.build().execute(&mut *tx).await.map_err(error("failed to update webhook endpoint"))?;
        if updated.rows_affected() == 0 {
            roll_back(tx).await?;
            return Err(StoreError::NotFound);
        }
        let endpoint = endpoint_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        commit(tx).await?;
        Ok(endpoint)
    }

    async fn disable_webhook_endpoint(
        &self,
        id: Uuid,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let at = timestamp(now);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let disabled = sqlx::query(
            "update webhook_endpoints set disabled_at = ?, disabled_reason = ?, updated_at = ? \
             where id = ? and disabled_at is null",
        )
        .bind(&at)
        .bind(reason)
        .bind(&at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(error("failed to disable webhook endpoint"))?;
        if disabled.rows_affected() == 0 {
            roll_back(tx).await?;
            return Ok(None);
        }
        sqlx::query(
            "update webhook_deliveries set state = 'abandoned', updated_at = ?, \
             last_error = coalesce(last_error, 'not attempted: the endpoint was disabled') \
             where endpoint_id = ? and state in ('pending', 'failed')",
        )
        .bind(&at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(error("failed to abandon webhook deliveries"))?;
        let endpoint = endpoint_in(&mut tx, id).await?;
        commit(tx).await?;
        Ok(endpoint)
    }

    async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<(), StoreError> {
        let deleted = self.execute_write("delete from webhook_endpoints where id = ?", |q| q.bind(id)).await?;
        if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn insert_webhook_delivery(&self, delivery: &WebhookDelivery, job: &NewJob) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let inserted = sqlx::query(concat!(
            "insert into webhook_deliveries (",
            delivery_columns!(),
            ") values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             on conflict do nothing"
        ))
        .bind(delivery.id)
        .bind(delivery.endpoint_id)
        .bind(delivery.event_id)
        .bind(delivery.event_type.as_str())
        .bind(&delivery.payload)
        .bind(delivery.state.as_str())
        .bind(i64::from(delivery.attempts))
        .bind(delivery.last_status.map(i64::from))
        .bind(delivery.last_error.as_deref())
        .bind(delivery.last_attempt_at.map(timestamp))
        .bind(timestamp(delivery.created_at))
        .bind(timestamp(delivery.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(error("failed to insert webhook delivery"))?;
        if inserted.rows_affected() == 0 {
            roll_back(tx).await?;
            return Ok(false);
        }
        insert_job(&mut tx, job).await?;
        commit(tx).await?;
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
        let total: i64 = sqlx::query_scalar(
            "select count(*) from webhook_deliveries where endpoint_id = ? and (? is null or state = ?)",
        )
        .bind(query.endpoint_id)
        .bind(state)
        .bind(state)
        .fetch_one(&mut *conn)
        .await
        .map_err(error("failed to count webhook deliveries"))?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
            "select ",
            delivery_columns!(),
            " from webhook_deliveries where endpoint_id = ? and (? is null or state = ?) \
             order by created_at desc, id desc limit ? offset ?"
        ))
        .bind(query.endpoint_id)
        .bind(state)
        .bind(state)
        .bind(i64::from(query.page.limit()))
        .bind(offset(query.page))
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to list webhook deliveries"))?;
        let items = rows.into_iter().map(DeliveryRow::into_delivery).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn record_webhook_attempt(&self, attempt: &DeliveryAttempt) -> Result<Option<WebhookEndpoint>, StoreError> {
        let at = timestamp(attempt.at);
        let counted = i64::from(attempt.attempted);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let recorded = sqlx::query(
            "update webhook_deliveries set state = ?, attempts = attempts + ?, \
             last_status = case when ? = 1 then ? else last_status end, \
             last_error = case when ? = 1 then ? else coalesce(last_error, ?) end, \
             last_attempt_at = case when ? = 1 then ? else last_attempt_at end, updated_at = ? \
             where id = ? and endpoint_id = ? and state in ('pending', 'failed')",
        )
        .bind(attempt.state.as_str())
        .bind(counted)
        .bind(counted)
        .bind(attempt.status.map(i64::from))
        .bind(counted)
        .bind(attempt.error.as_deref())
        .bind(attempt.error.as_deref())
        .bind(counted)
        .bind(&at)
        .bind(&at)
        .bind(attempt.delivery_id)
        .bind(attempt.endpoint_id)
        .execute(&mut *tx)
        .await
        .map_err(error("failed to record webhook attempt"))?;
        if recorded.rows_affected() == 0 {
            roll_back(tx).await?;
            return Ok(None);
        }
        if attempt.attempted {
            let succeeded = attempt.state == DeliveryState::Succeeded;
            sqlx::query(
                "update webhook_endpoints set updated_at = ?, \
                 consecutive_failures = case when ? then 0 else consecutive_failures + 1 end where id = ?",
            )
            .bind(&at)
            .bind(succeeded)
            .bind(attempt.endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to count webhook failures"))?;
        }
        let endpoint = endpoint_in(&mut tx, attempt.endpoint_id).await?;
        commit(tx).await?;
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
        let mut tx = Self::begin_write(&mut conn).await?;
        let Some(delivery) = delivery_in(&mut tx, delivery_id).await?.filter(|d| d.endpoint_id == endpoint_id) else {
            roll_back(tx).await?;
            return Err(StoreError::NotFound);
        };
        if !matches!(delivery.state, DeliveryState::Failed | DeliveryState::Abandoned) {
            roll_back(tx).await?;
            return Err(StoreError::Conflict { constraint: "webhook_deliveries_state".into() });
        }
        if !insert_job(&mut tx, job).await? {
            roll_back(tx).await?;
            return Err(StoreError::Conflict { constraint: "jobs_unique_key".into() });
        }
        sqlx::query("update webhook_deliveries set state = 'pending', updated_at = ? where id = ?")
            .bind(timestamp(now))
            .bind(delivery_id)
            .execute(&mut *tx)
            .await
            .map_err(error("failed to requeue webhook delivery"))?;
        let requeued = delivery_in(&mut tx, delivery_id).await?.ok_or(StoreError::NotFound)?;
        commit(tx).await?;
        self.announce_jobs([job.queue.as_str()]);
        Ok(requeued)
    }

    async fn abandon_stale_webhook_deliveries(
        &self,
        before: OffsetDateTime,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let reason = reason.to_owned();
        self.execute_write(
            "update webhook_deliveries set state = 'abandoned', last_error = ?, updated_at = ? \
             where updated_at < ? and state in ('pending', 'failed')",
            |q| q.bind(reason).bind(timestamp(now)).bind(timestamp(before)),
        )
        .await
    }

    async fn purge_webhook_deliveries(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from webhook_deliveries where id in (select id from webhook_deliveries \
             where created_at < ? and state in ('succeeded', 'abandoned') limit ?)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }
}

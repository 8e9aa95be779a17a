//! The mail outbox: messages stored (not delivered) when no SMTP server is configured.

use async_trait::async_trait;
use shop::mail::{Mail, OutboxMail};
use shop::ports::MailOutboxRepository;
use shop::{Page, PageRequest, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, count, error, offset};
use crate::exec::{Executor as _, sql};

#[derive(FromRow)]
struct OutboxMailRow {
    id: Uuid,
    recipient: String,
    subject: String,
    text_body: String,
    html_body: String,
    created_at: Timestamp,
}

impl From<OutboxMailRow> for OutboxMail {
    fn from(row: OutboxMailRow) -> Self {
        Self {
            id: row.id,
            mail: Mail { to: row.recipient, subject: row.subject, text: row.text_body, html: row.html_body },
            created_at: row.created_at.into(),
        }
    }
}

#[async_trait]
impl MailOutboxRepository for SqlStore {
    async fn insert_outbox_mail(&self, mail: &OutboxMail) -> Result<bool, StoreError> {
        let OutboxMail { id, mail: message, created_at } = mail.clone();
        let inserted = self
            .execute_write(
                sql("insert into mail_outbox (id, recipient, subject, text_body, html_body, created_at) \
                     values ($1, $2, $3, $4, $5, $6) on conflict do nothing")
                .bind(id)
                .bind(message.to)
                .bind(message.subject)
                .bind(message.text)
                .bind(message.html)
                .bind(created_at),
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn list_outbox_mail(&self, page: &PageRequest) -> Result<Page<OutboxMail>, StoreError> {
        let mut conn = self.connection().await?;
        let total: i64 = conn
            .fetch_scalar(sql("select count(*) from mail_outbox"))
            .await
            .map_err(error("failed to count outbox mail"))?;
        let rows: Vec<OutboxMailRow> = conn
            .fetch_all(
                sql("select id, recipient, subject, text_body, html_body, created_at from mail_outbox \
                     order by created_at desc, id desc limit $1 offset $2")
                .bind(page.limit())
                .bind(offset(*page)),
            )
            .await
            .map_err(error("failed to list outbox mail"))?;
        Ok(Page { items: rows.into_iter().map(OutboxMail::from).collect(), total: count(total), request: *page })
    }

    async fn purge_outbox_mail(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from mail_outbox where id in (select id from mail_outbox where created_at < $1 limit $2)")
                .bind(before)
                .bind(limit),
        )
        .await
    }
}

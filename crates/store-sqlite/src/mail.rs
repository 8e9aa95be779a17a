//! The mail outbox in SQLite: messages stored (not delivered) when no SMTP server is configured.

use async_trait::async_trait;
use shop::mail::{Mail, OutboxMail};
use shop::ports::MailOutboxRepository;
use shop::{Page, PageRequest, StoreError};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::codec::{count, error, offset, parse_timestamp, timestamp};

#[derive(FromRow)]
struct OutboxMailRow {
    id: Uuid,
    recipient: String,
    subject: String,
    text_body: String,
    html_body: String,
    created_at: String,
}

impl OutboxMailRow {
    fn into_outbox_mail(self) -> Result<OutboxMail, StoreError> {
        Ok(OutboxMail {
            id: self.id,
            mail: Mail { to: self.recipient, subject: self.subject, text: self.text_body, html: self.html_body },
            created_at: parse_timestamp(&self.created_at)?,
        })
    }
}

#[async_trait]
impl MailOutboxRepository for SqliteStore {
    async fn insert_outbox_mail(&self, mail: &OutboxMail) -> Result<bool, StoreError> {
        let OutboxMail { id, mail: message, created_at } = mail.clone();
        let inserted = self
            .execute_write(
                "insert into mail_outbox (id, recipient, subject, text_body, html_body, created_at) \
                 values (?, ?, ?, ?, ?, ?) on conflict do nothing",
                |q| {
                    q.bind(id)
                        .bind(message.to)
                        .bind(message.subject)
                        .bind(message.text)
                        .bind(message.html)
                        .bind(timestamp(created_at))
                },
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn list_outbox_mail(&self, page: &PageRequest) -> Result<Page<OutboxMail>, StoreError> {
        let mut conn = self.connection().await?;
        let total: i64 = sqlx::query_scalar("select count(*) from mail_outbox")
            .fetch_one(&mut *conn)
            .await
            .map_err(error("failed to count outbox mail"))?;
        let rows: Vec<OutboxMailRow> = sqlx::query_as(
            "select id, recipient, subject, text_body, html_body, created_at from mail_outbox \
             order by created_at desc, id desc limit ? offset ?",
        )
        .bind(i64::from(page.limit()))
        .bind(offset(*page))
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to list outbox mail"))?;
        let items = rows.into_iter().map(OutboxMailRow::into_outbox_mail).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: *page })
    }

    async fn purge_outbox_mail(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from mail_outbox where id in (select id from mail_outbox where created_at < ? limit ?)",
            |q| q.bind(timestamp(before)).bind(i64::from(limit)),
        )
        .await
    }
}

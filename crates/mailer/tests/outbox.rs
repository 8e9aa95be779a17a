//! `OutboxMailer` on a real SQLite store: stored once per message id, logged as not delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use mailer::OutboxMailer;
use shop::mail::Mail;
use shop::ports::Mailer as _;
use shop::{ManualClock, PageRequest, Store};
use store_sqlx::{SqlStore, SqliteSettings};
use support::CapturedLogs;
use time::macros::datetime;
use uuid::Uuid;

async fn fresh_store(directory: &tempfile::TempDir) -> Arc<dyn Store> {
    let store = SqlStore::sqlite(&SqliteSettings {
        url: format!("sqlite://{}", directory.path().join("shop.db").display()),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
        busy_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    store.migrate_up().await.unwrap();
    Arc::new(store)
}

fn mail() -> Mail {
    Mail {
        to: "carol@example.com".into(),
        subject: "Your account is locked".into(),
        text: "Hello Carol, secret body".into(),
        html: "<p>Hello Carol, secret body</p>".into(),
    }
}

#[tokio::test]
async fn the_outbox_stores_a_message_once_even_when_sent_twice() {
    let directory = tempfile::tempdir().unwrap();
    let store = fresh_store(&directory).await;
    let now = datetime!(2026-03-01 12:00:00 UTC);
    let mailer = OutboxMailer::new(Arc::clone(&store), Arc::new(ManualClock::new(now)));
    let message_id = Uuid::now_v7();
    let logs = CapturedLogs::default();
    let guard = logs.install();

    mailer.send(&mail(), message_id).await.unwrap();
    mailer.send(&mail(), message_id).await.unwrap();

    drop(guard);
    assert_eq!(mailer.kind(), "outbox");
    let page = store.list_outbox_mail(&PageRequest::default()).await.unwrap();
    assert_eq!(page.total, 1);
    let stored = &page.items[0];
    assert_eq!((stored.id, &stored.mail, stored.created_at), (message_id, &mail(), now));

    // One INFO line that says it was not delivered, with the redacted recipient and the subject.
    let logs = logs.text();
    let stored_lines: Vec<&str> = logs.lines().filter(|line| line.contains("mail stored in the outbox")).collect();
    assert_eq!(stored_lines.len(), 1, "{logs}");
    let line = stored_lines[0];
    assert!(line.contains("INFO") && line.contains("not delivered (no SMTP_URL)"), "{line}");
    assert!(line.contains("c***@example.com") && line.contains("Your account is locked"), "{line}");
    assert!(!logs.contains("carol@example.com") && !logs.contains("secret body"), "{logs}");

    // Another message (another job) is another row.
    mailer.send(&mail(), Uuid::now_v7()).await.unwrap();
    assert_eq!(store.list_outbox_mail(&PageRequest::default()).await.unwrap().total, 2);
}

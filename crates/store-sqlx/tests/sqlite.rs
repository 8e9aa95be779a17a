//! The storage contract suite against SQLite, one fresh database file per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use shop::Store;
use shop::ports::StoreHealth as _;
use store_sqlx::{SqlStore, SqliteSettings};

fn settings(directory: &tempfile::TempDir) -> SqliteSettings {
    SqliteSettings {
        url: format!("sqlite://{}", directory.path().join("shop.db").display()),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        busy_timeout: Duration::from_secs(5),
    }
}

/// A migrated store in a temporary directory, removed when the returned guard drops.
async fn fresh_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    (Arc::new(store), directory)
}

store_tests::contract_tests!(fresh_store());

async fn fresh_search_store() -> (Arc<dyn Store>, Arc<dyn shop::ports::SearchIndex>, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    let store = Arc::new(store);
    (store.clone(), store, directory)
}

store_tests::search_contract_tests!(fresh_search_store());

#[tokio::test]
async fn migrations_go_down_and_up_again() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    support::migrations_go_down_and_up_again(&store).await;
    store.close().await;
}

#[tokio::test]
async fn the_database_file_uses_wal_and_foreign_keys() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    let (journal_mode, foreign_keys) = store.sqlite_pragmas().await.unwrap();
    assert_eq!(journal_mode, "wal");
    assert!(foreign_keys);
    store.close().await;
}

#[tokio::test]
async fn job_inserts_wake_the_in_process_worker_at_commit() {
    let (store, directory) = fresh_store().await;
    let mut wakeups = store.job_wakeups().unwrap();
    let ada = store_tests::new_user("ada@example.com", shop::accounts::Role::Customer, 0);
    store.insert_user(&ada, &[store_tests::new_job("mail.welcome", 0).queue("outbox")]).await.unwrap();
    assert_eq!(wakeups.try_recv().unwrap(), "outbox");
    let bob = store_tests::new_user("bob@example.com", shop::accounts::Role::Customer, 0);
    let identity = store_tests::new_identity(store_tests::ISSUER, "subject-1", bob.id, 0);
    let verification = store_tests::new_job("mail.verify", 0).queue("external");
    store.insert_external_user(&bob, None, &identity, &[verification]).await.unwrap();
    assert_eq!(wakeups.try_recv().unwrap(), "external");
    // A rolled-back sign-up wakes nobody.
    let carol = store_tests::new_user("carol@example.com", shop::accounts::Role::Customer, 1);
    let linked = store_tests::new_identity(store_tests::ISSUER, "subject-1", carol.id, 1);
    let stray = store_tests::new_job("mail.verify", 1).queue("rolled-back");
    store.insert_external_user(&carol, None, &linked, &[stray]).await.unwrap_err();
    assert!(wakeups.try_recv().is_err());
    store.close().await;
    drop(directory);
}

#[tokio::test]
async fn saved_checkout_responses_become_outcomes() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&settings(&directory).url).await.unwrap();
    support::saved_checkout_responses_become_outcomes(store.clone(), &mut raw).await;
    store.close().await;
}

#[tokio::test]
async fn catalog_writes_keep_the_search_index() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&settings(&directory).url).await.unwrap();
    let matches = "select cast(count(*) as text) from product_search where product_search match '\"{}\"'";
    support::catalog_writes_keep_the_search_index(store.clone(), &mut RawConnection(&mut raw), matches).await;
    store.close().await;
}

/// Raw text queries on a connection of the test's database.
struct RawConnection<'a>(&'a mut sqlx::SqliteConnection);

impl support::RawText for RawConnection<'_> {
    async fn texts(&mut self, query: &str) -> Vec<Vec<String>> {
        use sqlx::Row as _;
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut *self.0).await.unwrap();
        rows.iter().map(|row| (0..row.len()).map(|index| row.get::<String, _>(index)).collect()).collect()
    }
}

#[tokio::test]
async fn the_search_index_rebuilds_when_its_analysis_changed() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&settings(&directory).url).await.unwrap();
    support::the_search_index_rebuilds_when_its_analysis_changed(store.clone(), &mut RawConnection(&mut raw)).await;
    store.close().await;
}

#[tokio::test]
async fn a_flag_write_whose_audit_row_fails_changes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&settings(&directory)).await.unwrap();
    store.migrate_up().await.unwrap();
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&settings(&directory).url).await.unwrap();
    let refuse =
        "create trigger refuse_audit before insert on audit_log begin select raise(abort, 'audit refused'); end;";
    support::a_flag_write_whose_audit_row_fails_changes_nothing(store.clone(), &mut raw, refuse).await;
    drop(raw);
    store.close().await;
}

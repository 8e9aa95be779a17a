//! The storage contract suite against a real PostgreSQL server, one fresh database per test.
//!
//! The server is `SHOPKEEP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! when it is unreachable these tests fail rather than skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/postgres_server.rs"]
mod postgres_server;
mod support;

use std::sync::Arc;
use std::time::Duration;

use postgres_server::{DropDatabase, url_with_database};
use shop::Store;
use shop::ports::StoreHealth as _;
use store_sqlx::{PostgresSettings, SqlStore, provisioning};

/// A migrated store on a new database named `{prefix}_{uuid}`, dropped with the guard.
async fn fresh_sql_store(prefix: &str) -> (SqlStore, DropDatabase) {
    let server = std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let url = url_with_database(&server, &format!("{prefix}_{}", uuid::Uuid::new_v4().simple()));
    provisioning::create_database_if_missing(&url).await.expect("PostgreSQL must be reachable for these tests");
    let database = DropDatabase(url.clone());
    let store = SqlStore::postgres(&PostgresSettings {
        url,
        max_connections: 5,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(10),
        pgbouncer: false,
    })
    .await
    .unwrap();
    store.migrate_up().await.unwrap();
    (store, database)
}

async fn fresh_store() -> (Arc<dyn Store>, DropDatabase) {
    let (store, database) = fresh_sql_store("shopkeep_contract").await;
    (Arc::new(store), database)
}

store_tests::contract_tests!(fresh_store());

async fn fresh_search_store() -> (Arc<dyn Store>, Arc<dyn shop::ports::SearchIndex>, DropDatabase) {
    let (store, database) = fresh_sql_store("shopkeep_search").await;
    let store = Arc::new(store);
    (store.clone(), store, database)
}

store_tests::search_contract_tests!(fresh_search_store());

#[tokio::test]
async fn migrations_go_down_and_up_again() {
    let (store, database) = fresh_sql_store("shopkeep_migrate").await;
    support::migrations_go_down_and_up_again(&store).await;
    store.close().await;
    drop(database);
}

#[tokio::test]
async fn job_inserts_wake_listening_workers_at_commit() {
    let (store, database) = fresh_store().await;
    let mut listener = sqlx::postgres::PgListener::connect(&database.0).await.unwrap();
    listener.listen("shopkeep_jobs").await.unwrap();
    let next_queue = async |listener: &mut sqlx::postgres::PgListener| {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await.unwrap().unwrap();
        assert_eq!(notification.channel(), "shopkeep_jobs");
        notification.payload().to_owned()
    };

    store.enqueue_job(&store_tests::new_job("mail.send", 0).queue("mail")).await.unwrap();
    assert_eq!(next_queue(&mut listener).await, "mail");
    let ada = store_tests::new_user("ada@example.com", shop::accounts::Role::Customer, 0);
    store.insert_user(&ada, &[store_tests::new_job("mail.welcome", 0).queue("outbox")]).await.unwrap();
    assert_eq!(next_queue(&mut listener).await, "outbox");
    let bob = store_tests::new_user("bob@example.com", shop::accounts::Role::Customer, 0);
    let identity = store_tests::new_identity(store_tests::ISSUER, "subject-1", bob.id, 0);
    let verification = store_tests::new_job("mail.verify", 0).queue("external");
    store.insert_external_user(&bob, None, &identity, &[verification]).await.unwrap();
    assert_eq!(next_queue(&mut listener).await, "external");
    // A rolled-back outbox notifies nobody: the next notification is the following enqueue's.
    let duplicate = store_tests::new_job("mail.welcome", 1).queue("rolled-back");
    let same_email = store_tests::new_user("ada@example.com", shop::accounts::Role::Staff, 1);
    store.insert_user(&same_email, &[duplicate]).await.unwrap_err();
    store.enqueue_job(&store_tests::new_job("report", 2).queue("reports")).await.unwrap();
    assert_eq!(next_queue(&mut listener).await, "reports");

    drop(listener);
    store.close().await;
    drop(database);
}

#[tokio::test]
async fn saved_checkout_responses_become_outcomes() {
    let (store, database) = fresh_sql_store("shopkeep_outcomes").await;
    let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&database.0).await.unwrap();
    support::saved_checkout_responses_become_outcomes(store.clone(), &mut raw).await;
    drop(raw);
    store.close().await;
    drop(database);
}

#[tokio::test]
async fn catalog_writes_keep_the_search_index() {
    let (store, database) = fresh_sql_store("shopkeep_search_index").await;
    let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&database.0).await.unwrap();
    let matches =
        "select cast(count(*) as text) from product_search_documents where document @@ to_tsquery('simple', '{}')";
    support::catalog_writes_keep_the_search_index(store.clone(), &mut RawConnection(&mut raw), matches).await;
    drop(raw);
    store.close().await;
    drop(database);
}

/// Raw text queries on a connection of the test's database.
struct RawConnection<'a>(&'a mut sqlx::PgConnection);

impl support::RawText for RawConnection<'_> {
    async fn texts(&mut self, query: &str) -> Vec<Vec<String>> {
        use sqlx::Row as _;
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut *self.0).await.unwrap();
        rows.iter().map(|row| (0..row.len()).map(|index| row.get::<String, _>(index)).collect()).collect()
    }
}

#[tokio::test]
async fn the_search_index_rebuilds_when_its_analysis_changed() {
    let (store, database) = fresh_sql_store("shopkeep_search_rebuild").await;
    let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&database.0).await.unwrap();
    support::the_search_index_rebuilds_when_its_analysis_changed(store.clone(), &mut RawConnection(&mut raw)).await;
    drop(raw);
    store.close().await;
    drop(database);
}

#[tokio::test]
async fn a_flag_write_whose_audit_row_fails_changes_nothing() {
    let (store, database) = fresh_sql_store("shopkeep_audit").await;
    let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&database.0).await.unwrap();
    let refuse = "create function refuse_audit() returns trigger language plpgsql as $$ \
                  begin raise exception 'audit refused'; end $$; \
                  create trigger refuse_audit before insert on audit_log for each row execute function refuse_audit();";
    support::a_flag_write_whose_audit_row_fails_changes_nothing(store.clone(), &mut raw, refuse).await;
    drop(raw);
    store.close().await;
    drop(database);
}

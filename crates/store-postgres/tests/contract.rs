//! The storage contract suite against a real PostgreSQL server, one fresh database per test.
//!
//! The server is `SHOPKEEP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! when it is unreachable these tests fail rather than skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use shop::Store;
use shop::ports::StoreHealth as _;
use store_postgres::{PostgresSettings, PostgresStore, provisioning};

/// Drops the test database when the test ends.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let url = std::mem::take(&mut self.0);
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(provisioning::drop_database(&url))
        })
        .join();
    }
}

async fn fresh_store() -> (Arc<dyn Store>, DropDatabase) {
    let server = std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let url = url_with_database(&server, &format!("shopkeep_contract_{}", uuid::Uuid::new_v4().simple()));
    provisioning::create_database_if_missing(&url).await.expect("PostgreSQL must be reachable for these tests");
    let store = PostgresStore::connect(&PostgresSettings {
        url: url.clone(),
        max_connections: 5,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(10),
        pgbouncer: false,
    })
    .await
    .unwrap();
    store.migrate_up().await.unwrap();
    (Arc::new(store), DropDatabase(url))
}

fn url_with_database(server: &str, database: &str) -> String {
    match server.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.len() > "postgres://".len() => format!("{base}/{database}"),
        _ => format!("{server}/{database}"),
    }
}

store_contract::contract_tests!(fresh_store());

#[tokio::test]
async fn migrations_go_down_and_up_again() {
    let server = std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let url = url_with_database(&server, &format!("shopkeep_migrate_{}", uuid::Uuid::new_v4().simple()));
    provisioning::create_database_if_missing(&url).await.unwrap();
    let settings = PostgresSettings {
        url: url.clone(),
        max_connections: 2,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(10),
        pgbouncer: false,
    };
    let store = PostgresStore::connect(&settings).await.unwrap();
    store.migrate_up().await.unwrap();
    assert!(store.migration_status().await.unwrap().iter().all(|m| m.applied));
    assert!(store.migrate_down().await.unwrap().is_some());
    assert!(store.migration_status().await.unwrap().iter().all(|m| !m.applied));
    assert_eq!(store.migrate_down().await.unwrap(), None);
    store.migrate_up().await.unwrap();
    store.close().await;
    provisioning::drop_database(&url).await.unwrap();
}

//! The storage contract suite through a real PgBouncer in transaction mode, with its stock
//! configuration (no `ignore_startup_parameters`): each test starts its own PgBouncer in front of
//! the test PostgreSQL server (`SHOPKEEP_TEST_POSTGRES_URL`) and a fresh database. Migrations run
//! on a direct connection, as `shopkeep` runs them (`database.direct_url`); everything else goes
//! through PgBouncer with `pgbouncer: true`. Fails, never skips, when either is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use harness::{PgBouncer, PgBouncerSettings};
use postgres_server::{DropDatabase, server_url, url_with_database};
use shop::Store;
use shop::ports::StoreHealth as _;
use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;
use store_sqlx::{PostgresSettings, SqlStore, provisioning};

/// A database and the PgBouncer in front of it; the PgBouncer stops first.
struct Bounced {
    bouncer: PgBouncer,
    _database: DropDatabase,
    /// The database's name, for URLs through the PgBouncer.
    name: String,
}

fn settings(url: String, pgbouncer: bool) -> PostgresSettings {
    PostgresSettings {
        url,
        max_connections: 5,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_millis(2_500),
        pgbouncer,
    }
}

/// A migrated database (migrated directly) and a store on it through a new PgBouncer.
async fn bounced_store(prefix: &str) -> (SqlStore, Bounced) {
    let server = server_url();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let direct_url = url_with_database(&server, &name);
    provisioning::create_database_if_missing(&direct_url).await.expect("PostgreSQL must be reachable for these tests");
    let database = DropDatabase(direct_url.clone());
    let direct = SqlStore::postgres(&settings(direct_url, false)).await.unwrap();
    direct.migrate_up().await.unwrap();
    direct.close().await;

    let options = PgConnectOptions::from_str(&server).unwrap();
    let bouncer = PgBouncer::start(&PgBouncerSettings {
        server_host: options.get_host().to_owned(),
        server_port: options.get_port(),
        user: options.get_username().to_owned(),
        ..PgBouncerSettings::default()
    })
    .await
    .expect("pgbouncer must start for these tests (scripts/services installs it)");
    let url = bouncer.url(options.get_username(), &name);
    let store = SqlStore::postgres(&settings(url, true)).await.expect("connects through PgBouncer");
    (store, Bounced { bouncer, _database: database, name })
}

async fn fresh_store() -> (Arc<dyn Store>, Bounced) {
    let (store, bounced) = bounced_store("shopkeep_bounced").await;
    (Arc::new(store), bounced)
}

store_tests::contract_tests!(fresh_store());

async fn fresh_search_store() -> (Arc<dyn Store>, Arc<dyn shop::ports::SearchIndex>, Bounced) {
    let (store, bounced) = bounced_store("shopkeep_bounced_search").await;
    let store = Arc::new(store);
    (store.clone(), store, bounced)
}

store_tests::search_contract_tests!(fresh_search_store());

/// Every statement runs with the configured timeout, set for its own transaction only: a plain
/// client of the same PgBouncer, possibly on the very server connection the store just used,
/// still sees the server's default.
#[tokio::test]
async fn the_statement_timeout_holds_per_transaction_and_never_leaks() {
    let (store, bounced) = bounced_store("shopkeep_bounced_timeout").await;
    for _ in 0..5 {
        assert_eq!(store.statement_timeout_in_effect().await.unwrap().as_deref(), Some("2500ms"));
    }
    let options = PgConnectOptions::from_str(&bounced.bouncer.url("postgres", &bounced.name))
        .unwrap()
        .extra_float_digits(None)
        .statement_cache_capacity(0);
    let mut plain = options.connect().await.unwrap();
    // The simple protocol: one message, one server connection. Through PgBouncer in transaction
    // mode an unnamed statement's Parse and Bind may reach two different server connections.
    let row = sqlx::raw_sql("show statement_timeout").fetch_one(&mut plain).await.unwrap();
    let seen: String = sqlx::Row::get(&row, 0);
    assert_eq!(seen, "0", "a session setting leaked to another PgBouncer client");
    store.close().await;
}

/// What the stock PgBouncer refuses: the startup parameters a session connection sends.
#[tokio::test]
async fn a_session_store_cannot_connect_through_pgbouncer() {
    let (store, bounced) = bounced_store("shopkeep_bounced_refused").await;
    store.close().await;
    let url = bounced.bouncer.url("postgres", &bounced.name);
    let refused = SqlStore::postgres(&settings(url, false)).await.err().expect("PgBouncer refuses the session store");
    let message = format!("{refused:#}");
    assert!(message.contains("unsupported startup parameter"), "{message}");
}

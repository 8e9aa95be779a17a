//! Read replicas against a real streaming replica (`harness::PostgresReplication`: a private
//! primary and a `pg_basebackup` copy streaming from it): catalog reads go to the replica while
//! it is proven fresh, a write here sends them to the primary until the replica has it, a
//! replica lagging past `max_lag` or down is read around.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::PostgresReplication;
use shop::catalog::{IdOrSlug, ProductChanges, Slug, Text};
use shop::ports::ProductRepository as _;
use store_sqlx::{PostgresSettings, ReplicaSettings, SqlStore};

struct Setup {
    replication: PostgresReplication,
    store: Arc<SqlStore>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup(max_lag: Duration) -> Setup {
    let replication = PostgresReplication::start().await.expect("a primary and a streaming replica start");
    let primary = replication.primary_url("shop");
    store_sqlx::provisioning::create_database_if_missing(&primary).await.unwrap();
    let connection = PostgresSettings {
        url: primary,
        max_connections: 5,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        pgbouncer: false,
    };
    let store = SqlStore::postgres(&connection).await.unwrap();
    store.migrate_up().await.unwrap();
    let replicas = ReplicaSettings {
        urls: vec![replication.replica_url("shop")],
        max_lag,
        check_every: Duration::from_millis(50),
        max_connections: 5,
        acquire_timeout: Duration::from_secs(2),
    };
    let store = Arc::new(store.with_replicas(&connection, &replicas).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = Arc::clone(&store);
    let stopped = stop.clone();
    tokio::spawn(async move { follower.follow_replicas(stopped.cancelled_owned()).await });
    let shared: store_tests::SharedStore = Arc::clone(&store) as _;
    let category = store_tests::add_category(&shared, "lamps", 0).await;
    store.insert_product(&store_tests::new_product(category.id, "lamp", 2000, 3, 0)).await.unwrap();
    Setup { replication, store, stop }
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

async fn serving(store: &SqlStore) -> bool {
    store.replica_statuses().iter().all(|status| status.serving)
}

async fn name_of_lamp(store: &SqlStore) -> String {
    let key = IdOrSlug::Slug(Slug::parse("lamp").unwrap());
    store.find_product(&key).await.unwrap().unwrap().name.as_str().to_owned()
}

/// A change the store does not hear of: made with SQL on the primary.
fn rename_outside(setup: &Setup, name: &str) {
    let port = setup.replication.primary_port();
    setup
        .replication
        .sql_in(port, "shop", &format!("update products set name = '{name}' where slug = 'lamp'"))
        .unwrap();
}

#[tokio::test]
async fn reads_go_to_a_fresh_replica_and_a_write_here_sends_them_to_the_primary() {
    let setup = setup(Duration::from_secs(60)).await;
    let store = &setup.store;
    wait_until("the replica serves", Duration::from_secs(10), async || serving(store).await).await;
    assert_eq!(name_of_lamp(store).await, "Product lamp");

    // With replay paused, a change made on the primary behind the store's back is not on the
    // replica: reading the old name proves the read went there.
    setup.replication.pause_replay().unwrap();
    rename_outside(&setup, "Renamed outside");
    assert_eq!(name_of_lamp(store).await, "Product lamp", "served by the (paused) replica");

    // A write through this store: its next read must see it, so it goes to the primary.
    let changes = ProductChanges { name: Some(Text::name("Renamed here").unwrap()), ..ProductChanges::default() };
    let id = store.find_product(&IdOrSlug::Slug(Slug::parse("lamp").unwrap())).await.unwrap().unwrap().id;
    store.update_product(id, &changes, None, store_tests::at(5)).await.unwrap().unwrap();
    assert_eq!(name_of_lamp(store).await, "Renamed here", "read-your-writes: the primary answers");
    assert!(!serving(store).await, "the replica has not replayed the write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!serving(store).await, "and cannot be proven to while paused");

    setup.replication.resume_replay().unwrap();
    wait_until("the replica catches up and serves again", Duration::from_secs(10), async || serving(store).await).await;
    assert_eq!(name_of_lamp(store).await, "Renamed here");
}

#[tokio::test]
async fn a_replica_lagging_past_max_lag_is_left_for_the_primary() {
    let max_lag = Duration::from_millis(300);
    let setup = setup(max_lag).await;
    let store = &setup.store;
    wait_until("the replica serves", Duration::from_secs(10), async || serving(store).await).await;
    setup.replication.pause_replay().unwrap();
    rename_outside(&setup, "Renamed outside");
    let paused = Instant::now();
    let took = wait_until("the primary answers", Duration::from_secs(10), async || {
        name_of_lamp(store).await == "Renamed outside"
    })
    .await;
    assert!(paused.elapsed() >= max_lag.saturating_sub(Duration::from_millis(100)), "only once the bound passed");
    let status = &store.replica_statuses()[0];
    assert!(!status.fresh && !status.serving, "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    setup.replication.resume_replay().unwrap();
    wait_until("fresh again", Duration::from_secs(10), async || serving(store).await).await;
}

#[tokio::test]
async fn a_replica_that_goes_down_is_read_around_and_used_again_when_it_returns() {
    let mut setup = setup(Duration::from_secs(60)).await;
    wait_until("the replica serves", Duration::from_secs(10), async || serving(&setup.store).await).await;
    setup.replication.stop_replica().unwrap();
    // Still proven fresh until the next check: the read fails over to the primary, no error.
    assert_eq!(name_of_lamp(&setup.store).await, "Product lamp");
    wait_until("set aside", Duration::from_secs(5), async || !serving(&setup.store).await).await;
    assert_eq!(name_of_lamp(&setup.store).await, "Product lamp");
    setup.replication.start_replica().await.unwrap();
    wait_until("serving again", Duration::from_secs(20), async || serving(&setup.store).await).await;
    assert_eq!(name_of_lamp(&setup.store).await, "Product lamp");
}

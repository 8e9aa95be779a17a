//! `serve` with a read replica (`database.replica_url`), against a real streaming replica made
//! by `pg_basebackup` from a private primary (`harness::PostgresReplication`): catalog reads
//! use the replica while it is proven fresh, a write through the API is read back from the
//! primary at once, and the admin readiness view shows each replica.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::helpers::{Backend, TestApp, spawn_app_with};

async fn replica_view(app: &TestApp) -> Value {
    let ready: Value = app.http.get(app.admin_url("/health/ready")).send().await.unwrap().json().await.unwrap();
    ready["database"]["replicas"][0].clone()
}

async fn wait_for(app: &TestApp, serving: bool) {
    let started = Instant::now();
    while replica_view(app).await["serving"] != serving {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "replica serving = {serving}: {}",
            replica_view(app).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn product(app: &TestApp, slug: &str) -> Value {
    let response = app.http.get(app.url(&format!("/api/v1/products/{slug}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reads_use_a_fresh_replica_and_writes_are_read_back_from_the_primary() {
    let replication = harness::PostgresReplication::start().await.expect("a primary and a streaming replica");
    let primary = replication.primary_url("shop");
    store_sqlx::provisioning::create_database_if_missing(&primary).await.unwrap();
    let replica = replication.replica_url("shop");
    let app = spawn_app_with(Backend::Postgres, |config| {
        config.database.url = shopkeep::config::Secret::new(&primary);
        config.database.replica_url = Some(shopkeep::config::Secret::new(&replica));
        config.database.replica_max_lag_ms = 60_000;
        config.database.replica_check_interval_ms = 50;
        // Every read reaches the store, so where it goes shows in what it answers.
        config.cache.enabled = false;
    })
    .await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    app.add_product(&staff, category["id"].as_str().unwrap(), "desk-lamp", "20.00", 3).await;
    wait_for(&app, true).await;
    let view = replica_view(&app).await;
    assert_eq!(view["fresh"], true, "{view}");
    assert!(view["name"].as_str().unwrap().ends_with("/shop") && !view["name"].as_str().unwrap().contains('@'));

    // Replay paused and a change made with SQL on the primary, unannounced: the storefront
    // still shows the replica's copy (within the configured lag) — the read went there.
    replication.pause_replay().unwrap();
    let port = replication.primary_port();
    replication.sql_in(port, "shop", "update products set name = 'Renamed outside' where slug = 'desk-lamp'").unwrap();
    assert_eq!(product(&app, "desk-lamp").await["name"], "Product desk-lamp");

    // A write through the API is read back at once: from the primary, the replica not having it.
    let patched =
        staff.patch(app.url("/api/v1/products/desk-lamp")).json(&json!({ "price": "25.00" })).send().await.unwrap();
    assert_eq!(patched.status(), StatusCode::OK, "{:?}", patched.text().await);
    let read_back = product(&app, "desk-lamp").await;
    assert_eq!((&read_back["price"], &read_back["name"]), (&json!("25.00"), &json!("Renamed outside")));
    let list: Value = app.http.get(app.url("/api/v1/products")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["data"][0]["price"], "25.00");
    assert_eq!(replica_view(&app).await["serving"], false);

    replication.resume_replay().unwrap();
    wait_for(&app, true).await;
    assert_eq!(product(&app, "desk-lamp").await["price"], "25.00", "the replica has caught up");
    app.stop().await;
}

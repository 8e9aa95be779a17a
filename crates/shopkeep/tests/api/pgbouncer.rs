//! Behind PgBouncer in transaction mode (`database.pgbouncer`): the checkout and job tests run
//! through a real PgBouncer too (their `pgbouncer` cases); here, what is particular to it.

use reqwest::StatusCode;
use shopkeep::Application;
use shopkeep::config::Secret;

use crate::helpers::{Backend, fresh_postgres_url, spawn_app, start_pgbouncer, test_config};

/// Migrations need a session of their own: without `direct_url` the server refuses to start
/// rather than migrate through PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_behind_pgbouncer_need_the_direct_url() {
    let bouncer = start_pgbouncer().await;
    let direct = fresh_postgres_url();
    store_sqlx::provisioning::create_database_if_missing(&direct).await.unwrap();
    let name = direct.rsplit_once('/').unwrap().1.to_owned();
    let mut config = test_config(&bouncer.url("postgres", &name));
    config.database.pgbouncer = true;
    let refused = Application::build(config.clone()).await.err().expect("the server refuses to start");
    assert!(format!("{refused:#}").contains("database.direct_url"), "{refused:#}");
    // With it, the same server migrates directly and starts.
    config.database.direct_url = Some(Secret::new(&direct));
    let started = Application::build(config).await;
    assert!(started.is_ok(), "{:#}", started.err().unwrap());
    drop(started);
    store_sqlx::provisioning::drop_database(&direct).await.unwrap();
}

/// The shop serves through PgBouncer: reads, writes, and its readiness check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_serves_through_pgbouncer() {
    let app = spawn_app(Backend::PgBouncer).await;
    let ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let staff = app.signed_in("staff@example.com", shop::accounts::Role::Staff).await;
    let category = app.add_category(&staff, "things").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "bounced", "1.00", 3).await;
    let read =
        app.http.get(app.url(&format!("/api/v1/products/{}", product["slug"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    app.stop().await;
}

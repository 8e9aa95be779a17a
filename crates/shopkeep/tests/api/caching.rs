//! The read cache over HTTP: every catalog write is seen by the next read on the instance that
//! made it, and by another instance on the same database within `cache.max_staleness_ms`, and
//! so is a logout (sign-ins are cached too); the admin status shows what the caches did. With
//! Redis: instances share what they loaded and hear each other's writes at once, and a Redis
//! that dies mid-run costs clients nothing.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, TestApp, spawn_app_with, with_redis};

both_backends!(
    and_redis: every_catalog_write_is_seen_by_the_next_read,
    list_totals_are_counted_once_per_filter,
    list_bodies_are_rendered_once_per_generation,
);

both_backends!(
    a_write_on_one_instance_is_seen_by_another_within_the_bound,
    a_logout_on_one_instance_reaches_another_within_the_bound,
);

mod through_redis {
    //! Two instances sharing PostgreSQL (or a SQLite file) and Redis.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::writes_and_logouts_reach_every_instance_through_redis(crate::helpers::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::writes_and_logouts_reach_every_instance_through_redis(crate::helpers::Backend::Postgres).await;
    }
}

mod redis_dying {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::reads_survive_redis_dying_mid_run(crate::helpers::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::reads_survive_redis_dying_mid_run(crate::helpers::Backend::Postgres).await;
    }
}

async fn get_json(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads `path` twice (the second from the cache) and returns what it answered.
async fn read_twice(app: &TestApp, path: &str) -> Value {
    let (status, first) = get_json(app, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {first}");
    let (_, second) = get_json(app, path).await;
    assert_eq!(first, second, "{path}");
    second
}

fn slugs(list: &Value) -> Vec<&str> {
    list["data"].as_array().unwrap().iter().map(|item| item["slug"].as_str().unwrap()).collect()
}

async fn patch(app: &TestApp, staff: &Client, path: &str, body: Value) {
    let response = staff.patch(app.url(path)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}: {:?}", response.text().await);
}

async fn cache_hits(app: &TestApp) -> u64 {
    let status: Value = app.http.get(app.admin_url("/admin/v1/status")).send().await.unwrap().json().await.unwrap();
    status["caches"].as_array().unwrap().iter().map(|cache| cache["hits"].as_u64().unwrap()).sum()
}

async fn every_catalog_write_is_seen_by_the_next_read(app: &TestApp) {
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    let category_id = category["id"].as_str().unwrap().to_owned();
    let product = app.add_product(&staff, &category_id, "desk-lamp", "20.00", 3).await;
    let id = product["id"].as_str().unwrap().to_owned();
    let item = format!("/api/v1/products/{id}");
    let hits_before = cache_hits(app).await;

    // Filled, then served from the cache.
    assert_eq!(read_twice(app, &item).await["price"], "20.00");
    assert_eq!(read_twice(app, "/api/v1/products/desk-lamp").await["price"], "20.00");
    assert_eq!(slugs(&read_twice(app, "/api/v1/products").await), ["desk-lamp"]);
    assert_eq!(read_twice(app, "/api/v1/products?q=desk").await["total"], 1);
    assert_eq!(read_twice(app, "/api/v1/products/suggestions?q=des").await["products"][0]["slug"], "desk-lamp");
    assert_eq!(read_twice(app, "/api/v1/categories/lamps").await["name"], "Category lamps");
    assert!(cache_hits(app).await >= hits_before + 6, "the second reads were hits");

    // A product change: item (by id and slug), list and search all show it.
    patch(app, &staff, &item, json!({ "price": "25.00", "name": "Reading light" })).await;
    assert_eq!(read_twice(app, &item).await["price"], "25.00");
    assert_eq!(read_twice(app, "/api/v1/products/desk-lamp").await["name"], "Reading light");
    assert_eq!(read_twice(app, "/api/v1/products").await["data"][0]["price"], "25.00");
    assert_eq!(read_twice(app, "/api/v1/products?q=desk").await["total"], 0);
    assert_eq!(read_twice(app, "/api/v1/products?q=reading").await["total"], 1);

    // Stock taken by a checkout, and given back by a cancellation.
    let buyer = app.new_client();
    assert_eq!(buyer.post(app.url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
    let put = buyer.put(app.url(&format!("/api/v1/carts/current/items/{id}"))).json(&json!({ "quantity": 2 }));
    assert_eq!(put.send().await.unwrap().status(), StatusCode::OK);
    let address = json!({ "name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
                          "postalCode": "SW1Y 4JH", "country": "gb" });
    let placed = buyer
        .post(app.url("/api/v1/orders"))
        .header("idempotency-key", "cache-1")
        .json(&json!({ "shippingAddress": address }))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED, "{:?}", placed.text().await);
    let order: Value = placed.json().await.unwrap();
    assert_eq!(read_twice(app, &item).await["stock"], 1);
    assert_eq!(read_twice(app, "/api/v1/products?inStock=true").await["total"], 1);
    let order_id = order["id"].as_str().unwrap();
    let cancelled = buyer.post(app.url(&format!("/api/v1/orders/{order_id}/cancel"))).send().await.unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK, "{:?}", cancelled.text().await);
    assert_eq!(read_twice(app, &item).await["stock"], 3);

    // A category rename, an archive, a delete.
    patch(app, &staff, "/api/v1/categories/lamps", json!({ "name": "Lighting" })).await;
    assert_eq!(read_twice(app, "/api/v1/categories/lamps").await["name"], "Lighting");
    let archived = staff.post(app.url(&format!("{item}/archive"))).send().await.unwrap();
    assert_eq!(archived.status(), StatusCode::OK, "{:?}", archived.text().await);
    assert_eq!(get_json(app, &item).await.0, StatusCode::NOT_FOUND);
    assert_eq!(read_twice(app, "/api/v1/products").await["total"], 0);
    let deleted = staff.delete(app.url(&item)).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let staff_view = staff.get(app.url(&item)).send().await.unwrap();
    assert_eq!(staff_view.status(), StatusCode::NOT_FOUND);
}

async fn a_write_on_one_instance_is_seen_by_another_within_the_bound(app: &TestApp) {
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "desk-lamp", "20.00", 3).await;
    let item = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    let bound = Duration::from_millis(200);
    let peer = app.spawn_peer(|config| config.cache.max_staleness_ms = 200).await;
    assert_eq!(read_twice(&peer, &item).await["price"], "20.00");
    assert_eq!(read_twice(&peer, "/api/v1/products?q=desk").await["total"], 1);
    assert!(cache_hits(&peer).await >= 2, "the peer serves from its cache");

    patch(app, &staff, &item, json!({ "price": "25.00", "name": "Reading light" })).await;
    let written = Instant::now();
    // The peer's poll runs every 200 ms; allow for a loaded machine, but it must come.
    let seen = loop {
        let (_, body) = get_json(&peer, &item).await;
        if body["price"] == "25.00" {
            break written.elapsed();
        }
        assert!(written.elapsed() < bound * 25, "the peer still serves the old price after {:?}", written.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(read_twice(&peer, "/api/v1/products?q=desk").await["total"], 0, "search too, seen after {seen:?}");
    assert_eq!(read_twice(&peer, "/api/v1/products?q=reading").await["total"], 1);
    peer.stop().await;
}

async fn a_logout_on_one_instance_reaches_another_within_the_bound(app: &TestApp) {
    app.create_user("ada@example.com", Role::Customer).await;
    let login =
        app.http.post(app.url("/api/v1/sessions")).json(&json!({ "email": "ada@example.com", "password": PASSWORD }));
    let login = login.send().await.unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let me = |on: &TestApp| on.http.get(on.url("/api/v1/users/me")).header("cookie", &cookie).send();
    let bound = Duration::from_millis(200);
    let peer = app.spawn_peer(|config| config.cache.max_staleness_ms = 200).await;
    for _ in 0..3 {
        assert_eq!(me(&peer).await.unwrap().status(), StatusCode::OK);
    }
    let status: Value = peer.http.get(peer.admin_url("/admin/v1/status")).send().await.unwrap().json().await.unwrap();
    let sessions = status["caches"].as_array().unwrap().iter().find(|cache| cache["name"] == "sessions").unwrap();
    assert!(sessions["hits"].as_u64().unwrap() >= 1, "the peer serves sign-ins from its cache: {sessions}");

    let logout = app.http.delete(app.url("/api/v1/sessions/current")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(app).await.unwrap().status(), StatusCode::UNAUTHORIZED, "at once where it happened");
    let logged_out = Instant::now();
    while me(&peer).await.unwrap().status() != StatusCode::UNAUTHORIZED {
        assert!(
            logged_out.elapsed() < bound * 25,
            "the peer still accepts the session after {:?}",
            logged_out.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peer.stop().await;
}

async fn admin_status(app: &TestApp) -> Value {
    app.http.get(app.admin_url("/admin/v1/status")).send().await.unwrap().json().await.unwrap()
}

/// The figures of cache `name` in `tier` (`local` or `shared`).
fn cache_row<'a>(status: &'a Value, name: &str, tier: &str) -> &'a Value {
    let rows = status["caches"].as_array().unwrap();
    rows.iter()
        .find(|row| row["name"] == name && row["tier"] == tier)
        .unwrap_or_else(|| panic!("{name}/{tier}: {status}"))
}

/// Polls `check` every 20 ms until it holds, failing after `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The generation poll is all but off (a minute): what reaches the peer fast came through
/// Redis — a value another instance loaded, a write it announced, a logout.
async fn writes_and_logouts_reach_every_instance_through_redis(backend: Backend) {
    let slow_poll = |config: &mut shopkeep::config::Config| {
        with_redis(config);
        config.cache.max_staleness_ms = 60_000;
    };
    let app = spawn_app_with(backend, slow_poll).await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "desk-lamp", "20.00", 3).await;
    let item = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    let peer = app.spawn_peer(|_| {}).await;
    // Wait until both trust the stored generation and are subscribed.
    for instance in [&app, &peer] {
        within(Duration::from_secs(10), "the shared tier is healthy", || async {
            admin_status(instance).await["sharedCache"]["healthy"] == true
        })
        .await;
    }

    assert_eq!(read_twice(&app, &item).await["price"], "20.00");
    assert_eq!(read_twice(&peer, &item).await["price"], "20.00");
    let products = cache_row(&admin_status(&peer).await, "products", "shared").clone();
    assert!(products["hits"].as_u64().unwrap() >= 1, "the peer got the app's value from Redis: {products}");
    assert_eq!(products["fills"], 0, "and did not load it itself: {products}");

    patch(&app, &staff, &item, json!({ "price": "25.00" })).await;
    assert_eq!(read_twice(&app, &item).await["price"], "25.00", "read-your-writes where it was written");
    let took = within(Duration::from_secs(5), "the peer sees the new price", || async {
        get_json(&peer, &item).await.1["price"] == "25.00"
    })
    .await;
    assert!(took < Duration::from_secs(5), "announced, not polled: {took:?}");
    assert_eq!(read_twice(&peer, "/api/v1/products").await["data"][0]["price"], "25.00");

    // A logout: sign-ins are cached for up to max_staleness (a minute here) but announced.
    let login =
        app.http.post(app.url("/api/v1/sessions")).json(&json!({ "email": "staff@example.com", "password": PASSWORD }));
    let login = login.send().await.unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let me = |on: &TestApp| on.http.get(on.url("/api/v1/users/me")).header("cookie", &cookie).send();
    for _ in 0..3 {
        assert_eq!(me(&peer).await.unwrap().status(), StatusCode::OK);
    }
    let logout = app.http.delete(app.url("/api/v1/sessions/current")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    within(Duration::from_secs(5), "the peer refuses the session", || async {
        me(&peer).await.unwrap().status() == StatusCode::UNAUTHORIZED
    })
    .await;
    peer.stop().await;
    app.stop().await;
}

/// Redis is killed after the caches filled and brought back later: clients never see an error,
/// writes stay visible, readiness says `degraded` (and stays 200) until Redis is back.
async fn reads_survive_redis_dying_mid_run(backend: Backend) {
    let mut redis = harness::RedisServer::start().await.unwrap();
    let url = redis.url();
    let app = spawn_app_with(backend, |config| {
        config.redis.url = Some(shopkeep::config::Secret::new(&url));
    })
    .await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "desk-lamp", "20.00", 3).await;
    let item = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    within(Duration::from_secs(10), "the shared tier is healthy", || async {
        admin_status(&app).await["sharedCache"]["healthy"] == true
    })
    .await;
    assert_eq!(read_twice(&app, &item).await["price"], "20.00");
    let ready: Value = app.http.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!((&ready["status"], &ready["cache"]), (&json!("ok"), &json!("ok")), "{ready}");

    redis.kill();
    within(Duration::from_secs(10), "readiness notices", || async {
        let ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
        let status = ready.status();
        let body: Value = ready.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "a cache outage keeps the instance in rotation: {body}");
        body["status"] == "degraded"
            && body["cache"] == "redis unreachable; reads served by the local cache and the database"
    })
    .await;
    // Reads of what was cached, of what was not, and after a write: all answered, all right.
    assert_eq!(read_twice(&app, &item).await["price"], "20.00");
    assert_eq!(read_twice(&app, "/api/v1/products?q=desk").await["total"], 1);
    patch(&app, &staff, &item, json!({ "price": "30.00" })).await;
    assert_eq!(read_twice(&app, &item).await["price"], "30.00");
    assert_eq!(read_twice(&app, "/api/v1/products").await["data"][0]["price"], "30.00");
    assert_eq!(read_twice(&app, "/api/v1/categories/lamps").await["slug"], "lamps");
    let status = admin_status(&app).await;
    assert_eq!(status["sharedCache"]["healthy"], false, "{status}");

    redis.restart().await.unwrap();
    within(Duration::from_secs(15), "readiness recovers", || async {
        // The Redis breaker waits (on the limiter clock, manual in tests) before each probe.
        app.limiter_clock.advance(Duration::from_secs(60));
        let ready: Value = app.http.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
        ready["status"] == "ok"
    })
    .await;
    assert_eq!(read_twice(&app, &item).await["price"], "30.00");
    app.stop().await;
}

/// Pages and orders of one filter share one count; a page that is not full needs none; a write
/// makes the count stale at once.
async fn list_totals_are_counted_once_per_filter(app: &TestApp) {
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    let category_id = category["id"].as_str().unwrap().to_owned();
    for index in 0..5 {
        app.add_product(&staff, &category_id, &format!("lamp-{index}"), "20.00", 3).await;
    }
    let counts = |status: &Value| cache_row(status, "product_counts", "local")["fills"].as_u64().unwrap();
    let before = counts(&admin_status(app).await);
    for path in [
        "/api/v1/products?limit=2",
        "/api/v1/products?limit=2&page=2",
        "/api/v1/products?limit=2&sortBy=name",
        "/api/v1/products?limit=2&page=3",
        "/api/v1/products?limit=20",
    ] {
        assert_eq!(read_twice(app, path).await["total"], 5, "{path}");
    }
    assert_eq!(read_twice(app, "/api/v1/products?limit=2&page=9").await["total"], 5, "past the end");
    assert_eq!(counts(&admin_status(app).await) - before, 1, "one count for every page and order of the filter");
    assert_eq!(read_twice(app, "/api/v1/products?limit=2&inStock=true").await["total"], 5);
    assert_eq!(counts(&admin_status(app).await) - before, 2, "another filter, another count");

    app.add_product(&staff, &category_id, "lamp-5", "20.00", 0).await;
    assert_eq!(read_twice(app, "/api/v1/products?limit=2").await["total"], 6);
    assert_eq!(read_twice(app, "/api/v1/products?limit=2&inStock=true").await["total"], 5);
}

/// The plain list's rendered body is cached beside its page: a warm read renders nothing and
/// reads no page; staff get the same body, privately; a write gives a new body and a new ETag.
async fn list_bodies_are_rendered_once_per_generation(app: &TestApp) {
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "lamps").await;
    let category_id = category["id"].as_str().unwrap().to_owned();
    app.add_product(&staff, &category_id, "desk-lamp", "20.00", 3).await;
    let path = "/api/v1/products?limit=5&sortBy=name";
    let figures = |status: &Value, name: &str, field: &str| cache_row(status, name, "local")[field].as_u64().unwrap();
    let before = admin_status(app).await;

    let first = app.http.get(app.url(path)).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["cache-control"], "public, max-age=60");
    assert_eq!(first.headers()["content-type"], "application/json");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let second = app.http.get(app.url(path)).send().await.unwrap();
    assert_eq!(second.headers()["etag"], etag.as_str());
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    let after = admin_status(app).await;
    assert_eq!(figures(&after, "product_list_bodies", "fills") - figures(&before, "product_list_bodies", "fills"), 1);
    assert!(figures(&after, "product_list_bodies", "hits") > figures(&before, "product_list_bodies", "hits"));
    assert_eq!(
        figures(&after, "product_lists", "hits") + figures(&after, "product_lists", "misses"),
        figures(&before, "product_lists", "hits") + figures(&before, "product_lists", "misses") + 1,
        "the warm read did not look at the page"
    );

    let not_modified = app.http.get(app.url(path)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());
    let private = staff.get(app.url(path)).send().await.unwrap();
    assert_eq!(private.headers()["cache-control"], "private, no-cache");
    assert_eq!(private.json::<Value>().await.unwrap(), first, "staff read the same active products");

    let id = first["data"][0]["id"].as_str().unwrap().to_owned();
    patch(app, &staff, &format!("/api/v1/products/{id}"), json!({"name": "Desk lamp, brass"})).await;
    let changed = app.http.get(app.url(path)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK, "the old ETag no longer matches");
    assert_ne!(changed.headers()["etag"], etag.as_str());
    assert_eq!(changed.json::<Value>().await.unwrap()["data"][0]["name"], "Desk lamp, brass");
}

//! Carts, checkout and orders over HTTP: carts (guests' merged at login), checkout that
//! reserves stock atomically and replays by `Idempotency-Key`, 200 concurrent checkouts that
//! never oversell, private orders, and the order state machine — on both backends.

use std::collections::HashSet;

use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, TestApp, error_fields, problem, spawn_app_with};

both_backends!(
    and_pgbouncer:
    carts_hold_products_and_refuse_what_is_not_for_sale,
    checkout_reserves_stock_charges_once_and_replays_by_key,
    orders_are_private_and_follow_the_state_machine,
    concurrent_requests_with_one_key_make_one_order
);

fn address() -> Value {
    json!({ "name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postalCode": "SW1Y 4JH", "country": "gb" })
}

/// A catalog with products `a` (stock 5, 12.50) and `b` (stock 100, 3.00), and a staff client.
async fn catalog(app: &TestApp) -> (Client, Value, Value) {
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "things").await;
    let category_id = category["id"].as_str().unwrap().to_owned();
    let a = app.add_product(&staff, &category_id, "a", "12.50", 5).await;
    let b = app.add_product(&staff, &category_id, "b", "3.00", 100).await;
    (staff, a, b)
}

async fn put(app: &TestApp, client: &Client, product: &Value, quantity: i64) -> reqwest::Response {
    let id = product["id"].as_str().unwrap();
    client
        .put(app.url(&format!("/api/v1/carts/current/items/{id}")))
        .json(&json!({ "quantity": quantity }))
        .send()
        .await
        .unwrap()
}

async fn cart(app: &TestApp, client: &Client) -> Value {
    let response = client.get(app.url("/api/v1/carts/current")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn guest(app: &TestApp) -> Client {
    let client = app.new_client();
    assert_eq!(client.post(app.url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
    client
}

fn checkout(app: &TestApp, client: &Client, key: &str, body: &Value) -> reqwest::RequestBuilder {
    client.post(app.url("/api/v1/orders")).header("idempotency-key", key).json(body)
}

async fn stock(app: &TestApp, product: &Value) -> i64 {
    let id = product["id"].as_str().unwrap();
    let fetched: Value =
        app.http.get(app.url(&format!("/api/v1/products/{id}"))).send().await.unwrap().json().await.unwrap();
    fetched["stock"].as_i64().unwrap()
}

async fn carts_hold_products_and_refuse_what_is_not_for_sale(app: &TestApp) {
    let (staff, a, b) = catalog(app).await;
    let shopper = guest(app).await;
    assert_eq!(cart(app, &shopper).await["items"], json!([]), "an empty cart to start with");
    assert_eq!(put(app, &shopper, &a, 2).await.status(), StatusCode::OK);
    let updated: Value = put(app, &shopper, &b, 3).await.json().await.unwrap();
    assert_eq!(updated["itemCount"], 5);
    assert_eq!(updated["total"], "34.00");
    assert_eq!(updated["currency"], "EUR");
    assert_eq!(updated["items"][0]["lineTotal"], "25.00");
    assert_eq!(updated["items"][0]["available"], true);
    // 0 removes; DELETE removes (and is 204 even when nothing is there).
    assert_eq!(put(app, &shopper, &b, 0).await.status(), StatusCode::OK);
    let id = a["id"].as_str().unwrap();
    let deleted = shopper.delete(app.url(&format!("/api/v1/carts/current/items/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let deleted = shopper.delete(app.url(&format!("/api/v1/carts/current/items/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(cart(app, &shopper).await["itemCount"], 0);

    // Failure paths: bounds, missing quantity, ids, unknown and archived products, no session.
    assert_eq!(error_fields(&problem(put(app, &shopper, &a, 100).await, StatusCode::BAD_REQUEST).await), ["quantity"]);
    assert_eq!(error_fields(&problem(put(app, &shopper, &a, -1).await, StatusCode::BAD_REQUEST).await), ["quantity"]);
    let empty =
        shopper.put(app.url(&format!("/api/v1/carts/current/items/{id}"))).json(&json!({})).send().await.unwrap();
    assert_eq!(error_fields(&problem(empty, StatusCode::BAD_REQUEST).await), ["quantity"]);
    let bad_id =
        shopper.put(app.url("/api/v1/carts/current/items/nope")).json(&json!({ "quantity": 1 })).send().await.unwrap();
    assert_eq!(error_fields(&problem(bad_id, StatusCode::BAD_REQUEST).await), ["productId"]);
    let unknown = json!({ "id": uuid::Uuid::new_v4().to_string() });
    assert_eq!(
        error_fields(&problem(put(app, &shopper, &unknown, 1).await, StatusCode::BAD_REQUEST).await),
        ["productId"]
    );
    let archived =
        staff.post(app.url(&format!("/api/v1/products/{}/archive", b["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(archived.status(), StatusCode::OK);
    assert_eq!(error_fields(&problem(put(app, &shopper, &b, 1).await, StatusCode::BAD_REQUEST).await), ["productId"]);
    let anonymous = app.http.get(app.url("/api/v1/carts/current")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;

    // A guest's cart joins the account's cart when the guest signs in.
    app.create_user("ada@example.com", Role::Customer).await;
    let laptop = app.new_client();
    let signed_in = laptop
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    assert_eq!(put(app, &laptop, &a, 1).await.status(), StatusCode::OK);
    assert_eq!(put(app, &shopper, &a, 2).await.status(), StatusCode::OK);
    let login = shopper
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    let merged = cart(app, &laptop).await;
    assert_eq!(merged["items"].as_array().unwrap().len(), 1);
    assert_eq!(merged["items"][0]["quantity"], 3, "quantities added up");
}

async fn checkout_reserves_stock_charges_once_and_replays_by_key(app: &TestApp) {
    let (_staff, a, b) = catalog(app).await;
    app.create_user("ada@example.com", Role::Customer).await;
    let buyer = app.new_client();
    let login = buyer
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    let body = json!({ "shippingAddress": address() });

    // Bad requests have no effect and do not use up the key.
    let missing = buyer.post(app.url("/api/v1/orders")).json(&body).send().await.unwrap();
    assert_eq!(error_fields(&problem(missing, StatusCode::BAD_REQUEST).await), ["Idempotency-Key"]);
    let invalid =
        checkout(app, &buyer, "key-1", &json!({ "shippingAddress": { "country": "Germany" } })).send().await.unwrap();
    let fields = error_fields(&problem(invalid, StatusCode::BAD_REQUEST).await);
    for field in [
        "shippingAddress.name",
        "shippingAddress.line1",
        "shippingAddress.city",
        "shippingAddress.postalCode",
        "shippingAddress.country",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    let empty = checkout(app, &buyer, "key-1", &body).send().await.unwrap();
    assert_eq!(error_fields(&problem(empty, StatusCode::BAD_REQUEST).await), ["cart"]);
    assert_eq!(put(app, &buyer, &a, 6).await.status(), StatusCode::OK);
    let short = checkout(app, &buyer, "key-1", &body).send().await.unwrap();
    let short = problem(short, StatusCode::CONFLICT).await;
    assert!(short["detail"].as_str().unwrap().contains("5 left"), "{short}");
    assert_eq!(stock(app, &a).await, 5, "nothing reserved");

    // The order: stock reserved, charged (test mode), confirmed by mail, cart emptied.
    assert_eq!(put(app, &buyer, &a, 2).await.status(), StatusCode::OK);
    assert_eq!(put(app, &buyer, &b, 1).await.status(), StatusCode::OK);
    let placed = checkout(app, &buyer, "key-1", &body).send().await.unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    let location = placed.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let order: Value = placed.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/orders/{}", order["id"].as_str().unwrap()));
    assert_eq!(order["status"], "paid");
    assert_eq!(order["testMode"], true);
    assert_eq!(order["total"], "28.00");
    assert_eq!(order["lines"][0]["unitPrice"], "12.50");
    assert_eq!(order["lines"][0]["quantity"], 2);
    assert_eq!(order["shippingAddress"]["country"], "GB");
    assert_eq!((stock(app, &a).await, stock(app, &b).await), (3, 99));
    assert_eq!(cart(app, &buyer).await["itemCount"], 0, "the ordered products left the cart");
    let mail = app.outbox_with(1).await;
    assert!(
        mail[0].mail.subject.contains("confirmed") && mail[0].mail.subject.contains("TEST MODE"),
        "{}",
        mail[0].mail.subject
    );
    assert!(mail[0].mail.text.contains("28.00 EUR"), "{}", mail[0].mail.text);

    // A replay is the saved answer: the same order, nothing reserved or charged again.
    let replay = checkout(app, &buyer, "key-1", &body).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()[header::LOCATION].to_str().unwrap(), location);
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], order["id"]);
    assert_eq!(stock(app, &a).await, 3);
    // The same key with another body is refused.
    let other = json!({ "shippingAddress": { "name": "Someone Else", "line1": "1 Road", "city": "Paris", "postalCode": "75001", "country": "FR" } });
    problem(checkout(app, &buyer, "key-1", &other).send().await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    // Keys are per user: another buyer's "key-1" is theirs.
    let list: Value = buyer.get(app.url("/api/v1/orders")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 1);
    let key_too_long = "k".repeat(256);
    problem(checkout(app, &buyer, &key_too_long, &body).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
}

async fn orders_are_private_and_follow_the_state_machine(app: &TestApp) {
    let (staff, a, _b) = catalog(app).await;
    let body = json!({ "shippingAddress": address() });
    let buyer = guest(app).await;
    let mut orders = Vec::new();
    for key in ["first", "second", "third"] {
        assert_eq!(put(app, &buyer, &a, 1).await.status(), StatusCode::OK);
        let placed = checkout(app, &buyer, key, &body).send().await.unwrap();
        assert_eq!(placed.status(), StatusCode::CREATED);
        orders.push(placed.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(stock(app, &a).await, 2);
    let path = |id: &str, action: &str| app.url(&format!("/api/v1/orders/{id}{action}"));

    // Someone else's order does not exist for them, whatever they try.
    let stranger = guest(app).await;
    for action in ["", "/cancel"] {
        let response = if action.is_empty() {
            stranger.get(path(&orders[0], action)).send().await.unwrap()
        } else {
            stranger.post(path(&orders[0], action)).send().await.unwrap()
        };
        problem(response, StatusCode::NOT_FOUND).await;
    }
    let theirs: Value = stranger.get(app.url("/api/v1/orders")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["total"], 0);
    problem(stranger.post(path(&orders[0], "/fulfil")).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    problem(buyer.get(path("not-an-id", "")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(buyer.get(path(&uuid::Uuid::new_v4().to_string(), "")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let mine: Value = buyer.get(app.url("/api/v1/orders?limit=2")).send().await.unwrap().json().await.unwrap();
    assert_eq!((mine["total"].as_u64(), mine["totalPages"].as_u64()), (Some(3), Some(2)));
    assert_eq!(mine["data"][0]["id"], orders[2].as_str(), "newest first");
    problem(buyer.get(app.url("/api/v1/orders?status=lost")).send().await.unwrap(), StatusCode::BAD_REQUEST).await;

    // The buyer cancels a paid order: stock back, refunded by a job (test mode).
    let cancelled: Value = buyer.post(path(&orders[0], "/cancel")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(stock(app, &a).await, 3);
    let refunded = until_status(app, &buyer, &orders[0], "refunded").await;
    assert!(refunded["refundedAt"].is_string());
    problem(buyer.post(path(&orders[0], "/cancel")).send().await.unwrap(), StatusCode::CONFLICT).await;

    // Staff fulfil; a fulfilled order cannot be cancelled, but staff can refund it.
    let fulfilled: Value = staff.post(path(&orders[1], "/fulfil")).send().await.unwrap().json().await.unwrap();
    assert_eq!(fulfilled["status"], "fulfilled");
    problem(staff.post(path(&orders[1], "/fulfil")).send().await.unwrap(), StatusCode::CONFLICT).await;
    problem(buyer.post(path(&orders[1], "/cancel")).send().await.unwrap(), StatusCode::CONFLICT).await;
    problem(buyer.post(path(&orders[1], "/refund")).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    let refunding = staff.post(path(&orders[1], "/refund")).send().await.unwrap();
    assert_eq!(refunding.status(), StatusCode::ACCEPTED);
    until_status(app, &buyer, &orders[1], "refunded").await;
    assert_eq!(stock(app, &a).await, 3, "a shipped order's stock does not come back");
    problem(staff.post(path(&orders[0], "/refund")).send().await.unwrap(), StatusCode::CONFLICT).await;

    // Staff see every order and filter by status.
    let paid: Value = staff.get(app.url("/api/v1/orders?status=paid")).send().await.unwrap().json().await.unwrap();
    assert_eq!(paid["total"], 1);
    assert_eq!(paid["data"][0]["id"], orders[2].as_str());
    let all: Value = staff.get(app.url("/api/v1/orders")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["total"], 3);
}

async fn until_status(app: &TestApp, client: &Client, id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let order: Value =
            client.get(app.url(&format!("/api/v1/orders/{id}"))).send().await.unwrap().json().await.unwrap();
        if order["status"] == status {
            return order;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("order {id} never became {status}");
}

async fn concurrent_requests_with_one_key_make_one_order(app: &TestApp) {
    let (_staff, a, _b) = catalog(app).await;
    let buyer = guest(app).await;
    assert_eq!(put(app, &buyer, &a, 1).await.status(), StatusCode::OK);
    let body = json!({ "shippingAddress": address() });
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = checkout(app, &buyer, "double-click", &body);
        requests.spawn(async move { request.send().await.unwrap() });
    }
    let mut order_ids = HashSet::new();
    let mut busy = 0;
    while let Some(response) = requests.join_next().await {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => {
                let order: Value = response.json().await.unwrap();
                order_ids.insert(order["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert!(response.headers().contains_key(header::RETRY_AFTER));
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(order_ids.len(), 1, "one order, however many duplicates ({busy} were told to wait)");
    assert_eq!(stock(app, &a).await, 4);
    let list: Value = buyer.get(app.url("/api/v1/orders")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 1);
}

/// 200 buyers at once for 50 units: exactly 50 orders, stock 0, the rest a clear 409 — with
/// half of the carts also holding a shared product whose stock must fall by exactly the
/// successful orders that held it.
async fn two_hundred_checkouts_against_fifty_units(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.rate_limits.enabled = false;
        config.database.max_connections = 10;
    })
    .await;
    let (_staff, scarce, shared) = {
        let staff = app.signed_in("staff@example.com", Role::Staff).await;
        let category = app.add_category(&staff, "drop").await;
        let category_id = category["id"].as_str().unwrap().to_owned();
        let scarce = app.add_product(&staff, &category_id, "scarce", "99.00", 50).await;
        let shared = app.add_product(&staff, &category_id, "shared", "1.00", 1_000).await;
        (staff, scarce, shared)
    };
    let mut buyers = Vec::new();
    for index in 0..200 {
        let buyer = guest(&app).await;
        assert_eq!(put(&app, &buyer, &scarce, 1).await.status(), StatusCode::OK);
        if index % 2 == 0 {
            assert_eq!(put(&app, &buyer, &shared, 2).await.status(), StatusCode::OK);
        }
        buyers.push((buyer, index % 2 == 0));
    }
    let body = json!({ "shippingAddress": address() });
    let mut requests = tokio::task::JoinSet::new();
    for (index, (buyer, with_shared)) in buyers.into_iter().enumerate() {
        let request = checkout(&app, &buyer, &format!("drop-{index}"), &body);
        requests.spawn(async move { (request.send().await.unwrap(), with_shared) });
    }
    let (mut paid, mut refused, mut shared_units) = (0, 0, 0);
    while let Some(result) = requests.join_next().await {
        let (response, with_shared) = result.unwrap();
        match response.status() {
            StatusCode::CREATED => {
                paid += 1;
                if with_shared {
                    shared_units += 2;
                }
            }
            StatusCode::CONFLICT => {
                let detail = problem(response, StatusCode::CONFLICT).await;
                assert!(detail["detail"].as_str().unwrap().contains("not enough stock"), "{detail}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!((paid, refused), (50, 150));
    assert_eq!(stock(&app, &scarce).await, 0);
    assert_eq!(stock(&app, &shared).await, 1_000 - shared_units);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_checkouts_on_sqlite() {
    two_hundred_checkouts_against_fifty_units(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_checkouts_on_postgres() {
    two_hundred_checkouts_against_fifty_units(Backend::Postgres).await;
}

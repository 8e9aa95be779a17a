//! Checkout load generator for `bench/orders.sh`: `clients` guests each loop "put one product
//! in the cart, check out with a new Idempotency-Key" against a running shop for `seconds`,
//! over products spread across `products` items (1 = everyone on one hot product). Prints one
//! JSON line: orders/s (completed checkouts over wall time) and the checkout (`POST /orders`)
//! latency p50/p99 in ms.
//!
//!   checkout_load --url http://127.0.0.1:8080 --email staff@example.com --password … \
//!       --clients 32 --seconds 15 --products 1000 --label spread --backend sqlite

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{Value, json};

struct Args {
    url: String,
    email: String,
    password: String,
    clients: usize,
    seconds: u64,
    products: usize,
    label: String,
    backend: String,
}

fn args() -> Args {
    let mut parsed = Args {
        url: "http://127.0.0.1:8080".into(),
        email: String::new(),
        password: String::new(),
        clients: 32,
        seconds: 15,
        products: 1_000,
        label: "run".into(),
        backend: "unknown".into(),
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => parsed.url = value,
            "--email" => parsed.email = value,
            "--password" => parsed.password = value,
            "--clients" => parsed.clients = value.parse().expect("--clients"),
            "--seconds" => parsed.seconds = value.parse().expect("--seconds"),
            "--products" => parsed.products = value.parse().expect("--products"),
            "--label" => parsed.label = value,
            "--backend" => parsed.backend = value,
            other => panic!("unknown argument {other}"),
        }
    }
    parsed
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).timeout(Duration::from_secs(30)).build().expect("client")
}

#[tokio::main]
async fn main() {
    integration::install_crypto_provider();
    let args = args();
    let url = |path: &str| format!("{}{path}", args.url);
    let staff = client();
    let login = staff
        .post(url("/api/v1/sessions"))
        .json(&json!({ "email": args.email, "password": args.password }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 201, "staff login");
    let slug = format!("load-{}", uuid::Uuid::new_v4().simple());
    let category: Value = staff
        .post(url("/api/v1/categories"))
        .json(&json!({ "name": "Load", "slug": slug }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut products = Vec::with_capacity(args.products);
    for index in 0..args.products {
        let product: Value = staff
            .post(url("/api/v1/products"))
            .json(&json!({ "name": format!("Load {index}"), "slug": format!("{slug}-{index}"), "description": "",
                           "price": "1.00", "currency": "EUR", "stock": 1_000_000_000, "categoryId": category["id"] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        products.push(product["id"].as_str().expect("product id").to_owned());
    }
    let products = Arc::new(products);
    let address = json!({ "name": "Load", "line1": "1 Road", "city": "Paris", "postalCode": "75001", "country": "FR" });
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let buyer = client();
        assert_eq!(buyer.post(url("/api/v1/guests")).send().await.unwrap().status(), 201);
        let (products, address, base) = (Arc::clone(&products), address.clone(), args.url.clone());
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0_u64);
            while Instant::now() < deadline {
                let product = &products[rand::rng().random_range(0..products.len())];
                let put = buyer
                    .put(format!("{base}/api/v1/carts/current/items/{product}"))
                    .json(&json!({ "quantity": 1 }))
                    .send()
                    .await;
                if !put.is_ok_and(|response| response.status() == 200) {
                    errors += 1;
                    continue;
                }
                let begun = Instant::now();
                let placed = buyer
                    .post(format!("{base}/api/v1/orders"))
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({ "shippingAddress": address }))
                    .send()
                    .await;
                match placed {
                    Ok(response) if response.status() == 201 => latencies.push(begun.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while let Some(result) = tasks.join_next().await {
        let (mut some, failed) = result.expect("client task");
        latencies.append(&mut some);
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |latency| latency.as_secs_f64() * 1_000.0)
    };
    println!(
        "{}",
        json!({
            "backend": args.backend, "label": args.label, "products": args.products, "clients": args.clients,
            "orders": latencies.len(), "errors": errors, "seconds": elapsed,
            "ordersPerSecond": latencies.len() as f64 / elapsed,
            "p50Ms": percentile(0.50), "p99Ms": percentile(0.99),
        })
    );
}

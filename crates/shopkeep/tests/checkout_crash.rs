//! Checkout under abrupt kills (seed 004 §13: "an abrupt kill mid-deployment can … produce
//! double charges"): the real `shopkeep` binary is SIGKILLed at random moments while buyers
//! check out against the payment sandbox (which answers slowly, so kills land mid-charge) and
//! retry with the same `Idempotency-Key` until they get an answer. Afterwards the sandbox's
//! charges must match the paid orders, one charge each, and stock + sold = initial stock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::{ChargeStatus, PaymentMode, PaymentSandbox};
use rand::Rng as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use support::{free_port, shopkeep};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "sk_test_crash";
const INITIAL_STOCK: i64 = 30;
const BUYERS: usize = 24;
const KILLS: usize = 6;

/// A running `shopkeep serve`, killed (SIGKILL) when dropped.
struct Shop {
    child: Child,
}

impl Shop {
    /// Starts the shop on `port` and waits until it is ready.
    async fn start(config: &Path, database_url: &str, port: u16) -> Self {
        let mut child = shopkeep(config, database_url)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
            .env("SHOPKEEP_LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let entry: Value = serde_json::from_str(&line).unwrap_or_default();
                if entry["message"] == "shopkeep is ready" {
                    return;
                }
            }
            panic!("the shop exited before it was ready");
        })
        .await
        .expect("ready within 30 s");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child }
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

fn write_config(directory: &Path, sandbox_url: &str) -> PathBuf {
    let path = directory.join("shopkeep.toml");
    let toml = format!(
        r#"
[accounts]
login_challenge_roles = []
[rate_limits]
enabled = false
[jobs]
poll_interval_ms = 100
[orders]
idempotency_lock_secs = 5
settle_after_secs = 1
[payments]
url = "{sandbox_url}"
secret = "{SECRET}"
timeout_secs = 3
attempt_timeout_secs = 2
[database]
migrate_on_start = true
[log]
level = "info"
"#
    );
    std::fs::write(&path, toml).unwrap();
    path
}

async fn crash_test(database_url: String) {
    integration::install_crypto_provider();
    let directory = tempfile::tempdir().unwrap();
    // Slow answers, so that kills land while charges are under way.
    let sandbox = PaymentSandbox::start(SECRET).await.unwrap();
    // 800 ms per charge: all buyers start together, so the first kill (200–400 ms in) lands
    // while every first charge is under way; the later ones land among the retries.
    sandbox.set_mode(PaymentMode::Slow { delay: Duration::from_millis(800) });
    let config = write_config(directory.path(), &sandbox.url());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let url = |path: &str| format!("{base}{path}");

    // A staff account (CLI), then the product, through the running shop.
    let status = shopkeep(&config, &database_url)
        .args(["admin", "create-user", "--email", "staff@example.com", "--role", "staff"])
        .env("SHOPKEEP_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let mut shop = Shop::start(&config, &database_url, port).await;
    let client = || Client::builder().cookie_store(true).timeout(Duration::from_secs(10)).build().unwrap();
    let staff = client();
    let login =
        staff.post(url("/api/v1/sessions")).json(&json!({ "email": "staff@example.com", "password": PASSWORD }));
    assert_eq!(login.send().await.unwrap().status(), StatusCode::CREATED);
    let category: Value = staff
        .post(url("/api/v1/categories"))
        .json(&json!({ "name": "Drop", "slug": "drop" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product: Value = staff
        .post(url("/api/v1/products"))
        .json(&json!({ "name": "Scarce", "slug": "scarce", "description": "", "price": "10.00", "currency": "EUR",
                       "stock": INITIAL_STOCK, "categoryId": category["id"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product_id = product["id"].as_str().unwrap().to_owned();

    // Buyers: guests with 1–2 units each (more wanted than in stock).
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        let buyer = client();
        assert_eq!(buyer.post(url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
        let quantity = rand::rng().random_range(1..=2);
        let put = buyer
            .put(url(&format!("/api/v1/carts/current/items/{product_id}")))
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::OK);
        buyers.push(buyer);
    }

    // Every buyer checks out with one key and retries it until the shop gives a final answer.
    let address = json!({ "name": "Ada", "line1": "1 Road", "city": "Paris", "postalCode": "75001", "country": "FR" });
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut checkouts = tokio::task::JoinSet::new();
    for (index, buyer) in buyers.iter().cloned().enumerate() {
        let (url, address) = (url("/api/v1/orders"), address.clone());
        let interrupted = std::sync::Arc::clone(&interrupted);
        checkouts.spawn(async move {
            let key = format!("crash-{index}");
            let mut attempts = 0;
            loop {
                attempts += 1;
                assert!(attempts < 400, "buyer {index} never got an answer");
                let sent = buyer
                    .post(&url)
                    .header("idempotency-key", &key)
                    .json(&json!({ "shippingAddress": address }))
                    .send()
                    .await;
                // A connection error (the shop is down) or a 5xx while it restarts: retry.
                if sent.is_err() {
                    interrupted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Ok(response) = sent {
                    match response.status() {
                        StatusCode::CREATED | StatusCode::ACCEPTED | StatusCode::PAYMENT_REQUIRED => {
                            let order: Value = response.json().await.unwrap_or_default();
                            return (index, Some(order["id"].as_str().map(str::to_owned)));
                        }
                        // Out of stock is a final answer; a busy key (Retry-After) is not.
                        StatusCode::CONFLICT if !response.headers().contains_key("retry-after") => {
                            return (index, None);
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    // Meanwhile: kill the shop at random moments and start it again on the same port.
    for kill in 0..KILLS {
        let wait = if kill == 0 { rand::rng().random_range(200..400) } else { rand::rng().random_range(150..900) };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        shop.kill().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        shop = Shop::start(&config, &database_url, port).await;
    }
    let mut answered = 0;
    while let Some(result) = checkouts.join_next().await {
        result.unwrap();
        answered += 1;
    }
    assert_eq!(answered, BUYERS);
    let interrupted = interrupted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(interrupted > 0, "the kills interrupted checkouts in flight");
    eprintln!("{interrupted} checkout requests were cut off by {KILLS} kills");

    // Let settlement finish: no order may stay pendingPayment.
    let orders = loop {
        let list: Value = staff.get(url("/api/v1/orders?limit=100")).send().await.unwrap().json().await.unwrap();
        let data = list["data"].as_array().unwrap().clone();
        if data.iter().all(|order| order["status"] != "pendingPayment") {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stock = {
        let product: Value =
            staff.get(url(&format!("/api/v1/products/{product_id}"))).send().await.unwrap().json().await.unwrap();
        product["stock"].as_i64().unwrap()
    };
    shop.kill().await;

    // Money: one succeeded charge per paid order, none for anything else.
    let mut succeeded: HashMap<String, usize> = HashMap::new();
    for charge in sandbox.charges() {
        if charge.status == ChargeStatus::Succeeded {
            *succeeded.entry(charge.order_id.clone()).or_default() += 1;
        }
    }
    assert!(succeeded.values().all(|count| *count == 1), "an order was charged twice: {succeeded:?}");
    let paid: HashSet<String> = orders
        .iter()
        .filter(|order| order["status"] == "paid")
        .map(|order| order["id"].as_str().unwrap().to_owned())
        .collect();
    let charged: HashSet<String> = succeeded.keys().cloned().collect();
    assert_eq!(charged, paid, "the charges recorded by the provider are exactly the paid orders");
    // Stock: what is left plus what the paid orders hold is what there was.
    let sold: i64 = orders
        .iter()
        .filter(|order| order["status"] == "paid")
        .map(|order| order["lines"][0]["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(stock + sold, INITIAL_STOCK, "stock {stock} + sold {sold}");
    assert!(!paid.is_empty(), "some orders were paid");
    // Every buyer has at most one order (one key, one order).
    let mut owners = HashSet::new();
    for order in &orders {
        assert!(owners.insert(order["userId"].as_str().unwrap().to_owned()), "a buyer has two orders");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_mid_checkout_never_double_charge_or_lose_stock_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("shop.db").display());
    crash_test(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_mid_checkout_never_double_charge_or_lose_stock_on_postgres() {
    let server = std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap_or(server);
    let url = format!("{base}/shopkeep_crash_{}", uuid::Uuid::new_v4().simple());
    store_sqlx::provisioning::create_database_if_missing(&url).await.expect("PostgreSQL is reachable");
    crash_test(url.clone()).await;
    store_sqlx::provisioning::drop_database(&url).await.expect("the test database is dropped");
}

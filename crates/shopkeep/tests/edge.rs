//! Many instances behind an edge (seed 003 §1–2, seed 004 §13): three real `shopkeep serve`
//! processes on PostgreSQL + Redis behind `shopkeep gateway`, behind nginx and behind HAProxy.
//! Customers sign up, browse, fill a cart and check out while one instance is SIGKILLed and
//! another is replaced blue/green (a new one added, the old one drained and stopped). Every
//! idempotent request (GET, PUT) must succeed, and every checkout — retried with its
//! `Idempotency-Key` until it gets a final answer — must make exactly one order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use support::{free_port, shopkeep};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
const CUSTOMERS: usize = 6;
const TOKEN: &str = "edge-test-admin-token-0123";

/// A running `shopkeep serve`.
struct Instance {
    child: Child,
    port: u16,
}

impl Instance {
    async fn start(config: &Path, database_url: &str, port: u16) -> Self {
        let mut child = shopkeep(config, database_url)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("http://127.0.0.1:{port}/health/ready")).send().await;
            if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "the instance on {port} exited before it was ready");
            assert!(tokio::time::Instant::now() < deadline, "the instance on {port} was not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { child, port }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no draining, connections cut.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM: readiness off, in-flight requests finished, exit 0.
    async fn terminate(mut self) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "a drained instance exits 0");
    }
}

fn write_config(directory: &Path, redis_url: &str) -> PathBuf {
    let path = directory.join("shopkeep.toml");
    let prefix = format!("edge-{}", uuid::Uuid::new_v4().simple());
    let toml = format!(
        r#"
[server]
drain_delay_secs = 1
shutdown_timeout_secs = 10
[accounts]
login_challenge_roles = []
[rate_limits]
enabled = false
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
[jobs]
poll_interval_ms = 100
# A checkout cut off by the SIGKILL holds its key until this lease ends; then a retry resumes it.
[orders]
idempotency_lock_secs = 5
[log]
level = "warn"
"#
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// Which edge the instances sit behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Gateway,
    Nginx,
    Haproxy,
}

/// A running edge: its public URL and what it takes to change its pool.
struct Front {
    url: String,
    kind: Edge,
    admin: Option<String>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    process: Option<Child>,
    directory: tempfile::TempDir,
}

fn tool(name: &str) -> String {
    for candidate in [format!("/usr/sbin/{name}"), format!("/usr/bin/{name}")] {
        if Path::new(&candidate).exists() {
            return candidate;
        }
    }
    panic!("{name} is required by this test (scripts/services installs it)");
}

impl Front {
    /// `backends` are in the pool from the start; `standby` is listed too (for nginx and
    /// HAProxy, whose pools are static files) but not running yet.
    async fn start(kind: Edge, backends: &[String], standby: &str) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut front = Front {
            url: url.clone(),
            kind,
            admin: None,
            stop: CancellationToken::new(),
            task: None,
            process: None,
            directory,
        };
        let dir = front.directory.path().to_owned();
        match kind {
            Edge::Gateway => {
                let config = gateway::GatewayConfig {
                    listen: format!("127.0.0.1:{port}"),
                    admin_listen: "127.0.0.1:0".into(),
                    admin_token: Some(gateway::config::AdminToken::new(TOKEN)),
                    backends: backends
                        .iter()
                        .enumerate()
                        .map(|(index, address)| gateway::BackendConfig {
                            name: format!("shop-{index}"),
                            address: address.clone(),
                            weight: 1,
                            tls: false,
                        })
                        .collect(),
                    health: gateway::config::HealthConfig {
                        interval_ms: 200,
                        timeout_ms: 200,
                        rise: 1,
                        fall: 1,
                        ..Default::default()
                    },
                    slow_start_ms: 1_000,
                    ..Default::default()
                };
                let built = gateway::Gateway::build(config, None).await.unwrap();
                front.admin = Some(format!("http://127.0.0.1:{}", built.admin_port()));
                front.task = Some(tokio::spawn(built.run_until_stopped(front.stop.clone())));
            }
            Edge::Nginx => {
                let servers: String = backends
                    .iter()
                    .chain(std::iter::once(&standby.to_owned()))
                    .map(|address| format!("server {address} max_fails=1 fail_timeout=2s;\n"))
                    .collect();
                let conf = format!(
                    r#"worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream shop {{
        {servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#,
                    dir = dir.display()
                );
                std::fs::write(dir.join("nginx.conf"), conf).unwrap();
                let child = Command::new(tool("nginx"))
                    .arg("-c")
                    .arg(dir.join("nginx.conf"))
                    .arg("-p")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    // Not kill_on_drop: SIGKILL would orphan nginx's workers; `Drop` sends SIGTERM.
                    .spawn()
                    .unwrap();
                front.process = Some(child);
            }
            Edge::Haproxy => {
                let servers: String = backends
                    .iter()
                    .chain(std::iter::once(&standby.to_owned()))
                    .enumerate()
                    .map(|(index, address)| format!("    server shop-{index} {address} check\n"))
                    .collect();
                let conf = format!(
                    r#"global
    maxconn 1024
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 15s
    option http-keep-alive
    option forwardfor
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504
frontend shop
    bind 127.0.0.1:{port}
    acl idempotent method GET HEAD OPTIONS PUT DELETE
    http-request disable-l7-retry unless idempotent
    default_backend shop
backend shop
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{servers}"#
                );
                std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
                let child = Command::new(tool("haproxy"))
                    .arg("-f")
                    .arg(dir.join("haproxy.cfg"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    // Not kill_on_drop: SIGKILL would orphan nginx's workers; `Drop` sends SIGTERM.
                    .spawn()
                    .unwrap();
                front.process = Some(child);
            }
        }
        // Ready when a request gets through.
        let client = Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get(format!("{url}/api/v1/products")).send().await
                && response.status() == StatusCode::OK
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{kind:?} never passed a request through");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        front
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let base = self.admin.as_ref().unwrap();
        let mut request = Client::new().request(method, format!("{base}{path}")).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// Blue/green: `green` joins (for the gateway: added and awaited healthy), `blue` leaves
    /// (the gateway drains it first; the others see its readiness turn 503 on SIGTERM).
    async fn replace(&self, blue: Instance, blue_name: &str, green: &Instance) {
        if self.kind == Edge::Gateway {
            self.admin(
                reqwest::Method::POST,
                "/admin/v1/backends",
                Some(json!({"name": "green", "address": green.address(), "weight": 1})),
            )
            .await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let state = self.admin(reqwest::Method::GET, "/admin/v1/backends/green", None).await;
                if state["health"] == "healthy" {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "green never became healthy");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let removed = self
                .admin(reqwest::Method::DELETE, &format!("/admin/v1/backends/{blue_name}?timeout_ms=10000"), None)
                .await;
            assert_eq!(removed["drained"], true, "blue's requests in flight finished");
        } else {
            // Let the edge's checks (HAProxy) or first failures (nginx) find green up.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        blue.terminate().await;
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        if let Some(mut process) = self.process.take() {
            // SIGTERM, so nginx's master stops its workers too (SIGKILL would orphan them).
            if let Some(pid) = process.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            if tokio::time::timeout(Duration::from_secs(10), process.wait()).await.is_err() {
                let _ = process.start_kill();
                let _ = process.wait().await;
            }
        }
    }
}

impl Drop for Front {
    /// A failed test still stops nginx's workers and HAProxy: SIGTERM to the master.
    fn drop(&mut self) {
        if let Some(pid) = self.process.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
}

/// What the customers saw.
#[derive(Default)]
struct Tally {
    idempotent_requests: AtomicUsize,
    idempotent_failures: AtomicUsize,
    checkout_attempts: AtomicUsize,
    checkouts: AtomicUsize,
}

fn failed(result: &Result<reqwest::Response, reqwest::Error>) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(_) => true,
    }
}

/// One customer: signs up, then browses, fills the cart and checks out until told to stop.
/// Returns how many orders its checkouts made.
async fn customer(base: String, index: usize, product: Value, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> usize {
    let client = Client::builder().cookie_store(true).timeout(Duration::from_secs(20)).build().unwrap();
    let url = |path: &str| format!("{base}/api/v1{path}");
    let email = format!("customer-{index}@example.com");
    // Sign up (a POST: retried by hand; a lost answer may mean it worked, then sign in).
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < give_up, "customer {index} could not sign up within 60 s");
        let sent = client
            .post(url("/users"))
            .json(&json!({"email": email, "password": PASSWORD, "name": format!("Customer {index}")}))
            .send()
            .await;
        match sent.as_ref().map(reqwest::Response::status) {
            Ok(StatusCode::CREATED) => break,
            Ok(StatusCode::CONFLICT) => {
                let login = client.post(url("/sessions")).json(&json!({"email": email, "password": PASSWORD}));
                if login.send().await.is_ok_and(|response| response.status() == StatusCode::CREATED) {
                    break;
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idempotent = |result: Result<reqwest::Response, reqwest::Error>, what: &str| {
        tally.idempotent_requests.fetch_add(1, Ordering::Relaxed);
        if failed(&result) {
            tally.idempotent_failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("customer {index}: {what} failed: {:?}", result.map(|response| response.status()));
            return None;
        }
        result.ok()
    };
    let product_id = product["id"].as_str().unwrap().to_owned();
    let slug = product["slug"].as_str().unwrap().to_owned();
    let address = json!({"name": "Ada", "line1": "1 Road", "city": "Paris", "postalCode": "75001", "country": "FR"});
    let mut orders = 0;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        idempotent(client.get(url("/products?limit=20")).send().await, "list products");
        idempotent(client.get(url(&format!("/products/{slug}"))).send().await, "get product");
        idempotent(
            client.put(url(&format!("/carts/current/items/{product_id}"))).json(&json!({"quantity": 1})).send().await,
            "put cart item",
        );
        // Checkout: one key, retried until a final answer.
        let key = format!("edge-{index}-{round}");
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                tokio::time::Instant::now() < give_up,
                "customer {index}: checkout {key} got no final answer in 60 s"
            );
            tally.checkout_attempts.fetch_add(1, Ordering::Relaxed);
            let sent = client
                .post(url("/orders"))
                .header("idempotency-key", &key)
                .json(&json!({"shippingAddress": address}))
                .send()
                .await;
            if let Ok(response) = sent {
                let status = response.status();
                if matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED) {
                    let order: Value = response.json().await.unwrap_or_default();
                    if let Some(id) = order["id"].as_str() {
                        idempotent(client.get(url(&format!("/orders/{id}"))).send().await, "get order");
                    }
                    orders += 1;
                    tally.checkouts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                assert!(
                    status.is_server_error()
                        || status == StatusCode::CONFLICT
                        || status == StatusCode::TOO_MANY_REQUESTS,
                    "checkout answered {status}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    orders
}

async fn journey(kind: Edge) {
    integration::install_crypto_provider();
    let server = std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis = std::env::var("SHOPKEEP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let base = server.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap_or(server);
    let database = format!("{base}/shopkeep_edge_{}", uuid::Uuid::new_v4().simple());
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &redis);
    let migrated = shopkeep(&config, &database).args(["migrate", "up"]).stdout(Stdio::null()).status().await.unwrap();
    assert!(migrated.success(), "migrations (PostgreSQL must be reachable, the configuration valid)");
    let created = shopkeep(&config, &database)
        .args(["admin", "create-user", "--email", "staff@example.com", "--role", "staff"])
        .env("SHOPKEEP_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(created.success());

    let (a, b, c) = tokio::join!(
        Instance::start(&config, &database, free_port()),
        Instance::start(&config, &database, free_port()),
        Instance::start(&config, &database, free_port()),
    );
    let green_port = free_port();
    let green_address = format!("127.0.0.1:{green_port}");
    let front = Front::start(kind, &[a.address(), b.address(), c.address()], &green_address).await;

    // Staff make the product through the edge.
    let staff = Client::builder().cookie_store(true).timeout(Duration::from_secs(10)).build().unwrap();
    let url = |path: &str| format!("{}/api/v1{path}", front.url);
    let login = staff.post(url("/sessions")).json(&json!({"email": "staff@example.com", "password": PASSWORD}));
    assert_eq!(login.send().await.unwrap().status(), StatusCode::CREATED);
    let category: Value = staff
        .post(url("/categories"))
        .json(&json!({"name": "Edge", "slug": "edge"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product: Value = staff
        .post(url("/products"))
        .json(&json!({"name": "Sturdy", "slug": "sturdy", "description": "", "price": "5.00", "currency": "EUR",
                       "stock": 100_000, "categoryId": category["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(product["id"].is_string(), "{product}");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut customers = tokio::task::JoinSet::new();
    for index in 0..CUSTOMERS {
        customers.spawn(customer(front.url.clone(), index, product.clone(), Arc::clone(&stop), Arc::clone(&tally)));
    }

    // Chaos: one instance SIGKILLed, another replaced blue/green, all under load.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let green = Instance::start(&config, &database, green_port).await;
    front.replace(b, "shop-1", &green).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut orders_made = 0;
    while let Some(result) = customers.join_next().await {
        orders_made += result.unwrap();
    }

    let requests = tally.idempotent_requests.load(Ordering::Relaxed);
    let failures = tally.idempotent_failures.load(Ordering::Relaxed);
    let attempts = tally.checkout_attempts.load(Ordering::Relaxed);
    eprintln!(
        "{kind:?}: {requests} idempotent requests, {failures} failed; {orders_made} checkouts in {attempts} attempts"
    );
    assert!(requests > 30, "the customers kept going ({requests} requests)");
    assert_eq!(failures, 0, "{kind:?}: every idempotent request succeeded while instances died and were replaced");

    // No double orders: the shop holds exactly the orders the customers were told about.
    let all: Value = staff.get(url("/orders?limit=100")).send().await.unwrap().json().await.unwrap();
    let total = all["total"].as_u64().unwrap_or_else(|| all["data"].as_array().unwrap().len() as u64);
    assert_eq!(total as usize, orders_made, "{kind:?}: one order per checkout key, none twice");
    assert_eq!(orders_made, tally.checkouts.load(Ordering::Relaxed));

    front.stop().await;
    green.terminate().await;
    c.terminate().await;
    store_sqlx::provisioning::drop_database(&database).await.expect("the test database is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_instances_die_and_are_replaced_without_a_failed_idempotent_request() {
    journey(Edge::Gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_instances_die_and_are_replaced_without_a_failed_idempotent_request() {
    journey(Edge::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_instances_die_and_are_replaced_without_a_failed_idempotent_request() {
    journey(Edge::Haproxy).await;
}

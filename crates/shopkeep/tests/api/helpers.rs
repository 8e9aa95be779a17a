//! `spawn_app()`: a real server on port 0 against a fresh database, and typed helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use shop::SystemClock;
use shop::accounts::{Email, PasswordPlain, PersonName, Role};
use shopkeep::Application;
use shopkeep::config::{Config, Secret};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A password that passes the rules, used for every test account.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through a real PgBouncer in transaction mode (`database.pgbouncer`), with
    /// `database.direct_url` for migrations and LISTEN.
    PgBouncer,
}

/// Generates, for each named `async fn(&TestApp)`, a module with one test per backend:
/// SQLite and PostgreSQL, plus PostgreSQL through PgBouncer (`and_pgbouncer:`) or both again
/// with the shared Redis cache tier (`and_redis:`); `configured f:` adjusts each app's
/// configuration with the test module's `fn f(&mut Config)`.
#[macro_export]
macro_rules! both_backends {
    (@case $test:ident, $name:ident, $backend:ident, $customise:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let app = $crate::helpers::spawn_app_with($crate::helpers::Backend::$backend, $customise).await;
            super::$name(&app).await;
            app.stop().await;
        }
    };
    (and_pgbouncer: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::both_backends!(@case sqlite, $name, Sqlite, |_| {});
                $crate::both_backends!(@case postgres, $name, Postgres, |_| {});
                $crate::both_backends!(@case pgbouncer, $name, PgBouncer, |_| {});
            }
        )*
    };
    (and_redis: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::both_backends!(@case sqlite, $name, Sqlite, |_| {});
                $crate::both_backends!(@case postgres, $name, Postgres, |_| {});
                $crate::both_backends!(@case sqlite_redis, $name, Sqlite, $crate::helpers::with_redis);
                $crate::both_backends!(@case postgres_redis, $name, Postgres, $crate::helpers::with_redis);
            }
        )*
    };
    (configured $customise:ident: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::both_backends!(@case sqlite, $name, Sqlite, super::$customise);
                $crate::both_backends!(@case postgres, $name, Postgres, super::$customise);
            }
        )*
    };
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::both_backends!(@case sqlite, $name, Sqlite, |_| {});
                $crate::both_backends!(@case postgres, $name, Postgres, |_| {});
            }
        )*
    };
}

/// Points `config` at the test machine's Redis (`SHOPKEEP_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`) under a key prefix of its own, which peers spawned from the app
/// share: shared rate limits and the shared cache tier.
pub fn with_redis(config: &mut Config) {
    let url = std::env::var("SHOPKEEP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    config.redis.url = Some(Secret::new(&url));
    config.redis.key_prefix = format!("shopkeep-test-{}", uuid::Uuid::new_v4().simple());
}

/// Removes the test's database when the test ends.
enum DatabaseGuard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(String),
    /// The database (its URL) and the PgBouncer in front of it, stopped after it is dropped.
    PgBouncer(String, #[allow(dead_code)] harness::PgBouncer),
    /// Another instance's database: it removes it.
    Shared,
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        if let Self::Postgres(url) | Self::PgBouncer(url, _) = self {
            let url = std::mem::take(url);
            // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(store_sqlx::provisioning::drop_database(&url)).ok()
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub address: SocketAddr,
    pub admin_address: SocketAddr,
    pub config: Config,
    pub backend: Backend,
    /// A client without cookies; use [`TestApp::client`] for a signed-in one.
    pub http: Client,
    /// The clock the rate limiters read; it moves only when a test advances it.
    pub limiter_clock: Arc<resilience::ManualClock>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    _database: DatabaseGuard,
}

pub fn postgres_server_url() -> String {
    std::env::var("SHOPKEEP_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The user of the test PostgreSQL server's URL.
fn postgres_user() -> String {
    url::Url::parse(&postgres_server_url()).map(|url| url.username().to_owned()).unwrap_or_else(|_| "postgres".into())
}

/// A PgBouncer (transaction mode, stock settings) in front of the test PostgreSQL server.
pub async fn start_pgbouncer() -> harness::PgBouncer {
    let server = url::Url::parse(&postgres_server_url()).expect("SHOPKEEP_TEST_POSTGRES_URL is a URL");
    harness::PgBouncer::start(&harness::PgBouncerSettings {
        server_host: server.host_str().unwrap_or("127.0.0.1").to_owned(),
        server_port: server.port().unwrap_or(5432),
        user: postgres_user(),
        ..harness::PgBouncerSettings::default()
    })
    .await
    .expect("pgbouncer must start for the pgbouncer tests (scripts/services installs it)")
}

/// A URL for a new database on the test PostgreSQL server.
pub fn fresh_postgres_url() -> String {
    let server = postgres_server_url();
    let base = server.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap_or(server);
    format!("{base}/shopkeep_test_{}", uuid::Uuid::new_v4().simple())
}

/// The test configuration: port 0, quiet logs, and the given database.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.admin_listen = "127.0.0.1:0".into();
    config.server.shutdown_timeout_secs = 5;
    config.database.url = Secret::new(database_url);
    config.database.migrate_on_start = Some(true);
    config.database.max_connections = 5;
    config.log.level = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
    // Staff and admin test clients sign in from fresh "devices" all the time; the login
    // challenge has its own tests, which turn it on.
    config.accounts.login_challenge_roles = Vec::new();
    // A quick worker, so job tests do not wait long.
    config.jobs.poll_interval_ms = 50;
    config.jobs.retry_base_secs = 1;
    config.jobs.shutdown_timeout_secs = 5;
    // Typo corrections see a test's own catalog writes at once.
    config.search.vocabulary_refresh_ms = 0;
    config
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns an app after `customise` has adjusted its configuration.
pub async fn spawn_app_with(backend: Backend, customise: impl FnOnce(&mut Config)) -> TestApp {
    let (url, guard) = match backend {
        Backend::Sqlite => {
            let directory = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", directory.path().join("shop.db").display());
            (url, DatabaseGuard::Sqlite(directory))
        }
        Backend::Postgres => {
            let url = fresh_postgres_url();
            store_sqlx::provisioning::create_database_if_missing(&url)
                .await
                .expect("PostgreSQL must be reachable for the postgres tests (see README: Tests)");
            (url.clone(), DatabaseGuard::Postgres(url))
        }
        Backend::PgBouncer => {
            let direct = fresh_postgres_url();
            store_sqlx::provisioning::create_database_if_missing(&direct)
                .await
                .expect("PostgreSQL must be reachable for the pgbouncer tests (see README: Tests)");
            let bouncer = start_pgbouncer().await;
            let name = direct.rsplit_once('/').map(|(_, name)| name.to_owned()).unwrap_or_default();
            let user = postgres_user();
            let mut config = test_config(&bouncer.url(&user, &name));
            config.database.pgbouncer = true;
            config.database.direct_url = Some(Secret::new(&direct));
            customise(&mut config);
            return start(backend, config, DatabaseGuard::PgBouncer(direct, bouncer)).await;
        }
    };
    let mut config = test_config(&url);
    customise(&mut config);
    start(backend, config, guard).await
}

async fn start(backend: Backend, config: Config, guard: DatabaseGuard) -> TestApp {
    shopkeep::telemetry::init_logging(&config.log);
    let limiter_clock = Arc::new(resilience::ManualClock::default());
    let application =
        Application::build_with_clock(config.clone(), limiter_clock.clone()).await.expect("the application starts");
    let address = application.address();
    let admin_address = application.admin_address();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    // reqwest's TLS backend needs the process-wide crypto provider (see the function's doc).
    integration::install_crypto_provider();
    let http = Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp { address, admin_address, config, backend, http, limiter_clock, shutdown, server, _database: guard }
}

impl TestApp {
    /// A second instance on this instance's database (stop it before this one), configured
    /// like it after `customise`.
    pub async fn spawn_peer(&self, customise: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = self.config.clone();
        config.server.listen = "127.0.0.1:0".into();
        config.server.admin_listen = "127.0.0.1:0".into();
        customise(&mut config);
        start(self.backend, config, DatabaseGuard::Shared).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_address)
    }

    /// A request to `/api/v1{path}` with the cookie-less client.
    pub fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(&format!("/api/v1{path}")))
    }

    /// A client with its own cookie jar.
    pub fn new_client(&self) -> Client {
        Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
    }

    /// Creates an account with a role directly through the account service (like
    /// `shopkeep admin create-user`).
    pub async fn create_user(&self, email: &str, role: Role) -> shop::accounts::User {
        let store: Arc<dyn shop::Store> = shopkeep::app::open_store(&self.config, false).await.expect("store");
        let accounts = shopkeep::app::account_service(&self.config, Arc::clone(&store), Arc::new(SystemClock));
        let user = accounts
            .create_user(
                Email::parse(email).expect("email"),
                PasswordPlain::parse_new(PASSWORD).expect("password"),
                PersonName::parse("Test User").expect("name"),
                role,
            )
            .await
            .expect("user created");
        store.close().await;
        user
    }

    /// A client signed in (session cookie) as a new user with `role`.
    pub async fn signed_in(&self, email: &str, role: Role) -> Client {
        self.create_user(email, role).await;
        let client = self.new_client();
        let response = client
            .post(self.url("/api/v1/sessions"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), StatusCode::CREATED, "login of {email}");
        client
    }

    /// Creates a category as `staff` and returns its JSON.
    pub async fn add_category(&self, staff: &Client, slug: &str) -> Value {
        let response = staff
            .post(self.url("/api/v1/categories"))
            .json(&json!({ "name": format!("Category {slug}"), "slug": slug }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    /// Creates a product as `staff` and returns its JSON.
    pub async fn add_product(&self, staff: &Client, category_id: &str, slug: &str, price: &str, stock: i64) -> Value {
        let response = staff
            .post(self.url("/api/v1/products"))
            .json(&json!({
                "name": format!("Product {slug}"), "slug": slug, "description": "Test product",
                "price": price, "currency": "EUR", "stock": stock, "categoryId": category_id
            }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
        response.json().await.expect("json")
    }

    /// Stops the server as a SIGTERM would and waits for a clean exit.
    /// Enqueues a job in the app's database, as a state change in the shop would.
    pub async fn enqueue(&self, job: shop::jobs::NewJob) {
        let store: Arc<dyn shop::Store> = shopkeep::app::open_store(&self.config, false).await.expect("store");
        let jobs = shop::jobs::JobService::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            shopkeep::jobs::job_settings(&self.config),
        );
        assert!(jobs.enqueue(&job).await.expect("enqueued"));
        store.close().await;
    }

    /// The mail outbox (mail kept, not delivered, without SMTP), newest first.
    pub async fn outbox(&self) -> Vec<shop::mail::OutboxMail> {
        let store: Arc<dyn shop::Store> = shopkeep::app::open_store(&self.config, false).await.expect("store");
        let page = shop::PageRequest::new(None, Some(100)).expect("page");
        let mail = store.list_outbox_mail(&page).await.expect("outbox");
        store.close().await;
        mail.items
    }

    /// Waits (up to 10 s) for the outbox to hold `count` messages.
    pub async fn outbox_with(&self, count: usize) -> Vec<shop::mail::OutboxMail> {
        for _ in 0..200 {
            let mail = self.outbox().await;
            if mail.len() >= count {
                return mail;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the outbox never held {count} message(s): {:?}", self.outbox().await);
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = self.server.await.expect("server task");
        result.expect("clean shutdown");
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn wait_stopped(self) -> anyhow::Result<()> {
        self.server.await.expect("server task")
    }
}

/// Reads a JSON problem and checks its shape.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["requestId"], request_id.as_str());
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("urn:shopkeep:problem:")));
    assert!(body["title"].is_string() && body["detail"].is_string() && body["instance"].is_string());
    body
}

/// The field names of a 400 problem's errors.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A request whose body is only partly sent: it stays in flight until [`PartialRequest::finish`].
pub struct PartialRequest {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl PartialRequest {
    /// Sends the headers and the first half of a JSON body to `path`.
    pub async fn start(address: SocketAddr, method: &str, path: &str, body: &Value) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let body = serde_json::to_vec(body).expect("json");
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        let half = body.len() / 2;
        stream.write_all(&body[..half]).await.expect("write half");
        stream.flush().await.expect("flush");
        Self { stream, rest: body[half..].to_vec() }
    }

    /// Sends the rest of the body and returns the status and the raw response.
    pub async fn finish(mut self) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // The server may already have answered (e.g. 503): a failed write is not a failure here.
        let _ = self.stream.write_all(&self.rest).await;
        let mut response = Vec::new();
        let _ = self.stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        (status, text)
    }

    /// Reads whatever the server answers without sending the rest of the body.
    pub async fn read_response(mut self) -> (u16, String) {
        use tokio::io::AsyncReadExt as _;
        let mut response = Vec::new();
        let _ = self.stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        (status, text)
    }
}

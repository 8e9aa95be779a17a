//! The real binary as an operator runs it: signals, exit codes, logs, and the CLI commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

const PASSWORD: &str = "correct horse battery staple";

fn shopkeep() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopkeep"));
    command.env_remove("DATABASE_URL").env_remove("RUST_LOG").env_remove("SHOPKEEP_ADMIN_PASSWORD");
    command.kill_on_drop(true);
    command
}

async fn output(command: &mut Command) -> (i32, String, String) {
    let output = command.stdin(Stdio::null()).output().await.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn sqlite_url(directory: &Path) -> String {
    format!("sqlite://{}", directory.join("shop.db").display())
}

/// A running `shopkeep serve` and the lines it has logged so far.
struct Server {
    child: Child,
    address: String,
    admin_address: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    logged: Vec<String>,
}

impl Server {
    async fn start(database_url: &str) -> Self {
        Self::start_with(database_url, &[]).await
    }

    async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = shopkeep();
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("SHOPKEEP_LOG__FORMAT", "json")
            .env("SHOPKEEP_LOG__LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut logged = Vec::new();
        let (address, admin_address) = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = lines.recv().await.expect("the server logs until it is ready");
                logged.push(line.clone());
                let entry: Value = serde_json::from_str(&line).unwrap_or_default();
                if entry["message"] == "shopkeep is ready" {
                    let address = entry["listen"].as_str().unwrap().to_owned();
                    return (address, entry["adminListen"].as_str().unwrap().to_owned());
                }
            }
        })
        .await
        .expect("ready within 30 s");
        Self { child, address, admin_address, lines, logged }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the exit and returns its code and every line logged.
    async fn wait(mut self) -> (i32, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        while let Some(line) = self.lines.recv().await {
            self.logged.push(line);
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).await.unwrap();
        }
        self.logged.extend(stderr.lines().map(str::to_owned));
        (status.code().unwrap_or(-1), self.logged)
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero_and_logs_keep_secrets() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_url(directory.path())).await;
    let client = http_client(reqwest::Client::builder().cookie_store(true));

    let signup = client
        .post(server.url("/api/v1/users"))
        .json(&json!({ "email": "ada.lovelace@example.com", "password": PASSWORD, "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let session = signup.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned();
    let user: Value = signup.json().await.unwrap();
    let token: Value = client
        .post(server.url("/api/v1/api-tokens"))
        .json(&json!({ "name": "logs test" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = token["tokenSecret"].as_str().unwrap().to_owned();
    let me = http_client(reqwest::Client::builder())
        .get(server.url("/api/v1/users/me"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let failed = http_client(reqwest::Client::builder())
        .post(server.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada.lovelace@example.com", "password": "a wrong password!" }))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 401);

    // A request in flight when SIGTERM arrives still completes.
    let address: std::net::SocketAddr = server.address.parse().unwrap();
    let body =
        serde_json::to_vec(&json!({ "email": "grace@example.com", "password": PASSWORD, "name": "Grace" })).unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    use tokio::io::AsyncWriteExt as _;
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let (code, lines) = server.wait().await;
    assert_eq!(code, 0, "{lines:#?}");
    let all = lines.join("\n");
    for secret_text in [PASSWORD, "a wrong password!", session.as_str(), secret.as_str(), "ada.lovelace@example.com"] {
        assert!(!all.contains(secret_text), "the log contains {secret_text:?}");
    }
    let access: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["target"] == "access")
        .collect();
    assert!(access.len() >= 5, "{all}");
    for entry in &access {
        for field in ["requestId", "method", "route", "status", "latencyMs", "userId"] {
            assert!(!entry[field].is_null(), "{field} missing in {entry}");
        }
    }
    let me_line = access.iter().find(|entry| entry["route"] == "/api/v1/users/me").unwrap();
    assert_eq!(me_line["userId"], user["id"]);
    assert!(all.contains("shutdown complete"));
}

#[tokio::test]
async fn switching_rate_limits_off_is_loud() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start_with(&sqlite_url(directory.path()), &[("SHOPKEEP_RATE_LIMITS__ENABLED", "false")]).await;
    server.signal("TERM");
    let (code, lines) = server.wait().await;
    assert_eq!(code, 0);
    let warning = lines.iter().find(|line| line.contains("rate limits are OFF")).expect("a startup warning");
    assert!(warning.contains("WARN"), "{warning}");
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_url(directory.path())).await;
    server.signal("INT");
    let (code, lines) = server.wait().await;
    assert_eq!(code, 0, "{lines:#?}");
}

#[tokio::test]
async fn config_check_redacts_secrets_and_reports_every_problem() {
    let directory = tempfile::tempdir().unwrap();
    let token_file = directory.path().join("admin-token");
    std::fs::write(&token_file, "a-long-admin-token-from-a-file\n").unwrap();
    let (code, stdout, stderr) = output(
        shopkeep()
            .args(["config", "check"])
            .env("DATABASE_URL", "postgres://shop:s3cret-passw0rd@db.internal:5432/shop")
            .env("SHOPKEEP_ADMIN__TOKEN_FILE", &token_file)
            .env("SHOPKEEP_HTTP__MAX_IN_FLIGHT", "64"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("s3cret-passw0rd") && !stdout.contains("a-long-admin-token"), "{stdout}");
    assert!(stdout.contains("db.internal"), "{stdout}");
    assert!(stdout.contains("max_in_flight = 64"), "environment overrides defaults:\n{stdout}");
    assert!(stdout.contains("[redacted]") || stdout.contains("%5Bredacted%5D"), "{stdout}");

    let (code, _, stderr) = output(
        shopkeep()
            .args(["config", "check"])
            .env("SHOPKEEP_SERVER__LISTEN", "not-an-address")
            .env("SHOPKEEP_LOG__FORMAT", "xml")
            .env("DATABASE_URL", "mysql://nope"),
    )
    .await;
    assert_eq!(code, 78, "{stderr}");
    for expected in ["server.listen", "log.format", "database.url", "3 problems"] {
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
    }

    let file = directory.path().join("shopkeep.toml");
    std::fs::write(&file, "[http]\nmax_in_flight = 7\n[log]\nlevel = \"debug\"\n").unwrap();
    let (code, stdout, stderr) = output(
        shopkeep().args(["--config", file.to_str().unwrap(), "config", "check"]).env("SHOPKEEP_LOG__LEVEL", "warn"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("max_in_flight = 7"), "the file overrides defaults:\n{stdout}");
    assert!(stdout.contains("level = \"warn\""), "the environment overrides the file:\n{stdout}");
    let (code, _, stderr) = output(shopkeep().args(["--config", "/nonexistent.toml", "config", "check"])).await;
    assert_eq!(code, 78);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_an_open_admin_listener_without_a_token() {
    let directory = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(
        shopkeep()
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
            .env("DATABASE_URL", sqlite_url(directory.path())),
    )
    .await;
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
}

#[tokio::test]
async fn admin_create_user_bootstraps_an_administrator() {
    let directory = tempfile::tempdir().unwrap();
    let url = sqlite_url(directory.path());
    let password_file = directory.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let create = |email: &'static str| {
        let mut command = shopkeep();
        command.args(["admin", "create-user", "--email", email, "--role", "admin"]).env("DATABASE_URL", &url);
        command
    };
    let (code, stdout, stderr) = output(create("Root@Example.com").arg("--password-file").arg(&password_file)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("created admin"), "{stdout}");
    let (code, _, stderr) = output(create("root@example.com").arg("--password-file").arg(&password_file)).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists"), "{stderr}");
    let (code, _, stderr) = output(&mut create("nopassword@example.com")).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("SHOPKEEP_ADMIN_PASSWORD"), "{stderr}");
    let (code, _, stderr) = output(create("weak@example.com").env("SHOPKEEP_ADMIN_PASSWORD", "short")).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("password"), "{stderr}");
    let (code, _, stderr) = output(create("env@example.com").env("SHOPKEEP_ADMIN_PASSWORD", PASSWORD)).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = output(
        shopkeep()
            .args(["admin", "create-user", "--email", "x@example.com", "--role", "king"])
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_ADMIN_PASSWORD", PASSWORD),
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--role"), "{stderr}");

    // By default an admin's first sign-in from a browser waits for a mailed confirmation; the
    // mail is in the outbox (no SMTP configured), where `admin mail list` shows its link.
    let server = Server::start_with(&url, &[("SHOPKEEP_JOBS__POLL_INTERVAL_MS", "50")]).await;
    let browser = http_client(reqwest::Client::builder().cookie_store(true));
    let log_in = || {
        browser.post(server.url("/api/v1/sessions")).json(&json!({ "email": "root@example.com", "password": PASSWORD }))
    };
    let challenged = log_in().send().await.unwrap();
    assert_eq!(challenged.status(), 202);
    assert_eq!(challenged.json::<Value>().await.unwrap()["status"], "confirmationRequired");
    let mut token = None;
    for _ in 0..200 {
        let (code, stdout, stderr) = output(shopkeep().args(["admin", "mail", "list"]).env("DATABASE_URL", &url)).await;
        assert_eq!(code, 0, "{stderr}");
        if let Some(start) = stdout.find("confirm-login?token=") {
            let rest = &stdout[start + "confirm-login?token=".len()..];
            token = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = token.expect("the confirmation mail reached the outbox");
    let confirmed = http_client(reqwest::Client::builder())
        .post(server.url("/api/v1/login-challenges/confirm"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 204);
    let login = log_in().send().await.unwrap();
    assert_eq!(login.status(), 201, "the same browser, now a known device");
    assert_eq!(login.json::<Value>().await.unwrap()["role"], "admin");
    server.signal("TERM");
    assert_eq!(server.wait().await.0, 0);
}

async fn migrate_round_trip(url: &str) {
    let migrate = |action: &'static str| {
        let mut command = shopkeep();
        command.args(["migrate", action]).env("DATABASE_URL", url);
        command
    };
    let (code, stdout, stderr) = output(&mut migrate("up")).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("applied") && !stdout.contains("pending"), "{stdout}");
    let (code, stdout, _) = output(&mut migrate("status")).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("applied"), "{stdout}");
    let (code, stdout, stderr) = output(&mut migrate("down")).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("reverted migration"), "{stdout}");
    assert!(stdout.contains("pending"), "{stdout}");
    // One migration at a time, until none is left.
    let mut reverted = 1;
    loop {
        let (code, stdout, _) = output(&mut migrate("down")).await;
        assert_eq!(code, 0);
        if stdout.contains("no migration to revert") {
            break;
        }
        assert!(stdout.contains("reverted migration"), "{stdout}");
        reverted += 1;
        assert!(reverted < 100, "migrate down never ran out");
    }
    assert!(reverted >= 2, "every migration was reverted one by one");
    let (code, _, _) = output(&mut migrate("up")).await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn migrate_up_down_status_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    migrate_round_trip(&sqlite_url(directory.path())).await;
}

#[tokio::test]
async fn migrate_up_down_status_on_postgres_creating_the_database() {
    let server = std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap();
    let url = format!("{base}/shopkeep_migrate_cli_{}", uuid::Uuid::new_v4().simple());
    migrate_round_trip(&url).await;
    store_sqlx::provisioning::drop_database(&url).await.unwrap();
}

#[tokio::test]
async fn every_command_has_help_and_bad_usage_exits_2() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["worker", "--help"],
        vec!["admin", "jobs", "--help"],
        vec!["admin", "mail", "list", "--help"],
        vec!["admin", "search", "reindex", "--help"],
        vec!["admin", "create-user", "--help"],
        vec!["admin", "flags", "set", "--help"],
        vec!["admin", "audit", "--help"],
        vec!["admin", "breakers", "--help"],
        vec!["admin", "drain", "--help"],
        vec!["admin", "sessions", "end", "--help"],
        vec!["admin", "caches", "flush", "--help"],
        vec!["config", "check", "--help"],
    ] {
        let (code, stdout, _) = output(shopkeep().args(&args)).await;
        assert_eq!(code, 0, "{args:?}");
        assert!(stdout.contains("Usage"), "{args:?}: {stdout}");
    }
    let (code, _, _) = output(shopkeep().args(["migrate", "sideways"])).await;
    assert_eq!(code, 2);
    let (code, _, _) = output(shopkeep().args(["serve", "--listen", "nowhere"])).await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn operators_run_feature_flags_from_the_cli_and_every_change_is_audited() {
    const TOKEN: &str = "an-admin-token-for-the-cli";
    let directory = tempfile::tempdir().unwrap();
    let url = sqlite_url(directory.path());
    let server = Server::start_with(&url, &[("SHOPKEEP_ADMIN__TOKEN", TOKEN)]).await;
    let admin_url = format!("http://{}", server.admin_address);
    let cli = |args: &[&str]| {
        let mut command = shopkeep();
        command
            .args(args)
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_ADMIN__URL", &admin_url)
            .env("SHOPKEEP_ADMIN__TOKEN", TOKEN)
            .env("USER", "ada");
        command
    };
    let client = http_client(reqwest::Client::builder());
    let signup = |email: &'static str| {
        client
            .post(server.url("/api/v1/users"))
            .json(&json!({ "email": email, "password": PASSWORD, "name": "Ada" }))
            .send()
    };

    // Maintenance on: writes answer 503 with Retry-After, reads go on.
    let (code, stdout, stderr) =
        output(&mut cli(&["admin", "flags", "set", "maintenance", "--on", "--default", "true"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("maintenance") && stdout.contains("on"), "{stdout}");
    let refused = signup("first@example.com").await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(client.get(server.url("/api/v1/products")).send().await.unwrap().status(), 200);
    let (code, stdout, _) = output(&mut cli(&["admin", "flags", "eval", "maintenance"])).await;
    assert_eq!((code, stdout.trim()), (0, "true"));

    // Off again (the kill switch): writes go through.
    let (code, _, stderr) = output(&mut cli(&["admin", "flags", "set", "maintenance", "--off"])).await;
    assert_eq!(code, 0, "{stderr}");
    let second = signup("second@example.com").await.unwrap();
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    let second_id = second["id"].as_str().unwrap().to_owned();

    // A rollout, listed; then the flag deleted.
    let (code, _, stderr) = output(&mut cli(&["admin", "flags", "set", "new_checkout", "--default", "false"])).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = output(&mut cli(&["admin", "flags", "rollout", "new_checkout", "30"])).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = output(&mut cli(&["admin", "flags", "get", "new_checkout"])).await;
    assert_eq!(code, 0);
    let flag: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(flag["rules"][0]["when"][0], json!({ "type": "rollout", "percentage": 30 }));
    let (code, stdout, _) = output(&mut cli(&["admin", "flags", "list"])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("NAME") && stdout.contains("new_checkout") && stdout.contains("maintenance"),
        "{stdout}"
    );
    let (code, _, _) = output(&mut cli(&["admin", "flags", "delete", "new_checkout"])).await;
    assert_eq!(code, 0);

    // Refusals exit non-zero with the problem.
    let (code, _, stderr) = output(&mut cli(&["admin", "flags", "delete", "new_checkout"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("404"), "{stderr}");
    let (code, _, stderr) = output(&mut cli(&["admin", "flags", "set", "Bad Name", "--on"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("400") && stderr.contains("name"), "{stderr}");
    let (code, _, stderr) =
        output(cli(&["admin", "flags", "list"]).env("SHOPKEEP_ADMIN__TOKEN", "not-the-admin-token-at-all")).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("401"), "{stderr}");
    let (code, _, stderr) = output(&mut cli(&["admin", "flags", "rollout", "maintenance", "101"])).await;
    assert_eq!(code, 2, "{stderr}");

    // Breakers from the CLI: listed (whatever this configuration has), an unknown one refused.
    let (code, stdout, _) = output(&mut cli(&["admin", "breakers", "list"])).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("NAME") && stdout.contains("NEXT PROBE"), "{stdout}");
    let (code, _, stderr) = output(&mut cli(&["admin", "breakers", "reset", "nothing"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("404"), "{stderr}");

    // A user's sessions, listed and ended.
    let (code, stdout, _) = output(&mut cli(&["admin", "sessions", "list", &second_id])).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("SESSION") && stdout.lines().count() == 2, "{stdout}");
    let (code, stdout, _) = output(&mut cli(&["admin", "sessions", "end", &second_id])).await;
    assert_eq!((code, stdout.trim()), (0, "1 sessions ended"));
    let (code, _, _) = output(&mut cli(&["admin", "sessions", "end", "not-a-uuid"])).await;
    assert_eq!(code, 2, "clap refuses a malformed id");

    // Drain and undrain, and a cache flush.
    let (code, stdout, stderr) = output(&mut cli(&["admin", "drain"])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("drained"), "{stdout}");
    assert_eq!(client.get(server.url("/health/ready")).send().await.unwrap().status(), 503);
    assert_eq!(client.get(server.url("/api/v1/products")).send().await.unwrap().status(), 200);
    let (code, stdout, _) = output(&mut cli(&["admin", "undrain"])).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("serving"), "{stdout}");
    assert_eq!(client.get(server.url("/health/ready")).send().await.unwrap().status(), 200);
    let (code, stdout, _) = output(&mut cli(&["admin", "log-level", "debug"])).await;
    assert_eq!((code, stdout.trim()), (0, "debug"));
    let (code, stdout, _) = output(&mut cli(&["admin", "log-level"])).await;
    assert_eq!((code, stdout.trim()), (0, "debug"));
    let (code, _, stderr) = output(&mut cli(&["admin", "log-level", "shopkeep=loud"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("filter"), "{stderr}");
    let (code, _, _) = output(&mut cli(&["admin", "log-level", "info"])).await;
    assert_eq!(code, 0);
    let (code, stdout, _) = output(&mut cli(&["admin", "caches", "flush"])).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("CACHE") && stdout.contains("products"), "{stdout}");

    // Every change is in the audit log, newest first, with the operator.
    let (code, stdout, stderr) = output(&mut cli(&["admin", "audit", "--action", "flag."])).await;
    assert_eq!(code, 0, "{stderr}");
    let actions: Vec<&str> = stdout.lines().skip(1).filter_map(|line| line.split_whitespace().nth(3)).collect();
    assert_eq!(actions, ["flag.delete", "flag.update", "flag.create", "flag.update", "flag.create"], "{stdout}");
    assert!(stdout.contains("admin-token (cli:ada)"), "{stdout}");
    assert!(stderr.contains("5 of 5"), "{stderr}");

    server.signal("TERM");
    let (code, _) = server.wait().await;
    assert_eq!(code, 0);
}

/// A test client; reqwest's TLS backend needs the process-wide crypto provider (see
/// `integration::install_crypto_provider`).
fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    integration::install_crypto_provider();
    builder.build().expect("client")
}

#[tokio::test]
async fn the_worker_command_runs_jobs_and_operators_retry_dead_ones_from_the_cli() {
    let directory = tempfile::tempdir().unwrap();
    let url = sqlite_url(directory.path());
    let mut worker = shopkeep()
        .arg("worker")
        .env("DATABASE_URL", &url)
        .env("SHOPKEEP_JOBS__POLL_INTERVAL_MS", "50")
        .env("SHOPKEEP_LOG__FORMAT", "json")
        .env("SHOPKEEP_LOG__LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("job worker started") {
                return;
            }
        }
        panic!("the worker exited before starting");
    })
    .await
    .expect("the worker starts within 30 s");

    // A mail job whose payload is no mail: the worker dead-letters it.
    let store = store_sqlx::SqlStore::sqlite(&store_sqlx::SqliteSettings {
        url: url.clone(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        busy_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let job = shop::jobs::NewJob::new("mail.send", json!({}), time::OffsetDateTime::now_utc()).queue("mail");
    assert!(shop::ports::JobRepository::enqueue_job(&store, &job).await.unwrap());
    let list = |state: &'static str| {
        let mut command = shopkeep();
        command.args(["admin", "jobs", "list", "--state", state]).env("DATABASE_URL", &url);
        command
    };
    let mut listed = String::new();
    for _ in 0..200 {
        let (code, stdout, stderr) = output(&mut list("dead")).await;
        assert_eq!(code, 0, "{stderr}");
        if stdout.contains(&job.id.to_string()) {
            listed = stdout;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed.starts_with("1 job(s)"), "{listed}");
    assert!(listed.contains("kind=mail.send") && listed.contains("error="), "{listed}");

    let retry = |id: String| {
        let mut command = shopkeep();
        command.args(["admin", "jobs", "retry", &id]).env("DATABASE_URL", &url);
        command
    };
    let (code, stdout, stderr) = output(&mut retry(job.id.to_string())).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("again"), "{stdout}");
    let (code, _, stderr) = output(&mut retry(uuid::Uuid::new_v4().to_string())).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no job"), "{stderr}");
    let (code, _, stderr) = output(&mut retry("not-a-uuid".into())).await;
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = output(&mut list("zombie")).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--state"), "{stderr}");
    shop::ports::StoreHealth::close(&store).await;

    let pid = worker.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
    }
    assert!(rest.contains("job worker stopped"), "{rest}");
}

#[tokio::test]
async fn admin_mail_list_shows_the_outbox_marked_as_not_delivered() {
    let directory = tempfile::tempdir().unwrap();
    let url = sqlite_url(directory.path());
    let (code, _, stderr) = output(shopkeep().args(["migrate", "up"]).env("DATABASE_URL", &url)).await;
    assert_eq!(code, 0, "{stderr}");
    let store = store_sqlx::SqlStore::sqlite(&store_sqlx::SqliteSettings {
        url: url.clone(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        busy_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let to = shop::accounts::Email::parse("ada@example.com").unwrap();
    let mail = shop::mail::Mail::new(&to, "Your code", "Use 123456 to continue.\n", "<p>Use 123456</p>");
    let stored = shop::mail::OutboxMail { id: uuid::Uuid::new_v4(), mail, created_at: time::OffsetDateTime::now_utc() };
    assert!(shop::ports::MailOutboxRepository::insert_outbox_mail(&store, &stored).await.unwrap());
    shop::ports::StoreHealth::close(&store).await;
    let (code, stdout, stderr) = output(shopkeep().args(["admin", "mail", "list"]).env("DATABASE_URL", &url)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("1 message(s) in the outbox — NOT delivered"), "{stdout}");
    assert!(stdout.contains("To: ada@example.com") && stdout.contains("Subject: Your code"), "{stdout}");
    assert!(stdout.contains("Use 123456 to continue."), "{stdout}");
    let (code, _, _) =
        output(shopkeep().args(["admin", "mail", "list", "--limit", "0"]).env("DATABASE_URL", &url)).await;
    assert_eq!(code, 1);
}

#[tokio::test]
async fn admin_search_reindex_rebuilds_with_the_configured_language() {
    let directory = tempfile::tempdir().unwrap();
    let url = sqlite_url(directory.path());
    let (code, _, stderr) = output(shopkeep().args(["migrate", "up"]).env("DATABASE_URL", &url)).await;
    assert_eq!(code, 0, "{stderr}");
    let settings = store_sqlx::SqliteSettings {
        url: url.clone(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        busy_timeout: Duration::from_secs(5),
    };
    let store = store_sqlx::SqlStore::sqlite(&settings).await.unwrap();
    let text = |raw: &str| shop::catalog::Text::name(raw).unwrap();
    let category = shop::catalog::NewCategory {
        id: uuid::Uuid::now_v7(),
        name: text("Computers"),
        slug: shop::catalog::Slug::parse("computers").unwrap(),
        description: shop::catalog::Text::description("").unwrap(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    shop::ports::CategoryRepository::insert_category(&store, &category).await.unwrap();
    for (name, slug) in [("Gaming Laptops", "gaming-laptops"), ("Office Laptops", "office-laptops")] {
        let product = shop::catalog::NewProduct {
            id: uuid::Uuid::now_v7(),
            name: text(name),
            slug: shop::catalog::Slug::parse(slug).unwrap(),
            description: shop::catalog::Text::description("").unwrap(),
            price: shop::catalog::Money::from_minor(100, shop::catalog::Currency::parse("EUR").unwrap()).unwrap(),
            stock: shop::catalog::Stock::new(1).unwrap(),
            category_id: category.id,
            search_boost: shop::catalog::SearchBoost::default(),
            created_at: time::OffsetDateTime::now_utc(),
        };
        shop::ports::ProductRepository::insert_product(&store, &product).await.unwrap();
    }
    shop::ports::StoreHealth::close(&store).await;
    let (code, stdout, stderr) = output(
        shopkeep()
            .args(["admin", "search", "reindex"])
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_SEARCH__LANGUAGE", "none"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("search index rebuilt: 2 products in"), "{stdout}");
    assert!(stdout.contains("(language none)"), "{stdout}");
    // Indexed without stemming now: "laptops" is found as written, the stem "laptop" is not.
    let store = std::sync::Arc::new(store_sqlx::SqlStore::sqlite(&settings).await.unwrap());
    let unstemmed = shop::search::SearchSettings {
        language: shop::search::Language::None,
        typo_fallback_below: 0,
        ..shop::search::SearchSettings::default()
    };
    let search = shop::search::SearchService::new(store.clone(), unstemmed);
    let query = shop::catalog::ProductQuery::default();
    let order = shop::search::SearchOrder::Relevance;
    let none = shop::search::FacetRequest::default();
    let found = search.search(&shop::search::SearchText::parse("laptops").unwrap(), &query, order, none).await.unwrap();
    assert_eq!(found.page.total, 2);
    let stem = search.search(&shop::search::SearchText::parse("laptop").unwrap(), &query, order, none).await.unwrap();
    assert_eq!(stem.page.total, 0);
    shop::ports::StoreHealth::close(store.as_ref()).await;
    let (code, _, stderr) = output(
        shopkeep()
            .args(["admin", "search", "reindex"])
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_SEARCH__LANGUAGE", "klingon"),
    )
    .await;
    assert_eq!(code, 78, "{stderr}");
}

#[tokio::test]
async fn the_gateway_runs_from_the_cli_changes_its_pool_and_reloads_on_sighup() {
    let ok = harness::Mode::Ok;
    let (a, b, c) = (
        harness::Harness::start("127.0.0.1:0".parse().unwrap(), ok.clone()).await.unwrap(),
        harness::Harness::start("127.0.0.1:0".parse().unwrap(), ok.clone()).await.unwrap(),
        harness::Harness::start("127.0.0.1:0".parse().unwrap(), ok).await.unwrap(),
    );
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("gateway.toml");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, admin_port) = (free(), free());
    let write = |backends: &[(&str, std::net::SocketAddr)]| {
        let mut toml = format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n[health]\ninterval_ms = 100\ntimeout_ms = 100\n"
        );
        for (name, address) in backends {
            toml.push_str(&format!("[[backends]]\nname = \"{name}\"\naddress = \"{address}\"\n"));
        }
        std::fs::write(&config, toml).unwrap();
    };
    write(&[("a", a.address())]);
    let cli = |args: &[&str]| {
        let mut command = shopkeep();
        command.arg("--config").arg(&config).args(["gateway", "backends"]).args(args);
        command
    };
    let (code, stdout, stderr) = output(shopkeep().arg("--config").arg(&config).args(["gateway", "--check"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut gateway = shopkeep()
        .arg("--config")
        .arg(&config)
        .arg("gateway")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = http_client(reqwest::Client::builder());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !client
        .get(format!("http://127.0.0.1:{admin_port}/health/ready"))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
    {
        assert!(tokio::time::Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get(format!("http://127.0.0.1:{port}/x")).send().await.unwrap().status(), 200);

    // The CLI changes the pool; refusals exit 1 and say why.
    let (code, stdout, stderr) = output(&mut cli(&["add", "b", &b.address().to_string(), "--weight", "2"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = output(&mut cli(&["add", "b", &b.address().to_string()])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("409"), "{stderr}");
    let (code, _, stderr) = output(&mut cli(&["weight", "nobody", "1"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("404"), "{stderr}");
    let (code, _, stderr) = output(&mut cli(&["drain", "b", "--wait", "soon"])).await;
    assert_ne!(code, 0, "a bad duration is refused");
    assert!(stderr.contains("not a duration"), "{stderr}");
    let (code, stdout, _) = output(&mut cli(&["weight", "b", "1", "--over", "1s"])).await;
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = output(&mut cli(&["list"])).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("NAME") && stdout.lines().any(|line| line.starts_with("b ")), "{stdout}");

    // SIGHUP: the file is the pool again (b, added by hand, leaves; c joins); a bad file changes
    // nothing and the gateway keeps running.
    write(&[("a", a.address()), ("c", c.address())]);
    let hangup = |child: &tokio::process::Child| {
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    hangup(&gateway);
    let names = || async {
        let (_, stdout, _) = output(&mut cli(&["list"])).await;
        stdout.lines().skip(1).filter_map(|line| line.split_whitespace().next().map(str::to_owned)).collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while names().await != ["a", "c"] {
        assert!(tokio::time::Instant::now() < deadline, "the reload never applied: {:?}", names().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&config, "listen = \"nowhere\"\n").unwrap();
    hangup(&gateway);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gateway.try_wait().unwrap().is_none(), "a bad file does not stop the gateway");
    assert_eq!(client.get(format!("http://127.0.0.1:{port}/x")).send().await.unwrap().status(), 200);

    let pid = gateway.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), gateway.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the gateway drains and exits 0 on SIGTERM");
}

#[tokio::test]
async fn serve_terminates_tls_itself_when_given_a_certificate() {
    let directory = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (certificate, key) = (directory.path().join("cert.pem"), directory.path().join("key.pem"));
    std::fs::write(&certificate, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let (certificate, key) = (certificate.display().to_string(), key.display().to_string());

    // Half a pair, or TLS without http.https, is refused before anything listens.
    let url = sqlite_url(directory.path());
    let (code, _, stderr) = output(
        shopkeep()
            .args(["config", "check"])
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_SERVER__TLS_CERTIFICATE_FILE", &certificate),
    )
    .await;
    assert_eq!(code, 78);
    assert!(stderr.contains("server.tls_key_file"), "{stderr}");
    let (code, _, stderr) = output(
        shopkeep()
            .args(["config", "check"])
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_SERVER__TLS_CERTIFICATE_FILE", &certificate)
            .env("SHOPKEEP_SERVER__TLS_KEY_FILE", &key),
    )
    .await;
    assert_eq!(code, 78);
    assert!(stderr.contains("http.https: must be true"), "{stderr}");
    let (code, _, stderr) = output(
        shopkeep()
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &url)
            .env("SHOPKEEP_SERVER__TLS_CERTIFICATE_FILE", &key)
            .env("SHOPKEEP_SERVER__TLS_KEY_FILE", &key)
            .env("SHOPKEEP_HTTP__HTTPS", "true"),
    )
    .await;
    assert_ne!(code, 0, "a file without a certificate stops serve at start");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");

    let server = Server::start_with(
        &url,
        &[
            ("SHOPKEEP_SERVER__TLS_CERTIFICATE_FILE", &certificate),
            ("SHOPKEEP_SERVER__TLS_KEY_FILE", &key),
            ("SHOPKEEP_HTTP__HTTPS", "true"),
        ],
    )
    .await;
    let client = http_client(
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap()),
    );
    let secure = client.get(format!("https://{}/health/ready", server.address)).send().await.unwrap();
    assert_eq!(secure.status(), 200);
    assert!(secure.headers().contains_key("strict-transport-security"), "HSTS over TLS");
    let plain = http_client(reqwest::Client::builder()).get(server.url("/health/ready")).send().await;
    assert!(plain.is_err() || plain.unwrap().status() != 200, "plain HTTP is not served on the TLS port");
    server.signal("TERM");
    let (code, _) = server.wait().await;
    assert_eq!(code, 0);
}

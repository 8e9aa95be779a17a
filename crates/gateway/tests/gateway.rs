//! The gateway against real sockets: `harness` backends that answer, refuse, hang, reset,
//! trickle or fail, a real client, and the admin listener — latency stays bounded, failing
//! backends are retried around and ejected, and the pool changes at run time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::balance::Algorithm;
use gateway::config::{AdminToken, BackendConfig, HealthConfig, LimitsConfig, OutlierConfig, TimeoutConfig};
use gateway::{Gateway, GatewayConfig};
use harness::{Harness, Mode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-admin-token-0123456789";

struct TestGateway {
    reloader: gateway::reload::Reloader,
    port: u16,
    admin_port: u16,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl TestGateway {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("http://127.0.0.1:{}{path}", self.admin_port)).bearer_auth(TOKEN)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    async fn backends(&self) -> Vec<Value> {
        let answer: Value =
            self.admin(reqwest::Method::GET, "/admin/v1/backends").send().await.unwrap().json().await.unwrap();
        answer["backends"].as_array().unwrap().clone()
    }

    async fn backend(&self, name: &str) -> Value {
        self.backends().await.into_iter().find(|backend| backend["name"] == name).unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn backend(name: &str, address: SocketAddr) -> BackendConfig {
    BackendConfig { name: name.into(), address: address.to_string(), weight: 1, tls: false }
}

/// Fast health checks, short timeouts, round-robin so tests know who is asked.
fn config(backends: Vec<BackendConfig>) -> GatewayConfig {
    GatewayConfig {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        admin_token: Some(AdminToken::new(TOKEN)),
        balance: Algorithm::RoundRobin,
        backends,
        health: HealthConfig { interval_ms: 100, timeout_ms: 100, rise: 1, fall: 1, ..HealthConfig::default() },
        timeouts: TimeoutConfig {
            connect_ms: 200,
            first_byte_ms: 400,
            total_ms: 2_000,
            idle_ms: 300,
            keep_alive_ms: 10_000,
        },
        slow_start_ms: 0,
        ..GatewayConfig::default()
    }
}

async fn start(config: GatewayConfig) -> TestGateway {
    // reqwest's TLS (for the HTTPS test) needs the process-wide provider, whichever test is first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gateway = Gateway::build(config, None).await.unwrap();
    let (port, admin_port, reloader) = (gateway.port(), gateway.admin_port(), gateway.reloader());
    let stop = CancellationToken::new();
    let task = tokio::spawn(gateway.run_until_stopped(stop.clone()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    TestGateway { reloader, port, admin_port, stop, task, http }
}

/// A harness whose readiness path passes while every other path is answered in `mode`.
async fn upstream(mode: Mode) -> Harness {
    let harness = Harness::start("127.0.0.1:0".parse().unwrap(), mode).await.unwrap();
    harness.set_path_mode("/health/ready", Mode::Ok);
    harness
}

fn proxied(harness: &Harness) -> Vec<harness::RecordedRequest> {
    harness.requests().into_iter().filter(|request| request.path != "/health/ready").collect()
}

#[tokio::test]
async fn requests_spread_over_the_backends_with_forwarding_headers() {
    let (a, b) = (upstream(Mode::Ok).await, upstream(Mode::Ok).await);
    let gateway = start(config(vec![backend("a", a.address()), backend("b", b.address())])).await;
    for _ in 0..10 {
        let response = gateway
            .http
            .get(gateway.url("/api/v1/products?page=2"))
            .header("x-request-id", "req-42")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], "req-42");
    }
    let (seen_a, seen_b) = (proxied(&a), proxied(&b));
    assert_eq!((seen_a.len(), seen_b.len()), (5, 5));
    let request = &seen_a[0];
    assert_eq!(request.path, "/api/v1/products");
    assert_eq!(request.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(request.header("x-forwarded-proto"), Some("http"));
    assert_eq!(request.header("x-forwarded-host"), Some(format!("127.0.0.1:{}", gateway.port).as_str()));
    assert_eq!(request.header("host"), Some(format!("127.0.0.1:{}", gateway.port).as_str()));
    assert!(request.header("forwarded").unwrap().starts_with("for=127.0.0.1;proto=http"));
    assert_eq!(request.header("x-request-id"), Some("req-42"));
    gateway.stop().await;
}

#[tokio::test]
async fn a_backend_answering_503_is_retried_elsewhere_and_then_ejected() {
    let good = upstream(Mode::Ok).await;
    let bad = upstream(Mode::Status(503)).await;
    let settings = GatewayConfig {
        outlier: OutlierConfig { consecutive_gateway_failures: 3, ..OutlierConfig::default() },
        ..config(vec![backend("good", good.address()), backend("bad", bad.address())])
    };
    let gateway = start(settings).await;
    for _ in 0..2 {
        let put = gateway.http.put(gateway.url("/api/v1/carts/current/items/p1")).json(&json!({"quantity": 1}));
        assert_eq!(put.send().await.unwrap().status(), 200, "a small PUT body is kept and sent again");
    }
    for _ in 0..20 {
        assert_eq!(gateway.get("/api/v1/products").await.status(), 200, "a GET is retried on the healthy backend");
    }
    assert_eq!(proxied(&bad).len(), 3, "three failures ejected it; nothing more was sent");
    assert!(proxied(&good).iter().filter(|request| request.method == "PUT").count() >= 1);
    let bad_state = gateway.backend("bad").await;
    assert_eq!(bad_state["ejected"], true, "{bad_state}");
    assert_eq!(bad_state["times_ejected"], 1);
    // A POST is not retried: with only the bad backend routable it gets the 503 itself.
    let lone = upstream(Mode::Status(503)).await;
    let gateway_alone = start(config(vec![backend("lone", lone.address())])).await;
    let response = gateway_alone.http.post(gateway_alone.url("/api/v1/checkout")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(proxied(&lone).len(), 1, "sent once");
    gateway.stop().await;
    gateway_alone.stop().await;
}

#[tokio::test]
async fn a_hanging_backend_costs_at_most_the_first_byte_timeout() {
    let hanging = upstream(Mode::NeverRespond).await;
    let good = upstream(Mode::Ok).await;
    let gateway = start(config(vec![backend("hanging", hanging.address()), backend("good", good.address())])).await;
    for _ in 0..4 {
        let started = Instant::now();
        assert_eq!(gateway.get("/api/v1/products").await.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(1_500), "took {:?}", started.elapsed());
    }
    gateway.stop().await;

    let alone = start(config(vec![backend("hanging", hanging.address())])).await;
    let started = Instant::now();
    let response = alone.http.post(alone.url("/api/v1/orders")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(1_500));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 504);
    assert!(problem["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    alone.stop().await;
}

#[tokio::test]
async fn resets_garbage_and_refusals_become_502_and_a_stalled_body_is_cut() {
    let garbage = upstream(Mode::Garbage).await;
    let gateway = start(config(vec![backend("garbage", garbage.address())])).await;
    assert_eq!(gateway.http.post(gateway.url("/x")).send().await.unwrap().status(), 502);
    gateway.stop().await;
    // Headers, then a reset: the client gets the headers and a body that breaks off.
    let resetting = upstream(Mode::ResetMidResponse).await;
    let gateway = start(config(vec![backend("resetting", resetting.address())])).await;
    let response = gateway.get("/x").await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err(), "the cut is passed on, not hidden");
    gateway.stop().await;
    // A refused connection never reached the backend, so even a POST goes to the next one.
    let refusing = Harness::refusing_address().await.unwrap();
    let good = upstream(Mode::Ok).await;
    let mut settings = config(vec![backend("refusing", refusing), backend("good", good.address())]);
    // Keep the refusing backend in the pool: its health is never checked as failing.
    settings.outlier.panic_threshold_percent = 100;
    let gateway = start(settings).await;
    for _ in 0..4 {
        assert_eq!(gateway.http.post(gateway.url("/api/v1/orders")).send().await.unwrap().status(), 200);
    }
    gateway.stop().await;

    let trickling = upstream(Mode::HeadersNoBody).await;
    let gateway = start(config(vec![backend("trickling", trickling.address())])).await;
    let started = Instant::now();
    let response = gateway.get("/slow").await;
    assert_eq!(response.status(), 200, "the headers came");
    assert!(response.bytes().await.is_err(), "the body was cut at the idle timeout");
    assert!(started.elapsed() < Duration::from_millis(1_500));
    gateway.stop().await;
}

#[tokio::test]
async fn edge_limits_refuse_with_clear_errors() {
    let slow = upstream(Mode::Slow { delay: Duration::from_millis(300) }).await;
    let settings = GatewayConfig {
        limits: LimitsConfig { max_in_flight: 1, max_request_body_bytes: 10, ..LimitsConfig::default() },
        ..config(vec![backend("slow", slow.address())])
    };
    let gateway = start(settings).await;
    let large = gateway.http.post(gateway.url("/upload")).body("more than ten bytes").send().await.unwrap();
    assert_eq!(large.status(), 413);
    let (first, second) = tokio::join!(gateway.get("/a"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gateway.get("/b").await
    });
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 503, "shed: one request in flight is the limit");
    assert!(second.headers().contains_key("retry-after"));
    gateway.stop().await;

    let fast = upstream(Mode::Ok).await;
    let settings = GatewayConfig {
        limits: LimitsConfig { per_ip_per_second: 2, ..LimitsConfig::default() },
        ..config(vec![backend("fast", fast.address())])
    };
    let gateway = start(settings).await;
    assert_eq!(gateway.get("/a").await.status(), 200);
    assert_eq!(gateway.get("/b").await.status(), 200);
    let limited = gateway.get("/c").await;
    assert_eq!(limited.status(), 429, "the third request within half a second from one address");
    assert!(limited.headers().contains_key("retry-after"));
    gateway.stop().await;

    let empty = start(config(Vec::new())).await;
    let response = empty.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(
        empty.http.get(format!("http://127.0.0.1:{}/health/ready", empty.admin_port)).send().await.unwrap().status(),
        503
    );
    empty.stop().await;
}

#[tokio::test]
async fn the_pool_changes_at_run_time_through_the_admin_listener() {
    let (blue, green) = (upstream(Mode::Ok).await, upstream(Mode::Ok).await);
    let gateway = start(config(vec![backend("blue", blue.address())])).await;
    let anonymous =
        gateway.http.get(format!("http://127.0.0.1:{}/admin/v1/backends", gateway.admin_port)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = gateway
        .http
        .get(format!("http://127.0.0.1:{}/admin/v1/backends", gateway.admin_port))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let add = |body: Value| gateway.admin(reqwest::Method::POST, "/admin/v1/backends").json(&body).send();
    let added = add(json!({"name": "green", "address": green.address().to_string(), "weight": 1})).await.unwrap();
    assert_eq!(added.status(), 201);
    assert_eq!(add(json!({"name": "green", "address": "127.0.0.1:1"})).await.unwrap().status(), 409);
    assert_eq!(add(json!({"name": "bad name", "address": "127.0.0.1:1"})).await.unwrap().status(), 400);
    assert_eq!(add(json!({"name": "x", "address": "http://nowhere"})).await.unwrap().status(), 400);
    assert_eq!(add(json!({"name": "x"})).await.unwrap().status(), 400);
    let not_json = gateway.admin(reqwest::Method::POST, "/admin/v1/backends").body("{").send().await.unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(not_json.headers()["content-type"], "application/problem+json");

    // Green takes traffic once its first check passes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.backend("green").await["health"] != "healthy" {
        assert!(Instant::now() < deadline, "green never became healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        assert_eq!(gateway.get("/p").await.status(), 200);
    }
    assert!(!proxied(&green).is_empty());

    // Blue to weight 0: all traffic to green.
    let weight = |name: &str, body: Value| {
        gateway.admin(reqwest::Method::PUT, &format!("/admin/v1/backends/{name}/weight")).json(&body).send()
    };
    assert_eq!(weight("blue", json!({"weight": 0})).await.unwrap().status(), 200);
    assert_eq!(weight("blue", json!({"weight": 5000})).await.unwrap().status(), 400);
    assert_eq!(weight("nobody", json!({"weight": 1})).await.unwrap().status(), 404);
    let before = proxied(&blue).len();
    for _ in 0..10 {
        assert_eq!(gateway.get("/p").await.status(), 200);
    }
    assert_eq!(proxied(&blue).len(), before, "weight 0 gets nothing");
    assert_eq!(weight("blue", json!({"weight": 1, "over_ms": 60_000})).await.unwrap().status(), 200);
    let shifting = gateway.backend("blue").await;
    assert!(shifting["effective_weight"].as_f64().unwrap() < 0.5, "{shifting}");

    // Drain and remove blue; undrain of the unknown is 404.
    let drained: Value = gateway
        .admin(reqwest::Method::POST, "/admin/v1/backends/blue/drain")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drained["drained"], true);
    assert_eq!(drained["draining"], true);
    let removed = gateway.admin(reqwest::Method::DELETE, "/admin/v1/backends/blue").send().await.unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(gateway.admin(reqwest::Method::DELETE, "/admin/v1/backends/blue").send().await.unwrap().status(), 404);
    assert_eq!(
        gateway.admin(reqwest::Method::POST, "/admin/v1/backends/blue/undrain").send().await.unwrap().status(),
        404
    );
    let too_long = gateway
        .admin(reqwest::Method::POST, "/admin/v1/backends/green/drain?timeout_ms=99999999")
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 400);
    let names: Vec<Value> = gateway.backends().await.into_iter().map(|backend| backend["name"].clone()).collect();
    assert_eq!(names, [json!("green")]);

    // More refusals, each a problem: unknown names, bad queries and bodies, weights out of range.
    let status = |method: reqwest::Method, path: &'static str, body: Option<Value>| {
        let mut request = gateway.admin(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(reqwest::Method::GET, "/admin/v1/backends/green", None).await, 200);
    assert_eq!(status(reqwest::Method::GET, "/admin/v1/backends/nobody", None).await, 404);
    assert_eq!(status(reqwest::Method::POST, "/admin/v1/backends/nobody/drain", None).await, 404);
    assert_eq!(status(reqwest::Method::POST, "/admin/v1/backends/green/drain?timeout_ms=soon", None).await, 400);
    assert_eq!(status(reqwest::Method::DELETE, "/admin/v1/backends/green?timeout_ms=99999999", None).await, 400);
    assert_eq!(
        status(
            reqwest::Method::PUT,
            "/admin/v1/backends/green/weight",
            Some(json!({"weight": 1, "over_ms": 100_000_000}))
        )
        .await,
        400
    );
    assert_eq!(status(reqwest::Method::PUT, "/admin/v1/backends/green/weight", Some(json!({"weight": -1}))).await, 400);
    assert_eq!(
        status(reqwest::Method::PUT, "/admin/v1/backends/green/weight", Some(json!({"weight": 1, "later": true})))
            .await,
        400
    );
    assert_eq!(
        status(
            reqwest::Method::POST,
            "/admin/v1/backends",
            Some(json!({"name": "big", "address": "127.0.0.1:1", "weight": 1001}))
        )
        .await,
        400
    );
    let bad_query =
        gateway.admin(reqwest::Method::POST, "/admin/v1/backends/green/drain?timeout_ms=soon").send().await.unwrap();
    assert_eq!(bad_query.headers()["content-type"], "application/problem+json");
    // The scheme of the token is case-insensitive; metrics need the token too.
    let lowercase = gateway
        .http
        .get(format!("http://127.0.0.1:{}/admin/v1/backends", gateway.admin_port))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200);
    let metrics = gateway.http.get(format!("http://127.0.0.1:{}/metrics", gateway.admin_port)).send().await.unwrap();
    assert_eq!(metrics.status(), 401);
    let no_recorder = gateway.admin(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(no_recorder.status(), 503, "this test process installs no recorder");
    gateway.stop().await;
}

#[tokio::test]
async fn drain_waits_for_requests_in_flight_and_shutdown_lets_them_finish() {
    let slow = upstream(Mode::Slow { delay: Duration::from_millis(400) }).await;
    let other = upstream(Mode::Ok).await;
    let mut settings = config(vec![backend("slow", slow.address()), backend("other", other.address())]);
    settings.timeouts.first_byte_ms = 1_500;
    let gateway = start(settings).await;
    // Round-robin: the first request goes to "slow".
    let in_flight = tokio::spawn({
        let url = gateway.url("/slow");
        let http = gateway.http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gateway.backend("slow").await["in_flight"], 1);
    let started = Instant::now();
    let drained: Value = gateway
        .admin(reqwest::Method::POST, "/admin/v1/backends/slow/drain")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drained["drained"], true);
    assert!(started.elapsed() >= Duration::from_millis(200), "drain returned before the request finished");
    assert_eq!(in_flight.await.unwrap(), 200);
    for _ in 0..4 {
        gateway.get("/p").await;
    }
    assert_eq!(proxied(&slow).len(), 1, "a draining backend gets no new requests");
    assert_eq!(
        gateway
            .http
            .post(format!("http://127.0.0.1:{}/admin/v1/backends/slow/undrain", gateway.admin_port))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A wait that runs out says so (and the request still finishes).
    other.set_path_mode("/slow-again", Mode::Slow { delay: Duration::from_millis(400) });
    let second = tokio::spawn({
        let url = gateway.url("/slow-again");
        let http = gateway.http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let busy = gateway.backends().await.into_iter().find(|backend| backend["in_flight"] == 1);
        if let Some(busy) = busy {
            break busy["name"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the second slow request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cut: Value = gateway
        .admin(reqwest::Method::POST, &format!("/admin/v1/backends/{busy}/drain?timeout_ms=50"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cut["drained"], false, "{cut}");
    assert_eq!(second.await.unwrap(), 200);
    gateway.admin(reqwest::Method::POST, &format!("/admin/v1/backends/{busy}/undrain")).send().await.unwrap();

    // Shutdown while a request is in flight: it still completes.
    other.set_path_mode("/late", Mode::Slow { delay: Duration::from_millis(400) });
    let late = tokio::spawn({
        let url = gateway.url("/late");
        let http = gateway.http.clone();
        async move { http.get(url).send().await.map(|response| response.status()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = gateway.http.get(format!("http://127.0.0.1:{}/health/ready", gateway.admin_port)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while shutting down, so a balancer in front moves away");
    gateway.stop().await;
    assert_eq!(late.await.unwrap().unwrap(), 200);
}

#[tokio::test]
async fn a_reload_applies_the_new_pool_and_refuses_an_invalid_file() {
    let (a, b, c, d) =
        (upstream(Mode::Ok).await, upstream(Mode::Ok).await, upstream(Mode::Ok).await, upstream(Mode::Ok).await);
    let first = config(vec![backend("a", a.address()), backend("b", b.address())]);
    let gateway = start(first.clone()).await;

    let mut invalid = first.clone();
    invalid.backends.push(backend("a", c.address()));
    assert!(gateway.reloader.apply(invalid).is_err(), "a name used twice is refused");
    assert_eq!(gateway.backends().await.len(), 2, "and changes nothing");

    let mut next = first.clone();
    next.backends = vec![BackendConfig { weight: 3, ..backend("b", b.address()) }, backend("c", c.address())];
    next.timeouts.first_byte_ms = 900;
    let report = gateway.reloader.apply(next.clone()).unwrap();
    assert_eq!(report.added, ["c"]);
    assert_eq!(report.removed, ["a"]);
    assert_eq!(report.reweighted, ["b"]);
    assert_eq!(report.needs_restart, ["timeouts"], "policies are reported, not applied live");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let backends = gateway.backends().await;
        let names: Vec<&str> = backends.iter().filter_map(|backend| backend["name"].as_str()).collect();
        let c_healthy = backends.iter().any(|backend| backend["name"] == "c" && backend["health"] == "healthy");
        if names == ["b", "c"] && c_healthy {
            assert_eq!(gateway.backend("b").await["weight"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "the reload never settled: {backends:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = proxied(&a).len();
    for _ in 0..6 {
        assert_eq!(gateway.get("/p").await.status(), 200);
    }
    assert_eq!(proxied(&a).len(), before, "a removed backend gets nothing");

    // Same name, new address: the old one drains and the new one takes its place.
    let mut moved = next.clone();
    moved.backends[1] = backend("c", d.address());
    assert_eq!(gateway.reloader.apply(moved).unwrap().replaced, ["c"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Between the old one's removal and the new one's arrival, "c" is briefly absent.
        let c = gateway.backends().await.into_iter().find(|backend| backend["name"] == "c");
        if c.is_some_and(|c| c["address"] == d.address().to_string() && c["health"] == "healthy") {
            break;
        }
        assert!(Instant::now() < deadline, "c never moved to its new address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn tls_at_the_edge_serves_https_and_h2_tells_the_backend_and_picks_up_a_renewal() {
    let directory = tempfile::tempdir().unwrap();
    let (certificate, key) = (directory.path().join("cert.pem"), directory.path().join("key.pem"));
    let write_pair = || {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(&certificate, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        generated.cert
    };
    let first = write_pair();
    let up = upstream(Mode::Ok).await;
    let mut settings = config(vec![backend("up", up.address())]);
    settings.tls = Some(gateway::config::TlsSettings {
        certificate_file: certificate.display().to_string(),
        key_file: key.display().to_string(),
        reload_interval_ms: 60_000,
    });
    let gateway = start(settings.clone()).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(first.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = client.get(format!("https://127.0.0.1:{}/secure", gateway.port)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = proxied(&up);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert!(seen[0].header("forwarded").unwrap().contains("proto=https"));
    // Plain HTTP to the TLS port is not served.
    assert!(gateway.http.get(gateway.url("/plain")).send().await.is_err());

    // ALPN offers HTTP/2, and after a renewal (reloaded on SIGHUP's path) new handshakes get
    // the new certificate.
    let presented = |alpn: Vec<Vec<u8>>| {
        let port = gateway.port;
        async move {
            let mut config = rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny))
                .with_no_client_auth();
            config.alpn_protocols = alpn;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let tls = connector.connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap();
            let (_, session) = tls.get_ref();
            (session.alpn_protocol().map(<[u8]>::to_vec), session.peer_certificates().unwrap()[0].to_vec())
        }
    };
    let (alpn, certificate_der) = presented(vec![b"h2".to_vec(), b"http/1.1".to_vec()]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(certificate_der, first.der().to_vec());
    let renewed = write_pair();
    gateway.reloader.apply(settings).unwrap();
    let (_, certificate_der) = presented(vec![b"http/1.1".to_vec()]).await;
    assert_eq!(certificate_der, renewed.der().to_vec(), "the renewal is served without a restart");
    gateway.stop().await;
}

/// Accepts any server certificate: the test compares the presented one itself.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _certificate: &rustls::pki_types::CertificateDer<'_>,
        _signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _certificate: &rustls::pki_types::CertificateDer<'_>,
        _signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn an_oversized_streamed_upload_is_413_and_never_counts_against_the_backend() {
    let sink = upstream(Mode::NeverRespond).await;
    let settings = GatewayConfig {
        limits: LimitsConfig { max_request_body_bytes: 1_000, ..LimitsConfig::default() },
        ..config(vec![backend("sink", sink.address()), backend("other", upstream(Mode::Ok).await.address())])
    };
    let gateway = start(settings).await;
    let mut too_large = 0;
    for _ in 0..4 {
        // Chunked: no Content-Length to refuse up front, so the limit cuts the stream.
        let chunks = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1_000])));
        let response =
            gateway.http.post(gateway.url("/upload")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
        if response.status() == 413 {
            too_large += 1;
        }
    }
    assert_eq!(too_large, 4, "every upload was cut at the limit, whichever backend it went to");
    let sink_state = gateway.backend("sink").await;
    assert_eq!(sink_state["times_ejected"], 0, "a client's upload does not eject a backend: {sink_state}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_backend_that_breaks_off_its_bodies_is_ejected_though_its_headers_said_200() {
    let (resetting, good) = (upstream(Mode::ResetMidResponse).await, upstream(Mode::Ok).await);
    let gateway = start(config(vec![backend("resetting", resetting.address()), backend("good", good.address())])).await;
    for _ in 0..6 {
        let response = gateway.get("/x").await;
        let _ = response.bytes().await;
    }
    let state = gateway.backend("resetting").await;
    assert_eq!(state["times_ejected"], 1, "three broken bodies in a row eject it: {state}");
    assert_eq!(gateway.backend("good").await["times_ejected"], 0);

    // Complete bodies count as successes: two failures, a success, two more do not eject.
    let (flaky, steady) = (upstream(Mode::Ok).await, upstream(Mode::Ok).await);
    let gateway_two = start(config(vec![backend("flaky", flaky.address()), backend("steady", steady.address())])).await;
    for round in 0..5 {
        flaky.set_mode(if round == 2 { Mode::Ok } else { Mode::ResetMidResponse });
        for _ in 0..2 {
            let _ = gateway_two.get("/x").await.bytes().await;
        }
    }
    assert_eq!(gateway_two.backend("flaky").await["times_ejected"], 0, "the success in between reset the count");
    gateway_two.stop().await;
    gateway.stop().await;
}

/// A backend that answers `Upgrade: echo` with 101 and then echoes bytes; anything else 200.
async fn echo_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.contains("upgrade: echo") && head.contains("connection: upgrade") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
                        .await;
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn an_upgrade_is_passed_through_and_a_drain_waits_for_the_tunnel() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let echo = echo_upstream().await;
    let gateway = start(config(vec![backend("echo", echo)])).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port)).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nhost: shop.example\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    assert_eq!(gateway.backend("echo").await["in_flight"], 1, "the tunnel counts as a request in flight");
    let drained: Value = gateway
        .admin(reqwest::Method::POST, "/admin/v1/backends/echo/drain?timeout_ms=100")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drained["drained"], false, "a drain waits for open tunnels");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.backend("echo").await["in_flight"] != 0 {
        assert!(Instant::now() < deadline, "the tunnel never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_backend_can_be_reached_over_tls_checked_against_a_private_ca() {
    let secure = Harness::start_tls("127.0.0.1:0".parse().unwrap(), Mode::Ok).await.unwrap();
    let directory = tempfile::tempdir().unwrap();
    let ca = directory.path().join("ca.pem");
    std::fs::write(&ca, secure.certificate_pem().unwrap()).unwrap();
    let tls_backend = BackendConfig { tls: true, ..backend("secure", secure.address()) };
    let mut settings = config(vec![tls_backend.clone()]);
    settings.upstream_ca_file = Some(ca.display().to_string());
    let gateway = start(settings).await;
    assert_eq!(gateway.backend("secure").await["health"], "healthy", "checked over TLS");
    assert_eq!(gateway.backend("secure").await["tls"], true);
    assert_eq!(gateway.get("/over-tls").await.status(), 200);
    assert!(proxied(&secure).iter().any(|request| request.path == "/over-tls"));
    gateway.stop().await;

    // Without the CA the certificate is refused: unhealthy, and a request (panic routing) fails.
    let untrusting = start(config(vec![tls_backend])).await;
    assert_eq!(untrusting.backend("secure").await["health"], "unhealthy");
    assert_eq!(untrusting.get("/over-tls").await.status(), 502);
    untrusting.stop().await;

    // A CA file that is not one stops the gateway at start.
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut broken = config(Vec::new());
    broken.upstream_ca_file = Some(ca.display().to_string());
    let error = Gateway::build(broken, None).await.err().unwrap();
    assert!(format!("{error:#}").contains("upstream_ca_file"), "{error:#}");
}

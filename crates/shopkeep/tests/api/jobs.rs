//! The job queue through the admin API: dead jobs listed, inspected and retried; the in-process
//! worker runs what is enqueued.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::jobs::NewJob;

use crate::helpers::{Backend, TestApp, problem, spawn_app_with};

/// One test per backend for each function, on an app with an admin token.
macro_rules! with_admin_token {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::run(super::$name, super::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::run(super::$name, super::Backend::Postgres).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn pgbouncer() {
                    super::run(super::$name, super::Backend::PgBouncer).await;
                }
            }
        )*
    };
}

with_admin_token!(dead_jobs_are_listed_and_retried_by_operators, job_list_failure_paths);

async fn run<F: AsyncFnOnce(&TestApp)>(test: F, backend: Backend) {
    let app = spawn_app_with(backend, configure).await;
    test(&app).await;
    app.stop().await;
}

const TOKEN: &str = "an-admin-token-of-length";

fn configure(config: &mut shopkeep::config::Config) {
    config.admin.token = Some(shopkeep::config::Secret::new(TOKEN));
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(app.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap()
}

async fn post(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.post(app.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap()
}

/// Polls the job until `condition` holds (the worker runs in the background).
async fn until(app: &TestApp, id: uuid::Uuid, condition: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let job: Value = get(app, &format!("/admin/v1/jobs/{id}")).await.json().await.unwrap();
        if condition(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never got there");
}

async fn dead_jobs_are_listed_and_retried_by_operators(app: &TestApp) {
    // A mail job whose payload is no mail: a permanent failure, dead-lettered at once.
    let job = NewJob::new("mail.send", json!({ "orderId": 42 }), time::OffsetDateTime::now_utc()).queue("mail");
    app.enqueue(job.clone()).await;
    let dead = until(app, job.id, |job| job["state"] == "dead").await;
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["queue"], "mail");
    assert_eq!(dead["payload"], json!({ "orderId": 42 }));
    assert!(dead["lastError"].is_string());
    assert!(dead["finishedAt"].is_string());

    let list: Value = get(app, "/admin/v1/jobs?state=dead").await.json().await.unwrap();
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["id"], job.id.to_string());
    let none: Value = get(app, "/admin/v1/jobs?state=dead&queue=default").await.json().await.unwrap();
    assert_eq!(none["total"], 0);

    let retried = post(app, &format!("/admin/v1/jobs/{}/retry", job.id)).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["attempts"], 0);
    assert!(retried["finishedAt"].is_null());
    // It dies again (the payload is still no mail), having really run once more.
    let again = until(app, job.id, |job| job["state"] == "dead" && job["attempts"] == 1).await;
    assert_ne!(again["updatedAt"], dead["updatedAt"]);

    // A job that is not dead or failed cannot be retried.
    let later = NewJob::new("mail.send", json!({}), time::OffsetDateTime::now_utc() + Duration::from_secs(3_600));
    app.enqueue(later.clone()).await;
    let conflict = problem(post(app, &format!("/admin/v1/jobs/{}/retry", later.id)).await, StatusCode::CONFLICT).await;
    assert!(conflict["detail"].as_str().unwrap().contains("only dead or failed"));
}

async fn job_list_failure_paths(app: &TestApp) {
    // A kind no handler of this version knows is never claimed: it waits, untouched, for a
    // worker that knows it (a newer version's job during a rolling deploy).
    let newer = NewJob::new("a.newer.kind", json!({}), time::OffsetDateTime::now_utc());
    app.enqueue(newer.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting: Value = get(app, &format!("/admin/v1/jobs/{}", newer.id)).await.json().await.unwrap();
    assert_eq!((waiting["state"].as_str(), waiting["attempts"].as_u64()), (Some("queued"), Some(0)), "{waiting}");
    let invalid =
        problem(get(app, "/admin/v1/jobs?state=zombie&limit=1000&sortBy=size").await, StatusCode::BAD_REQUEST).await;
    let fields: Vec<&str> =
        invalid["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["limit", "state", "sortBy"], "{invalid}");
    problem(get(app, "/admin/v1/jobs?colour=red").await, StatusCode::BAD_REQUEST).await;
    problem(get(app, &format!("/admin/v1/jobs/{}", uuid::Uuid::new_v4())).await, StatusCode::NOT_FOUND).await;
    problem(get(app, "/admin/v1/jobs/not-an-id").await, StatusCode::NOT_FOUND).await;
    problem(post(app, &format!("/admin/v1/jobs/{}/retry", uuid::Uuid::new_v4())).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_routes_need_the_admin_token_and_retries_need_one_configured() {
    let guarded = spawn_app_with(Backend::Sqlite, configure).await;
    let anonymous = guarded.http.get(guarded.admin_url("/admin/v1/jobs")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let retry = guarded.http.post(guarded.admin_url(&format!("/admin/v1/jobs/{}/retry", uuid::Uuid::new_v4())));
    problem(retry.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    guarded.stop().await;

    let open = spawn_app_with(Backend::Sqlite, |_| {}).await;
    assert_eq!(open.http.get(open.admin_url("/admin/v1/jobs")).send().await.unwrap().status(), StatusCode::OK);
    let retry = open.http.post(open.admin_url(&format!("/admin/v1/jobs/{}/retry", uuid::Uuid::new_v4())));
    problem(retry.send().await.unwrap(), StatusCode::FORBIDDEN).await;
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_idle_worker_wakes_on_notify_not_on_its_poll() {
    // The worker polls only every 10 minutes: only LISTEN/NOTIFY can start this job quickly.
    let app = spawn_app_with(Backend::Postgres, |config| {
        configure(config);
        config.jobs.poll_interval_ms = 600_000;
    })
    .await;
    // Let the worker finish its first (empty) claim and go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = NewJob::new("mail.send", json!({}), time::OffsetDateTime::now_utc()).queue("mail");
    app.enqueue(job.clone()).await;
    let dead = until(&app, job.id, |job| job["state"] == "dead").await;
    assert_eq!(dead["attempts"], 1, "ran within seconds of its commit, long before the next poll");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_job_queued_by_this_process_wakes_its_idle_worker() {
    // The worker polls only every 10 minutes: only the store's in-process announcement can
    // start the reset mail's job quickly.
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.jobs.poll_interval_ms = 600_000;
    })
    .await;
    app.create_user("ada@example.com", shop::accounts::Role::Customer).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requested =
        app.http.post(app.url("/api/v1/password-resets")).json(&json!({ "email": "ada@example.com" })).send().await;
    assert_eq!(requested.unwrap().status(), StatusCode::ACCEPTED);
    let outbox = app.outbox_with(1).await;
    assert!(outbox[0].mail.subject.contains("reset your password"));
    app.stop().await;
}
